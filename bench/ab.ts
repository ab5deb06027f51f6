/**
 * Interleaved A/B of two builds of tinytown on the throughput scenario (50 agents, 3,000 no-op
 * tasks assigned at once, until `waitForIdle`): both builds are loaded in one process against
 * one Redis and alternate run by run, so the drift of a shared VM (±30 % from one minute to
 * the next here) hits both alike. Prints the median rate, Node and Redis CPU per task of each,
 * and how many rounds the second won.
 *
 *   npm run build && cp -r dist /tmp/before      # on the old revision
 *   npm run build                                 # on the new one
 *   npx tsx bench/ab.ts /tmp/before/index.js dist/index.js [rounds=10]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as Tinytown from 'tinytown';
import { cpuMeter } from './lib/cpu.js';
import { flush, startRedis, type BenchRedis } from './lib/redis-server.js';
import { median } from './lib/stats.js';

const AGENTS = 50;
const TASKS = 3_000;

interface Sample {
  rate: number;
  nodeUs: number;
  redisUs: number;
}

/** One throughput run of one build, on an empty server. */
async function run(lib: typeof Tinytown, redis: BenchRedis): Promise<Sample> {
  await flush(redis.admin);
  const dir = await mkdtemp(join(tmpdir(), 'tt-ab-'));
  const town = await lib.Town.connect(dir, { redis: redis.unixUrl, name: 'bench' });
  town.on('error', (err) => console.error('  tinytown error:', err instanceof Error ? err.message : err));
  try {
    const agents = await Promise.all(Array.from({ length: AGENTS }, (_, i) => town.spawnAgent(`w${i}`, { run: () => undefined })));
    const assignAll = (n: number): Promise<unknown> => Promise.all(Array.from({ length: n }, (_, i) => agents[i % AGENTS]!.assign(`t${i}`)));
    await assignAll(AGENTS * 2); // warm-up round
    await lib.waitForIdle(agents, { timeoutMs: 60_000 });
    const cpu = await cpuMeter(redis.admin);
    const t0 = performance.now();
    await assignAll(TASKS);
    await lib.waitForIdle(agents, { timeoutMs: 120_000 });
    const seconds = (performance.now() - t0) / 1000;
    const { nodeUs, redisUs } = await cpu();
    return { rate: TASKS / seconds, nodeUs: nodeUs / TASKS, redisUs: redisUs / TASKS };
  } finally {
    await town.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const [a, b, roundsArg] = process.argv.slice(2);
  if (a === undefined || b === undefined) throw new Error('usage: npx tsx bench/ab.ts <A/index.js> <B/index.js> [rounds]');
  const rounds = Number(roundsArg ?? 10);
  const builds = [a, b];
  const libs = (await Promise.all(builds.map((p) => import(pathToFileURL(resolve(p)).href)))) as (typeof Tinytown)[];
  const redis = await startRedis();
  const samples: Sample[][] = [[], []];
  try {
    for (let round = 0; round < rounds; round++) {
      // Alternate which goes first: the second of a pair meets a warmer process.
      for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) samples[i]!.push(await run(libs[i]!, redis));
      process.stderr.write(`round ${round + 1}/${rounds}\n`);
    }
  } finally {
    await redis.stop();
  }
  builds.forEach((build, i) => {
    const s = samples[i]!;
    console.log(
      `${i === 0 ? 'A' : 'B'} ${build}: ${median(s.map((x) => x.rate)).toFixed(0)} tasks/s, Node ${median(s.map((x) => x.nodeUs)).toFixed(0)} µs/task, ` +
        `Redis ${median(s.map((x) => x.redisUs)).toFixed(0)} µs/task (rates: ${s.map((x) => x.rate.toFixed(0)).join(' ')})`,
    );
  });
  const [ra, rb] = samples.map((s) => s.map((x) => x.rate)) as [number[], number[]];
  const wins = rb.filter((r, i) => r > ra[i]!).length;
  console.log(`B ÷ A: ${(median(rb) / median(ra)).toFixed(3)} (medians); B faster in ${wins} of ${rounds} rounds`);
}

await main();
