/**
 * The backlog: add / list / claim / remove, their error paths, racing claims, and agents with
 * `claimBacklog: true` taking matching work by themselves. Real Redis.
 */
import { describe, expect, it } from 'vitest';
import {
  AgentNotFoundError,
  DescriptionTooLargeError,
  InvalidArgumentError,
  NotInBacklogError,
  Task,
  TaskNotFoundError,
  type TaskRecord,
} from '../src/index.js';
import { openTown } from './helpers/town.js';
import { pause } from './helpers/util.js';

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

describe('add and list', () => {
  it('adds pending, unassigned tasks from a string, a TaskInput or a Task; lists them oldest first', async () => {
    const town = await openTown();
    expect(await town.backlog.list()).toEqual([]);
    const a = await town.backlog.add('Update the changelog');
    const b = await town.backlog.add({ description: 'Triage flaky tests', tags: ['qa'], priority: 'high', maxAttempts: 2 });
    const c = await town.backlog.add(new Task('Write the release notes', { tags: ['docs'] }));
    for (const t of [a, b, c]) {
      expect(t.state).toBe('pending');
      expect(t.assignedTo).toBeUndefined();
      expect(await town.task(t.id)).toEqual(t);
    }
    expect(b).toMatchObject({ tags: ['qa'], priority: 'high', maxAttempts: 2 });
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([a.id, b.id, c.id]);
    const status = await town.status();
    expect(status.backlog).toBe(3);
    expect(status.tasks.pending).toBe(3);
  });

  it('refuses bad input', async () => {
    const town = await openTown({ maxDescriptionBytes: 64 });
    await expect(town.backlog.add('')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.backlog.add({ description: 'x', priority: 'asap' } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.backlog.add({ description: 'x', assignee: 'bob' } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.backlog.add('x'.repeat(65))).rejects.toBeInstanceOf(DescriptionTooLargeError);
    expect(await town.backlog.list()).toEqual([]);
    expect((await town.status()).tasks.pending).toBe(0);
  });
});

describe('claim', () => {
  it('moves a task to an agent by any reference', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('tester', { start: false, nickname: 'Tess' });
    const tasks = await Promise.all(['one', 'two', 'three'].map((d) => town.backlog.add(d)));
    const refs = ['tester', 'Tess', agent.id.slice(0, 6)];
    for (const [i, task] of tasks.entries()) {
      const claimed = await town.backlog.claim(task.id, refs[i]!);
      expect(claimed).toMatchObject({ id: task.id, state: 'assigned', assignedTo: agent.id, description: task.description });
    }
    expect(await town.backlog.list()).toEqual([]);
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual(tasks.map((t) => t.id));
    expect((await town.status()).tasks).toMatchObject({ pending: 0, assigned: 3 });
  });

  it('puts an urgent task ahead of normal queued work', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('tester', { start: false });
    const queued = await agent.assign('already queued');
    const urgent = await town.backlog.add({ description: 'hotfix', priority: 'urgent' });
    await town.backlog.claim(urgent.id, 'tester');
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([urgent.id, queued.id]);
  });

  it('the claimed task runs on the agent', async () => {
    const town = await openTown();
    await town.spawnAgent('runner', { run: async (t) => `ran ${t.description}` });
    const task = await town.backlog.add('from the backlog');
    await town.backlog.claim(task.id, 'runner');
    expect(await town.waitForTask(task.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'ran from the backlog' });
  });

  it('of a task not in the backlog is NotInBacklogError, and changes nothing', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('tester', { start: false });
    const assigned = await agent.assign('already assigned');
    const pending = await town.backlog.add('claimed once');
    await town.backlog.claim(pending.id, 'tester');
    const removed = await town.backlog.add('removed');
    await town.backlog.remove(removed.id);
    for (const id of [assigned.id, pending.id, removed.id, UNKNOWN_ID]) {
      await expect(town.backlog.claim(id, 'tester')).rejects.toBeInstanceOf(NotInBacklogError);
    }
    expect(await town.task(assigned.id)).toMatchObject({ state: 'assigned', assignedTo: agent.id });
    expect(await town.task(removed.id)).toMatchObject({ state: 'cancelled' });
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([assigned.id, pending.id]);
    await expect(town.backlog.claim('', 'tester')).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('by an unknown agent is AgentNotFoundError and leaves the task in the backlog', async () => {
    const town = await openTown();
    const task = await town.backlog.add('orphan');
    await expect(town.backlog.claim(task.id, 'nobody')).rejects.toBeInstanceOf(AgentNotFoundError);
    const gone = await town.spawnAgent('gone', { start: false });
    await gone.remove();
    await expect(town.backlog.claim(task.id, gone.id)).rejects.toBeInstanceOf(AgentNotFoundError);
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([task.id]);
    expect((await town.task(task.id)).state).toBe('pending');
  });

  it('two concurrent claims of one task: exactly one wins', async () => {
    const town = await openTown();
    const a = await town.spawnAgent('a', { start: false });
    const b = await town.spawnAgent('b', { start: false });
    for (let round = 0; round < 20; round++) {
      const task = await town.backlog.add(`contested ${round}`);
      const results = await Promise.allSettled([town.backlog.claim(task.id, 'a'), town.backlog.claim(task.id, 'b')]);
      const won = results.filter((r): r is PromiseFulfilledResult<TaskRecord> => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect(lost[0]!.reason).toBeInstanceOf(NotInBacklogError);
      const winner = won[0]!.value.assignedTo;
      expect((await town.task(task.id)).assignedTo).toBe(winner);
    }
    const inboxes = [...(await a.inbox()), ...(await b.inbox())];
    expect(inboxes).toHaveLength(20);
    expect(new Set(inboxes.map((m) => m.taskId)).size).toBe(20);
    expect((await town.status()).tasks).toMatchObject({ pending: 0, assigned: 20 });
  });
});

describe('remove', () => {
  it('takes a task out; it ends cancelled with the reason', async () => {
    const town = await openTown();
    const keep = await town.backlog.add('keep');
    const drop = await town.backlog.add('drop');
    const dropDefault = await town.backlog.add('drop with the default reason');
    await town.backlog.remove(drop.id, 'duplicate of #42');
    await town.backlog.remove(dropDefault.id);
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([keep.id]);
    expect(await town.task(drop.id)).toMatchObject({ state: 'cancelled', error: 'duplicate of #42' });
    expect((await town.task(dropDefault.id)).error).toEqual(expect.any(String));
    expect((await town.waitForTask(drop.id)).state).toBe('cancelled');
    expect((await town.status()).tasks).toMatchObject({ pending: 1, cancelled: 2 });
  });

  it('of a task not in the backlog is NotInBacklogError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('tester', { start: false });
    const assigned = await agent.assign('assigned');
    const once = await town.backlog.add('once');
    await town.backlog.remove(once.id);
    for (const id of [assigned.id, once.id, UNKNOWN_ID]) {
      await expect(town.backlog.remove(id)).rejects.toBeInstanceOf(NotInBacklogError);
    }
    expect((await town.task(assigned.id)).state).toBe('assigned');
    await expect(town.task(UNKNOWN_ID)).rejects.toBeInstanceOf(TaskNotFoundError);
  });

  it('a backlog task settled from outside leaves the backlog', async () => {
    const town = await openTown();
    const cancelled = await town.backlog.add('cancel me');
    const completed = await town.backlog.add('complete me');
    await town.cancelTask(cancelled.id);
    await town.completeTask(completed.id, 'done elsewhere');
    expect(await town.backlog.list()).toEqual([]);
    await town.spawnAgent('late', { start: false });
    await expect(town.backlog.claim(cancelled.id, 'late')).rejects.toBeInstanceOf(NotInBacklogError);
    await expect(town.backlog.remove(completed.id)).rejects.toBeInstanceOf(NotInBacklogError);
  });
});

describe('claimBacklog agents', () => {
  it('take matching backlog tasks by themselves: untagged ones and those tagged with their role or tags', async () => {
    const town = await openTown();
    const ran: string[] = [];
    const tasks = {
      qa: await town.backlog.add({ description: 'qa', tags: ['qa'] }),
      docs: await town.backlog.add({ description: 'docs', tags: ['docs', 'misc'] }),
      untagged: await town.backlog.add('untagged'),
      ops: await town.backlog.add({ description: 'ops', tags: ['ops'] }),
    };
    // existing work is taken when the agent starts
    const agent = await town.spawnAgent('tester', {
      role: 'qa',
      tags: ['docs'],
      claimBacklog: true,
      run: async (task) => void ran.push(task.description),
    });
    for (const t of [tasks.qa, tasks.docs, tasks.untagged]) {
      expect(await town.waitForTask(t.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', assignedTo: agent.id });
    }
    // and new work as it arrives
    const later = await town.backlog.add({ description: 'later', tags: ['qa'] });
    expect((await town.waitForTask(later.id, { timeoutMs: 5_000 })).assignedTo).toBe(agent.id);
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(ran.sort()).toEqual(['docs', 'later', 'qa', 'untagged']);
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([tasks.ops.id]);
    expect((await town.task(tasks.ops.id)).state).toBe('pending');
  });

  it('agents without claimBacklog leave the backlog alone', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('bystander', { run: async () => 'x' });
    const task = await town.backlog.add('nobody takes this');
    await pause(300);
    expect((await town.task(task.id)).state).toBe('pending');
    expect((await agent.info()).tasksCompleted).toBe(0);
  });

  it('two idle claimers racing: every task runs exactly once', async () => {
    const town = await openTown();
    const runs = new Map<string, string[]>();
    const handler = (name: string) => async (task: TaskRecord) => {
      runs.set(task.id, [...(runs.get(task.id) ?? []), name]);
      return name;
    };
    const first = await town.spawnAgent('first', { claimBacklog: true, run: handler('first') });
    const second = await town.spawnAgent('second', { claimBacklog: true, run: handler('second') });
    const tasks = await Promise.all(Array.from({ length: 40 }, (_, i) => town.backlog.add(`job ${i}`)));
    const done = await Promise.all(tasks.map((t) => town.waitForTask(t.id, { timeoutMs: 10_000 })));
    await Promise.all([first.waitForIdle({ timeoutMs: 5_000 }), second.waitForIdle({ timeoutMs: 5_000 })]);
    for (const record of done) {
      expect(record.state).toBe('completed');
      expect(record.attempts).toBe(1);
      expect(runs.get(record.id)).toHaveLength(1);
      expect(runs.get(record.id)![0]).toBe(record.result);
      expect([first.id, second.id]).toContain(record.assignedTo);
    }
    expect(runs.size).toBe(40);
    expect(await town.backlog.list()).toEqual([]);
    const status = await town.status();
    expect(status.tasks).toMatchObject({ pending: 0, assigned: 0, running: 0, completed: 40 });
    expect(status.agents.reduce((n, a) => n + a.tasksCompleted, 0)).toBe(40);
  });
});
