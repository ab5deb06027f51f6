/**
 * Task dependencies: a task with `dependsOn` is held (state `pending`, in no queue) until its
 * last dependency completes, then queued in that same atomic step; a failed or cancelled
 * dependency cancels its dependants, transitively (or lets them run, with `'run'`). Real Redis.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, type Agent, type TaskRecord, type Town, type TownEvent } from '../src/index.js';
import { runScript } from '../src/store/scripts.js';
import type { Repository } from '../src/store/repository.js';
import { collectHistory, deferred, rawRedis, waitForEvent, type Deferred } from './helpers/kit.js';
import { openTown } from './helpers/town.js';
import { pause } from './helpers/util.js';

/** Agents whose handler waits at a gate per task description, recording the order of starts. */
async function gatedAgents(town: Town, names: string[]) {
  const gates = new Map<string, Deferred>();
  const started: string[] = [];
  const gate = (description: string): Deferred => {
    if (!gates.has(description)) gates.set(description, deferred());
    return gates.get(description)!;
  };
  const run = async (task: TaskRecord) => {
    started.push(task.description);
    await gate(task.description).promise;
    if (task.description.startsWith('fail')) throw new Error(`${task.description} broke`);
    return `${task.description} done`;
  };
  const agents: Agent[] = [];
  for (const name of names) agents.push(await town.spawnAgent(name, { run }));
  return { agents, started, open: (description: string) => gate(description).resolve() };
}

const index = (history: TownEvent[], type: string, taskId: string): number => history.findIndex((e) => e.type === type && e.taskId === taskId);

describe('a diamond: A → B, A → C, B + C → D', () => {
  it('holds each task until its last dependency completes, then queues it in the same step', async () => {
    const town = await openTown();
    const { agents, started, open } = await gatedAgents(town, ['designer', 'backend', 'frontend', 'reviewer']);
    const [designer, backend, frontend, reviewer] = agents as [Agent, Agent, Agent, Agent];
    const a = await designer.assign('A');
    const b = await backend.assign({ description: 'B', dependsOn: [a.id] });
    const c = await frontend.assign({ description: 'C', dependsOn: [a.id] });
    const d = await reviewer.assign({ description: 'D', dependsOn: [b.id, c.id, b.id] });
    expect(d.dependsOn).toEqual([b.id, c.id]);

    // held: pending, assigned to nobody, in no inbox, not in the backlog
    for (const held of [b, c, d]) {
      expect(held).toMatchObject({ state: 'pending' });
      expect(held.assignedTo).toBeUndefined();
      expect(await town.task(held.id)).toEqual(held);
      expect(Object.keys(await town.task(held.id))).not.toContain('waitingOn');
    }
    expect(await town.backlog.list()).toEqual([]);
    for (const agent of [backend, frontend, reviewer]) expect(await agent.inbox()).toEqual([]);
    expect((await town.status()).tasks).toMatchObject({ pending: 3, running: 1 });
    await pause(100);
    expect(started).toEqual(['A']);

    open('A');
    await Promise.all([b, c].map((t) => waitForEvent(town, (e) => e.type === 'task.started' && e.taskId === t.id)));
    expect(started.slice(0, 3).sort()).toEqual(['A', 'B', 'C']);
    expect((await town.task(d.id)).state).toBe('pending');

    open('B');
    await town.waitForTask(b.id, { timeoutMs: 5_000 });
    await pause(100);
    expect((await town.task(d.id)).state).toBe('pending'); // C still runs
    expect(started).not.toContain('D');

    open('C');
    open('D');
    expect(await town.waitForTask(d.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', assignedTo: reviewer.id, result: 'D done' });
    expect(started).toEqual(['A', expect.any(String), expect.any(String), 'D']);

    // each release happened in the step that completed the last dependency
    const history = await collectHistory(town);
    for (const [task, last] of [
      [b, a],
      [c, a],
      [d, c],
    ] as const) {
      const released = history.find((e) => e.type === 'task.assigned' && e.taskId === task.id)!;
      expect(released.data.released).toBe(true);
      expect(released.agentId).toBe(task === b ? backend.id : task === c ? frontend.id : reviewer.id);
      const completed = index(history, 'task.completed', last.id);
      expect(completed).toBeGreaterThanOrEqual(0);
      expect(history.indexOf(released)).toBeGreaterThan(completed);
      expect(history.slice(completed + 1, history.indexOf(released)).every((e) => e.type === 'task.assigned' || e.type === 'agent.state')).toBe(true);
    }
    expect(index(history, 'task.assigned', d.id)).toBeGreaterThan(index(history, 'task.completed', b.id));
  });
});

describe('a failed dependency', () => {
  it('cancels its dependants with the reason, and theirs in turn; the group still lands', async () => {
    const town = await openTown();
    const { agents, started, open } = await gatedAgents(town, ['one', 'two']);
    const group = town.group('chain');
    const a = await group.assign(agents[0]!, 'fail A');
    const b = await group.assign(agents[1]!, { description: 'B', dependsOn: [a.id] });
    const c = await town.backlog.add({ description: 'C', dependsOn: [b.id], group: 'chain' });
    const side = await group.assign(agents[1]!, { description: 'side', dependsOn: [a.id], onDependencyFailure: 'run' });
    const landed = group.wait({ timeoutMs: 5_000 });
    open('fail A');
    open('side');
    expect(await town.waitForTask(b.id, { timeoutMs: 5_000 })).toMatchObject({
      state: 'cancelled',
      error: `dependency ${a.id} failed: fail A broke`,
    });
    expect((await town.task(c.id)).error).toBe(`dependency ${b.id} cancelled: dependency ${a.id} failed: fail A broke`);
    expect((await town.task(c.id)).state).toBe('cancelled');
    expect(await town.waitForTask(side.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'side done' });
    expect(started.sort()).toEqual(['fail A', 'side']);
    expect(await landed).toMatchObject({ total: 4, counts: { failed: 1, cancelled: 2, completed: 1 } });
    const cancels = (await collectHistory(town)).filter((e) => e.type === 'task.cancelled');
    expect(cancels.map((e) => [e.taskId, e.data.reason, e.data.dependency])).toEqual([
      [b.id, 'dependency', a.id],
      [c.id, 'dependency', b.id],
    ]);
    expect(await town.backlog.list()).toEqual([]);
  });

  it('a cancelled dependency counts as failed; cancelling a held task releases nothing later', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('a', { start: false });
    const first = await agent.assign('first');
    const held = await agent.assign({ description: 'held', dependsOn: [first.id] });
    const next = await agent.assign({ description: 'next', dependsOn: [held.id] });
    await town.cancelTask(held.id, 'changed my mind');
    expect(await town.task(next.id)).toMatchObject({ state: 'cancelled', error: `dependency ${held.id} cancelled: changed my mind` });
    await town.completeTask(first.id, 'done by hand');
    expect(await town.task(held.id)).toMatchObject({ state: 'cancelled', error: 'changed my mind' });
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([]); // `first` left the inbox when completed
    expect((await town.status()).tasks).toMatchObject({ pending: 0, assigned: 0, cancelled: 2, completed: 1 });
  });
});

describe('dependencies already over, or unknown', () => {
  it('a completed dependency is met at once; a failed one cancels the new task, or not with run', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('a', { start: false });
    const done = await town.backlog.add('done');
    await town.completeTask(done.id, 'ok');
    const failed = await town.backlog.add('failed');
    await town.failTask(failed.id, 'it broke');
    const queued = await agent.assign({ description: 'queued', dependsOn: [done.id] });
    expect(queued).toMatchObject({ state: 'assigned', assignedTo: agent.id, dependsOn: [done.id] });
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([queued.id]);
    const cancelled = await agent.assign({ description: 'cancelled', dependsOn: [done.id, failed.id] });
    expect(cancelled).toMatchObject({ state: 'cancelled', error: `dependency ${failed.id} failed: it broke` });
    expect(await town.task(cancelled.id)).toEqual(cancelled);
    const anyway = await town.backlog.add({ description: 'anyway', dependsOn: [failed.id], onDependencyFailure: 'run' });
    expect(anyway).toMatchObject({ state: 'pending', onDependencyFailure: 'run' });
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([anyway.id]);
  });

  it('refuses unknown ids: a dependency must exist when the task is created, so no cycle can form', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('a', { start: false });
    const real = await town.backlog.add('real');
    const before = (await town.status()).tasks;
    // a future task's id cannot be named: ids are minted when a task is created
    for (const dependsOn of [[randomUUID()], [real.id, randomUUID()]]) {
      await expect(agent.assign({ description: 'x', dependsOn })).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(town.backlog.add({ description: 'x', dependsOn })).rejects.toThrow(/no task of this town/);
    }
    for (const dependsOn of [[''], 'abc', [1]]) {
      await expect(agent.assign({ description: 'x', dependsOn } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    expect((await town.status()).tasks).toEqual(before);
    expect(await agent.inbox()).toEqual([]);
    expect(await town.backlog.list()).toEqual([real]);
  });

  it('refuses a task depending on itself (the script checks it; the API cannot even name the id)', async () => {
    const town = await openTown();
    const repo = (town as unknown as { repo: Repository }).repo;
    const id = randomUUID();
    const head = [repo.keys.prefix, new Date().toISOString(), Date.now(), 10_000];
    const args = [id, '', 'self', '[]', 'normal', '', '', '', '', '', JSON.stringify([id]), '', '', ''];
    expect(await runScript(repo.connections.command, 'assign', repo.keys.events, head, args)).toEqual([-11, id, 'self']);
    expect(await repo.connections.command.exists(repo.keys.task(id))).toBe(0);
  });
});

describe("the tinytown key layout (the Rust CLI's)", () => {
  it('holds and releases the same, and adds no key the Rust CLI would read as an agent or a task', async () => {
    const town = await openTown({ keyLayout: 'tinytown' });
    const agent = await town.spawnAgent('a', { run: async (t) => `ran ${t.description}` });
    const group = town.group('g');
    const first = await town.backlog.add({ description: 'first', group: 'g' });
    const second = await group.assign(agent, { description: 'second', dependsOn: [first.id] });
    const redis = rawRedis();
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `tt:${town.name}:*`, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    expect(keys).toEqual(expect.arrayContaining([`tt:${town.name}:group:g`, `tt:${town.name}:group-tasks:g`, `tt:${town.name}:dependants:${first.id}`]));
    for (const key of keys.filter((k) => /^tt:[^:]+:(agent|task):/.test(k) && !k.startsWith(`tt:${town.name}:events:agent:`))) {
      expect(await redis.type(key), key).toBe('hash');
    }
    await town.completeTask(first.id, 'by hand');
    expect(await town.waitForTask(second.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'ran second' });
    expect(await group.wait({ timeoutMs: 5_000 })).toMatchObject({ total: 2, counts: { completed: 2 } });
  });
});

describe('where a released task goes', () => {
  it('to the backlog when it has no agent (claimed by a claimBacklog agent), or when its agent was removed', async () => {
    const town = await openTown();
    const first = await town.backlog.add('first');
    const forBacklog = await town.backlog.add({ description: 'for the backlog', dependsOn: [first.id] });
    const doomed = await town.spawnAgent('doomed', { start: false });
    const orphan = await doomed.assign({ description: 'orphan', dependsOn: [first.id] });
    await doomed.remove();
    expect(await town.backlog.list()).toEqual([first]);
    await town.completeTask(first.id, 'ok');
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([forBacklog.id, orphan.id]);
    const claimer = await town.spawnAgent('claimer', { claimBacklog: true, run: async (t) => t.description });
    for (const t of [forBacklog, orphan]) {
      expect(await town.waitForTask(t.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', assignedTo: claimer.id });
    }
    const added = (await collectHistory(town)).filter((e) => e.type === 'backlog.added' && e.data.released === true);
    expect(added.map((e) => e.taskId)).toEqual([forBacklog.id, orphan.id]);
  });
});
