/**
 * The BullMQ side of every scenario, on the same Redis, with BullMQ's defaults (completed jobs
 * are kept, as tinytown keeps finished tasks for its retention period).
 */
import { Queue, QueueEvents, Worker, type Job } from 'bullmq';
import { cpuMeter } from '../lib/cpu.js';
import { keyMemoryBreakdown } from '../lib/memory.js';
import { usedMemory } from '../lib/redis-server.js';
import { latencyMetrics, percentile } from '../lib/stats.js';
import { counter, deferred, inWaves, now, sleep, within } from '../lib/util.js';
import type { RunContext, RunResult } from './context.js';
import { bareSpawn, pairedWithBareSpawn } from './spawn.js';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const QUEUE = 'bench';

type Processor = (job: Job) => Promise<unknown>;

interface Bull {
  queue: Queue;
  workers: Worker[];
  events?: QueueEvents;
}

function connection(ctx: RunContext) {
  return { ...ctx.bullConnection, maxRetriesPerRequest: null };
}

/** Opens a queue, `workerCount` workers of `concurrency` each, and optionally QueueEvents. */
export async function withBull<T>(
  ctx: RunContext,
  setup: { processor: Processor; workers?: number; concurrency?: number; events?: boolean },
  fn: (bull: Bull) => Promise<T>,
): Promise<T> {
  const queue = new Queue(QUEUE, { connection: connection(ctx) });
  const workers = range(setup.workers ?? 1).map(
    () => new Worker(QUEUE, setup.processor, { connection: connection(ctx), concurrency: setup.concurrency ?? 1 }),
  );
  for (const w of workers) w.on('error', (err) => console.error('  bullmq worker error:', err.message));
  const events = setup.events ? new QueueEvents(QUEUE, { connection: connection(ctx) }) : undefined;
  try {
    await queue.waitUntilReady();
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    if (events) await events.waitUntilReady();
    return await fn({ queue, workers, ...(events && { events }) });
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await events?.close();
    await queue.close();
  }
}

/** Resolves with the next `completed` of one of `workers`. */
function nextCompleted(workers: readonly Worker[]): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      for (const w of workers) w.off('completed', done);
      resolve();
    };
    for (const w of workers) w.on('completed', done);
  });
}

/** 1. `queue.add` → the Worker's processor starts, one job at a time, idle worker. */
export async function dispatch(ctx: RunContext): Promise<RunResult> {
  let started: ((t: number) => void) | undefined;
  const processor: Processor = async () => {
    started?.(now());
    return 'ok';
  };
  return withBull(ctx, { processor }, async ({ queue, workers }) => {
    const samples: number[] = [];
    const { warmup, dispatchTasks } = ctx.sizes;
    for (let i = 0; i < warmup + dispatchTasks; i++) {
      const signal = deferred<number>();
      started = signal.resolve;
      const completed = nextCompleted(workers);
      const t0 = now();
      await queue.add('dispatch', { i });
      const t1 = await within(signal.promise, 10_000, 'processor start');
      await within(completed, 10_000, 'job completion');
      if (i >= warmup) samples.push(t1 - t0);
      await sleep(1); // the worker is back in its blocking wait
    }
    return { metrics: latencyMetrics('dispatch', samples) };
  });
}

/** 2. `queue.add` → `job.waitUntilFinished(queueEvents)`, one job at a time. */
export async function endToEnd(ctx: RunContext): Promise<RunResult> {
  return withBull(ctx, { processor: async () => 'ok', events: true }, async ({ queue, events }) => {
    const samples: number[] = [];
    const { warmup, e2eTasks } = ctx.sizes;
    for (let i = 0; i < warmup + e2eTasks; i++) {
      const t0 = now();
      const job = await queue.add('e2e', { i });
      await job.waitUntilFinished(events!, 10_000);
      if (i >= warmup) samples.push(now() - t0);
    }
    return { metrics: latencyMetrics('e2e', samples) };
  });
}

function addAll(queue: Queue, n: number): Promise<unknown> {
  return Promise.all(range(n).map((i) => queue.add('t', { i })));
}

/** 3. Throughput: jobs added concurrently, counted as workers complete them. */
function throughputWith(workers: number, concurrency: number) {
  return async (ctx: RunContext): Promise<RunResult> => {
    const { throughputAgents, throughputTasks } = ctx.sizes;
    return withBull(ctx, { processor: async () => undefined, workers, concurrency }, async (bull) => {
      let done = counter(throughputAgents * 2);
      for (const w of bull.workers) w.on('completed', () => done.bump());
      await addAll(bull.queue, throughputAgents * 2); // warm-up round
      await within(done.done, 60_000, 'warm-up');
      done = counter(throughputTasks);
      const cpu = await cpuMeter(ctx.redis.admin);
      const t0 = now();
      await addAll(bull.queue, throughputTasks);
      const added = now();
      await within(done.done, 120_000, 'throughput run');
      const t1 = now();
      const { redisUs, nodeUs } = await cpu();
      return {
        metrics: {
          'throughput.tasksPerSec': throughputTasks / ((t1 - t0) / 1000),
          'throughput.assignPhaseMs': added - t0,
          'throughput.totalMs': t1 - t0,
          'throughput.redisCpuUsPerTask': redisUs / throughputTasks,
          'throughput.nodeCpuUsPerTask': nodeUs / throughputTasks,
        },
      };
    });
  };
}

/** One worker, concurrency = the number of tinytown agents (the reference). */
export const throughput = (ctx: RunContext): Promise<RunResult> => throughputWith(1, ctx.sizes.throughputAgents)(ctx);
/** As many workers of concurrency 1 as tinytown has agents (one blocking connection each, like tinytown). */
export const throughputManyWorkers = (ctx: RunContext): Promise<RunResult> => throughputWith(ctx.sizes.throughputAgents, 1)(ctx);

/** 4. Scale: many waiting jobs (no worker): add rate, getJobCounts latency, memory per job. */
export async function scale(ctx: RunContext): Promise<RunResult> {
  const { scaleTasks, statusCalls } = ctx.sizes;
  const admin = ctx.redis.admin;
  const queue = new Queue(QUEUE, { connection: connection(ctx) });
  try {
    await queue.waitUntilReady();
    await queue.add('warm', {});
    const memBefore = await usedMemory(admin);
    const t1 = now();
    await inWaves(range(scaleTasks), 1000, (i) => queue.add('t', { description: `queued task ${i}` }));
    const added = now();
    const memAfter = await usedMemory(admin);
    const counts = await queue.getJobCounts();
    if ((counts.waiting ?? 0) < scaleTasks) throw new Error(`BullMQ reports ${counts.waiting} waiting, expected ${scaleTasks}`);
    const samples: number[] = [];
    for (let i = 0; i < statusCalls; i++) {
      const t0 = now();
      await queue.getJobCounts();
      samples.push(now() - t0);
    }
    const extras = ctx.rep === 0 ? { keys: await keyMemoryBreakdown(admin, scaleTasks) } : undefined;
    return {
      metrics: {
        'scale.assignPerSec': scaleTasks / ((added - t1) / 1000),
        'scale.statusP50Ms': percentile(samples, 50),
        'scale.statusMaxMs': Math.max(...samples),
        'scale.bytesPerQueuedTask': (memAfter - memBefore) / scaleTasks,
      },
      ...(extras && { extras }),
    };
  } finally {
    await queue.close();
  }
}

/** 5. A BullMQ job whose processor spawns the same script bare: add → waitUntilFinished, paired with bare spawns. */
export async function cliTask(ctx: RunContext): Promise<RunResult> {
  return withBull(ctx, { processor: () => bareSpawn(), events: true }, async ({ queue, events }) =>
    pairedWithBareSpawn(ctx.sizes.cliTasks, async () => {
      const job = await queue.add('cli', {});
      await job.waitUntilFinished(events!, 30_000);
    }),
  );
}
