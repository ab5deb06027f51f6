/**
 * Workers in two processes sharing one town: this process registers two agents without
 * starting their workers, launches a second Node process that attaches workers to them with
 * `town.runWorker`, then assigns tasks and waits. The same code runs the second process on
 * another machine when both point at one Redis (REDIS_URL).
 *
 *   npx tsx examples/two-processes.ts
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Town, waitForIdle } from 'tinytown';

const dir = fileURLToPath(new URL('./.town/', import.meta.url));

if (process.argv[2] === '--worker') {
  // The second process: attach a worker to each agent and serve until told to stop.
  const town = await Town.connect(dir, { name: 'two-processes' });
  const run = async (task: { description: string }) => `pid ${process.pid} did: ${task.description}`;
  await Promise.all(['left', 'right'].map((name) => town.runWorker(name, { run })));
  process.send?.('ready');
  process.once('message', () => void town.close());
} else {
  await using town = await Town.connect(dir, { name: 'two-processes' });
  const left = await town.spawnAgent('left', { start: false });
  const right = await town.spawnAgent('right', { start: false });

  const child = fork(fileURLToPath(import.meta.url), ['--worker'], { execArgv: ['--import', 'tsx'] });
  await new Promise((resolve) => child.once('message', resolve));

  const tasks = await Promise.all([1, 2, 3].flatMap((i) => [left.assign(`left task ${i}`), right.assign(`right task ${i}`)]));
  await waitForIdle([left, right], { timeoutMs: 30_000 });
  for (const { id } of tasks) console.log((await town.task(id)).result);
  console.log(`(this process is pid ${process.pid})`);
  child.send('stop');
  await new Promise((resolve) => child.once('exit', resolve));
}
