/**
 * The Agent handle: assign (every input form, validation, size cap, priorities), info/inbox,
 * remove, waitForIdle, control error paths, and CLI agents (hostile prompts, missing binaries,
 * instructions, cwd). Real Redis, real child processes.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AgentNotFoundError,
  DescriptionTooLargeError,
  InvalidArgumentError,
  InvalidTransitionError,
  Task,
  TimeoutError,
  waitForIdle,
  type Town,
  type TaskContext,
  type TaskRecord,
} from '../src/index.js';
import { fakeCli, openTown } from './helpers/town.js';
import { deferred, prefixOf, rawRedis } from './helpers/util.js';

const SUPERVISOR_ID = '00000000-0000-0000-0000-000000000001';

/** Everything a failed write could have touched, to prove nothing was written. */
async function footprint(town: Town, agentId: string) {
  const redis = rawRedis();
  const p = prefixOf(town.name);
  const [tasks, counts, inbox, backlog, events] = await Promise.all([
    redis.zcard(`${p}idx:tasks`),
    redis.hgetall(`${p}counts`),
    redis.llen(`${p}inbox:${agentId}`),
    redis.llen(`${p}backlog`),
    redis.xlen(`${p}events`),
  ]);
  return { tasks, counts, inbox, backlog, events };
}

describe('agent.assign', () => {
  it('takes a string', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const record = await agent.assign('Fix the login bug');
    expect(record).toMatchObject({
      description: 'Fix the login bug',
      state: 'assigned',
      assignedTo: agent.id,
      tags: [],
      attempts: 0,
      maxAttempts: 3,
      priority: 'normal',
    });
    expect(record.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(record.createdAt).toBeInstanceOf(Date);
    expect(record.updatedAt).toEqual(record.createdAt);
    expect(record.startedAt).toBeUndefined();
    expect(await town.task(record.id)).toEqual(record);
    const inbox = await agent.inbox();
    expect(inbox).toHaveLength(1);
    expect(inbox[0]).toMatchObject({ type: 'task_assign', taskId: record.id, from: SUPERVISOR_ID, to: agent.id, priority: 'normal' });
  });

  it('takes a TaskInput with every option', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const parent = await agent.assign('parent');
    const input = {
      description: 'Ship it',
      tags: ['release', 'ops'],
      parentId: parent.id,
      priority: 'urgent' as const,
      timeoutMs: 600_000,
      maxAttempts: 5,
    };
    const record = await agent.assign(input);
    expect(record).toMatchObject({ ...input, state: 'assigned', assignedTo: agent.id, attempts: 0 });
    expect(await town.task(record.id)).toEqual(record);
    // the input object is not mutated or kept
    expect(input.tags).toEqual(['release', 'ops']);
  });

  it('takes a Task', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = new Task('Design auth API schema', { tags: ['api'], priority: 'high', maxAttempts: 2 });
    const record = await agent.assign(task);
    expect(record).toMatchObject({ description: 'Design auth API schema', tags: ['api'], priority: 'high', maxAttempts: 2 });
    expect(record.timeoutMs).toBeUndefined();
    expect(await town.task(record.id)).toEqual(record);
    // a Task is a reusable value
    const again = await agent.assign(task);
    expect(again.id).not.toBe(record.id);
  });

  it("takes the agent's maxAttempts when the task sets none", async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('careful', { start: false, maxAttempts: 1 });
    const plain = await agent.assign('inherits');
    const own = await agent.assign({ description: 'own', maxAttempts: 5 });
    expect(plain.maxAttempts).toBe(1);
    expect(own.maxAttempts).toBe(5);
    expect((await town.task(plain.id)).maxAttempts).toBe(1);
    expect((await town.backlog.add('backlog default')).maxAttempts).toBe(3);
    await expect(town.spawnAgent('reckless', { start: false, maxAttempts: 0 })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('new Task() validates at once', () => {
    expect(() => new Task('')).toThrow(InvalidArgumentError);
    expect(() => new Task('x', { priority: 'asap' as never })).toThrow(InvalidArgumentError);
    expect(() => new Task('x', { timeoutMs: 0 })).toThrow(InvalidArgumentError);
    expect(() => new Task('x', { bogus: 1 } as never)).toThrow(InvalidArgumentError);
    expect(new Task('x', { tags: undefined }).description).toBe('x');
  });

  it.each<[string, unknown, RegExp]>([
    ['an unknown key', { description: 'x', priorty: 'high' }, /priorty/],
    ["priority 'asap'", { description: 'x', priority: 'asap' }, /priority/],
    ['a negative timeoutMs', { description: 'x', timeoutMs: -5 }, /timeoutMs/],
    ['a fractional timeoutMs', { description: 'x', timeoutMs: 1.5 }, /timeoutMs/],
    ['maxAttempts 0', { description: 'x', maxAttempts: 0 }, /maxAttempts/],
    ['tags that are not an array', { description: 'x', tags: 'api' }, /tags/],
    ['an empty tag', { description: 'x', tags: [''] }, /tags/],
    ['an empty description', { description: '' }, /description/],
    ['a numeric description', { description: 42 }, /description/],
    ['no description', { priority: 'high' }, /description/],
    ['null', null, /description/],
    ['an empty string', '', /description/],
  ])('refuses %s with InvalidArgumentError naming it, writing nothing', async (_, input, pattern) => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const before = await footprint(town, agent.id);
    const err = await agent.assign(input as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(pattern);
    expect(await footprint(town, agent.id)).toEqual(before);
  });

  it('refuses a 2 MiB description with DescriptionTooLargeError, writing nothing', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    await agent.assign('a normal one first');
    const before = await footprint(town, agent.id);
    const huge = 'x'.repeat(2 * 1024 * 1024);
    const err = await agent.assign(huge).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DescriptionTooLargeError);
    expect((err as Error).message).toContain(String(2 * 1024 * 1024));
    await expect(agent.assign({ description: huge, priority: 'urgent' })).rejects.toBeInstanceOf(DescriptionTooLargeError);
    await expect(agent.assign(new Task(huge))).rejects.toBeInstanceOf(DescriptionTooLargeError);
    await expect(town.backlog.add(huge)).rejects.toBeInstanceOf(DescriptionTooLargeError);
    expect(await footprint(town, agent.id)).toEqual(before);
    expect((await town.status()).tasks.assigned).toBe(1);
  });

  it('counts the limit in UTF-8 bytes (maxDescriptionBytes)', async () => {
    const town = await openTown({ maxDescriptionBytes: 1000 });
    const agent = await town.spawnAgent('cold', { start: false });
    expect((await agent.assign('x'.repeat(1000))).description).toHaveLength(1000);
    await expect(agent.assign('x'.repeat(1001))).rejects.toBeInstanceOf(DescriptionTooLargeError);
    // 500 characters, 1000 bytes: fits; 501 characters, 1002 bytes: does not
    expect((await agent.assign('é'.repeat(500))).description).toBe('é'.repeat(500));
    await expect(agent.assign('é'.repeat(501))).rejects.toBeInstanceOf(DescriptionTooLargeError);
  });

  it('delivers urgent, then high, then normal, then low tasks, first come first served within each', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('late', { start: false });
    const n1 = await agent.assign('n1');
    const l1 = await agent.assign({ description: 'l1', priority: 'low' });
    const h1 = await agent.assign({ description: 'h1', priority: 'high' });
    const n2 = await agent.assign(new Task('n2', { priority: 'normal' }));
    const u1 = await agent.assign({ description: 'u1', priority: 'urgent' });
    const h2 = await agent.assign({ description: 'h2', priority: 'high' });
    const l2 = await agent.assign({ description: 'l2', priority: 'low' });
    const u2 = await agent.assign({ description: 'u2', priority: 'urgent' });
    const n3 = await agent.assign('n3');
    const order = (await agent.inbox()).map((m) => m.taskId);
    expect(order).toEqual([u1.id, u2.id, h1.id, h2.id, n1.id, n2.id, n3.id, l1.id, l2.id]);
    // and a worker runs them in that order
    const ran: string[] = [];
    await town.runWorker('late', { run: async (task) => void ran.push(task.id) });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(ran).toEqual(order);
  });

  it('to a removed agent is AgentNotFoundError, writing nothing', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('gone', { start: false });
    await agent.remove();
    const before = await footprint(town, agent.id);
    await expect(agent.assign('too late')).rejects.toBeInstanceOf(AgentNotFoundError);
    expect(await footprint(town, agent.id)).toEqual(before);
  });
});

describe('agent.info and agent.inbox', () => {
  it('info() reads the record; on a removed agent it is AgentNotFoundError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('a', { run: async () => 'ok', role: 'dev' });
    const task = await agent.assign('go');
    await town.waitForTask(task.id, { timeoutMs: 5_000 });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const info = await agent.info();
    expect(info).toMatchObject({ id: agent.id, name: 'a', state: 'idle', tasksCompleted: 1, roundsCompleted: 1, role: 'dev' });
    expect(info.lastActiveAt.getTime()).toBeGreaterThanOrEqual(info.createdAt.getTime());
    await agent.remove();
    await expect(agent.info()).rejects.toBeInstanceOf(AgentNotFoundError);
    expect(await agent.inbox()).toEqual([]);
  });

  it('inbox() lists waiting messages in delivery order', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    expect(await agent.inbox()).toEqual([]);
    const t = await agent.assign('work');
    const m1 = await agent.send('first note');
    const m2 = await agent.send('urgent note', { priority: 'urgent' });
    const inbox = await agent.inbox();
    expect(inbox.map((m) => m.id)).toEqual([m2, inbox[1]!.id, m1]);
    expect(inbox[1]!.taskId).toBe(t.id);
    expect(inbox[0]).toMatchObject({ type: 'info', text: 'urgent note', priority: 'urgent' });
    expect(inbox[0]!.createdAt).toBeInstanceOf(Date);
  });
});

describe('agent.remove', () => {
  it('moves queued tasks to the backlog, forgets the agent and frees its name', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('leaving', { start: false, nickname: 'Lee' });
    const tasks = [
      await agent.assign('one'),
      await agent.assign({ description: 'two', priority: 'high', tags: ['x'] }),
      await agent.assign('three'),
    ];
    await agent.send('a note that dies with the agent');
    await agent.remove();

    const backlog = await town.backlog.list();
    expect(backlog.map((t) => t.id).sort()).toEqual(tasks.map((t) => t.id).sort());
    for (const task of backlog) {
      expect(task.state).toBe('pending');
      expect(task.assignedTo).toBeUndefined();
    }
    expect(backlog.find((t) => t.description === 'two')).toMatchObject({ priority: 'high', tags: ['x'] });
    expect(await town.agents()).toEqual([]);
    await expect(town.agent('leaving')).rejects.toBeInstanceOf(AgentNotFoundError);
    await expect(town.agent('Lee')).rejects.toBeInstanceOf(AgentNotFoundError);
    const status = await town.status();
    expect(status.tasks).toMatchObject({ pending: 3, assigned: 0 });
    expect(status.backlog).toBe(3);
    expect(await rawRedis().exists(`${prefixOf(town.name)}inbox:${agent.id}`, `${prefixOf(town.name)}notes:${agent.id}`)).toBe(0);

    const reborn = await town.spawnAgent('leaving', { run: async () => 'new life' });
    expect(reborn.id).not.toBe(agent.id);
    const claimed = await town.backlog.claim(tasks[0]!.id, 'leaving');
    expect(claimed.assignedTo).toBe(reborn.id); // it may already be running
    expect((await town.waitForTask(tasks[0]!.id, { timeoutMs: 5_000 })).result).toBe('new life');
  });

  it('never drops the running task: it goes to the backlog too', async () => {
    const town = await openTown();
    const started = deferred();
    const aborted = deferred();
    const agent = await town.spawnAgent('busy', {
      run: async (_task: TaskRecord, ctx: TaskContext) => {
        ctx.signal.addEventListener('abort', () => aborted.resolve(), { once: true });
        started.resolve();
        await new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('stopped'))));
      },
    });
    const running = await agent.assign('in flight');
    const queued = await agent.assign('waiting');
    await started.promise;
    await agent.remove();
    await aborted.promise;
    const backlog = await town.backlog.list();
    expect(backlog.map((t) => t.id).sort()).toEqual([running.id, queued.id].sort());
    expect(backlog.every((t) => t.state === 'pending' && t.assignedTo === undefined)).toBe(true);
    expect(await town.agents()).toEqual([]);
    expect((await town.status()).tasks).toMatchObject({ running: 0, pending: 2 });
  });

  it('turns a queued task or query message into a backlog task', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const q = await town.send('cold', 'Which ORM do we use?', { type: 'query' });
    const t = await town.send('cold', 'Bump the version', { type: 'task' });
    await agent.remove();
    const backlog = await town.backlog.list();
    expect(backlog.map((task) => [task.id, task.description, task.state])).toEqual([
      [q, 'Which ORM do we use?', 'pending'],
      [t, 'Bump the version', 'pending'],
    ]);
  });

  it('a removed agent handle fails with AgentNotFoundError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('gone', { start: false });
    await agent.remove();
    for (const [name, call] of [
      ['remove', () => agent.remove()],
      ['send', () => agent.send('hello?')],
      ['pause', () => agent.pause()],
      ['resume', () => agent.resume()],
      ['drain', () => agent.drain()],
      ['stop', () => agent.stop()],
      ['restart', () => agent.restart()],
      ['waitForIdle', () => agent.waitForIdle({ timeoutMs: 1_000 })],
    ] as const) {
      await expect(call(), name).rejects.toBeInstanceOf(AgentNotFoundError);
    }
  });
});

describe('agent.waitForIdle and waitForIdle()', () => {
  it('resolves once every queued task is done', async () => {
    const town = await openTown();
    const seen: string[] = [];
    const a = await town.spawnAgent('a', { run: async (task) => void seen.push(task.description) });
    const b = await town.spawnAgent('b', { run: async (task) => void seen.push(task.description) });
    const tasks = [await a.assign('a1'), await a.assign('a2'), await b.assign('b1'), await a.assign('a3')];
    await waitForIdle([a, b], { timeoutMs: 5_000 });
    for (const task of tasks) expect((await town.task(task.id)).state).toBe('completed');
    expect(seen.sort()).toEqual(['a1', 'a2', 'a3', 'b1']);
    // an idle agent resolves at once, alone or in a list
    await a.waitForIdle();
    await waitForIdle(b);
    await waitForIdle([]);
  });

  it('times out while work is queued; bad options are InvalidArgumentError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    await agent.waitForIdle({ timeoutMs: 1_000 }); // nothing queued: idle
    await agent.assign('stuck');
    await expect(agent.waitForIdle({ timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
    await expect(waitForIdle([agent], { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
    await expect(agent.waitForIdle({ timeoutMs: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(agent.waitForIdle({ timeoutMs: Number.NaN })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('rejects with AgentNotFoundError when the agent is removed while waiting', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    await agent.assign('stuck');
    const waiting = agent.waitForIdle({ timeoutMs: 5_000 });
    waiting.catch(() => undefined);
    await agent.remove();
    await expect(waiting).rejects.toBeInstanceOf(AgentNotFoundError);
  });
});

describe('control error paths', () => {
  it('pausing a stopped agent is InvalidTransitionError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('x', { run: async () => 'x' });
    await agent.stop({ force: true });
    expect((await agent.info()).state).toBe('stopped');
    await expect(agent.pause()).rejects.toBeInstanceOf(InvalidTransitionError);
    // resume and drain of a stopped agent change nothing
    await agent.resume();
    await agent.drain();
    expect((await agent.info()).state).toBe('stopped');
  });
});

describe('CLI agents', () => {
  const marker = (): string => join('/tmp', `pwned-${randomUUID()}`);
  const hostile = (file: string): string =>
    [
      `[fake:echo] $(touch ${file}) \`touch ${file}\` ; touch ${file} && echo hacked > ${file} | cat`,
      `"double" 'single' \\backslash \\"escaped\\" $HOME \${PATH} %PATH% $& $' $1 {prompt} {promptFile}`,
      'second line\twith a tab\r\nthird line after CRLF',
      'ünïcødé — 日本語 — 🚀🎉 — \u202Eright-to-left',
      '--help -rf / --prompt-file /etc/passwd',
      'the end',
    ].join('\n');

  it.each(['stdin', 'arg', 'file'] as const)('hands a hostile description to the CLI literally (%s)', async (mode) => {
    const town = await openTown();
    const agent = await town.spawnAgent('echo', { cli: fakeCli(mode) });
    const file = marker();
    const description = hostile(file);
    const task = await agent.assign(description);
    const done = await town.waitForTask(task.id, { timeoutMs: 10_000 });
    expect(done.state, done.error).toBe('completed');
    expect(done.result).toBe(description);
    expect(Buffer.from(done.result!, 'utf8').equals(Buffer.from(description, 'utf8'))).toBe(true);
    expect(existsSync(file)).toBe(false);
  });

  it('a missing CLI binary fails the task with CLI_NOT_FOUND; the agent stays usable', async () => {
    const town = await openTown();
    const command = `tinytown-no-such-cli-${randomUUID().slice(0, 8)}`;
    const agent = await town.spawnAgent('ghost', { cli: { command, args: ['--print'] } });
    const workerId = (await agent.info()).workerId;
    expect(workerId).toBeDefined();
    for (let round = 1; round <= 2; round++) {
      const task = await agent.assign(`attempt ${round}`);
      const done = await town.waitForTask(task.id, { timeoutMs: 10_000 });
      expect(done.state).toBe('failed');
      expect(done.error).toMatch(/^CLI_NOT_FOUND/);
      expect(done.error).toContain(command);
      await agent.waitForIdle({ timeoutMs: 5_000 });
      const info = await agent.info();
      expect(info).toMatchObject({ state: 'idle', tasksFailed: round, workerId });
    }
  });

  it('instructions and cwd reach the CLI', async () => {
    const town = await openTown();
    await mkdir(join(town.root, 'sub'), { recursive: true });
    const agent = await town.spawnAgent('echo', {
      cli: fakeCli(),
      instructions: 'You are a careful reviewer.',
      cwd: 'sub',
    });
    const echoed = await agent.assign('[fake:echo] review the diff');
    const done = await town.waitForTask(echoed.id, { timeoutMs: 10_000 });
    expect(done.result).toBe('You are a careful reviewer.\n\n## Task\n\n[fake:echo] review the diff');
    const where = await agent.assign('[fake:cwd]');
    expect((await town.waitForTask(where.id, { timeoutMs: 10_000 })).result).toBe(`cwd=${await realpath(join(town.root, 'sub'))}`);
  });

  it('a failing CLI fails the task with its last words; the next task still runs', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('flaky', { cli: fakeCli() });
    const bad = await agent.assign('[fake:fail]');
    const good = await agent.assign('recover');
    expect(await town.waitForTask(bad.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'failed' });
    expect((await town.task(bad.id)).error).toContain('something broke');
    expect((await town.waitForTask(good.id, { timeoutMs: 10_000 })).result).toBe('done: recover');
  });
});
