/**
 * SPEC §4 — at-least-once, no loss: workers that die (kill -9) or freeze (SIGSTOP) past their
 * lease have their claimed work handed back (to the agent when it has a live worker, else to
 * the backlog) with the attempt counted; past maxAttempts the task fails; a zombie's late
 * result is rejected. Also `town.recover()` and retention of terminal tasks.
 *
 * Workers to be lost run in child processes (test/fixtures/child-worker.mjs) on a build of src/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentErrorStateError, TaskNotFoundError, WorkerActiveError, type Town } from '../src/index.js';
import { buildLibrary, startChildWorker } from './helpers/child-worker.js';
import { deferred, eventsUntil, eventually, prefixOf, procState, rawRedis, sleep, waitForEvent } from './helpers/kit.js';
import { fakeCli, openTown } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };
let dist = '';
let removeBuild: (() => Promise<void>) | undefined;

beforeAll(async () => {
  const build = await buildLibrary();
  dist = build.entry;
  removeBuild = build.remove;
}, 60_000);

afterAll(async () => {
  await removeBuild?.();
});

/** Waits out a worker's lease (no event marks its expiry): its remaining TTL, then a check. */
async function leaseExpired(town: Town, workerId: string): Promise<void> {
  const redis = rawRedis();
  const key = `${prefixOf(town)}lease:${workerId}`;
  const ttl = await redis.pttl(key);
  if (ttl > 0) await sleep(ttl + 20);
  expect(await redis.exists(key)).toBe(0);
}

describe('a worker killed with SIGKILL', () => {
  it('loses its task to the backlog (attempt counted) when the agent has no live worker; the agent goes to error', async () => {
    const town = await openTown({ leaseMs: 600 }); // this town's sweeper runs every 300 ms
    const agent = await town.spawnAgent('victim', { start: false });
    const child = await startChildWorker(town, 'victim', { dist, handler: 'hang' });
    expect((await agent.info()).workerId).toBe(child.workerId);
    const task = await agent.assign('work that dies with its worker');
    const [startedId, attempt] = await child.line('started');
    expect([startedId, attempt]).toEqual([task.id, '1']);
    expect((await town.task(task.id)).state).toBe('running');

    const waiting = agent.waitForIdle({ timeoutMs: 10_000 }).catch((e: unknown) => e);
    child.child.kill('SIGKILL');
    await child.exited;

    const reclaimed = await waitForEvent(town, (e) => e.type === 'task.reclaimed' && e.taskId === task.id);
    expect(reclaimed.agentId).toBe(agent.id);
    expect(reclaimed.data).toMatchObject({ to: 'backlog', attempts: 1, reason: 'reclaim' });
    const record = await town.task(task.id);
    expect(record).toMatchObject({ state: 'pending', attempts: 1 });
    expect(record.assignedTo).toBeUndefined();
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([task.id]);

    const info = await agent.info();
    expect(info.state).toBe('error');
    expect(info.error).toMatch(/lease/);
    expect(info.workerId).toBeUndefined();
    expect(info.currentTask).toBeUndefined();
    // A wait that was pending when the worker died rejects; so does a new one.
    expect(await waiting).toBeInstanceOf(AgentErrorStateError);
    await expect(agent.waitForIdle({ timeoutMs: 1_000 })).rejects.toBeInstanceOf(AgentErrorStateError);

    const status = await town.status();
    expect(status.backlog).toBe(1);
    expect(status.tasks).toMatchObject({ pending: 1, running: 0, assigned: 0 });
    const redis = rawRedis();
    const p = prefixOf(town);
    expect(await redis.exists(`${p}lease:${child.workerId}`, `${p}processing:${child.workerId}`)).toBe(0);
    expect(await redis.hexists(`${p}workers`, child.workerId)).toBe(0);

    // Nothing is lost: a new worker and a claim finish the work, as its second attempt.
    await town.runWorker('victim', { run: async (_t, ctx) => `recovered on attempt ${ctx.attempt}` });
    expect((await agent.info()).state).toBe('idle');
    await town.backlog.claim(task.id, 'victim');
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'completed', attempts: 2, result: 'recovered on attempt 2' });
  });

  it('hands its task back to the agent when a new worker attaches after the lease expired', async () => {
    const town = await openTown(); // default lease: this town's sweeper stays out of the way
    const agent = await town.spawnAgent('phoenix', { start: false });
    const child = await startChildWorker(town, 'phoenix', { dist, handler: 'hang', leaseMs: 800 });
    const task = await agent.assign('survives its worker');
    await child.line('started');
    child.child.kill('SIGKILL');
    await child.exited;

    // The lease still runs: the dead worker is not known dead yet, a second worker is refused.
    await expect(town.runWorker('phoenix', { run: async () => 'too early' })).rejects.toBeInstanceOf(WorkerActiveError);
    await leaseExpired(town, child.workerId);

    const worker = await town.runWorker('phoenix', { run: async (_t, ctx) => `second run, attempt ${ctx.attempt}` });
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({
      state: 'completed',
      attempts: 2,
      result: 'second run, attempt 2',
      assignedTo: agent.id,
    });
    const reclaimed = await waitForEvent(town, (e) => e.type === 'task.reclaimed' && e.taskId === task.id);
    expect(reclaimed.data).toMatchObject({ to: 'agent', attempts: 1, reason: 'reclaim' });
    await agent.waitForIdle(WAIT);
    const info = await agent.info();
    expect(info).toMatchObject({ state: 'idle', workerId: worker.id, tasksCompleted: 1 });
    expect(await rawRedis().hexists(`${prefixOf(town)}workers`, child.workerId)).toBe(0);
  });

  it('fails the task once the worker was lost maxAttempts times', async () => {
    const town = await openTown({ leaseMs: 600 });
    const agent = await town.spawnAgent('fragile', { start: false });
    const child = await startChildWorker(town, 'fragile', { dist, handler: 'hang' });
    const task = await agent.assign({ description: 'one chance only', maxAttempts: 1 });
    await child.line('started');
    child.child.kill('SIGKILL');
    await child.exited;
    const record = await town.waitForTask(task.id, WAIT);
    expect(record).toMatchObject({ state: 'failed', attempts: 1, maxAttempts: 1 });
    expect(record.error).toMatch(/worker lost 1 times/);
    const failed = await waitForEvent(town, (e) => e.type === 'task.failed' && e.taskId === task.id);
    expect(failed.data.message).toMatch(/worker lost 1 times/);
    expect(await town.backlog.list()).toEqual([]);
    const info = await agent.info();
    expect(info).toMatchObject({ state: 'error', tasksFailed: 1 });
    expect((await town.status()).tasks).toMatchObject({ failed: 1, running: 0, pending: 0 });
  });
});

describe('a frozen worker (SIGSTOP) past its lease', () => {
  it("is replaced; its late completion is rejected and the task completes exactly once", async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('zombie', { start: false });
    // The child's handler freezes its own process (SIGSTOP) as soon as it starts the task, and
    // returns its result the moment it is continued: a worker frozen mid-task.
    const child = await startChildWorker(town, 'zombie', { dist, handler: 'stop-self', leaseMs: 600 });
    const task = await agent.assign('contested work');
    await child.line('started');
    await eventually(async () => ((await procState(child.pid)) === 'T' ? true : undefined), 5_000, 'child stopped');
    await leaseExpired(town, child.workerId);

    await town.runWorker('zombie', { run: async () => 'fresh result' });
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'completed', result: 'fresh result', attempts: 2 });

    child.child.kill('SIGCONT');
    const history = await eventsUntil(town, (e) => e.type === 'task.rejected' && e.taskId === task.id);
    const rejected = history[history.length - 1]!;
    expect(rejected.data.workerId).toBe(child.workerId);
    expect(history.filter((e) => e.type === 'task.completed' && e.taskId === task.id)).toHaveLength(1);
    expect(history.filter((e) => e.type === 'task.started' && e.taskId === task.id)).toHaveLength(2);

    const record = await town.task(task.id);
    expect(record).toMatchObject({ state: 'completed', result: 'fresh result', attempts: 2 });
    expect((await agent.info()).tasksCompleted).toBe(1);
    expect((await town.status()).tasks.completed).toBe(1);
    // The live worker keeps the agent.
    const next = await agent.assign('after the zombie');
    expect(await town.waitForTask(next.id, WAIT)).toMatchObject({ state: 'completed', result: 'fresh result' });
  });
});

describe('leases of live workers', () => {
  it('are renewed while a long handler or CLI run goes on: nothing is reclaimed', async () => {
    const town = await openTown({ leaseMs: 500 }); // sweeps every 250 ms
    const handler = await town.spawnAgent('long-handler', { run: () => sleep(1_500).then(() => 'slow but alive') });
    const cli = await town.spawnAgent('long-cli', { cli: fakeCli() });
    const a = await handler.assign('slow');
    const b = await cli.assign('slow [fake:sleep=1500]');
    expect(await town.waitForTask(a.id, WAIT)).toMatchObject({ state: 'completed', attempts: 1, result: 'slow but alive' });
    expect(await town.waitForTask(b.id, WAIT)).toMatchObject({ state: 'completed', attempts: 1 });
    const history = await eventsUntil(town, (e) => e.type === 'task.completed' && e.taskId === b.id);
    expect(history.filter((e) => e.type === 'task.reclaimed' || e.type === 'task.rejected')).toEqual([]);
    expect((await handler.info()).state).toBe('idle');
    expect((await cli.info()).state).toBe('idle');
  });
});

describe('a lease that lapsed while nobody reclaimed the work', () => {
  it('is renewed by the next heartbeat; the running task is neither aborted nor stranded', async () => {
    // What a Redis outage longer than the lease looks like once Redis is back: the lease key
    // expired, but no sweeper ran meanwhile, so the worker still owns its claimed task.
    const town = await openTown(); // default lease: this town's sweeper stays out of the way
    await town.spawnAgent('lapsed', { start: false });
    let aborted = false;
    const gate = deferred<string>();
    const startedTask = deferred();
    const worker = await town.runWorker('lapsed', {
      leaseMs: 600, // heartbeat every 200 ms
      run: (_t, ctx) => {
        ctx.signal.addEventListener('abort', () => (aborted = true));
        startedTask.resolve();
        return gate.promise;
      },
    });
    const task = await worker.agent.assign('survives a lapse');
    await startedTask.promise;
    const redis = rawRedis();
    const lease = `${prefixOf(town)}lease:${worker.id}`;
    await redis.del(lease);
    await eventually(async () => ((await redis.exists(lease)) === 1 ? true : undefined), 3_000, 'lease renewed');
    await sleep(300); // a heartbeat or two later
    expect(aborted).toBe(false);
    gate.resolve('finished after the lapse');
    expect(await town.waitForTask(task.id, { timeoutMs: 3_000 })).toMatchObject({
      state: 'completed',
      result: 'finished after the lapse',
      attempts: 1,
    });
    await worker.agent.waitForIdle({ timeoutMs: 3_000 });
    expect(await redis.exists(`${prefixOf(town)}processing:${worker.id}`)).toBe(0);
    expect((await worker.agent.info()).workerId).toBe(worker.id);
  });
});

describe('town.recover()', () => {
  it('reclaims the work of a dead worker at once, without waiting for the sweeper', async () => {
    const town = await openTown(); // sweeper every 7.5 s: recover() must do it
    const agent = await town.spawnAgent('orphan', { start: false });
    const child = await startChildWorker(town, 'orphan', { dist, handler: 'hang', leaseMs: 800 });
    const task = await agent.assign('orphaned');
    await child.line('started');
    child.child.kill('SIGKILL');
    await child.exited;
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 0 }); // lease still running
    expect((await town.task(task.id)).state).toBe('running');
    await leaseExpired(town, child.workerId);
    expect(await town.recover()).toEqual({ reclaimed: 1, expired: 0 });
    expect(await town.task(task.id)).toMatchObject({ state: 'pending', attempts: 1 });
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([task.id]);
    expect((await agent.info()).state).toBe('error');
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 0 }); // idempotent
  });

  it('expires terminal tasks past retentionMs and keeps every index and count consistent', async () => {
    const town = await openTown({ retentionMs: 1_000 });
    const worker = await town.spawnAgent('w', {
      run: async (t) => {
        if (t.description.startsWith('bad')) throw new Error('bad task');
        return 'ok';
      },
    });
    const cold = await town.spawnAgent('cold', { start: false });
    const old = [await worker.assign('ok 1'), await worker.assign('ok 2'), await worker.assign('bad 1')];
    const cancelled = await cold.assign('cancel me');
    await town.cancelTask(cancelled.id);
    const queued = await cold.assign('still queued');
    const pending = await town.backlog.add('still in the backlog');
    await worker.waitForIdle(WAIT);
    expect((await town.status()).tasks).toMatchObject({ completed: 2, failed: 1, cancelled: 1, assigned: 1, pending: 1 });

    await sleep(1_100);
    const fresh = await worker.assign('ok, recent');
    await town.waitForTask(fresh.id, WAIT);
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 4 });

    for (const t of [...old, cancelled]) await expect(town.task(t.id)).rejects.toBeInstanceOf(TaskNotFoundError);
    const left = (await town.tasks()).map((t) => t.id).sort();
    expect(left).toEqual([queued.id, pending.id, fresh.id].sort());
    const status = await town.status();
    expect(status.tasks).toEqual({ pending: 1, assigned: 1, running: 0, completed: 1, failed: 0, cancelled: 0 });
    expect(status.backlog).toBe(1);

    // No index entry points at a missing record; the counts match the records.
    const redis = rawRedis();
    const p = prefixOf(town);
    const indexed = await redis.zrange(`${p}idx:tasks`, '0', '-1');
    expect(indexed.sort()).toEqual(left);
    for (const id of indexed) expect(await redis.exists(`${p}task:${id}`)).toBe(1);
    expect(await redis.zrange(`${p}idx:done`, '0', '-1')).toEqual([fresh.id]);
    const counts = await redis.hgetall(`${p}counts`);
    const states = await Promise.all(indexed.map((id) => redis.hget(`${p}task:${id}`, 'state')));
    for (const state of ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled']) {
      expect(Number(counts[state] ?? 0), state).toBe(states.filter((s) => s === state).length);
    }
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 0 });
  });
});

describe('a worker the town already forgot', () => {
  it('hands entries it claimed afterwards back to their agent when it stops', async () => {
    // A frozen worker is reclaimed (its entry in the live-worker set is gone); when it wakes,
    // its pending BLMOVE may still move an inbox entry into its processing list before it
    // learns it lost its lease and stops. That entry must go back to the agent's inbox.
    // Reproduced by hand: a paused worker (not blocked on the inbox), an entry moved into its
    // processing list, its live-worker record removed; then it stops.
    const town = await openTown();
    const agent = await town.spawnAgent('forgetful', { start: false });
    const worker = await town.runWorker('forgetful', { run: async () => 'finally done' });
    const workerId = worker.id;
    await agent.pause();
    const task = await agent.assign('claimed by a forgotten worker');
    const redis = rawRedis();
    const p = prefixOf(town);
    await eventually(async () => ((await redis.llen(`${p}inbox:${agent.id}`)) === 1 ? true : undefined));
    await redis.lmove(`${p}inbox:${agent.id}`, `${p}processing:${workerId}`, 'LEFT', 'RIGHT');
    await redis.hdel(`${p}workers`, workerId);
    await agent.stop();
    await worker.done;
    expect(await redis.exists(`${p}processing:${workerId}`)).toBe(0);
    const info = await agent.info();
    expect(info.state).toBe('stopped');
    expect(info.workerId).toBeUndefined();
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([task.id]);
    expect(await redis.exists(`${p}inbox`)).toBe(0); // not an agent-less "inbox" key
    await agent.restart();
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'completed', result: 'finally done', attempts: 1 });
  });
});
