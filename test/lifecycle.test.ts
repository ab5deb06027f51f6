/**
 * Agent lifecycle against a real Redis: pause/resume, drain, stop (graceful and forced, local
 * and from another town handle), restart, cancelling a running task, and workers attached from
 * another Town instance.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TimeoutError, WorkerActiveError, type Agent, type Town } from '../src/index.js';
import { gatedHandler } from './helpers/gated.js';
import { collectHistory, deferred, grandchildPid, prefixOf, rawRedis, sleep, waitDead, waitForEvent } from './helpers/kit.js';
import { fakeCli, openTown } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };
/** How long we watch for something that must not happen. */
const QUIET_MS = 300;

async function stateOf(agent: Agent): Promise<string> {
  return (await agent.info()).state;
}

/** The agent is stopped and no worker serves it (nor does it claim a current task). */
async function expectReleased(agent: Agent, more: Record<string, unknown> = {}): Promise<void> {
  const info = await agent.info();
  expect(info).toMatchObject({ state: 'stopped', ...more });
  expect(info.workerId).toBeUndefined();
  expect(info.currentTask).toBeUndefined();
}

async function inboxTaskIds(agent: Agent): Promise<string[]> {
  return (await agent.inbox()).map((m) => m.taskId ?? `<${m.type}>`);
}

/** Settles to 'pending' if the promise has not settled within `ms`. */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<'resolved' | 'rejected' | 'pending'> {
  return Promise.race([
    promise.then(
      () => 'resolved' as const,
      () => 'rejected' as const,
    ),
    sleep(ms).then(() => 'pending' as const),
  ]);
}

async function openPair(): Promise<[Town, Town]> {
  const a = await openTown();
  const b = await openTown({ name: a.name }, a.root);
  return [a, b];
}

describe('pause and resume', () => {
  it('starts no task while paused; resume runs it', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('p1', { run: async (t) => `ran ${t.description}` });
    await agent.pause();
    expect(await stateOf(agent)).toBe('paused');
    const task = await agent.assign('held back');
    await sleep(QUIET_MS);
    expect((await town.task(task.id)).state).toBe('assigned');
    expect(await inboxTaskIds(agent)).toEqual([task.id]);
    expect(await stateOf(agent)).toBe('paused');
    await agent.resume();
    const record = await town.waitForTask(task.id, WAIT);
    expect(record).toMatchObject({ state: 'completed', result: 'ran held back', attempts: 1 });
    await agent.waitForIdle(WAIT);
    expect(await stateOf(agent)).toBe('idle');
  });

  it('lets a running task finish when paused mid-task; the agent stays paused', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('p2', { run: gated.run });
    const first = await agent.assign('first');
    await gated.started('first');
    await agent.pause();
    expect(await stateOf(agent)).toBe('paused');

    // Paused mid-task is not idle.
    const idle = agent.waitForIdle(WAIT);
    expect(await settledWithin(idle, QUIET_MS)).toBe('pending');

    gated.release('first');
    expect((await town.waitForTask(first.id, WAIT)).state).toBe('completed');
    await idle; // nothing runs, nothing is queued: idle although paused
    expect(await stateOf(agent)).toBe('paused');

    // Queued work while paused: not started, and the agent is not idle.
    const second = await agent.assign('second');
    await expect(agent.waitForIdle({ timeoutMs: QUIET_MS })).rejects.toBeInstanceOf(TimeoutError);
    expect((await town.task(second.id)).state).toBe('assigned');
    expect(gated.log).toEqual(['first#1']);

    await agent.resume();
    await gated.started('second');
    gated.release('second');
    await agent.waitForIdle(WAIT);
    expect((await town.task(second.id)).state).toBe('completed');
    expect(await stateOf(agent)).toBe('idle');
  });
});

describe('drain', () => {
  it('finishes the current and queued tasks, then stops and releases the worker', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    await town.spawnAgent('d1', { start: false });
    const worker = await town.runWorker('d1', { run: gated.run });
    const agent = worker.agent;
    const tasks = [await agent.assign('a'), await agent.assign('b'), await agent.assign('c')];
    await gated.started('a');
    await agent.drain();
    expect(await stateOf(agent)).toBe('draining');
    gated.release('a');
    await gated.started('b');
    expect(await stateOf(agent)).toBe('draining');
    gated.release('b');
    gated.release('c');
    await worker.done;
    for (const t of tasks) expect((await town.task(t.id)).state).toBe('completed');
    await expectReleased(agent, { tasksCompleted: 3 });
    expect(gated.log).toEqual(['a#1', 'b#1', 'c#1']);
    await waitForEvent(town, (e) => e.type === 'agent.stopped' && e.agentId === agent.id);
  });

  it('stops an idle agent at once', async () => {
    const town = await openTown();
    await town.spawnAgent('d2', { start: false });
    const worker = await town.runWorker('d2', { run: async () => 'ok' });
    await worker.agent.drain();
    await worker.done;
    await expectReleased(worker.agent);
  });

  it('stops after the queue is done even when an informational message was queued behind the work', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    await town.spawnAgent('d3', { start: false });
    const worker = await town.runWorker('d3', { run: gated.run });
    const agent = worker.agent;
    const task = await agent.assign('work');
    await gated.started('work');
    await agent.send('FYI: the schema moved to docs/api.md');
    await agent.drain();
    gated.release('work');
    expect((await town.waitForTask(task.id, WAIT)).state).toBe('completed');
    // The note is consumed (stored for the next prompt); then nothing is left: the drain ends.
    await waitForEvent(town, (e) => e.type === 'agent.stopped' && e.agentId === agent.id, 5_000);
    await worker.done;
    expect(await stateOf(agent)).toBe('stopped');
  });

  it('counts work claimed but not yet started as queued', async () => {
    // The moment between a worker's BLMOVE and its start script: the entry sits in the worker's
    // processing list. Reproduced by hand: a registered worker (lease, processing list) that
    // has claimed an entry; a drain now must wait for it, not stop at once.
    const town = await openTown();
    const agent = await town.spawnAgent('d4', { start: false });
    const task = await agent.assign('claimed, not started');
    const redis = rawRedis();
    const p = prefixOf(town);
    const fakeWorker = 'claimer-0000';
    await redis.lmove(`${p}inbox:${agent.id}`, `${p}processing:${fakeWorker}`, 'LEFT', 'RIGHT');
    await redis.set(`${p}lease:${fakeWorker}`, agent.id, 'PX', 60_000);
    await redis.hset(`${p}workers`, fakeWorker, agent.id);
    await redis.hset(`${p}agent:${agent.id}`, 'worker_id', fakeWorker, 'state', 'idle');
    await expect(agent.waitForIdle({ timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);

    await agent.drain();
    expect(await stateOf(agent)).toBe('draining');

    // The claimer dies; a new worker takes its claimed entry back and the drain completes.
    await redis.del(`${p}lease:${fakeWorker}`);
    const worker = await town.runWorker('d4', { run: async () => 'ran after all' });
    await worker.done;
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: 'ran after all' });
    expect(await stateOf(agent)).toBe('stopped');
  });
});

describe('stop', () => {
  it('graceful: the running task finishes, queued tasks stay queued and run after restart()', async () => {
    const town = await openTown();
    const gated = gatedHandler({ instant: ['q1', 'q2'] });
    await town.spawnAgent('s1', { start: false });
    const worker = await town.runWorker('s1', { run: gated.run });
    const agent = worker.agent;
    const running = await agent.assign('running');
    const q1 = await agent.assign('q1');
    const q2 = await agent.assign('q2');
    await gated.started('running');
    await agent.stop();
    expect(await stateOf(agent)).toBe('stopped');
    expect((await town.task(running.id)).state).toBe('running');
    gated.release('running');
    await worker.done;
    expect((await town.task(running.id)).state).toBe('completed');
    // Queued work stays queued, in order, while stopped.
    await sleep(QUIET_MS);
    expect((await town.task(q1.id)).state).toBe('assigned');
    expect((await town.task(q2.id)).state).toBe('assigned');
    expect(await inboxTaskIds(agent)).toEqual([q1.id, q2.id]);
    await expectReleased(agent);

    await agent.restart();
    await agent.waitForIdle(WAIT);
    expect((await town.task(q1.id)).state).toBe('completed');
    expect((await town.task(q2.id)).state).toBe('completed');
    expect(gated.log).toEqual(['running#1', 'q1#1', 'q2#1']);
    expect(await stateOf(agent)).toBe('idle');
  });

  it('forced: the handler is aborted, its task goes back to the head of the queue, and runs again after restart()', async () => {
    const town = await openTown();
    const aborted = deferred<unknown>();
    const log: string[] = [];
    const agent = await town.spawnAgent('s2', {
      run: (task, ctx) => {
        log.push(`${task.description}#${ctx.attempt}`);
        if (task.description === 'victim' && ctx.attempt === 1) {
          return new Promise((_, reject) => {
            ctx.signal.addEventListener('abort', () => {
              aborted.resolve(ctx.signal.reason);
              reject(ctx.signal.reason);
            });
          });
        }
        return `done ${task.description}#${ctx.attempt}`;
      },
    });
    const victim = await agent.assign('victim');
    const queued = await agent.assign('queued');
    await waitForEvent(town, (e) => e.type === 'task.started' && e.taskId === victim.id);
    await agent.stop({ force: true });
    expect(await aborted.promise).toBeInstanceOf(Error);
    expect(await town.task(victim.id)).toMatchObject({ state: 'assigned', attempts: 1 });
    expect(await inboxTaskIds(agent)).toEqual([victim.id, queued.id]);
    const handedBack = (await collectHistory(town)).find((e) => e.type === 'task.reclaimed' && e.taskId === victim.id);
    expect(handedBack?.data).toMatchObject({ to: 'agent', reason: 'handback' });
    await expectReleased(agent);
    await sleep(QUIET_MS);
    expect((await town.task(queued.id)).state).toBe('assigned');

    await agent.restart();
    await agent.waitForIdle(WAIT);
    expect(await town.task(victim.id)).toMatchObject({ state: 'completed', attempts: 2, result: 'done victim#2' });
    expect(await town.task(queued.id)).toMatchObject({ state: 'completed', attempts: 1 });
    expect(log).toEqual(['victim#1', 'victim#2', 'queued#1']);
  });

  it('forced: a CLI run is killed with its whole process group and the task is handed back', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('s3', { cli: fakeCli() });
    const task = await agent.assign('stuck [fake:grandchild] [fake:hang]');
    const pid = await grandchildPid(join(town.root, '.tt', 'logs', 's3', `${task.id}.log`));
    await agent.stop({ force: true });
    await waitDead(pid);
    expect(await town.task(task.id)).toMatchObject({ state: 'assigned', attempts: 1 });
    expect(await inboxTaskIds(agent)).toEqual([task.id]);
    // Any worker may take it from there: here an in-process one.
    await town.runWorker('s3', { run: async (_t, ctx) => `second try, attempt ${ctx.attempt}` });
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'completed', attempts: 2, result: 'second try, attempt 2' });
  });

  it('a stop written during a run is not overwritten by the run end (local and remote)', async () => {
    const [a, b] = await openPair();
    for (const [name, stopper] of [
      ['local', a],
      ['remote', b],
    ] as const) {
      const gated = gatedHandler();
      await a.spawnAgent(`s4-${name}`, { start: false });
      const worker = await a.runWorker(`s4-${name}`, { run: gated.run });
      const task = await worker.agent.assign('long');
      await gated.started('long');
      await (await stopper.agent(`s4-${name}`)).stop();
      gated.release('long');
      expect((await a.waitForTask(task.id, WAIT)).state).toBe('completed');
      await worker.done;
      await expectReleased(worker.agent, { tasksCompleted: 1 });
    }
  });

  it('a forced stop from another town handle reaches the worker through the event stream', async () => {
    const [a, b] = await openPair();
    const aborted = deferred();
    await a.spawnAgent('s5', { start: false });
    const worker = await a.runWorker('s5', {
      run: (_task, ctx) =>
        new Promise((_, reject) =>
          ctx.signal.addEventListener('abort', () => {
            aborted.resolve();
            reject(ctx.signal.reason);
          }),
        ),
    });
    const task = await worker.agent.assign('to be interrupted');
    await waitForEvent(a, (e) => e.type === 'task.started' && e.taskId === task.id);
    await (await b.agent('s5')).stop({ force: true });
    await aborted.promise;
    await worker.done;
    expect(await a.task(task.id)).toMatchObject({ state: 'assigned', attempts: 1 });
    await expectReleased(worker.agent);
  });
});

describe('restart', () => {
  it('replaces the worker and keeps serving, many times over', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('r1', { run: async (t) => `ok ${t.description}` });
    const workers = new Set<string>();
    for (let i = 0; i < 15; i++) {
      await agent.restart();
      const info = await agent.info();
      expect(info.state).toBe('idle');
      expect(info.workerId).toBeDefined();
      workers.add(info.workerId!);
      const task = await agent.assign(`after restart ${i}`);
      expect((await town.waitForTask(task.id, { timeoutMs: 5_000 })).result).toBe(`ok after restart ${i}`);
    }
    expect(workers.size).toBe(15);
    expect(await stateOf(agent)).toBe('idle');
  });

  it('is not undone by the old worker\'s stop event reaching the new worker late', async () => {
    // The reader may lag behind the stream (a slow or reconnecting connection): the `stopped`
    // written when the old worker left then arrives after the new worker subscribed. Simulated
    // by pausing the reader's socket (a private field) for longer than the town waits for it.
    const town = await openTown();
    const agent = await town.spawnAgent('r3', { run: async () => 'ok' });
    await agent.waitForIdle(WAIT);
    const socket = (town as unknown as { reader: { conn: { stream: { pause(): void; resume(): void } } } }).reader.conn.stream;
    socket.pause();
    try {
      await agent.restart();
    } finally {
      socket.resume();
    }
    const newWorker = (await agent.info()).workerId;
    await waitForEvent(town, (e) => e.type === 'agent.state' && e.agentId === agent.id && e.data.message === 'worker attached');
    await sleep(QUIET_MS);
    const info = await agent.info();
    expect(info.state).toBe('idle');
    expect(info.workerId).toBe(newWorker);
    const task = await agent.assign('served by the new worker');
    expect((await town.waitForTask(task.id, WAIT)).state).toBe('completed');
  });

  it('restarts a stopped agent', async () => {
    const town = await openTown();
    await town.spawnAgent('r2', { start: false });
    const worker = await town.runWorker('r2', { run: async () => 'ok' });
    await worker.agent.stop();
    await worker.done;
    expect(await stateOf(worker.agent)).toBe('stopped');
    await worker.agent.restart();
    expect(await stateOf(worker.agent)).toBe('idle');
    const task = await worker.agent.assign('after a restart');
    expect((await town.waitForTask(task.id, WAIT)).state).toBe('completed');
  });
});

describe('cancelling a running task', () => {
  it('kills the CLI process group; the task ends cancelled, not failed', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('c1', { cli: fakeCli() });
    const task = await agent.assign('[fake:grandchild] [fake:hang]');
    const pid = await grandchildPid(join(town.root, '.tt', 'logs', 'c1', `${task.id}.log`));
    const cancelled = await town.cancelTask(task.id, 'no longer needed');
    expect(cancelled).toMatchObject({ state: 'cancelled', error: 'no longer needed' });
    await waitDead(pid);
    await agent.waitForIdle(WAIT);
    const record = await town.task(task.id);
    expect(record).toMatchObject({ state: 'cancelled', error: 'no longer needed' });
    expect(record.result).toBeUndefined();
    const info = await agent.info();
    expect(info).toMatchObject({ state: 'idle', tasksFailed: 0, tasksCompleted: 0 });
    expect(info.currentTask).toBeUndefined();
    const next = await agent.assign('next one');
    expect((await town.waitForTask(next.id, WAIT)).state).toBe('completed');
  });

  it("aborts an in-process handler's signal", async () => {
    const town = await openTown();
    const aborted = deferred<unknown>();
    const agent = await town.spawnAgent('c2', {
      run: (_t, ctx) =>
        new Promise(() => ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason))),
    });
    const task = await agent.assign('cancel me');
    await waitForEvent(town, (e) => e.type === 'task.started' && e.taskId === task.id);
    await town.cancelTask(task.id, 'changed my mind');
    expect(String(await aborted.promise)).toMatch(/cancel/);
    await agent.waitForIdle(WAIT);
    expect(await town.task(task.id)).toMatchObject({ state: 'cancelled', error: 'changed my mind' });
    expect((await agent.info()).tasksFailed).toBe(0);
  });
});

describe('workers in another Town instance', () => {
  it('serves an agent spawned with start: false from a second handle', async () => {
    const [a, b] = await openPair();
    const agent = await a.spawnAgent('remote', { start: false, role: 'worker' });
    expect(await stateOf(agent)).toBe('cold');
    const task = await agent.assign('done elsewhere');
    await sleep(QUIET_MS);
    expect((await a.task(task.id)).state).toBe('assigned'); // nobody serves it yet
    const worker = await b.runWorker('remote', { run: async (t) => `B did ${t.description}` });
    await agent.waitForIdle(WAIT);
    expect(await a.task(task.id)).toMatchObject({ state: 'completed', result: 'B did done elsewhere' });
    expect((await agent.info()).workerId).toBe(worker.id);
  });

  it('refuses a second worker for an agent with a live one (same or other handle)', async () => {
    const [a, b] = await openPair();
    const agent = await a.spawnAgent('busy', { run: async () => 'from A' });
    const live = (await agent.info()).workerId;
    await expect(a.runWorker('busy', { run: async () => 'again' })).rejects.toBeInstanceOf(WorkerActiveError);
    await expect(b.runWorker('busy', { run: async () => 'from B' })).rejects.toBeInstanceOf(WorkerActiveError);
    // The refused attempts changed nothing: A's worker still serves.
    expect((await agent.info()).workerId).toBe(live);
    const task = await agent.assign('still served by A');
    expect((await a.waitForTask(task.id, WAIT)).result).toBe('from A');
  });
});
