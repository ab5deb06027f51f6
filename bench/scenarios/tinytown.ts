/**
 * The tinytown side of every scenario, through the public API of the built package only.
 */
import { rm } from 'node:fs/promises';
import { Town, waitForIdle, type Agent } from 'tinytown';
import { cpuMeter } from '../lib/cpu.js';
import { keyMemoryBreakdown } from '../lib/memory.js';
import { usedMemory } from '../lib/redis-server.js';
import { latencyMetrics, percentile } from '../lib/stats.js';
import { counter, deferred, inWaves, now, sleep, townDir, within } from '../lib/util.js';
import type { RunContext, RunResult } from './context.js';
import { CLI_FIXTURE, pairedWithBareSpawn, PROMPT } from './spawn.js';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Opens a town on the bench Redis in a fresh folder, runs `fn`, closes the town. */
export async function withTown<T>(ctx: RunContext, fn: (town: Town) => Promise<T>): Promise<T> {
  const dir = await townDir();
  const town = await Town.connect(dir, { redis: ctx.url, name: 'bench' });
  town.on('error', (err) => console.error('  tinytown error:', err instanceof Error ? err.message : err));
  try {
    return await fn(town);
  } finally {
    await town.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** 1. `agent.assign` → the in-process handler starts, on an idle agent, one task at a time. */
export function dispatch(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    let started: ((t: number) => void) | undefined;
    const agent = await town.spawnAgent('a', {
      run: () => {
        started?.(now());
        return 'ok';
      },
    });
    const samples: number[] = [];
    const { warmup, dispatchTasks } = ctx.sizes;
    for (let i = 0; i < warmup + dispatchTasks; i++) {
      const signal = deferred<number>();
      started = signal.resolve;
      const t0 = now();
      const record = await agent.assign('dispatch');
      const t1 = await within(signal.promise, 10_000, 'handler start');
      await town.waitForTask(record.id, { timeoutMs: 10_000 });
      if (i >= warmup) samples.push(t1 - t0);
      await sleep(1); // the worker is back in BLMOVE: the next task meets an idle, blocked agent
    }
    return { metrics: latencyMetrics('dispatch', samples) };
  });
}

/** 2. `assign` → `town.waitForTask(id)` resolves, one task at a time. */
export function endToEnd(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    const agent = await town.spawnAgent('a', { run: () => 'ok' });
    const samples: number[] = [];
    const { warmup, e2eTasks } = ctx.sizes;
    for (let i = 0; i < warmup + e2eTasks; i++) {
      const t0 = now();
      const record = await agent.assign('e2e');
      const final = await town.waitForTask(record.id, { timeoutMs: 10_000 });
      if (i >= warmup) samples.push(now() - t0);
      if (final.state !== 'completed') throw new Error(`task ended ${final.state}`);
    }
    return { metrics: latencyMetrics('e2e', samples) };
  });
}

async function spawnNoopAgents(town: Town, count: number): Promise<Agent[]> {
  return Promise.all(range(count).map((i) => town.spawnAgent(`w${i}`, { run: () => undefined })));
}

/** Assigns `n` tasks round-robin, all in flight at once. */
function assignAll(agents: readonly Agent[], n: number): Promise<unknown> {
  return Promise.all(range(n).map((i) => agents[i % agents.length]!.assign(`t${i}`)));
}

/** 3. Throughput: N agents, no-op handlers, tasks assigned concurrently, until all idle. */
export function throughput(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    const { throughputAgents, throughputTasks } = ctx.sizes;
    const agents = await spawnNoopAgents(town, throughputAgents);
    await assignAll(agents, throughputAgents * 2); // warm-up round
    await waitForIdle(agents, { timeoutMs: 60_000 });
    const cpu = await cpuMeter(ctx.redis.admin);
    const t0 = now();
    await assignAll(agents, throughputTasks);
    const assigned = now();
    await waitForIdle(agents, { timeoutMs: 120_000 });
    const t1 = now();
    const { redisUs, nodeUs } = await cpu();
    return {
      metrics: {
        'throughput.tasksPerSec': throughputTasks / ((t1 - t0) / 1000),
        'throughput.assignPhaseMs': assigned - t0,
        'throughput.totalMs': t1 - t0,
        'throughput.redisCpuUsPerTask': redisUs / throughputTasks,
        'throughput.nodeCpuUsPerTask': nodeUs / throughputTasks,
      },
    };
  });
}

/**
 * 3b. Same work, but completion is counted from `town.on('task.completed')` instead of
 * `waitForIdle`: separates the cost of the waits from the cost of the work.
 */
export function throughputByEvents(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    const { throughputAgents, throughputTasks } = ctx.sizes;
    const agents = await spawnNoopAgents(town, throughputAgents);
    let done = counter(throughputAgents * 2);
    town.on('task.completed', () => done.bump());
    await assignAll(agents, throughputAgents * 2);
    await within(done.done, 60_000, 'warm-up');
    done = counter(throughputTasks);
    const cpu = await cpuMeter(ctx.redis.admin);
    const t0 = now();
    await assignAll(agents, throughputTasks);
    await within(done.done, 120_000, 'throughput run');
    const t1 = now();
    const { redisUs, nodeUs } = await cpu();
    return {
      metrics: {
        'throughput.tasksPerSec': throughputTasks / ((t1 - t0) / 1000),
        'throughput.totalMs': t1 - t0,
        'throughput.redisCpuUsPerTask': redisUs / throughputTasks,
        'throughput.nodeCpuUsPerTask': nodeUs / throughputTasks,
      },
    };
  });
}

/**
 * 4. Scale: many cold agents (`start: false`: registered, no worker, no blocking connection)
 * and many queued tasks. Spawn rate, assign rate, `status()` latency, memory per queued task.
 */
export function scale(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    const { scaleAgents, scaleTasks, statusCalls } = ctx.sizes;
    const admin = ctx.redis.admin;
    const t0 = now();
    const agents = await Promise.all(range(scaleAgents).map((i) => town.spawnAgent(`s${i}`, { run: () => undefined, start: false })));
    const spawned = now();
    const memBefore = await usedMemory(admin);
    const t1 = now();
    await inWaves(range(scaleTasks), 1000, (i) => agents[i % agents.length]!.assign(`queued task ${i}`));
    const assigned = now();
    const memAfter = await usedMemory(admin);
    const status = await statusLatency(town, statusCalls, scaleAgents, scaleTasks);
    const extras = ctx.rep === 0 ? { keys: await keyMemoryBreakdown(admin, scaleTasks) } : undefined;
    return {
      metrics: {
        'scale.spawnPerSec': scaleAgents / ((spawned - t0) / 1000),
        'scale.assignPerSec': scaleTasks / ((assigned - t1) / 1000),
        'scale.statusP50Ms': status.p50,
        'scale.statusMaxMs': status.max,
        'scale.bytesPerQueuedTask': (memAfter - memBefore) / scaleTasks,
      },
      ...(extras && { extras }),
    };
  });
}

async function statusLatency(town: Town, calls: number, agents: number, tasks: number): Promise<{ p50: number; max: number }> {
  const check = await town.status();
  if (check.agents.length !== agents || check.tasks.assigned !== tasks) {
    throw new Error(`status() reports ${check.agents.length} agents / ${check.tasks.assigned} assigned, expected ${agents} / ${tasks}`);
  }
  await town.status();
  const samples: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t0 = now();
    await town.status();
    samples.push(now() - t0);
  }
  return { p50: percentile(samples, 50), max: Math.max(...samples) };
}

/**
 * 4b. Scale with live workers: every agent runs a worker in this process (one blocking BLMOVE
 * connection each). Spawn rate, `status()` with them all idle, and one task through the crowd.
 */
export function scaleWorkers(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    const { scaleWorkers: count, statusCalls } = ctx.sizes;
    const t0 = now();
    const agents: Agent[] = [];
    await inWaves(range(count), 100, async (i) => agents.push(await town.spawnAgent(`l${i}`, { run: () => 'ok' })));
    const spawned = now();
    const status = await statusLatency(town, statusCalls, count, 0);
    const e2e: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = now();
      const record = await agents[(i * 37) % agents.length]!.assign('through the crowd');
      await town.waitForTask(record.id, { timeoutMs: 10_000 });
      e2e.push(now() - t);
    }
    return {
      metrics: {
        'workers.spawnPerSec': count / ((spawned - t0) / 1000),
        'workers.statusP50Ms': status.p50,
        'workers.e2eP50Ms': percentile(e2e, 50),
      },
    };
  });
}

/** 5. A CLI agent whose CLI is a trivial node script, end to end (assign → waitForTask), paired with bare spawns. */
export function cliTask(ctx: RunContext): Promise<RunResult> {
  return withTown(ctx, async (town) => {
    const agent = await town.spawnAgent('cli', { cli: { command: process.execPath, args: [CLI_FIXTURE], prompt: 'stdin' } });
    return pairedWithBareSpawn(ctx.sizes.cliTasks, async () => {
      const record = await agent.assign(PROMPT);
      const final = await town.waitForTask(record.id, { timeoutMs: 30_000 });
      if (final.state !== 'completed') throw new Error(`CLI task ended ${final.state}: ${final.error ?? ''}`);
    });
  });
}
