/**
 * Waits: `waitForIdle` (one agent or many) and `town.waitForTask` against a real Redis. They
 * subscribe before they check (no lost wake-up), honour timeouts and signals, and leave no
 * listener behind.
 */
import { getEventListeners, setMaxListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  InvalidArgumentError,
  TaskNotFoundError,
  TimeoutError,
  TownClosedError,
  waitForIdle,
} from '../src/index.js';
import { gatedHandler } from './helpers/gated.js';
import { eventually, readerListenerCount, sleep } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };
const QUIET_MS = 250;

async function settledWithin(promise: Promise<unknown>, ms: number): Promise<'resolved' | 'rejected' | 'pending'> {
  return Promise.race([
    promise.then(
      () => 'resolved' as const,
      () => 'rejected' as const,
    ),
    sleep(ms).then(() => 'pending' as const),
  ]);
}

describe('waitForIdle', () => {
  it('resolves at once for an idle agent, a cold one and a stopped one', async () => {
    const town = await openTown();
    const idle = await town.spawnAgent('idle', { run: async () => 'ok' });
    const cold = await town.spawnAgent('cold', { start: false });
    const stopped = await town.spawnAgent('stopped', { run: async () => 'ok' });
    await stopped.stop();
    for (const agent of [idle, cold, stopped]) {
      const t0 = performance.now();
      await agent.waitForIdle({ timeoutMs: 2_000 });
      expect(performance.now() - t0).toBeLessThan(500);
    }
  });

  it('waits until a queue of three tasks is done', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('queue', { run: gated.run });
    const tasks = [await agent.assign('one'), await agent.assign('two'), await agent.assign('three')];
    const idle = agent.waitForIdle(WAIT);
    await gated.started('one');
    expect(await settledWithin(idle, QUIET_MS)).toBe('pending');
    gated.release('one');
    await gated.started('two');
    expect(await settledWithin(idle, QUIET_MS)).toBe('pending');
    gated.release('two');
    await gated.started('three');
    expect(await settledWithin(idle, QUIET_MS)).toBe('pending');
    gated.release('three');
    await idle;
    for (const t of tasks) expect((await town.task(t.id)).state).toBe('completed');
  });

  it('waits for several agents at once', async () => {
    const town = await openTown();
    const ga = gatedHandler();
    const gb = gatedHandler();
    const a = await town.spawnAgent('a', { run: ga.run });
    const b = await town.spawnAgent('b', { run: gb.run });
    await a.assign('ta');
    await b.assign('tb');
    const both = waitForIdle([a, b], WAIT);
    await ga.started('ta');
    await gb.started('tb');
    ga.release('ta');
    await a.waitForIdle(WAIT);
    expect(await settledWithin(both, QUIET_MS)).toBe('pending');
    gb.release('tb');
    await both;
    await waitForIdle([], WAIT); // nothing to wait for
  });

  it('rejects with TimeoutError, and with AbortedError when its signal aborts', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('busy', { run: gated.run });
    await agent.assign('long');
    await gated.started('long');
    const t0 = performance.now();
    await expect(agent.waitForIdle({ timeoutMs: 150 })).rejects.toBeInstanceOf(TimeoutError);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);

    const later = new AbortController();
    const waiting = agent.waitForIdle({ signal: later.signal, timeoutMs: 5_000 });
    await sleep(50);
    later.abort(new Error('user gave up'));
    const err = await waiting.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect((err as AbortedError).cause).toEqual(new Error('user gave up'));

    await expect(agent.waitForIdle({ signal: AbortSignal.abort() })).rejects.toBeInstanceOf(AbortedError);
    await expect(agent.waitForIdle({ timeoutMs: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
    gated.release('long');
    await agent.waitForIdle(WAIT);
  });

  it('rejects with AbortedError when aborted right after the call (before the wait is set up)', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('busy', { run: gated.run });
    await agent.assign('long');
    await gated.started('long');
    const controller = new AbortController();
    // timeoutMs only bounds the test: the abort must win, long before it.
    const waiting = agent.waitForIdle({ signal: controller.signal, timeoutMs: 2_000 });
    controller.abort();
    await expect(waiting).rejects.toBeInstanceOf(AbortedError);
    const task = await town.tasks({ state: 'running' });
    const controller2 = new AbortController();
    const waitingTask = town.waitForTask(task[0]!.id, { signal: controller2.signal, timeoutMs: 2_000 });
    controller2.abort();
    await expect(waitingTask).rejects.toBeInstanceOf(AbortedError);
    gated.release('long');
  });

  it('leaves no listener behind after timeouts, aborts and successes', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('leaky', { run: gated.run });
    await agent.assign('long');
    await gated.started('long');
    await agent.waitForIdle({ timeoutMs: 1 }).catch(() => undefined); // the reader is started now
    const baseline = readerListenerCount(town);
    const signal = new AbortController();
    const aborter = new AbortController();
    // A hundred waits on one signal are the point here, not a leak Node should warn about.
    setMaxListeners(200, signal.signal, aborter.signal);

    const timedOut = await Promise.allSettled(
      Array.from({ length: 100 }, () => agent.waitForIdle({ timeoutMs: 20, signal: signal.signal })),
    );
    expect(timedOut.every((r) => r.status === 'rejected' && r.reason instanceof TimeoutError)).toBe(true);
    expect(readerListenerCount(town)).toBe(baseline);
    expect(getEventListeners(signal.signal, 'abort')).toHaveLength(0);

    const aborted = Array.from({ length: 50 }, () => agent.waitForIdle({ signal: aborter.signal }));
    await eventually(() => (readerListenerCount(town) === baseline + 50 ? true : undefined), 2_000, '50 waits subscribed');
    aborter.abort();
    const results = await Promise.allSettled(aborted);
    expect(results.every((r) => r.status === 'rejected' && r.reason instanceof AbortedError)).toBe(true);
    expect(readerListenerCount(town)).toBe(baseline);

    const succeeding = Array.from({ length: 20 }, () => agent.waitForIdle({ signal: signal.signal, timeoutMs: 5_000 }));
    gated.release('long');
    await Promise.all(succeeding);
    expect(readerListenerCount(town)).toBe(baseline);
    expect(getEventListeners(signal.signal, 'abort')).toHaveLength(0);
  });

  // One agent's failure ends the whole wait; the others must not stay subscribed.
  it('cancels the other waits when one agent of several rejects', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const busy = await town.spawnAgent('busy', { run: gated.run });
    const doomed = await town.spawnAgent('doomed', { start: false });
    await doomed.assign('queued, never run'); // not idle
    await busy.assign('long');
    await gated.started('long');
    await busy.waitForIdle({ timeoutMs: 1 }).catch(() => undefined);
    const baseline = readerListenerCount(town);
    const both = waitForIdle([busy, doomed]);
    await sleep(50);
    await doomed.remove(); // its wait rejects: the agent is gone
    await expect(both).rejects.toThrow(/removed/);
    await sleep(50);
    // The wait on `busy` was cancelled too: back to the baseline.
    try {
      expect(readerListenerCount(town)).toBe(baseline);
    } finally {
      gated.release('long');
    }
  });

  it('loses no wake-up: 50 assign + waitForIdle rounds, in sequence and concurrently', async () => {
    const town = await openTown();
    let runs = 0;
    const agent = await town.spawnAgent('quick', {
      run: async () => {
        runs++;
        return 'instant';
      },
    });
    for (let i = 0; i < 50; i++) {
      const task = await agent.assign(`round ${i}`);
      await agent.waitForIdle({ timeoutMs: 5_000 });
      expect((await town.task(task.id)).state).toBe('completed');
    }
    const tasks = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const task = await agent.assign(`concurrent ${i}`);
        await agent.waitForIdle({ timeoutMs: 5_000 });
        return task;
      }),
    );
    // Idle means every task assigned before the wait is done.
    const states = await Promise.all(tasks.map(async (t) => (await town.task(t.id)).state));
    expect(states.every((s) => s === 'completed')).toBe(true);
    expect(runs).toBe(100);
  });

  it('rejects when the town closes', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('busy', { run: gated.run });
    await agent.assign('long');
    await gated.started('long');
    const waiting = agent.waitForIdle();
    const task = (await town.tasks({ state: 'running' }))[0]!;
    const waitingTask = town.waitForTask(task.id);
    await sleep(20);
    const closing = town.close();
    gated.release('long');
    await expect(waiting).rejects.toBeInstanceOf(TownClosedError);
    await expect(waitingTask).rejects.toBeInstanceOf(TownClosedError);
    await closing;
  });
});

describe('town.waitForTask', () => {
  it('resolves with the terminal record: completed, failed or cancelled', async () => {
    const town = await openTown();
    const gated = gatedHandler();
    const agent = await town.spawnAgent('w', { run: gated.run });
    const ok = await agent.assign('ok');
    const bad = await agent.assign('bad');
    const never = await agent.assign('never');
    const waits = [town.waitForTask(ok.id, WAIT), town.waitForTask(bad.id, WAIT), town.waitForTask(never.id, WAIT)];
    await gated.started('ok');
    expect(await settledWithin(waits[0]!, QUIET_MS)).toBe('pending');
    gated.release('ok', 'fine');
    expect(await waits[0]).toMatchObject({ id: ok.id, state: 'completed', result: 'fine' });
    await town.cancelTask(never.id, 'not needed');
    expect(await waits[2]).toMatchObject({ id: never.id, state: 'cancelled', error: 'not needed' });
    await gated.started('bad');
    await town.failTask(bad.id, 'failed from outside');
    expect(await waits[1]).toMatchObject({ id: bad.id, state: 'failed', error: 'failed from outside' });
    gated.release('bad');
    await agent.waitForIdle(WAIT);
    // The outside verdict stands over the run's end.
    expect(await town.task(bad.id)).toMatchObject({ state: 'failed', error: 'failed from outside' });
    // Already terminal: at once.
    expect(await town.waitForTask(ok.id, { timeoutMs: 500 })).toMatchObject({ state: 'completed' });
  });

  it('rejects with TimeoutError, AbortedError, or TaskNotFoundError for an unknown task', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = await agent.assign('nobody runs this');
    await expect(town.waitForTask(task.id, { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
    const controller = new AbortController();
    const waiting = town.waitForTask(task.id, { signal: controller.signal });
    await sleep(30);
    controller.abort();
    await expect(waiting).rejects.toBeInstanceOf(AbortedError);
    await expect(town.waitForTask('00000000-0000-4000-8000-000000000000', { timeoutMs: 1_000 })).rejects.toBeInstanceOf(
      TaskNotFoundError,
    );
  });

  it('wakes for a task finished by a worker in another Town instance', async () => {
    const a = await openTown();
    const b = await openTown({ name: a.name }, a.root);
    const agent = await a.spawnAgent('far', { start: false });
    const task = await agent.assign('remote work');
    const waiting = a.waitForTask(task.id, WAIT);
    await b.runWorker('far', { run: async () => 'done over there' });
    expect(await waiting).toMatchObject({ state: 'completed', result: 'done over there' });
  });
});
