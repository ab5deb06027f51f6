/**
 * The town's event stream: history then live events, resuming from an id, filters, ending on
 * abort and on close, `town.on`, the shape of events and their raw stream fields.
 */
import { describe, expect, it } from 'vitest';
import { parseEvent } from '../src/events/types.js';
import type { EventsOptions, Town, TownEvent } from '../src/index.js';
import { InvalidArgumentError } from '../src/index.js';
import { deferred, eventually, killReaderConnection, prefixOf, rawRedis, readerListenerCount } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };

/** The first `n` events of an iteration; fails (with what came) if they do not come in time. */
async function take(town: Town, options: EventsOptions, n: number, timeoutMs = 5_000): Promise<TownEvent[]> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), timeoutMs);
  const out: TownEvent[] = [];
  try {
    if (n > 0) {
      for await (const event of town.events({ ...options, signal: stop.signal })) {
        out.push(event);
        if (out.length === n) break;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  if (out.length < n) throw new Error(`got ${out.length} of ${n} events: ${out.map((e) => e.type).join(', ')}`);
  return out;
}

/** The raw stream, parsed the library's way. */
async function rawEvents(town: Town, start = '-'): Promise<TownEvent[]> {
  const entries = await rawRedis().xrange(`${prefixOf(town)}events`, start, '+');
  return entries.map(([id, fields]) => parseEvent(id, fields)!);
}

/** A town with some history: two agents, a completed and a failed task. */
async function townWithHistory(): Promise<{ town: Town; ids: { done: string; failed: string }; agents: [string, string] }> {
  const town = await openTown();
  const alpha = await town.spawnAgent('alpha', { run: async (t) => `ok ${t.description}` });
  const beta = await town.spawnAgent('beta', {
    run: async () => {
      throw new Error('beta always fails');
    },
  });
  const done = await alpha.assign('first');
  const failed = await beta.assign('second');
  await town.waitForTask(done.id, WAIT);
  await town.waitForTask(failed.id, WAIT);
  await alpha.waitForIdle(WAIT);
  await beta.waitForIdle(WAIT);
  return { town, ids: { done: done.id, failed: failed.id }, agents: [alpha.id, beta.id] };
}

describe('town.events()', () => {
  it("since: 'start' yields the whole history, then live events, in stream order", async () => {
    const { town } = await townWithHistory();
    const history = await rawEvents(town);
    expect(history.length).toBeGreaterThan(10);
    const alpha = await town.agent('alpha');
    const seen: TownEvent[] = [];
    let liveTask: string | undefined;
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), 5_000);
    for await (const event of town.events({ since: 'start', signal: stop.signal })) {
      seen.push(event);
      if (seen.length === history.length) liveTask = (await alpha.assign('live one')).id;
      if (liveTask !== undefined && event.type === 'task.completed' && event.taskId === liveTask) break;
    }
    clearTimeout(timer);
    expect(liveTask).toBeDefined();
    expect(seen.slice(0, history.length).map((e) => e.id)).toEqual(history.map((e) => e.id));
    const all = await rawEvents(town);
    expect(seen.map((e) => e.id)).toEqual(all.slice(0, seen.length).map((e) => e.id));
    const live = seen.slice(history.length).filter((e) => e.taskId === liveTask).map((e) => e.type);
    expect(live).toEqual(['task.created', 'task.assigned', 'task.started', 'task.completed']);
  });

  it('resumes after a given event id with exactly the events that followed it', async () => {
    const { town } = await townWithHistory();
    const history = await rawEvents(town);
    for (const k of [0, Math.floor(history.length / 2), history.length - 2]) {
      const after = history[k]!.id;
      const expected = history.slice(k + 1).map((e) => e.id);
      const got = await take(town, { since: after }, expected.length);
      expect(got.map((e) => e.id)).toEqual(expected);
    }
    // Resuming from the last id yields the next live event and nothing older.
    const last = history[history.length - 1]!.id;
    const next = take(town, { since: last }, 1);
    await town.spawnAgent('gamma', { start: false }); // live or read back as history: either way once
    const [event] = await next;
    expect(event!.type).toBe('agent.spawned');
    expect(event!.id > last || event!.id.length > last.length).toBe(true);
  });

  it("since: 'now' (the default) yields only events appended after the iteration started", async () => {
    const { town } = await townWithHistory();
    const before = (await rawEvents(town)).length;
    const baseline = readerListenerCount(town);
    const first = take(town, {}, 1);
    await eventually(() => (readerListenerCount(town) === baseline + 1 ? true : undefined), 2_000, 'iteration subscribed');
    await town.spawnAgent('newcomer', { start: false });
    const [event] = await first;
    expect(event).toMatchObject({ type: 'agent.spawned', data: expect.objectContaining({ name: 'newcomer' }) });
    expect((await rawEvents(town)).findIndex((e) => e.id === event!.id)).toBe(before);
  });

  it('filters by type, by agent (any reference) and by task', async () => {
    const { town, ids, agents } = await townWithHistory();
    const history = await rawEvents(town);
    const ofType = history.filter((e) => e.type === 'task.completed' || e.type === 'task.failed');
    const gotTypes = await take(town, { since: 'start', types: ['task.completed', 'task.failed'] }, ofType.length);
    expect(gotTypes.map((e) => e.id)).toEqual(ofType.map((e) => e.id));
    expect(gotTypes.map((e) => e.taskId)).toEqual([ids.done, ids.failed]);

    const ofBeta = history.filter((e) => e.agentId === agents[1]);
    expect(ofBeta.length).toBeGreaterThan(3);
    for (const ref of ['beta', agents[1], agents[1].slice(0, 8)]) {
      const got = await take(town, { since: 'start', agent: ref }, ofBeta.length);
      expect(got.map((e) => e.id)).toEqual(ofBeta.map((e) => e.id));
    }

    const ofTask = history.filter((e) => e.taskId === ids.done);
    expect(ofTask.map((e) => e.type)).toEqual(['task.created', 'task.assigned', 'task.started', 'task.completed']);
    const gotTask = await take(town, { since: 'start', task: ids.done }, ofTask.length);
    expect(gotTask.map((e) => e.id)).toEqual(ofTask.map((e) => e.id));

    // Filters combine; a filter matching nothing yields nothing (not even live events of others).
    const combined = await take(town, { since: 'start', agent: 'alpha', types: ['task.failed'] }, 0);
    expect(combined).toEqual([]);
    const none: TownEvent[] = [];
    const stop = new AbortController();
    const iterating = (async () => {
      for await (const e of town.events({ since: 'start', agent: 'alpha', types: ['task.failed'], signal: stop.signal })) none.push(e);
    })();
    await (await town.agent('alpha')).assign('more success');
    await (await town.agent('alpha')).waitForIdle(WAIT);
    stop.abort();
    await iterating;
    expect(none).toEqual([]);

    expect(() => town.events({ types: ['task.nope' as never] })).toThrow(InvalidArgumentError);
    expect(() => town.events({ since: 'yesterday' })).toThrow(InvalidArgumentError);
  });

  it('ends when its signal aborts, and releases its listener', async () => {
    const { town } = await townWithHistory();
    const baseline = readerListenerCount(town);
    const stop = new AbortController();
    const seen: TownEvent[] = [];
    const firstLive = deferred();
    const iterating = (async () => {
      for await (const e of town.events({ signal: stop.signal })) {
        seen.push(e);
        firstLive.resolve();
      }
    })();
    await eventually(() => (readerListenerCount(town) === baseline + 1 ? true : undefined), 2_000, 'iteration subscribed');
    await town.spawnAgent('one', { start: false });
    await firstLive.promise;
    stop.abort();
    await iterating; // ends, without throwing
    expect(seen.map((e) => e.type)).toEqual(['agent.spawned']);
    expect(readerListenerCount(town)).toBe(baseline);

    // An already aborted signal: history only up to the abort check, then done at once.
    const aborted = AbortSignal.abort();
    const got: TownEvent[] = [];
    for await (const e of town.events({ signal: aborted })) got.push(e);
    expect(got).toEqual([]);
  });

  it('ends when the town closes', async () => {
    const town = await openTown();
    await town.spawnAgent('x', { start: false });
    const seen: TownEvent[] = [];
    const subscribed = deferred();
    const iterating = (async () => {
      for await (const e of town.events({ since: 'start' })) {
        seen.push(e);
        subscribed.resolve();
      }
      return 'ended';
    })();
    await subscribed.promise;
    await town.close();
    await expect(iterating).resolves.toBe('ended');
    expect(seen[0]?.type).toBe('agent.spawned');
  });

  it('town.on(type) and town.on("*") receive live events; off() stops them', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('listener', { run: async () => 'ok' });
    const completed: TownEvent[] = [];
    const all: TownEvent[] = [];
    const onCompleted = (e: TownEvent): void => void completed.push(e);
    const onAll = (e: TownEvent): void => void all.push(e);
    town.on('task.completed', onCompleted);
    town.on('*', onAll);
    const task = await agent.assign('observed');
    await town.waitForTask(task.id, WAIT);
    await agent.waitForIdle(WAIT);
    expect(completed.map((e) => [e.type, e.taskId, e.agentId])).toEqual([['task.completed', task.id, agent.id]]);
    const mine = all.filter((e) => e.taskId === task.id).map((e) => e.type);
    expect(mine).toEqual(['task.created', 'task.assigned', 'task.started', 'task.completed']);
    const ids = all.map((e) => e.id);
    expect([...ids].sort(compareStreamIds)).toEqual(ids);

    town.off('task.completed', onCompleted);
    town.off('*', onAll);
    const seenBefore = all.length;
    const second = await agent.assign('unobserved');
    await town.waitForTask(second.id, WAIT);
    expect(completed).toHaveLength(1);
    expect(all).toHaveLength(seenBefore);
  });

  it('keeps delivering within a second after the reader connection is killed, losing nothing', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('steady', { run: async () => 'ok' });
    const seen: TownEvent[] = [];
    town.on('task.completed', (e) => void seen.push(e));
    const first = await agent.assign('before');
    await town.waitForTask(first.id, WAIT);
    await killReaderConnection(town);
    const t0 = performance.now();
    const tasks = [await agent.assign('after 1'), await agent.assign('after 2')];
    for (const t of tasks) expect((await town.waitForTask(t.id, { timeoutMs: 3_000 })).state).toBe('completed');
    await agent.waitForIdle({ timeoutMs: 3_000 });
    // The waits may be answered by their first read; the live listener needs the reconnected reader.
    await eventually(() => (seen.length >= 3 ? true : undefined), 1_500, 'events after the reconnect');
    expect(performance.now() - t0).toBeLessThan(1_500);
    expect(seen.map((e) => e.taskId)).toEqual([first.id, ...tasks.map((t) => t.id)]);
  });

  it('gives events their documented shapes', async () => {
    const started = new Date(Date.now() - 1_000);
    const { town, ids, agents } = await townWithHistory();
    const history = await rawEvents(town);
    const alphaStates = history.filter((e) => e.type === 'agent.state' && e.agentId === agents[0]);
    expect(alphaStates.map((e) => [e.data.oldState, e.data.newState])).toEqual([
      ['starting', 'idle'],
      ['idle', 'working'],
      ['working', 'idle'],
    ]);
    const spawned = history.find((e) => e.type === 'agent.spawned' && e.agentId === agents[1])!;
    expect(spawned.data).toMatchObject({ name: 'beta', message: expect.any(String) });
    const startedEvent = history.find((e) => e.type === 'task.started' && e.taskId === ids.done)!;
    expect(startedEvent).toMatchObject({ agentId: agents[0], data: expect.objectContaining({ attempt: 1 }) });
    const failed = history.find((e) => e.type === 'task.failed')!;
    expect(failed).toMatchObject({ taskId: ids.failed, agentId: agents[1], data: expect.objectContaining({ message: 'beta always fails' }) });
    for (const e of history) {
      expect(e.at).toBeInstanceOf(Date);
      expect(e.at.getTime()).toBeGreaterThanOrEqual(started.getTime());
      expect(e.at.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
      expect(typeof e.data.message).toBe('string');
      // snake_case never leaks into data
      expect(Object.keys(e.data).filter((k) => k.includes('_'))).toEqual([]);
    }
  });

  it('writes raw stream entries as event_type (snake_case) + data (JSON)', async () => {
    const { town, ids, agents } = await townWithHistory();
    const entries = await rawRedis().xrange(`${prefixOf(town)}events`, '-', '+');
    for (const [, fields] of entries) {
      expect(fields).toHaveLength(4);
      expect(fields[0]).toBe('event_type');
      expect(fields[2]).toBe('data');
      expect(fields[1]).toMatch(/^[a-z]+(_[a-z]+)+$/);
      const data = JSON.parse(fields[3]!) as Record<string, unknown>;
      expect(data.event_type).toBe(fields[1]);
      expect(typeof data.message).toBe('string');
      expect(data.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    }
    const types = entries.map(([, f]) => f[1]);
    expect(types).toContain('task_completed');
    expect(types).toContain('task_failed');
    expect(types).toContain('agent_state_changed');
    expect(types).toContain('agent_spawned');
    expect(types).not.toContain('agent_state');
    const completed = entries.find(([, f]) => f[1] === 'task_completed')!;
    expect(JSON.parse(completed[1][3]!)).toMatchObject({ task_id: ids.done, agent_id: agents[0] });
    const stateChange = entries.find(([, f]) => f[1] === 'agent_state_changed')!;
    expect(JSON.parse(stateChange[1][3]!)).toMatchObject({ old_state: 'starting', new_state: 'idle', agent_id: agents[0] });
  });
});

function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(Number) as [number, number];
  const [bm, bs] = b.split('-').map(Number) as [number, number];
  return am - bm || as - bs;
}
