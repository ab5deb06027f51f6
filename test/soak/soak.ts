/**
 * Soak test (not part of `npm test`): about a thousand tasks across worker processes while the
 * script keeps breaking things — SIGKILLs of random workers (each replaced at once), every
 * client connection killed now and then, and redis-server itself killed and restarted from its
 * AOF. At the end it prints
 *
 *   N tasks, K kills, 0 lost, 0 duplicated
 *
 * and exits non-zero unless both are 0.
 *
 * Definitions. Work is at-least-once: a run killed after its handler returned but before its
 * result was recorded runs again (reported as "re-runs", which are allowed). What must never
 * happen:
 *   - lost: an acknowledged task (its `assign` resolved) that is not `completed` at the end;
 *   - duplicated: a task completed more than once (more than one `task.completed` event), or a
 *     run of a task that no recorded attempt accounts for (more `started` runs than `attempts`:
 *     work done behind the fence's back, e.g. after the task had been completed).
 *
 *   npm run soak                       # ~150 s, 1000 tasks, 4 agents
 *   npm run soak -- --seconds 60 --tasks 500 --agents 3 --no-redis-kills
 *
 * Runs against a private redis-server (appendfsync always) and the package built from src/.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import type * as Tinytown from '../../src/index.js';
import { builtPackage } from '../helpers/build.js';
import { killAllWorkerProcesses, startRestartableRedis, startWorkerProcess, type WorkerProcess } from '../helpers/faults.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.SOAK_SECONDS ?? '150' },
    tasks: { type: 'string', default: process.env.SOAK_TASKS ?? '1000' },
    agents: { type: 'string', default: process.env.SOAK_AGENTS ?? '4' },
    'lease-ms': { type: 'string', default: '1000' },
    'kill-every-ms': { type: 'string', default: '1500' },
    'no-client-kills': { type: 'boolean', default: false },
    'no-redis-kills': { type: 'boolean', default: false },
    seed: { type: 'string' },
  },
});
const SECONDS = Number(args.seconds);
const TASKS = Number(args.tasks);
const AGENTS = Number(args.agents);
const LEASE_MS = Number(args['lease-ms']);
const KILL_EVERY_MS = Number(args['kill-every-ms']);

// A small seeded PRNG, so a failing run can be replayed with --seed.
let seed = Number(args.seed ?? Date.now() % 2 ** 31);
const initialSeed = seed;
const random = (): number => {
  seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
  return seed / 2 ** 31;
};
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line: string): void => console.log(`[${((Date.now() - startedAt) / 1000).toFixed(1).padStart(6)}s] ${line}`);

const startedAt = Date.now();
const { esm } = await builtPackage();
const { Town } = (await import(pathToFileURL(esm).href)) as typeof Tinytown;
const server = await startRestartableRedis({ appendfsync: 'always' });
const root = await mkdtemp(join(tmpdir(), 'tt-soak-'));
const name = `soak-${process.pid}`;
const town = await Town.connect(root, { redis: server.url, name, leaseMs: LEASE_MS, eventsMaxLen: 10_000_000 });
town.on('error', () => undefined); // faults are the point here; tinytown retries them

const agentNames = Array.from({ length: AGENTS }, (_, i) => `soaker-${i}`);
const agents: Tinytown.Agent[] = [];
for (const agentName of agentNames) agents.push(await town.spawnAgent(agentName, { start: false, claimBacklog: true, maxAttempts: 50 }));

const workerOptions = (agent: string) => ({
  dist: esm,
  redisUrl: server.url,
  root,
  town: name,
  agent,
  handler: 'slow' as const,
  leaseMs: LEASE_MS,
  townLeaseMs: LEASE_MS,
  waitForLease: true,
  claimBacklog: true,
});
const live = new Map<string, WorkerProcess>();
const all: WorkerProcess[] = [];
for (const agentName of agentNames) {
  const proc = await startWorkerProcess(workerOptions(agentName));
  live.set(agentName, proc);
  all.push(proc);
}
log(`${AGENTS} worker processes up; ${TASKS} tasks over ${SECONDS} s, lease ${LEASE_MS} ms, seed ${initialSeed}`);

const acknowledged: string[] = [];
let assignFailures = 0;
let kills = 0;
let clientKills = 0;
let redisKills = 0;
let stopping = false;
const deadline = startedAt + SECONDS * 1000;

// Producer: spreads the tasks over ~80 % of the run; each takes 20–400 ms.
const producer = (async () => {
  const spread = SECONDS * 800;
  for (let i = 0; i < TASKS; i++) {
    const due = startedAt + (spread * i) / TASKS;
    if (due > Date.now()) await sleep(due - Date.now());
    const description = `soak ${i} [ms=${20 + Math.floor(random() * 380)}]`;
    for (;;) {
      try {
        const task = i % 10 === 9 ? await town.backlog.add(description) : await pick(agents).assign(description);
        acknowledged.push(task.id);
        break;
      } catch {
        assignFailures++; // not acknowledged (Redis was away too long): try again
        await sleep(200);
      }
    }
  }
})();

// Chaos: SIGKILL a random worker (replaced at once), now and then every client connection,
// and now and then redis-server itself.
const admin = new Redis(server.url, { maxRetriesPerRequest: 1, retryStrategy: () => 100 });
admin.on('error', () => undefined);
const chaos = (async () => {
  let nextClientKill = Date.now() + 10_000;
  let nextRedisKill = Date.now() + 25_000;
  while (Date.now() < deadline && !stopping) {
    await sleep(KILL_EVERY_MS * (0.5 + random()));
    if (Date.now() >= deadline) break;
    const victim = pick(agentNames);
    const proc = live.get(victim)!;
    await proc.kill();
    kills++;
    const replacement = await startWorkerProcess(workerOptions(victim));
    live.set(victim, replacement);
    all.push(replacement);
    if (!args['no-client-kills'] && Date.now() >= nextClientKill) {
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal').catch(() => undefined);
      clientKills++;
      nextClientKill = Date.now() + 8_000 + random() * 8_000;
    }
    if (!args['no-redis-kills'] && Date.now() >= nextRedisKill) {
      await server.kill('SIGKILL');
      await sleep(200 + random() * 800);
      await server.restart();
      redisKills++;
      log(`redis-server killed and restarted (${redisKills})`);
      nextRedisKill = Date.now() + 20_000 + random() * 20_000;
    }
    if (kills % 10 === 0) log(`${kills} worker kills, ${acknowledged.length} tasks assigned`);
  }
})();

let exitCode = 1;
try {
  await Promise.all([producer, chaos]);
  stopping = true;
  log(`chaos over: ${kills} worker kills, ${clientKills} connection kills, ${redisKills} redis restarts; waiting for the last tasks`);
  const pending = new Set(acknowledged);
  const waitDeadline = Date.now() + 120_000;
  await Promise.all(
    acknowledged.map((id) =>
      town.waitForTask(id, { timeoutMs: Math.max(1, waitDeadline - Date.now()) }).then(
        () => pending.delete(id),
        () => undefined,
      ),
    ),
  );

  const records = await Promise.all(acknowledged.map((id) => town.task(id).catch(() => undefined)));
  const entries = await admin.xrange(`tt:{${name}}:events`, '-', '+');
  const completions = new Map<string, number>();
  for (const [, fields] of entries) {
    const type = fields[fields.indexOf('event_type') + 1];
    if (type !== 'task_completed') continue;
    const data = JSON.parse(fields[fields.indexOf('data') + 1]!) as { task_id?: string };
    if (data.task_id) completions.set(data.task_id, (completions.get(data.task_id) ?? 0) + 1);
  }
  const starts = new Map<string, number>();
  const finishes = new Map<string, number>();
  for (const proc of all) {
    for (const [id] of proc.all('started')) starts.set(id!, (starts.get(id!) ?? 0) + 1);
    for (const [id] of proc.all('finished')) finishes.set(id!, (finishes.get(id!) ?? 0) + 1);
  }

  const lost = records.filter((r) => r?.state !== 'completed');
  const duplicated = acknowledged.filter((id, i) => (completions.get(id) ?? 0) > 1 || (starts.get(id) ?? 0) > (records[i]?.attempts ?? 0));
  const reruns = acknowledged.filter((id) => (finishes.get(id) ?? 0) > 1).length;
  const reclaimedAttempts = records.reduce((sum, r) => sum + Math.max(0, (r?.attempts ?? 1) - 1), 0);
  for (const r of lost.slice(0, 10)) log(`lost: ${r ? `${r.id} ${r.state} attempts=${r.attempts} ${r.error ?? ''}` : '(record missing)'}`);
  for (const id of duplicated.slice(0, 10)) log(`duplicated: ${id} completions=${completions.get(id) ?? 0} runs=${starts.get(id) ?? 0}`);
  log(
    `details: ${reclaimedAttempts} runs cut short by a kill and run again, ${reruns} re-runs after the handler had returned ` +
      `(at-least-once), ${clientKills} connection kills, ${redisKills} redis restarts, ${assignFailures} assigns retried, ` +
      `${all.length} worker processes`,
  );
  console.log(`${acknowledged.length} tasks, ${kills} kills, ${lost.length} lost, ${duplicated.length} duplicated`);
  exitCode = lost.length === 0 && duplicated.length === 0 && acknowledged.length === TASKS ? 0 : 1;
} finally {
  stopping = true;
  killAllWorkerProcesses();
  admin.disconnect();
  await town.close();
  await server.stop();
  await rm(root, { recursive: true, force: true });
}
process.exit(exitCode);
