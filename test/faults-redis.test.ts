/**
 * SPEC §4 "Redis faults", proven by breaking Redis itself: redis-server killed with SIGKILL
 * mid-run and restarted from its AOF (a short outage, and one longer than both the lease and
 * ioredis' per-command retries), every client connection killed at once, and the replies lost
 * with them (ioredis re-sends a command whose reply never came, so scripts must tolerate
 * running twice).
 *
 * Each test runs its own redis-server (helpers/faults.ts), with `appendfsync always`: the claim
 * under test is "no acknowledged task is lost", and `always` is the setting that promises it
 * for every acknowledged write (the managed Redis uses it with `durability: 'strict'`; with the
 * default `everysec` up to about a second of acknowledged writes may be lost on a crash).
 */
import { Redis } from 'ioredis';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseEvent } from '../src/events/types.js';
import { InvalidTransitionError, Town, waitForIdle, type Agent, type TaskRecord, type TownEvent, type TownOptions } from '../src/index.js';
import type { Repository } from '../src/store/repository.js';
import { runScript } from '../src/store/scripts.js';
import { builtPackage } from './helpers/build.js';
import {
  killAllWorkerProcesses,
  startRestartableRedis,
  startWorkerProcess,
  type RestartableRedis,
  type WorkerProcess,
} from './helpers/faults.js';
import { deferred, sleep } from './helpers/kit.js';
import { tempDir, uniqueName } from './helpers/town.js';

let dist = '';
const servers: RestartableRedis[] = [];
const clients: Redis[] = [];

beforeAll(async () => {
  ({ esm: dist } = await builtPackage());
}, 60_000);

const towns: Town[] = [];

afterEach(async () => {
  killAllWorkerProcesses();
  for (const client of clients.splice(0)) client.disconnect();
  // Towns first, while their Redis still runs (a town whose Redis is gone closes slowly).
  await Promise.all(towns.splice(0).map((t) => t.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function redisServer(): Promise<RestartableRedis> {
  const server = await startRestartableRedis({ appendfsync: 'always' });
  servers.push(server);
  return server;
}

function raw(server: RestartableRedis): Redis {
  const client = new Redis(server.url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  client.on('error', () => undefined);
  clients.push(client);
  return client;
}

async function open(server: RestartableRedis, options: TownOptions = {}): Promise<Town> {
  const town = await Town.connect(await tempDir(), { redis: server.url, name: uniqueName(), ...options });
  towns.push(town);
  town.on('error', () => undefined); // faults are expected here; tinytown retries them
  return town;
}

const prefixOf = (town: Town): string => `tt:{${town.name}}:`;

async function history(server: RestartableRedis, town: Town): Promise<TownEvent[]> {
  const entries = await raw(server).xrange(`${prefixOf(town)}events`, '-', '+');
  return entries.map(([id, fields]) => parseEvent(id, fields)).filter((e): e is TownEvent => e !== undefined);
}

function completionsPerTask(events: readonly TownEvent[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of events) if (e.type === 'task.completed' && e.taskId) out.set(e.taskId, (out.get(e.taskId) ?? 0) + 1);
  return out;
}

describe('redis-server killed with SIGKILL mid-run and restarted from its AOF', () => {
  it('loses no acknowledged task, runs none twice, workers resume and waiters resolve', async () => {
    const server = await redisServer();
    const town = await open(server, { leaseMs: 2_000 });
    const names = ['r0', 'r1', 'r2'];
    const agents: Agent[] = [];
    for (const name of names) agents.push(await town.spawnAgent(name, { start: false }));
    const procs: WorkerProcess[] = [];
    for (const name of names) {
      procs.push(
        await startWorkerProcess({ dist, redisUrl: server.url, root: town.root, town: town.name, agent: name, handler: 'slow', slowMs: 120, leaseMs: 2_000 }),
      );
    }
    const acknowledged: TaskRecord[] = [];
    for (let i = 0; i < 8; i++) for (const agent of agents) acknowledged.push(await agent.assign(`before the crash ${i}`));

    // Waiters that are pending when Redis dies.
    const lastBefore = acknowledged[acknowledged.length - 1]!;
    const taskWait = town.waitForTask(lastBefore.id, { timeoutMs: 60_000 });
    const idleWait = waitForIdle(agents, { timeoutMs: 60_000 });
    const stopIterating = new AbortController();
    const iterated = new Map<string, number>();
    let target = Number.POSITIVE_INFINITY;
    const iteration = (async () => {
      for await (const e of town.events({ types: ['task.completed'], signal: stopIterating.signal })) {
        iterated.set(e.taskId!, (iterated.get(e.taskId!) ?? 0) + 1);
        if (iterated.size >= target) return;
      }
    })();

    await procs[0]!.nth('started', 3); // mid-run: its third task's handler is sleeping now
    await server.kill('SIGKILL');
    // Assigned while Redis is down: queued by the client, acknowledged once Redis is back.
    const during = agents.map((agent, i) => agent.assign(`during the outage ${i}`));
    await sleep(500); // the outage
    await server.restart();
    const restartedAt = Date.now();
    for (const assigned of await Promise.all(during)) acknowledged.push(assigned);
    for (const agent of agents) acknowledged.push(await agent.assign('after the restart'));
    target = acknowledged.length;

    const records = await Promise.all(acknowledged.map((t) => town.waitForTask(t.id, { timeoutMs: 30_000 })));
    const resumedAfterMs = Date.now() - restartedAt;
    expect(records.map((r) => r.state)).toEqual(acknowledged.map(() => 'completed'));
    expect((await taskWait).state).toBe('completed');
    await idleWait;
    await iteration;
    stopIterating.abort();
    expect([...iterated.values()].every((n) => n === 1)).toBe(true);
    expect([...iterated.keys()].sort()).toEqual(acknowledged.map((t) => t.id).sort());

    const completions = completionsPerTask(await history(server, town));
    for (const t of acknowledged) expect(completions.get(t.id), t.description).toBe(1);
    // The same worker processes did all of it: they resumed by themselves.
    for (const proc of procs) expect(proc.child.exitCode).toBeNull();
    const ranBy = new Set(procs.flatMap((p) => p.all('started').map((w) => w[0])));
    for (const t of acknowledged) expect(ranBy.has(t.id)).toBe(true);
    const status = await town.status();
    expect(status.tasks).toMatchObject({ completed: acknowledged.length, running: 0, assigned: 0, pending: 0 });
    console.log(`redis restart: ${acknowledged.length} acknowledged tasks all completed ${resumedAfterMs} ms after the restart`);
  }, 60_000);

  it('survives an outage longer than the lease and than ioredis retries a command: no reclaim, no error state', async () => {
    // ~9 s down: past ioredis' maxRetriesPerRequest (20 reconnect attempts, ≈ 8 s here), so
    // queued commands fail and must be retried by tinytown; and past every 1 s lease, which
    // the AOF replay therefore brings back expired. Live workers must keep their work.
    const server = await redisServer();
    const town = await open(server, { leaseMs: 1_000 });
    const agent = await town.spawnAgent('long', { start: false });
    const proc = await startWorkerProcess({
      dist, redisUrl: server.url, root: town.root, town: town.name, agent: 'long', handler: 'slow', slowMs: 1_000, leaseMs: 1_000, townLeaseMs: 1_000,
    });
    // Another handle on the town, whose event reader has not started yet.
    const bystander = await Town.connect(town.root, { redis: server.url, name: town.name });
    towns.push(bystander);
    bystander.on('error', () => undefined);
    const running = await agent.assign('finishes while Redis is down');
    const queued = await agent.assign('queued before the outage');
    const waits = [running, queued].map((t) => town.waitForTask(t.id, { timeoutMs: 40_000 }));
    for (const w of waits) w.catch(() => undefined); // awaited below; no unhandled rejection meanwhile
    await proc.nth('started');
    await server.kill('SIGKILL');
    await proc.nth('finished'); // its result waits for Redis
    // Waits started during the outage: their first check fails after ioredis' retries (≈ 8 s),
    // which is no reason to give up.
    const lateWaits = [town.waitForTask(queued.id, { timeoutMs: 40_000 }), agent.waitForIdle({ timeoutMs: 40_000 })];
    for (const w of lateWaits) w.catch(() => undefined);
    // A first wait on a handle whose reader cannot start while Redis is away keeps trying to
    // start it, past ioredis' retries, and resolves once Redis is back.
    const bystanderWait = bystander.waitForTask(queued.id, { timeoutMs: 40_000 });
    bystanderWait.catch(() => undefined);
    await sleep(9_000); // the outage
    await server.restart();
    const restartedAt = Date.now();
    const first = await waits[0]!;
    const resumedMs = Date.now() - restartedAt;
    const second = await waits[1]!;
    console.log(`long outage: the result computed during the outage recorded ${resumedMs} ms after the restart`);
    expect(resumedMs).toBeLessThan(2_000); // reconnect (≤ 500 ms apart) + a retry (≤ 250 ms apart) + the wait's wake-up
    expect(first).toMatchObject({ state: 'completed', attempts: 1, result: 'slow result' });
    expect(second).toMatchObject({ state: 'completed', attempts: 1 });
    expect(await lateWaits[0]).toMatchObject({ state: 'completed' });
    await lateWaits[1];
    expect(await bystanderWait).toMatchObject({ state: 'completed' });
    expect(await bystander.waitForTask(queued.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed' });
    const events = await history(server, town);
    expect(events.filter((e) => e.type === 'task.reclaimed' || e.type === 'task.rejected')).toEqual([]);
    expect(events.filter((e) => e.type === 'agent.state' && e.data.newState === 'error')).toEqual([]);
    expect(await agent.info()).toMatchObject({ workerId: proc.workerId, tasksCompleted: 2 });
    // And it keeps serving.
    const after = await agent.assign('after the long outage');
    expect(await town.waitForTask(after.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', attempts: 1 });
  }, 60_000);
});

describe('after a Redis restart', () => {
  it('gives a live worker that reconnects later than the sweeper the time to renew its lease', async () => {
    // The AOF brings the worker's 600 ms lease back expired (Redis was down for 1.5 s). This
    // process (its sweeper runs every 500 ms) reconnects first and would find the lease gone;
    // the worker process stays frozen until 1.2 s after the restart, as if its reconnect came
    // late. Nothing may be reclaimed meanwhile.
    const server = await redisServer();
    const town = await open(server, { leaseMs: 1_000 });
    const agent = await town.spawnAgent('late', { start: false });
    const proc = await startWorkerProcess({
      dist, redisUrl: server.url, root: town.root, town: town.name, agent: 'late', handler: 'slow', slowMs: 2_000, leaseMs: 600,
    });
    const task = await agent.assign('outlives the restart');
    const done = town.waitForTask(task.id, { timeoutMs: 20_000 });
    done.catch(() => undefined);
    await proc.nth('started');
    await server.kill('SIGKILL');
    proc.child.kill('SIGSTOP');
    await sleep(1_500); // the outage
    await server.restart();
    await sleep(1_200); // this process reconnects and its sweeper ticks; the worker is still frozen
    proc.child.kill('SIGCONT');
    expect(await done).toMatchObject({ state: 'completed', attempts: 1, result: 'slow result' });
    const events = await history(server, town);
    expect(events.filter((e) => e.type === 'task.reclaimed')).toEqual([]);
    expect(events.filter((e) => e.type === 'agent.state' && e.data.newState === 'error')).toEqual([]);
    expect((await agent.info()).workerId).toBe(proc.workerId);
  }, 30_000);
});

describe('connections opened while Redis is down', () => {
  it('work once Redis is back: the connection of a blocking loop, and a worker attached meanwhile', async () => {
    const server = await redisServer();
    const town = await open(server);
    const agent = await town.spawnAgent('patient', { start: false });
    await server.kill('SIGKILL');
    // A loop's connection opened in the outage (the reader's or a worker's, when Redis dies
    // between their previous command and this one) must not fail the loop for good.
    const connections = (town as unknown as { repo: Repository }).repo.connections;
    const opening = connections.openBlocking('probe');
    opening.catch(() => undefined);
    const attaching = town.runWorker('patient', { run: async () => 'served' });
    attaching.catch(() => undefined);
    await sleep(500); // the outage
    await server.restart();
    const probe = await opening;
    expect(await probe.ping()).toBe('PONG');
    connections.dropBlocking(probe);
    await attaching;
    const task = await agent.assign('after the outage');
    expect(await town.waitForTask(task.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'served' });
  });
});

describe('close() while Redis is down', () => {
  it('gives up after closeGraceMs plus a bounded release instead of waiting for Redis', async () => {
    const server = await redisServer();
    const town = await open(server, { closeGraceMs: 300, leaseMs: 1_000 });
    const started = deferred();
    const agent = await town.spawnAgent('stranded', {
      run: (_t, ctx) =>
        new Promise((_, reject) => {
          started.resolve();
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
        }),
    });
    const task = await agent.assign('outlives its Redis');
    await started.promise;
    await server.kill('SIGKILL');
    const t0 = Date.now();
    await town.close();
    const took = Date.now() - t0;
    console.log(`close() with Redis down took ${took} ms`);
    expect(took).toBeLessThan(6_000);
    // Redis back: the task is still claimed by the closed worker, whose lease lapsed meanwhile;
    // the next worker takes it over, counting the lost attempt.
    await server.restart();
    const other = await Town.connect(town.root, { redis: server.url, name: town.name });
    towns.push(other);
    expect((await other.task(task.id)).state).toBe('running');
    await other.runWorker('stranded', { run: async () => 'recovered' });
    expect(await other.waitForTask(task.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed', result: 'recovered', attempts: 2 });
  }, 30_000);
});

describe('close() while Redis is down, with a result waiting to be recorded', () => {
  it('stops retrying the write after closeGraceMs; the result is lost to at-least-once, not the task', async () => {
    const server = await redisServer();
    const town = await open(server, { closeGraceMs: 300, leaseMs: 1_000 });
    const gate = deferred();
    const returned = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('unrecorded', {
      run: async () => {
        started.resolve();
        await gate.promise;
        setImmediate(() => returned.resolve());
        return 'computed while Redis was down';
      },
    });
    const task = await agent.assign('its result cannot be written');
    await started.promise;
    await server.kill('SIGKILL');
    gate.resolve();
    await returned.promise; // the worker is now retrying the write of its result
    const t0 = Date.now();
    await town.close();
    const took = Date.now() - t0;
    console.log(`close() with a result waiting for Redis took ${took} ms`);
    expect(took).toBeLessThan(6_000);
    await server.restart();
    const other = await Town.connect(town.root, { redis: server.url, name: town.name });
    towns.push(other);
    await other.runWorker('unrecorded', { run: async (_t, ctx) => `ran again, attempt ${ctx.attempt}` });
    expect(await other.waitForTask(task.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed', result: 'ran again, attempt 2' });
  }, 30_000);
});

describe('every client connection killed (CLIENT KILL TYPE normal)', () => {
  it('work resumes within a second, five times in a row', async () => {
    const server = await redisServer();
    const town = await open(server, { leaseMs: 2_000 });
    const local = await town.spawnAgent('local', { run: async (t) => `local ${t.description}` });
    await town.spawnAgent('remote', { start: false });
    await startWorkerProcess({ dist, redisUrl: server.url, root: town.root, town: town.name, agent: 'remote', handler: 'ok', leaseMs: 2_000 });
    const remote = await town.agent('remote');
    const admin = raw(server);
    const recoveries: number[] = [];
    for (let round = 0; round < 5; round++) {
      const killed = Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'normal'));
      expect(killed).toBeGreaterThanOrEqual(5); // command + reader + worker connections of both processes
      const since = Date.now();
      const tasks = [await local.assign(`round ${round}`), await remote.assign(`round ${round}`)];
      await Promise.all(tasks.map((t) => town.waitForTask(t.id, { timeoutMs: 5_000 })));
      recoveries.push(Date.now() - since);
    }
    console.log(`recovery after CLIENT KILL TYPE normal (ms): ${recoveries.join(', ')}`);
    for (const ms of recoveries) expect(ms).toBeLessThan(1_000);
    const completions = completionsPerTask(await history(server, town));
    expect([...completions.values()].every((n) => n === 1)).toBe(true);
    expect(completions.size).toBe(10);
  }, 30_000);
});

describe('a reply lost with its connection (ioredis re-sends the command)', () => {
  it('a re-sent start returns the same claim instead of discarding the running task', async () => {
    const server = await redisServer();
    const town = await open(server);
    const agent = await town.spawnAgent('twice', { start: false });
    const repo = (town as unknown as { repo: Repository }).repo;
    await repo.registerWorker(agent.id, 'worker-1', 60_000);
    const task = await agent.assign('started twice');
    const redis = raw(server);
    const p = prefixOf(town);
    const entry = (await redis.lmove(`${p}inbox:${agent.id}`, `${p}processing:worker-1`, 'LEFT', 'RIGHT'))!;
    const first = await repo.start('worker-1', agent.id, entry, 50);
    const again = await repo.start('worker-1', agent.id, entry, 50);
    expect(first.kind).toBe('task');
    expect(again).toMatchObject({ kind: 'task', fence: (first as { fence: string }).fence });
    expect(await town.task(task.id)).toMatchObject({ state: 'running', attempts: 1 });
    expect(await redis.lrange(`${p}processing:worker-1`, 0, -1)).toEqual([entry]);
    const events = await history(server, town);
    expect(events.filter((e) => e.type === 'task.started')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'message.discarded')).toEqual([]);
    // The worker finishes it normally.
    const fence = (first as { fence: string }).fence;
    expect(await repo.finish({ workerId: 'worker-1', agentId: agent.id, taskId: task.id, fence, entry, outcome: 'completed', text: 'ok', notesUsed: 0 })).toEqual({ result: 'recorded' });
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', attempts: 1 });
  });

  it('a re-sent finish, retry or settle changes nothing the second time', async () => {
    const server = await redisServer();
    const town = await open(server);
    const agent = await town.spawnAgent('resent', { start: false });
    const repo = (town as unknown as { repo: Repository }).repo;
    await repo.registerWorker(agent.id, 'worker-1', 60_000);
    const task = await agent.assign({ description: 'finished twice', maxAttempts: 3 });
    const redis = raw(server);
    const p = prefixOf(town);
    const entry = (await redis.lmove(`${p}inbox:${agent.id}`, `${p}processing:worker-1`, 'LEFT', 'RIGHT'))!;
    const started = await repo.start('worker-1', agent.id, entry, 50);
    const fence = (started as { fence: string }).fence;
    const usage = { inputTokens: 10, costUsd: 0.5 };
    const retry = { workerId: 'worker-1', agentId: agent.id, taskId: task.id, fence, attempt: 1, error: 'rate limited', usage };
    expect(await repo.retryRun(retry)).toEqual({ attempts: 2 });
    expect(await repo.retryRun(retry)).toEqual({ attempts: 2 });
    const finish = { workerId: 'worker-1', agentId: agent.id, taskId: task.id, fence, entry, outcome: 'completed' as const, text: 'ok', usage, notesUsed: 0 };
    expect(await repo.finish(finish)).toEqual({ result: 'recorded' });
    expect(await repo.finish(finish)).toEqual({ result: 'recorded' });
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', attempts: 2, usage: { inputTokens: 20, costUsd: 1 } });
    expect((await agent.info()).tasksCompleted).toBe(1);
    expect((await town.status()).usage).toEqual({ inputTokens: 20, costUsd: 1 });
    const events = await history(server, town);
    expect(events.filter((e) => e.type === 'task.completed')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'task.retried')).toHaveLength(1);

    const other = await agent.assign('cancelled twice');
    expect((await town.cancelTask(other.id, 'no longer needed')).state).toBe('cancelled');
    expect((await town.cancelTask(other.id, 'no longer needed')).state).toBe('cancelled');
    await expect(town.cancelTask(other.id, 'another reason')).rejects.toBeInstanceOf(InvalidTransitionError);
    await expect(town.completeTask(other.id, 'done')).rejects.toBeInstanceOf(InvalidTransitionError);
  });

  it('a finish that starts the next task hands that same claim back when re-sent', async () => {
    const server = await redisServer();
    const town = await open(server);
    const agent = await town.spawnAgent('chain', { start: false });
    const repo = (town as unknown as { repo: Repository }).repo;
    await repo.registerWorker(agent.id, 'worker-1', 60_000);
    const one = await agent.assign('one');
    const two = await agent.assign('two');
    const redis = raw(server);
    const p = prefixOf(town);
    const entry = (await redis.lmove(`${p}inbox:${agent.id}`, `${p}processing:worker-1`, 'LEFT', 'RIGHT'))!;
    const started = await repo.start('worker-1', agent.id, entry, 50);
    const fence = (started as { fence: string }).fence;
    const finish = { workerId: 'worker-1', agentId: agent.id, taskId: one.id, fence, entry, outcome: 'completed' as const, text: 'ok', notesUsed: 0, fetchNext: { maxNotes: 50 } };
    const first = await repo.finish(finish);
    expect(first.result).toBe('recorded');
    expect(first.next?.started.task).toMatchObject({ id: two.id, state: 'running', attempts: 1 });
    const again = await repo.finish(finish);
    expect(again.next?.started.fence).toBe(first.next?.started.fence);
    expect(again.next?.entry).toBe(first.next?.entry);
    expect(await town.task(two.id)).toMatchObject({ state: 'running', attempts: 1 });
    expect(await redis.llen(`${p}inbox:${agent.id}`)).toBe(0);
    expect(await redis.lrange(`${p}processing:worker-1`, 0, -1)).toEqual([first.next?.entry]);
    const events = await history(server, town);
    expect(events.filter((e) => e.type === 'task.started' && e.taskId === two.id)).toHaveLength(1);
  });

  it('a re-sent assign creates the task once', async () => {
    const server = await redisServer();
    const town = await open(server);
    const agent = await town.spawnAgent('once', { start: false });
    const redis = raw(server);
    const p = prefixOf(town);
    const taskId = '11111111-2222-4333-8444-555555555555';
    const now = new Date();
    const message = JSON.stringify({ id: 'm-1', from: 'supervisor', to: agent.id, type: 'task_assign', task_id: taskId, priority: 'normal', created_at: now.toISOString(), correlation_id: null });
    const args = [taskId, agent.id, 'assigned twice', '[]', 'normal', '', '', '', message];
    const head = [p, now.toISOString(), now.getTime(), 10_000];
    const command = (town as unknown as { repo: Repository }).repo.connections.command;
    expect((await runScript(command, 'assign', `${p}events`, head, args))[0]).toBe(0);
    expect((await runScript(command, 'assign', `${p}events`, head, args))[0]).toBe(0);
    expect(await redis.llen(`${p}inbox:${agent.id}`)).toBe(1);
    expect(await redis.hget(`${p}counts`, 'assigned')).toBe('1');
    expect((await town.status()).tasks.assigned).toBe(1);
    const events = await history(server, town);
    expect(events.filter((e) => e.type === 'task.created')).toHaveLength(1);
    expect(await town.task(taskId)).toMatchObject({ state: 'assigned', description: 'assigned twice' });
  });
});
