/**
 * SPEC §4 proven by breaking things: workers in their own OS processes (runWorker) killed with
 * SIGKILL mid-task again and again, frozen with SIGSTOP past their lease, and a sweeper that runs
 * in every process but once per interval per town. Everything runs against a private
 * redis-server (this file's own), never the shared test Redis.
 *
 * Deterministic by construction: kills happen on a line the worker prints when a task starts
 * (while its handler is still sleeping), and every wait is on an event or a worker's output.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseEvent } from '../src/events/types.js';
import { Town, type TownEvent, type TownOptions } from '../src/index.js';
import { builtPackage } from './helpers/build.js';
import {
  killAllWorkerProcesses,
  startRestartableRedis,
  startWorkerProcess,
  type RestartableRedis,
  type WorkerProcessOptions,
} from './helpers/faults.js';
import { eventually, procState, sleep, watchCommands } from './helpers/kit.js';
import { tempDir, track, uniqueName } from './helpers/town.js';

const WAIT = { timeoutMs: 20_000 };
let server: RestartableRedis;
let dist = '';
const clients: Redis[] = [];

beforeAll(async () => {
  [server, { esm: dist }] = await Promise.all([startRestartableRedis(), builtPackage()]);
}, 60_000);

afterEach(() => {
  killAllWorkerProcesses();
  for (const client of clients.splice(0)) client.disconnect();
});

afterAll(async () => {
  await server?.stop();
});

function raw(): Redis {
  const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  clients.push(client);
  return client;
}

async function open(options: TownOptions = {}): Promise<Town> {
  return track(await Town.connect(await tempDir(), { redis: server.url, name: uniqueName(), ...options }));
}

const prefixOf = (town: Town): string => `tt:{${town.name}}:`;

/** The town's whole event stream, read raw. */
async function history(town: Town): Promise<TownEvent[]> {
  const entries = await raw().xrange(`${prefixOf(town)}events`, '-', '+');
  return entries.map(([id, fields]) => parseEvent(id, fields)).filter((e): e is TownEvent => e !== undefined);
}

function countBy<T>(items: readonly T[], key: (item: T) => string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const item of items) {
    const k = key(item);
    if (k !== undefined) out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

function worker(town: Town, agent: string, more: Partial<WorkerProcessOptions> = {}) {
  return startWorkerProcess({ dist, redisUrl: server.url, root: town.root, town: town.name, agent, handler: 'ok', ...more });
}

describe('workers killed with SIGKILL mid-task, five times in a row', () => {
  it('every task ends completed exactly once, each kill costs one recorded attempt', async () => {
    const town = await open({ leaseMs: 600 }); // this process sweeps every 300 ms
    const agent = await town.spawnAgent('victim', { start: false, claimBacklog: true });
    const tasks = [];
    for (let i = 0; i < 8; i++) tasks.push(await agent.assign({ description: `job ${i}`, maxAttempts: 10 }));

    const KILLS = 5;
    // Each worker finishes one task, then is killed while its handler sleeps through the next;
    // a fresh worker for the same agent starts at once (it attaches as soon as the dead one's
    // lease is gone: a live worker never keeps a dead worker's claim alive).
    const options = { handler: 'slow', slowMs: 600, leaseMs: 600, waitForLease: true, claimBacklog: true } as const;
    const procs = [];
    const killedMidRun: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      const proc = await worker(town, 'victim', options);
      procs.push(proc);
      const [taskId] = await proc.nth('started', 2, 20_000);
      await proc.kill();
      killedMidRun.push(taskId!);
    }
    procs.push(await worker(town, 'victim', options));
    const records = await Promise.all(tasks.map((t) => town.waitForTask(t.id, WAIT)));

    expect(records.map((r) => r.state)).toEqual(tasks.map(() => 'completed'));
    const events = await history(town);
    const completed = countBy(events.filter((e) => e.type === 'task.completed'), (e) => e.taskId);
    for (const t of tasks) expect(completed.get(t.id), `completions of ${t.description}`).toBe(1);
    expect(events.filter((e) => e.type === 'task.failed')).toEqual([]);

    // No run was killed after its handler returned, so no task ran to its end twice.
    const finished = countBy(procs.flatMap((p) => p.all('finished')), (words) => words[0]);
    for (const t of tasks) expect(finished.get(t.id), `finished runs of ${t.description}`).toBe(1);

    // Attempts: one per start, so each kill shows as exactly one extra attempt.
    const starts = countBy(procs.flatMap((p) => p.all('started')), (words) => words[0]);
    for (const r of records) expect(r.attempts, `attempts of ${r.description}`).toBe(starts.get(r.id));
    expect(records.reduce((sum, r) => sum + r.attempts, 0)).toBe(tasks.length + KILLS);
    const reclaimed = events.filter((e) => e.type === 'task.reclaimed');
    expect(reclaimed.map((e) => e.taskId)).toEqual(killedMidRun);
    for (const id of killedMidRun) expect(records.find((r) => r.id === id)!.attempts).toBeGreaterThanOrEqual(2);

    // Nothing of the dead workers is left behind.
    const redis = raw();
    const p = prefixOf(town);
    const last = procs[procs.length - 1]!;
    expect(await redis.hkeys(`${p}workers`)).toEqual([last.workerId]);
    for (const proc of procs.slice(0, -1)) {
      expect(await redis.exists(`${p}processing:${proc.workerId}`, `${p}lease:${proc.workerId}`)).toBe(0);
    }
    const status = await town.status();
    expect(status.tasks).toMatchObject({ completed: tasks.length, running: 0, assigned: 0, pending: 0, failed: 0 });
    expect(status.backlog).toBe(0);
    expect((await agent.info()).tasksCompleted).toBe(tasks.length);
  }, 90_000);
});

describe('a worker frozen (SIGSTOP) past its lease, replaced by a worker in another process', () => {
  it('has its late completion rejected, leaves the agent to its successor, and steals nothing after it thaws', async () => {
    const town = await open(); // default lease: only the successor's registration reclaims
    const agent = await town.spawnAgent('frozen', { start: false });
    const zombie = await worker(town, 'frozen', { handler: 'stop-self', leaseMs: 600 });
    const task = await agent.assign('contested work');
    await zombie.nth('started');
    await eventually(async () => ((await procState(zombie.pid)) === 'T' ? true : undefined), 5_000, 'zombie stopped');

    const successor = await worker(town, 'frozen', { handler: 'ok', leaseMs: 600, waitForLease: true });
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'completed', result: 'child result', attempts: 2 });

    // Thawed, the zombie returns 'zombie result' at once: the fence refuses it.
    zombie.child.kill('SIGCONT');
    await zombie.nth('worker-done'); // it learns it lost its lease and leaves
    const more = [];
    for (let i = 0; i < 5; i++) more.push(await agent.assign(`after the thaw ${i}`));
    const records = await Promise.all(more.map((t) => town.waitForTask(t.id, WAIT)));
    expect(records.map((r) => r.result)).toEqual(more.map(() => 'child result'));
    expect(records.map((r) => r.attempts)).toEqual(more.map(() => 1));
    expect(zombie.all('started').map((w) => w[0])).toEqual([task.id]);

    const events = await history(town);
    const rejected = events.filter((e) => e.type === 'task.rejected');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ taskId: task.id, data: expect.objectContaining({ workerId: zombie.workerId }) });
    expect(events.filter((e) => e.type === 'task.completed' && e.taskId === task.id)).toHaveLength(1);
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: 'child result', attempts: 2 });

    const info = await agent.info();
    expect(info).toMatchObject({ workerId: successor.workerId, tasksCompleted: 6 });
    expect(['idle', 'working']).toContain(info.state);
    const redis = raw();
    const p = prefixOf(town);
    expect(await redis.exists(`${p}processing:${zombie.workerId}`, `${p}lease:${zombie.workerId}`)).toBe(0);
    expect(await redis.hkeys(`${p}workers`)).toEqual([successor.workerId]);
  }, 60_000);

  it('does not swallow work assigned after it was reclaimed while it idled in BLMOVE', async () => {
    // A frozen worker's BLMOVE stays blocked on the server. Were it still blocked when the
    // agent's next task arrives, the server would move that task into the frozen worker's
    // processing list, which nobody reclaims once the worker is forgotten: the task would be
    // lost with the process. A BLMOVE therefore never outlives the worker's heartbeat interval.
    const town = await open({ leaseMs: 900 });
    const agent = await town.spawnAgent('idler', { start: false });
    const frozen = await worker(town, 'idler', { handler: 'ok', leaseMs: 900 });
    const redis = raw();
    // Freeze it while its BLMOVE is blocked on the server.
    await eventually(async () => {
      const list = (await redis.client('LIST')) as string;
      return list.split('\n').some((l) => l.includes('name=tinytown:worker:idler') && l.includes('cmd=blmove')) ? true : undefined;
    }, 5_000, 'a blocked BLMOVE');
    frozen.child.kill('SIGSTOP');
    const stateEvents = town.events({ types: ['agent.state'], agent: 'idler' })[Symbol.asyncIterator]();
    // The sweeper finds its lease gone and forgets it: the agent goes to error.
    for (;;) {
      const { value } = await stateEvents.next();
      if ((value as TownEvent).data.newState === 'error') break;
    }
    void stateEvents.return?.(undefined);

    await town.runWorker('idler', { run: async () => 'served by the successor' });
    const task = await agent.assign('must not be swallowed');
    expect(await town.waitForTask(task.id, { timeoutMs: 4_000 })).toMatchObject({ state: 'completed', result: 'served by the successor' });
    await frozen.kill();
    expect(await redis.exists(`${prefixOf(town)}processing:${frozen.workerId}`)).toBe(0);
  }, 30_000);
});

describe('the sweeper', () => {
  it('runs in every process, yet once per interval per town', async () => {
    // Five Town handles in this process and two worker processes, all with a 400 ms lease:
    // unguarded they would sweep 7 × 5 times a second.
    const leaseMs = 400;
    const towns = [await open({ leaseMs })];
    for (let i = 0; i < 4; i++) towns.push(track(await Town.connect(towns[0]!.root, { redis: server.url, name: towns[0]!.name, leaseMs })));
    await towns[0]!.spawnAgent('a', { start: false });
    await towns[0]!.spawnAgent('b', { start: false });
    await worker(towns[0]!, 'a', { leaseMs, townLeaseMs: leaseMs });
    await worker(towns[0]!, 'b', { leaseMs, townLeaseMs: leaseMs });

    const sweepSha = await sweepScriptSha();
    const monitor = new Redis(server.url);
    clients.push(monitor);
    const key = `${prefixOf(towns[0]!)}events`;
    let sweeps = 0;
    const m = await watchCommands(monitor, (_time, args) => {
      if (args[3] !== key) return;
      // A script's first call on a connection is an EVAL of its source, then EVALSHA.
      const name = args[0]?.toLowerCase();
      if ((name === 'evalsha' && args[1] === sweepSha) || (name === 'eval' && args[1]?.includes('-- sweep v'))) sweeps++;
    });
    await sleep(leaseMs + 1_000); // every process past the sweeper's grace after connecting
    sweeps = 0;
    const windowMs = 2_000;
    await sleep(windowMs); // counting what happens in a window of time: nothing to wait for
    m.stop();
    const interval = leaseMs / 2;
    // At most one per interval (a lock taken just before the window may let one more through);
    // unguarded, these seven processes would run about 7 × 10. And sweeps do run.
    console.log(`sweeps of one town in ${windowMs} ms by 7 processes with a ${interval} ms interval: ${sweeps}`);
    expect(sweeps).toBeLessThanOrEqual(windowMs / interval + 2);
    expect(sweeps).toBeGreaterThanOrEqual(2);
  }, 30_000);
});

/** The SHA1 of the sweep script as loaded (lib.lua prepended), as it appears in EVALSHA. */
async function sweepScriptSha(): Promise<string> {
  const { createHash } = await import('node:crypto');
  const lib = (await import('../src/store/lua/lib.lua')).default;
  const sweep = (await import('../src/store/lua/sweep.lua')).default;
  return createHash('sha1').update(`${lib}\n${sweep}`).digest('hex');
}
