/**
 * A live status view driven by the event stream: it redraws a table of agents whenever
 * something happens in the town, without polling. Run it next to another example (same town
 * folder), or let it start a small demo of its own with `--demo`.
 *
 *   npx tsx examples/live-status.ts --demo
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Town, type TownStatus } from 'tinytown';

const { values: args } = parseArgs({ options: { demo: { type: 'boolean', default: false } } });
const dir = fileURLToPath(new URL('./.town/', import.meta.url));
await using town = await Town.connect(dir, { name: 'live-status' });
const stop = new AbortController();
process.once('SIGINT', () => stop.abort());

if (args.demo) void demo();

let pending: Promise<void> | undefined;
for await (const event of town.events({ signal: stop.signal })) {
  // Many events arrive together: one redraw per burst.
  pending ??= Promise.resolve().then(async () => {
    pending = undefined;
    draw(await town.status(), `${event.type} ${event.data.message ?? ''}`);
  });
}

function draw(status: TownStatus, last: string): void {
  const rows = status.agents.map((a) => `  ${a.name.padEnd(10)} ${a.state.padEnd(9)} queued ${String(a.queued).padStart(2)}  done ${a.tasksCompleted}`);
  const { tasks } = status;
  console.clear();
  console.log(`town ${status.name} — ${tasks.running} running, ${tasks.assigned} queued, ${tasks.completed} completed, ${tasks.failed} failed`);
  console.log(rows.join('\n'));
  console.log(`\nlast: ${last}\n(Ctrl-C to quit)`);
}

async function demo(): Promise<void> {
  const sleepy = async () => {
    await new Promise((resolve) => setTimeout(resolve, 300 + Math.random() * 700));
    return 'ok';
  };
  const agents = await Promise.all(['ada', 'grace', 'linus'].map((name) => town.spawnAgent(name, { run: sleepy })));
  for (let i = 0; i < 12; i++) await agents[i % agents.length]!.assign(`demo task ${i + 1}`);
  for (const agent of agents) await agent.waitForIdle();
  stop.abort();
}
