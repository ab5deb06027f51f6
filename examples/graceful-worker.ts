/**
 * A worker process that shuts down gracefully. On SIGTERM or SIGINT it closes its town: the
 * running task gets `closeGraceMs` to finish (its result is recorded), or past that its handler
 * is aborted and the task goes back to the head of the agent's queue; the agent is released and
 * the process ends by itself — nothing of tinytown keeps it alive after `close()`.
 *
 *   npx tsx examples/graceful-worker.ts            # demo: starts a worker process, SIGTERMs it mid-task
 *   npx tsx examples/graceful-worker.ts --worker   # just the worker; stop it with Ctrl-C
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Town, type Agent } from 'tinytown';

const dir = fileURLToPath(new URL('./.town/', import.meta.url));

if (process.argv[2] === '--worker') {
  const town = await Town.connect(dir, { name: 'graceful', closeGraceMs: 30_000 });
  await town.runWorker('builder', {
    run: (task, ctx) =>
      // Two seconds of "work" that honours ctx.signal, which aborts when the grace period ends.
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => resolve(`built: ${task.description}`), 2_000);
        ctx.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          reject(ctx.signal.reason);
        });
      }),
  });
  const shutdown = (signal: NodeJS.Signals): void => {
    console.log(`worker: ${signal}; letting the running task finish, then leaving`);
    void town.close().then(() => console.log('worker: closed'));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  process.send?.('ready');
} else {
  await using town = await Town.connect(dir, { name: 'graceful' });
  const builder: Agent = await town.agent('builder').catch(() => town.spawnAgent('builder', { start: false }));
  const child = fork(fileURLToPath(import.meta.url), ['--worker'], { execArgv: ['--import', 'tsx'] });
  await once(child, 'message');

  const started = town.events({ types: ['task.started'] })[Symbol.asyncIterator]().next();
  const first = await builder.assign('the running one');
  const second = await builder.assign('the queued one');
  await started;
  child.kill('SIGTERM'); // what a process manager sends on deploy or scale-down
  await once(child, 'exit');

  for (const { id } of [first, second]) {
    const task = await town.task(id);
    console.log(`${task.description.padEnd(16)} ${task.state.padEnd(10)} ${task.result ?? ''}`);
  }
  // → the running one: completed (finished within the grace period); the queued one: assigned,
  //   waiting in the agent's queue for the next worker (npx tsx examples/graceful-worker.ts --worker).
  await town.cancelTask(second.id, 'demo over');
}
