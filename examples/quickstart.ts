/**
 * Quickstart: three agents run a small pipeline — design, then backend and frontend in
 * parallel, then a review — while the town's event stream prints live progress.
 *
 *   npm run example                  offline, with the bundled demo agent CLI
 *   npm run example -- --cli claude  with a real agent CLI (any preset: codex, gemini, …)
 *   npm run example -- --keep-redis  leave the managed redis-server running afterwards
 *
 * With no REDIS_URL, the town starts its own redis-server in examples/.town/.tt/.
 */
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stopManagedRedis, Task, Town, waitForIdle, type CliDefinition, type TaskRecord, type TownEvent } from 'tinytown';

const { values: args } = parseArgs({
  options: { cli: { type: 'string' }, 'keep-redis': { type: 'boolean', default: false } },
});

const demoAgent: CliDefinition = {
  command: process.execPath,
  args: [fileURLToPath(new URL('./demo-agent.mjs', import.meta.url))],
  prompt: 'stdin',
};
const cli = args.cli ?? demoAgent;

const dir = fileURLToPath(new URL('./.town/', import.meta.url));
await mkdir(dir, { recursive: true });
const town = await Town.connect(dir, { name: 'quickstart' });

const names = new Map<string, string>();
const descriptions = new Map<string, string>();
const progress = new AbortController();
const printing = printProgress(town, progress.signal);

try {
  const designer = await town.spawnAgent('designer', { cli, role: 'architect', timeoutMs: 10 * 60_000 });
  const backend = await town.spawnAgent('backend', { cli, role: 'worker', timeoutMs: 30 * 60_000 });
  const frontend = await town.spawnAgent('frontend', { cli, role: 'worker', timeoutMs: 30 * 60_000 });
  for (const agent of [designer, backend, frontend]) names.set(agent.id, agent.name);

  const tasks: TaskRecord[] = [];
  const assign = async (agent: typeof designer, task: Task): Promise<void> => {
    const record = await agent.assign(task);
    descriptions.set(record.id, task.description);
    tasks.push(record);
  };

  await assign(designer, new Task('Design the auth API schema: endpoints, tokens, errors', { tags: ['design'] }));
  await waitForIdle(designer, { timeoutMs: 15 * 60_000 });

  await assign(backend, new Task('Implement the backend auth endpoints from the design', { tags: ['backend'] }));
  await assign(frontend, new Task('Build the frontend login and signup UI against the API', { tags: ['frontend'] }));
  await waitForIdle([backend, frontend], { timeoutMs: 30 * 60_000 });

  await assign(designer, new Task('Review the auth implementation (backend and frontend) for security issues'));
  await waitForIdle(designer, { timeoutMs: 15 * 60_000 });

  progress.abort();
  await printing;
  await printSummary(town, tasks);
} finally {
  progress.abort();
  await town.close();
  if (!args['keep-redis']) await stopManagedRedis(dir);
}

async function printProgress(t: Town, signal: AbortSignal): Promise<void> {
  const shown = new Set(['agent.spawned', 'task.started', 'task.completed', 'task.failed']);
  for await (const event of t.events({ signal })) {
    if (shown.has(event.type)) console.log(describe(event));
  }
}

function describe(event: TownEvent): string {
  const time = event.at.toISOString().slice(11, 23);
  const agent = (event.agentId && names.get(event.agentId)) ?? String(event.data.name ?? '');
  const task = event.taskId ? descriptions.get(event.taskId) ?? '' : '';
  return `${time}  ${agent.padEnd(9)} ${event.type.padEnd(15)} ${task}`;
}

async function printSummary(t: Town, records: readonly TaskRecord[]): Promise<void> {
  const status = await t.status();
  console.log('\nAgents');
  for (const a of status.agents) {
    console.log(`  ${a.name.padEnd(9)} ${a.state.padEnd(8)} ${a.tasksCompleted} done, ${a.tasksFailed} failed`);
  }
  console.log(`\nTasks: ${status.tasks.completed} completed, ${status.tasks.failed} failed, ${status.backlog} in the backlog`);
  for (const record of records) {
    const task = await t.task(record.id);
    const who = names.get(task.assignedTo ?? '') ?? '?';
    console.log(`\n[${task.state}] ${who}: ${task.description}`);
    console.log(indent(task.result ?? task.error ?? ''));
  }
}

function indent(text: string): string {
  return text
    .trim()
    .split('\n')
    .map((line) => `    ${line}`)
    .join('\n');
}
