/**
 * The throughput scenario split in its two phases, tinytown against BullMQ on one Redis:
 * 1. queueing 3,000 tasks while nothing runs (tinytown: 50 paused agents; BullMQ: no worker);
 * 2. draining them (tinytown: the agents resumed, until `waitForIdle`; BullMQ: a Worker with
 *    concurrency 50, until 3,000 `completed`).
 * For each phase: wall time, Node and Redis CPU per task, and the Redis time spent inside
 * scripts per task (`INFO commandstats`, EVALSHA: the commands a script runs included). In the
 * full scenario the two phases overlap; apart, they show which side of which phase costs what.
 *
 *   npm run build && npx tsx bench/phases.ts [reps=4]   # the first repetition is a warm-up
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { Town, waitForIdle } from 'tinytown';
import { cpuMeter } from './lib/cpu.js';
import { flush, startRedis, type BenchRedis } from './lib/redis-server.js';
import { median } from './lib/stats.js';
import { deferred } from './lib/util.js';

const AGENTS = 50;
const TASKS = 3_000;

interface Phase {
  ms: number;
  nodeUs: number;
  redisUs: number;
  scriptUs: number;
}

async function scriptUs(admin: Redis): Promise<number> {
  const text = await admin.info('commandstats');
  return Number(/^cmdstat_evalsha:calls=\d+,usec=(\d+)/m.exec(text)?.[1] ?? 0);
}

/** Measures one phase; per-task figures over {@link TASKS}. */
async function phase(admin: Redis, work: () => Promise<unknown>): Promise<Phase> {
  const script0 = await scriptUs(admin);
  const cpu = await cpuMeter(admin);
  const t0 = performance.now();
  await work();
  const ms = performance.now() - t0;
  const { nodeUs, redisUs } = await cpu();
  const script1 = await scriptUs(admin);
  return { ms, nodeUs: nodeUs / TASKS, redisUs: redisUs / TASKS, scriptUs: (script1 - script0) / TASKS };
}

async function tinytown(redis: BenchRedis): Promise<[Phase, Phase]> {
  const dir = await mkdtemp(join(tmpdir(), 'tt-phases-'));
  const town = await Town.connect(dir, { redis: redis.unixUrl, name: 'bench' });
  try {
    const agents = await Promise.all(Array.from({ length: AGENTS }, (_, i) => town.spawnAgent(`w${i}`, { run: () => undefined })));
    await Promise.all(agents.map((agent) => agent.pause()));
    const queued = await phase(redis.admin, () => Promise.all(Array.from({ length: TASKS }, (_, i) => agents[i % AGENTS]!.assign(`t${i}`))));
    const drained = await phase(redis.admin, async () => {
      await Promise.all(agents.map((agent) => agent.resume()));
      await waitForIdle(agents, { timeoutMs: 120_000 });
    });
    return [queued, drained];
  } finally {
    await town.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function bullmq(redis: BenchRedis): Promise<[Phase, Phase]> {
  const connection = { path: redis.socketPath, maxRetriesPerRequest: null };
  const queue = new Queue('bench', { connection });
  let worker: Worker | undefined;
  try {
    await queue.waitUntilReady();
    const queued = await phase(redis.admin, () => Promise.all(Array.from({ length: TASKS }, (_, i) => queue.add('t', { i }))));
    const drained = await phase(redis.admin, async () => {
      const all = deferred<void>();
      let done = 0;
      worker = new Worker('bench', async () => undefined, { connection, concurrency: AGENTS });
      worker.on('completed', () => {
        if (++done === TASKS) all.resolve();
      });
      await all.promise;
    });
    return [queued, drained];
  } finally {
    await worker?.close();
    await queue.close();
  }
}

async function main(): Promise<void> {
  const reps = Number(process.argv[2] ?? 4);
  const redis = await startRedis();
  const runs: Record<string, [Phase, Phase][]> = { tinytown: [], bullmq: [] };
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const [name, fn] of [['tinytown', tinytown], ['bullmq', bullmq]] as const) {
        await flush(redis.admin);
        const result = await fn(redis);
        if (rep > 0 || reps === 1) runs[name]!.push(result);
      }
      process.stderr.write(`rep ${rep + 1}/${reps}\n`);
    }
  } finally {
    await redis.stop();
  }
  console.log('| system | phase | wall ms | Node µs/task | Redis µs/task | in scripts µs/task |\n| --- | --- | ---: | ---: | ---: | ---: |');
  for (const [name, results] of Object.entries(runs)) {
    for (const [i, label] of ['queue 3,000', 'drain 3,000'].entries()) {
      const m = (pick: (p: Phase) => number, digits = 1): string => median(results.map((r) => pick(r[i]!))).toFixed(digits);
      console.log(`| ${name} | ${label} | ${m((p) => p.ms, 0)} | ${m((p) => p.nodeUs)} | ${m((p) => p.redisUs)} | ${m((p) => p.scriptUs)} |`);
    }
  }
}

await main();
