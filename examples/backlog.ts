/**
 * A backlog with claiming agents: work is added without an assignee, and idle agents spawned
 * with `claimBacklog: true` take the tasks whose tags meet their role or tags, oldest first —
 * atomically, so no task runs twice.
 *
 *   npx tsx examples/backlog.ts
 */
import { fileURLToPath } from 'node:url';
import { Town } from 'tinytown';

const dir = fileURLToPath(new URL('./.town/', import.meta.url));
await using town = await Town.connect(dir, { name: 'backlog-demo' });

// In-process agents keep the example fast and offline; a CLI agent claims the same way.
const work = (who: string) => async () => {
  await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
  return `${who} did it`;
};
const qa = await town.spawnAgent('qa', { run: work('qa'), role: 'qa', claimBacklog: true });
const docs = await town.spawnAgent('docs', { run: work('docs'), tags: ['docs'], claimBacklog: true });
const generalist = await town.spawnAgent('generalist', { run: work('generalist'), claimBacklog: true });

const added = [
  await town.backlog.add({ description: 'Triage flaky tests', tags: ['qa'] }),
  await town.backlog.add({ description: 'Update the API reference', tags: ['docs'] }),
  await town.backlog.add({ description: 'Reproduce issue #42', tags: ['qa'] }),
  await town.backlog.add('Bump dependencies'), // no tags: any claiming agent may take it
  await town.backlog.add({ description: 'Write the migration guide', tags: ['docs'] }),
];

// Wait on the tasks themselves: a claiming agent may be idle for a moment before it claims.
for (const { id } of added) {
  const task = await town.waitForTask(id, { timeoutMs: 30_000 });
  const who = (await Promise.all([qa, docs, generalist].map((a) => a.info()))).find((a) => a.id === task.assignedTo);
  console.log(`${task.state.padEnd(9)} ${who?.name.padEnd(10)} ${task.description}`);
}
console.log(`backlog left: ${(await town.backlog.list()).length}`);
