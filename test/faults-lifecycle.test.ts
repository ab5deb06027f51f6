/**
 * SPEC §4 around the edges of a run: graceful shutdown (close() lets a running task finish within
 * closeGraceMs or hands it back to the head of its queue; SIGTERM wired as the README shows),
 * races settled by the server (pause, drain, stop, cancel and an external complete or fail written
 * during a run win over the run's end), and retention (terminal tasks expire by themselves, the
 * stream is capped, no index points at a missing record). On this file's own redis-server.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseEvent } from '../src/events/types.js';
import { Town, type TownEvent, type TownOptions } from '../src/index.js';
import { builtPackage } from './helpers/build.js';
import { killAllWorkerProcesses, startRestartableRedis, startWorkerProcess, type RestartableRedis } from './helpers/faults.js';
import { gatedHandler } from './helpers/gated.js';
import { deferred, eventually } from './helpers/kit.js';
import { tempDir, uniqueName } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };
let server: RestartableRedis;
let dist = '';
const clients: Redis[] = [];
const towns: Town[] = [];

beforeAll(async () => {
  [server, { esm: dist }] = await Promise.all([startRestartableRedis(), builtPackage()]);
}, 60_000);

afterEach(async () => {
  killAllWorkerProcesses();
  for (const client of clients.splice(0)) client.disconnect();
  await Promise.all(towns.splice(0).map((t) => t.close()));
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

async function open(options: TownOptions = {}, like?: Town): Promise<Town> {
  const town = await Town.connect(like?.root ?? (await tempDir()), { redis: server.url, name: like?.name ?? uniqueName(), ...options });
  towns.push(town);
  return town;
}

const prefixOf = (town: Town): string => `tt:{${town.name}}:`;

async function history(town: Town): Promise<TownEvent[]> {
  const entries = await raw().xrange(`${prefixOf(town)}events`, '-', '+');
  return entries.map(([id, fields]) => parseEvent(id, fields)).filter((e): e is TownEvent => e !== undefined);
}

// ── graceful shutdown ─────────────────────────────────────────────────────────────────────

describe('graceful shutdown', () => {
  it('close() lets a running task finish within closeGraceMs; nothing is handed back', async () => {
    const town = await open({ closeGraceMs: 5_000 });
    const gated = gatedHandler();
    const agent = await town.spawnAgent('finisher', { run: gated.run });
    const task = await agent.assign('finishes during close');
    const queued = await agent.assign('queued behind it');
    await gated.started('finishes during close');
    let closed = false;
    const closing = town.close().then(() => (closed = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(false); // waiting for the run
    gated.release('finishes during close', 'done in time');
    await closing;

    const other = await open({}, town);
    expect(await other.task(task.id)).toMatchObject({ state: 'completed', result: 'done in time', attempts: 1 });
    // The queued task was not started: it waits, in its queue, for the next worker.
    expect(await other.task(queued.id)).toMatchObject({ state: 'assigned', attempts: 0 });
    expect((await (await other.agent('finisher')).inbox()).map((m) => m.taskId)).toEqual([queued.id]);
    expect(gated.log).toEqual(['finishes during close#1']);
    const events = await history(other);
    expect(events.filter((e) => e.type === 'task.reclaimed')).toEqual([]);
    expect(await other.agent('finisher').then((a) => a.info())).toMatchObject({ state: 'stopped', tasksCompleted: 1 });
  });

  it('past closeGraceMs, close() hands the running task back to the head of its queue (a hand-back, not a lost worker)', async () => {
    const town = await open({ closeGraceMs: 300 });
    const aborted = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('overrunner', {
      run: (_task, ctx) =>
        new Promise((_, reject) => {
          started.resolve();
          ctx.signal.addEventListener('abort', () => {
            aborted.resolve();
            reject(ctx.signal.reason);
          });
        }),
    });
    const task = await agent.assign('too long for the grace period');
    const queued = await agent.assign('queued behind it');
    await started.promise;
    const before = Date.now();
    await town.close();
    const took = Date.now() - before;
    await aborted.promise;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(3_000);

    const other = await open({}, town);
    expect(await other.task(task.id)).toMatchObject({ state: 'assigned', attempts: 1 });
    const inbox = await (await other.agent('overrunner')).inbox();
    expect(inbox.map((m) => m.taskId)).toEqual([task.id, queued.id]); // at the head, then the rest
    const handedBack = (await history(other)).filter((e) => e.type === 'task.reclaimed');
    expect(handedBack).toHaveLength(1);
    expect(handedBack[0]).toMatchObject({ taskId: task.id, data: expect.objectContaining({ reason: 'handback', to: 'agent' }) });
    // The next worker runs it first; a hand-back is not a lost attempt, so this is its second start.
    const order: string[] = [];
    await other.runWorker('overrunner', { run: async (t, ctx) => (order.push(t.description), `attempt ${ctx.attempt}`) });
    expect(await other.waitForTask(queued.id, WAIT)).toMatchObject({ state: 'completed' });
    expect(order).toEqual(['too long for the grace period', 'queued behind it']);
    expect(await other.task(task.id)).toMatchObject({ state: 'completed', result: 'attempt 2' });
  });

  it('SIGTERM wired to town.close() (as in the README): the running task finishes and the process exits by itself', async () => {
    const town = await open();
    const agent = await town.spawnAgent('terminated', { start: false });
    const proc = await startWorkerProcess({
      dist, redisUrl: server.url, root: town.root, town: town.name, agent: 'terminated', handler: 'slow', slowMs: 500, closeGraceMs: 5_000,
    });
    const task = await agent.assign('finishes after SIGTERM');
    const next = await agent.assign('stays queued');
    await proc.nth('started');
    proc.child.kill('SIGTERM');
    await proc.nth('closed');
    await proc.exited; // nothing of tinytown keeps it alive
    expect(proc.child.exitCode).toBe(0);
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: 'slow result', attempts: 1 });
    expect(await town.task(next.id)).toMatchObject({ state: 'assigned', attempts: 0 });
    expect(await agent.info()).toMatchObject({ state: 'stopped' });
    expect((await agent.info()).workerId).toBeUndefined();
  }, 30_000);

  it('SIGTERM past the grace period: the task is handed back and the process still exits by itself', async () => {
    const town = await open();
    const agent = await town.spawnAgent('overdue', { start: false });
    const proc = await startWorkerProcess({
      dist, redisUrl: server.url, root: town.root, town: town.name, agent: 'overdue', handler: 'slow', slowMs: 60_000, closeGraceMs: 200,
    });
    const task = await agent.assign('takes a minute');
    await proc.nth('started');
    proc.child.kill('SIGTERM');
    await proc.nth('closed');
    await proc.exited; // its handler stopped on the abort; nothing of tinytown keeps the process alive
    expect(await town.task(task.id)).toMatchObject({ state: 'assigned', attempts: 1 });
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([task.id]);
  }, 30_000);
});

// ── races settled by the server ───────────────────────────────────────────────────────────

describe('races settled by the server: a change written during a run wins over the run’s end', () => {
  type Expectation = { task: Record<string, unknown>; agent: string; completions: number };
  const cases: [string, (town: Town, taskId: string) => Promise<unknown>, Expectation][] = [
    ['pause', (t) => t.agent('racer').then((a) => a.pause()), { task: { state: 'completed', result: 'run result' }, agent: 'paused', completions: 1 }],
    ['drain', (t) => t.agent('racer').then((a) => a.drain()), { task: { state: 'completed', result: 'run result' }, agent: 'stopped', completions: 1 }],
    ['stop', (t) => t.agent('racer').then((a) => a.stop()), { task: { state: 'completed', result: 'run result' }, agent: 'stopped', completions: 1 }],
    ['cancel', (t, id) => t.cancelTask(id, 'called off'), { task: { state: 'cancelled', error: 'called off' }, agent: 'idle', completions: 0 }],
    ['external complete', (t, id) => t.completeTask(id, 'done by hand'), { task: { state: 'completed', result: 'done by hand' }, agent: 'idle', completions: 1 }],
    ['external fail', (t, id) => t.failTask(id, 'failed by hand'), { task: { state: 'failed', error: 'failed by hand' }, agent: 'idle', completions: 0 }],
  ];

  for (const [name, act, expected] of cases) {
    it(`${name}, written from another process's town handle`, async () => {
      const town = await open();
      const remote = await open({}, town);
      let release!: (value: string) => void;
      const started = deferred();
      // The run ignores its abort signal: its end arrives after the change, whatever the change.
      const agent = await town.spawnAgent('racer', {
        run: () =>
          new Promise<string>((resolve) => {
            release = resolve;
            started.resolve();
          }),
      });
      const task = await agent.assign('raced');
      await started.promise;
      await act(remote, task.id);
      release('run result');
      const record = await town.waitForTask(task.id, WAIT);
      expect(record).toMatchObject(expected.task);
      // The run's end has been recorded (or refused) once the agent is no longer working.
      await eventually(async () => ((await agent.info()).currentTask === undefined ? true : undefined), 5_000, 'run recorded');
      const info = await agent.info();
      expect(info.state).toBe(expected.agent);
      const events = await history(town);
      expect(events.filter((e) => e.type === 'task.completed' && e.taskId === task.id)).toHaveLength(expected.completions);
      expect(await town.task(task.id)).toMatchObject(expected.task); // not overwritten since
    });
  }
});

// ── retention ─────────────────────────────────────────────────────────────────────────────

describe('retention', () => {
  it('the sweeper expires terminal tasks by itself after retentionMs; no index or count points at a missing record', async () => {
    const town = await open({ retentionMs: 1_000, leaseMs: 200 }); // sweeps every 100 ms (after a 1.2 s grace)
    const agent = await town.spawnAgent('w', { run: async (t) => (t.description.startsWith('bad') ? Promise.reject(new Error('bad')) : 'ok') });
    const cold = await town.spawnAgent('cold', { start: false });
    const done = [];
    for (let i = 0; i < 30; i++) done.push(await agent.assign(i % 5 === 0 ? `bad ${i}` : `ok ${i}`));
    const cancelled = await cold.assign('cancelled');
    await town.cancelTask(cancelled.id);
    const queued = await cold.assign('still queued');
    const pending = await town.backlog.add('still in the backlog');
    await agent.waitForIdle(WAIT);

    const redis = raw();
    const p = prefixOf(town);
    // No event marks an expiry: watch the retention index empty itself.
    await eventually(async () => ((await redis.zcard(`${p}idx:done`)) === 0 ? true : undefined), 10_000, 'terminal tasks expired');
    for (const t of [...done, cancelled]) expect(await redis.exists(`${p}task:${t.id}`)).toBe(0);
    const indexed = (await redis.zrange(`${p}idx:tasks`, '0', '-1')).sort();
    expect(indexed).toEqual([queued.id, pending.id].sort());
    for (const id of indexed) expect(await redis.exists(`${p}task:${id}`)).toBe(1);
    expect(await redis.lrange(`${p}backlog`, 0, -1)).toEqual([pending.id]);
    for (const id of await redis.smembers(`${p}idx:agents`)) {
      expect(await redis.exists(`${p}agent:${id}`)).toBe(1);
      const current = await redis.hget(`${p}agent:${id}`, 'current_task');
      if (current) expect(await redis.exists(`${p}task:${current}`)).toBe(1);
    }
    const counts = await redis.hgetall(`${p}counts`);
    for (const state of ['completed', 'failed', 'cancelled', 'running']) expect(Number(counts[state] ?? 0), state).toBe(0);
    expect(Number(counts.assigned)).toBe(1);
    expect(Number(counts.pending)).toBe(1);
    expect((await town.tasks()).map((t) => t.id).sort()).toEqual(indexed);
    expect((await town.status()).tasks).toEqual({ pending: 1, assigned: 1, running: 0, completed: 0, failed: 0, cancelled: 0 });
  });

  it('keeps the event stream near eventsMaxLen, and readers keep working over the trimmed stream', async () => {
    const town = await open({ eventsMaxLen: 100 });
    const agent = await town.spawnAgent('chatty', { run: async () => 'ok' });
    const tasks = [];
    for (let i = 0; i < 150; i++) tasks.push(await agent.assign(`t${i}`)); // ≈ 6 events each
    await Promise.all(tasks.map((t) => town.waitForTask(t.id, WAIT)));
    const length = await raw().xlen(`${prefixOf(town)}events`);
    // MAXLEN ~ trims whole stream nodes (100 entries each by default): about the cap, never 900.
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThanOrEqual(300);
    const seen: string[] = [];
    for await (const e of town.events({ since: 'start', types: ['task.completed'], signal: AbortSignal.timeout(2_000) })) {
      seen.push(e.taskId!);
      if (e.taskId === tasks[tasks.length - 1]!.id) break;
    }
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[seen.length - 1]).toBe(tasks[tasks.length - 1]!.id);
    const late = await agent.assign('after trimming');
    expect(await town.waitForTask(late.id, WAIT)).toMatchObject({ state: 'completed' });
  });
});
