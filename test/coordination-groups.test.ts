/**
 * Task groups (Gastown's convoys): tasks across agents counted by state in one round trip,
 * awaited together, and `group.completed` appended by the step that ends the last one. Real Redis.
 */
import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  InvalidArgumentError,
  InvalidNameError,
  TaskNotFoundError,
  TimeoutError,
  type TaskRecord,
  type TownEvent,
} from '../src/index.js';
import { collectHistory, deferred, readerListenerCount, waitForEvent } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

describe('a group across agents', () => {
  it('counts its tasks by state while they run, and resolves with the counts once all are over', async () => {
    const town = await openTown();
    const gate = deferred();
    const handler = async (task: TaskRecord) => {
      await gate.promise;
      if (task.description.includes('break')) throw new Error('it broke');
      return `did ${task.description}`;
    };
    const agents = await Promise.all(['alpha', 'beta', 'gamma'].map((name) => town.spawnAgent(name, { run: handler })));
    const group = town.group('release-1.4');
    const tasks: TaskRecord[] = [];
    for (const [i, agent] of agents.entries()) {
      tasks.push(await group.assign(agent, `first of ${agent.name}`));
      tasks.push(await group.assign(agent.name, i === 2 ? 'second, break it' : `second of ${agent.name}`));
    }
    const outsider = await agents[0]!.assign('not in the group');
    for (const t of tasks) expect(t.group).toBe('release-1.4');
    expect(outsider.group).toBeUndefined();

    const waiting = group.wait({ timeoutMs: 10_000 });
    // each agent runs its first task and holds it at the gate; the second waits in its inbox
    await Promise.all(agents.map((a) => waitForEvent(town, (e) => e.type === 'task.started' && e.agentId === a.id)));
    const midway = await group.progress();
    expect(midway).toEqual({
      name: 'release-1.4',
      total: 6,
      counts: { pending: 0, assigned: 3, running: 3, completed: 0, failed: 0, cancelled: 0 },
      done: 0,
      complete: false,
    });

    gate.resolve();
    const final = await waiting;
    expect(final).toEqual({
      name: 'release-1.4',
      total: 6,
      counts: { pending: 0, assigned: 0, running: 0, completed: 5, failed: 1, cancelled: 0 },
      done: 6,
      complete: true,
    });
    expect((await group.tasks()).map((t) => t.id)).toEqual(tasks.map((t) => t.id));
    expect(new Set((await group.tasks()).map((t) => t.assignedTo))).toEqual(new Set(agents.map((a) => a.id)));

    // one group.completed, with the counts, right after the end of the last of its tasks
    const history = await collectHistory(town);
    const landed = history.filter((e) => e.type === 'group.completed');
    expect(landed).toHaveLength(1);
    expect(landed[0]!.data).toMatchObject({ group: 'release-1.4', total: 6, completed: 5, failed: 1, cancelled: 0 });
    const ends = history.filter((e) => (e.type === 'task.completed' || e.type === 'task.failed') && tasks.some((t) => t.id === e.taskId));
    const lastEnd = ends[ends.length - 1]!;
    expect(landed[0]!.taskId).toBe(lastEnd.taskId);
    expect(history.indexOf(landed[0]!)).toBe(history.indexOf(lastEnd) + 1);
  });

  it('counts tasks of the backlog, created into the group by TaskInput.group, and cancelled ones', async () => {
    const town = await openTown();
    const group = town.group('chores');
    const a = await town.backlog.add({ description: 'triage', group: 'chores' });
    const b = await town.backlog.add({ description: 'changelog', group: 'chores' });
    expect(await group.progress()).toMatchObject({ total: 2, counts: { pending: 2 }, complete: false });
    const landed = waitForEvent(town, (e) => e.type === 'group.completed' && e.data.group === 'chores');
    await town.cancelTask(a.id, 'not needed');
    await town.backlog.remove(b.id, 'duplicate');
    expect((await landed).data).toMatchObject({ total: 2, cancelled: 2, completed: 0 });
    expect(await group.wait()).toMatchObject({ done: 2, complete: true, counts: { cancelled: 2 } });
  });
});

describe('group.add', () => {
  it('adds existing tasks by id or record, each once; all or nothing', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('idle', { start: false });
    const a = await agent.assign('one');
    const b = await town.backlog.add('two');
    const other = await town.backlog.add({ description: 'elsewhere', group: 'other' });
    const group = town.group('mixed');
    expect(await group.add(a, b.id, a.id)).toBe(2);
    expect(await group.add(a)).toBe(0); // already in it
    await expect(group.add(other.id)).rejects.toBeInstanceOf(InvalidArgumentError);
    const c = await town.backlog.add('three');
    await expect(group.add(c, UNKNOWN_ID)).rejects.toBeInstanceOf(TaskNotFoundError);
    await expect(group.add(c, other)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(group.add()).rejects.toBeInstanceOf(InvalidArgumentError);
    expect((await group.tasks()).map((t) => t.id)).toEqual([a.id, b.id]); // c joined neither time
    expect((await town.task(c.id)).group).toBeUndefined();
    expect((await town.task(a.id)).group).toBe('mixed');
  });

  it('a task over already joins done; an open one reopens a landed group, which lands again', async () => {
    const town = await openTown();
    const worker = await town.spawnAgent('w', { run: async (t) => t.description });
    const done = await town.waitForTask((await worker.assign('early')).id, { timeoutMs: 5_000 });
    const group = town.group('late');
    await group.add(done);
    expect(await group.wait({ timeoutMs: 1_000 })).toMatchObject({ total: 1, done: 1, complete: true });
    // adding work reopens it
    const idle = await town.spawnAgent('held', { start: false });
    const later = await group.assign(idle, 'later');
    expect((await group.progress()).complete).toBe(false);
    const waiting = group.wait({ timeoutMs: 5_000 });
    await town.completeTask(later.id, 'by hand');
    expect(await waiting).toMatchObject({ total: 2, done: 2, counts: { completed: 2 } });
    const landings = (await collectHistory(town)).filter((e: TownEvent) => e.type === 'group.completed');
    expect(landings.map((e) => e.taskId)).toEqual([later.id]); // the first task joined when over: no landing then
  });
});

describe('group.wait', () => {
  it('resolves at once for an empty group, times out, aborts, and leaves no listener behind', async () => {
    const town = await openTown();
    const before = readerListenerCount(town);
    expect(await town.group('empty').wait()).toEqual({
      name: 'empty',
      total: 0,
      counts: { pending: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0 },
      done: 0,
      complete: true,
    });
    const group = town.group('open');
    await town.backlog.add({ description: 'never done', group: 'open' });
    await expect(group.wait({ timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
    const ac = new AbortController();
    const aborted = group.wait({ signal: ac.signal });
    ac.abort();
    await expect(aborted).rejects.toBeInstanceOf(AbortedError);
    expect(readerListenerCount(town)).toBe(before);
  });

  it('refuses bad names and tasks naming another group', async () => {
    const town = await openTown();
    for (const name of ['', 'has space', 'a:b', '-dash', 'x'.repeat(65)]) expect(() => town.group(name)).toThrow(InvalidNameError);
    await expect(town.backlog.add({ description: 'x', group: 'bad name' })).rejects.toBeInstanceOf(InvalidArgumentError);
    const agent = await town.spawnAgent('a', { start: false });
    await expect(town.group('one').assign(agent, { description: 'x', group: 'two' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('group.cancel', () => {
  it('ends every open task of the group in one step: running, queued, backlog and held ones; dependants in turn', async () => {
    const town = await openTown();
    let abortedWith: unknown;
    const started = deferred();
    const agent = await town.spawnAgent('worker', {
      run: (_task, ctx) =>
        new Promise((_, reject) => {
          started.resolve();
          ctx.signal.addEventListener('abort', () => {
            abortedWith = ctx.signal.reason;
            reject(ctx.signal.reason);
          });
        }),
    });
    const other = await town.spawnAgent('other', { run: (task) => `did ${task.description}` });
    const group = town.group('release-2.3');
    const done = await group.assign(other, 'already done');
    await town.waitForTask(done.id, { timeoutMs: 10_000 });
    const running = await group.assign(agent, 'runs until cancelled');
    await started.promise;
    const queued = await group.assign(agent, 'queued behind it');
    const backlog = await town.backlog.add({ description: 'in the backlog', group: 'release-2.3' });
    const held = await group.assign(other, { description: 'waits on the running one', dependsOn: [running.id] });
    const outside = await other.assign({ description: 'not in the group, waits on the queued one', dependsOn: [queued.id] });
    const waiting = group.wait({ timeoutMs: 10_000 });

    expect(await group.cancel('release postponed')).toBe(4);

    for (const t of [running, queued, backlog]) {
      expect(await town.task(t.id)).toMatchObject({ state: 'cancelled', error: 'release postponed' });
    }
    // cancelled in the same step by its dependency, which went first: the reason says so
    expect(await town.task(held.id)).toMatchObject({ state: 'cancelled', error: `dependency ${running.id} cancelled: release postponed` });
    expect((await town.task(outside.id)).state).toBe('cancelled'); // its dependency was cancelled
    expect((await town.task(done.id)).state).toBe('completed');
    expect(await waiting).toMatchObject({ total: 5, done: 5, complete: true, counts: { completed: 1, cancelled: 4 } });
    await agent.waitForIdle({ timeoutMs: 10_000 });
    expect(abortedWith).toBeInstanceOf(Error); // the running handler was stopped
    expect(await town.backlog.list()).toEqual([]);
    expect(await agent.inbox()).toEqual([]);
    const events = await collectHistory(town);
    // landed once with its first task, reopened by the next, landed again by the cancel
    const landings = events.filter((e) => e.type === 'group.completed');
    expect(landings).toHaveLength(2);
    expect(landings[1]!.data).toMatchObject({ group: 'release-2.3', total: 5, completed: 1, cancelled: 4, failed: 0 });
    expect(events.filter((e) => e.type === 'task.cancelled' && e.data.message === 'release postponed').map((e) => e.taskId).sort())
      .toEqual([running.id, queued.id, backlog.id].sort());

    expect(await group.cancel()).toBe(0); // nothing open any more
  });

  it('is a no-op for a group with no task, and refuses a reason that is not a string', async () => {
    const town = await openTown();
    expect(await town.group('empty').cancel()).toBe(0);
    expect(() => town.group('empty').cancel(42 as unknown as string)).toThrow(InvalidArgumentError);
  });
});
