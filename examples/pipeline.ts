/**
 * A dependency pipeline in a task group: design → backend ∥ frontend → tests → review →
 * release notes. Every task is created up front; each waits (held, `pending`) until the tasks
 * it depends on complete, and is queued by the very step that completes the last of them. The
 * group counts them by state as they go, and `group.wait()` resolves when all are over.
 *
 *   npx tsx examples/pipeline.ts          offline: the bundled demo agent CLI and in-process agents
 *   npx tsx examples/pipeline.ts --fail   the tests fail: the review and release notes are cancelled
 *
 * With no REDIS_URL, the town starts its own redis-server in examples/.town/.tt/ (stopped at
 * the end unless --keep-redis).
 */
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stopManagedRedis, Town, type CliDefinition, type GroupProgress, type TownEvent } from 'tinytown';

const { values: args } = parseArgs({
  options: { fail: { type: 'boolean', default: false }, 'keep-redis': { type: 'boolean', default: false } },
});

const demoAgent: CliDefinition = {
  command: process.execPath,
  args: [fileURLToPath(new URL('./demo-agent.mjs', import.meta.url))],
  prompt: 'stdin',
};

const dir = fileURLToPath(new URL('./.town/', import.meta.url));
await mkdir(dir, { recursive: true });
const town = await Town.connect(dir, { name: 'pipeline-demo' });
const steps = new Map<string, string>(); // task id → step name

try {
  const designer = await town.spawnAgent('designer', { cli: demoAgent });
  const backend = await town.spawnAgent('backend', { cli: demoAgent });
  const frontend = await town.spawnAgent('frontend', { cli: demoAgent });
  const qa = await town.spawnAgent('qa', {
    run: async () => {
      await new Promise((resolve) => setTimeout(resolve, 400));
      if (args.fail) throw new Error('3 of 120 tests failed (auth.test.ts)');
      return '120 tests passed';
    },
  });
  // Takes backlog work by itself: the release notes go to the backlog, not to an agent.
  await town.spawnAgent('writer', { claimBacklog: true, run: async () => 'Release notes: login, signup and token refresh.' });

  // A fresh group per run: the town (and its groups) outlive this script.
  const group = town.group(`auth-${Date.now().toString(36)}`);
  const step = <T extends { id: string }>(name: string, task: T): T => (steps.set(task.id, name), task);

  // Print the group's progress on every change of one of its tasks, from the event stream.
  const watching = new AbortController();
  const printing = (async () => {
    const shown = new Set(['task.assigned', 'task.started', 'task.completed', 'task.failed', 'task.cancelled', 'backlog.added', 'group.completed']);
    for await (const event of town.events({ signal: watching.signal })) {
      if (!shown.has(event.type) || (event.taskId !== undefined && !steps.has(event.taskId))) continue;
      console.log(`${line(event).padEnd(52)} ${bar(await group.progress())}`);
      if (event.type === 'group.completed' && event.data.group === group.name) return;
    }
  })();

  console.log(`group ${group.name}: six steps, each held until the steps it depends on complete\n`);
  const design = step('design', await group.assign(designer, 'Design the auth API: endpoints, tokens, errors'));
  const api = step('backend', await group.assign(backend, { description: 'Implement the backend auth endpoints', dependsOn: [design.id] }));
  const ui = step('frontend', await group.assign(frontend, { description: 'Build the frontend login UI', dependsOn: [design.id] }));
  const tests = step('tests', await group.assign(qa, { description: 'Run the test suite', dependsOn: [api.id, ui.id] }));
  const review = step('review', await group.assign(designer, { description: 'Review the auth implementation', dependsOn: [tests.id] }));
  step('notes', await town.backlog.add({ description: 'Write the release notes', dependsOn: [review.id], group: group.name }));

  const final = await group.wait({ timeoutMs: 5 * 60_000 });
  // The printer stops at group.completed, appended by the step that ended the last task.
  await Promise.race([printing, new Promise((resolve) => setTimeout(resolve, 2_000))]);
  watching.abort();
  await printing;

  console.log(`\n${group.name}: ${final.counts.completed} completed, ${final.counts.failed} failed, ${final.counts.cancelled} cancelled`);
  for (const task of await group.tasks()) {
    const outcome = (task.result ?? task.error ?? '').split('\n')[0];
    console.log(`  ${(steps.get(task.id) ?? '?').padEnd(9)} ${task.state.padEnd(10)} ${outcome}`);
  }
} finally {
  await town.close();
  if (!args['keep-redis']) await stopManagedRedis(dir);
}

function line(event: TownEvent): string {
  const time = event.at.toISOString().slice(11, 23);
  if (event.type === 'group.completed') return `${time}  group completed`;
  const released = event.data.released === true ? ' (released)' : '';
  return `${time}  ${(steps.get(event.taskId ?? '') ?? '').padEnd(9)} ${event.type}${released}`;
}

function bar(p: GroupProgress): string {
  const { pending, assigned, running, completed, failed, cancelled } = p.counts;
  return `[${p.done}/${p.total} done] held/waiting ${pending} · queued ${assigned} · running ${running} · ok ${completed} · failed ${failed} · cancelled ${cancelled}`;
}
