/**
 * Redis work per task lifecycle, counted two ways over N sequential tasks on an idle agent/worker:
 * - `INFO commandstats` deltas: every command the server executed, including those run inside
 *   Lua scripts (so XADD per task = events appended per task);
 * - `MONITOR`: which of those were sent by a client (a round trip, or a share of a pipeline)
 *   and which ran inside a script, with EVALSHA labelled by script.
 */
import type { Redis } from 'ioredis';
import { commandCalls, diffCalls, flush } from '../lib/redis-server.js';
import { scriptNames } from '../lib/script-names.js';
import { deferred, sleep, within } from '../lib/util.js';
import * as bull from './bullmq.js';
import type { RunContext } from './context.js';
import { withTown } from './tinytown.js';

export interface CommandCount {
  system: string;
  /** How completion was awaited. */
  mode: string;
  tasks: number;
  /** Client-sent commands per task, by command (EVALSHA split by script). */
  client: Record<string, number>;
  clientPerTask: number;
  /** Commands executed inside scripts per task, by command. */
  inScripts: Record<string, number>;
  inScriptsPerTask: number;
  /** `INFO commandstats` delta per task (client + in-script). */
  commandstats: Record<string, number>;
  commandstatsPerTask: number;
}

const IGNORED = new Set(['info', 'monitor']);

/** Counts what `work` makes Redis do; `tasks` divides. */
async function count(ctx: RunContext, system: string, mode: string, tasks: number, work: () => Promise<void>): Promise<CommandCount> {
  const admin = ctx.redis.admin;
  const labels = await scriptNames();
  const client = new Map<string, number>();
  const inScripts = new Map<string, number>();
  const monitor: Redis = await admin.monitor();
  // Lines still in the socket at disconnect reach ioredis outside monitoring mode: it reports
  // "Command queue state error", harmless here.
  monitor.on('error', () => undefined);
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    let cmd = String(args[0] ?? '').toLowerCase();
    if (IGNORED.has(cmd)) return;
    const target = source === 'lua' ? inScripts : client;
    if (cmd === 'evalsha' || cmd === 'evalsha_ro') cmd = `evalsha ${labels.get(String(args[1])) ?? String(args[1]).slice(0, 8)}`;
    target.set(cmd, (target.get(cmd) ?? 0) + 1);
  });
  await sleep(50);
  const before = await commandCalls(admin);
  await work();
  await sleep(50);
  const after = await commandCalls(admin);
  monitor.disconnect();
  const stats = diffCalls(before, after);
  for (const cmd of IGNORED) stats.delete(cmd);
  const perTask = (m: Map<string, number>): Record<string, number> =>
    Object.fromEntries([...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v / tasks]));
  const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0) / tasks;
  return {
    system,
    mode,
    tasks,
    client: perTask(client),
    clientPerTask: total(client),
    inScripts: perTask(inScripts),
    inScriptsPerTask: total(inScripts),
    commandstats: perTask(stats),
    commandstatsPerTask: total(stats),
  };
}

/** tinytown: assign → handler → finish, completion heard from `town.on('task.completed')`. */
function tinytown(ctx: RunContext, mode: 'events' | 'waitForTask'): Promise<CommandCount> {
  return withTown(ctx, async (town) => {
    const agent = await town.spawnAgent('a', { run: () => 'ok' });
    let completed: (() => void) | undefined;
    if (mode === 'events') town.on('task.completed', () => completed?.());
    const one = async (): Promise<void> => {
      const signal = deferred<void>();
      completed = signal.resolve;
      const record = await agent.assign('count');
      if (mode === 'events') await within(signal.promise, 10_000, 'completion event');
      else await town.waitForTask(record.id, { timeoutMs: 10_000 });
      await sleep(1);
    };
    for (let i = 0; i < 10; i++) await one();
    const n = ctx.sizes.roundTripTasks;
    return count(ctx, 'tinytown', mode === 'events' ? 'assign; town.on(task.completed)' : 'assign; waitForTask', n, async () => {
      for (let i = 0; i < n; i++) await one();
    });
  });
}

/** BullMQ: add → processor → moveToFinished, completion heard from the worker or QueueEvents. */
function bullmq(ctx: RunContext, mode: 'worker' | 'waitUntilFinished'): Promise<CommandCount> {
  return bull.withBull(ctx, { processor: async () => 'ok', events: mode === 'waitUntilFinished' }, async ({ queue, workers, events }) => {
    const worker = workers[0]!;
    const one = async (): Promise<void> => {
      const done = new Promise<void>((resolve) => worker.once('completed', () => resolve()));
      const job = await queue.add('count', {});
      if (mode === 'worker') await within(done, 10_000, 'completion');
      else await job.waitUntilFinished(events!, 10_000);
      await sleep(1);
    };
    for (let i = 0; i < 10; i++) await one();
    const n = ctx.sizes.roundTripTasks;
    return count(ctx, 'bullmq', mode === 'worker' ? 'add; worker.on(completed)' : 'add; waitUntilFinished', n, async () => {
      for (let i = 0; i < n; i++) await one();
    });
  });
}

export async function countRoundTrips(ctx: RunContext): Promise<CommandCount[]> {
  const out: CommandCount[] = [];
  for (const run of [
    () => tinytown(ctx, 'events'),
    () => bullmq(ctx, 'worker'),
    () => tinytown(ctx, 'waitForTask'),
    () => bullmq(ctx, 'waitUntilFinished'),
  ]) {
    await flush(ctx.redis.admin);
    out.push(await run());
  }
  return out;
}
