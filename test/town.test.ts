/**
 * The Town facade: connecting from several processes and through the managed Redis, agents
 * (spawn, lookup, listing, status), tasks (read, list, wait, external control), events
 * plumbing (on/off), recover, runWorker's error paths, and close(). Real Redis, no mocks.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  AgentAmbiguousError,
  AgentExistsError,
  AgentNotFoundError,
  InvalidArgumentError,
  InvalidNameError,
  InvalidTransitionError,
  ReservedNameError,
  stopManagedRedis,
  TaskNotFoundError,
  TimeoutError,
  TownClosedError,
  Town,
  UnknownCliError,
  WorkerActiveError,
  type TaskContext,
  type TaskRecord,
  type TaskState,
  type TownEvent,
} from '../src/index.js';
import { FAKE_AGENT, fakeCli, openTown, redisUrl, tempDir, track, uniqueName } from './helpers/town.js';
import { deferred, lastJson, pause, prefixOf, rawRedis, runNodeScript, withRedisUrlEnv } from './helpers/util.js';

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

/** Starts the town's event reader and waits for it, so that later waits subscribe at once. */
async function primeReader(town: Town): Promise<void> {
  const done = await town.backlog.add('primer');
  await town.cancelTask(done.id);
  await town.waitForTask(done.id);
}

/** A handler that signals when it starts and then waits for its task to be aborted. */
function blockingHandler() {
  const started = deferred<TaskRecord>();
  const aborted = deferred<unknown>();
  const release = deferred<string>();
  const run = async (task: TaskRecord, ctx: TaskContext): Promise<string> => {
    started.resolve(task);
    ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason), { once: true });
    return Promise.race([
      release.promise,
      new Promise<never>((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true })),
    ]);
  };
  return { run, started, aborted, release };
}

// ── several processes, one town ─────────────────────────────────────────────────────────────

describe('one town, several processes', () => {
  it('another OS process connecting to the same folder sees the same agents and tasks', async () => {
    const town = await openTown();
    const local = await town.spawnAgent('local', { run: async (task) => `handled here: ${task.description}` });
    const cold = await town.spawnAgent('cold', { start: false, role: 'reviewer' });
    const queued = await cold.assign({ description: 'review the PR', tags: ['review'] });

    const child = await runNodeScript(
      `
      const { Town } = await import(process.env.TT_PKG);
      const [dir, url] = process.argv.slice(2);
      const town = await Town.connect(dir, { redis: url });
      const agents = (await town.agents()).map((a) => ({ id: a.id, name: a.name, state: a.state, role: a.role }));
      const tasks = (await town.tasks()).map((t) => ({ id: t.id, state: t.state, assignedTo: t.assignedTo, tags: t.tags }));
      const inbox = (await (await town.agent('cold')).inbox()).map((m) => m.taskId);
      const mine = await (await town.agent('local')).assign('sent from the child');
      const done = await town.waitForTask(mine.id, { timeoutMs: 10000 });
      console.log(JSON.stringify({ name: town.name, agents, tasks, inbox, mine: mine.id, result: done.result }));
      await town.close();
      `,
      [town.root, redisUrl()],
    );
    expect(child.code, child.stderr).toBe(0);
    const seen = lastJson<{
      name: string;
      agents: { id: string; name: string; state: string; role?: string }[];
      tasks: { id: string; state: string; assignedTo?: string; tags: string[] }[];
      inbox: string[];
      mine: string;
      result: string;
    }>(child);
    expect(seen.name).toBe(town.name);
    expect(seen.agents).toEqual([
      { id: local.id, name: 'local', state: 'idle' },
      { id: cold.id, name: 'cold', state: 'cold', role: 'reviewer' },
    ]);
    expect(seen.tasks).toContainEqual({ id: queued.id, state: 'assigned', assignedTo: cold.id, tags: ['review'] });
    expect(seen.inbox).toEqual([queued.id]);
    // The child's task ran on this process's worker, and the child saw it end.
    expect(seen.result).toBe('handled here: sent from the child');
    const record = await town.task(seen.mine);
    expect(record).toMatchObject({ state: 'completed', assignedTo: local.id, result: 'handled here: sent from the child' });
  });

  it('the managed redis-server is started in .tt/ and reused by another process', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const town = track(await withRedisUrlEnv(undefined, () => Town.connect(dir, { name })));
    try {
      expect(existsSync(join(dir, '.tt', 'redis.pid'))).toBe(true);
      expect(await readFile(join(dir, '.tt', '.gitignore'), 'utf8')).toMatch(/\*/);
      const pid = await readFile(join(dir, '.tt', 'redis.pid'), 'utf8');
      const agent = await town.spawnAgent('shared', { run: async (task) => `managed: ${task.description}` });

      const env = { ...process.env };
      delete env.REDIS_URL;
      const child = await runNodeScript(
        `
        const { Town } = await import(process.env.TT_PKG);
        const town = await Town.connect(process.argv[2]);
        const agents = (await town.agents()).map((a) => ({ id: a.id, name: a.name }));
        const task = await (await town.agent('shared')).assign('from the child');
        const done = await town.waitForTask(task.id, { timeoutMs: 10000 });
        console.log(JSON.stringify({ name: town.name, agents, result: done.result }));
        await town.close();
        `,
        [dir],
        { env },
      );
      expect(child.code, child.stderr).toBe(0);
      expect(lastJson(child)).toEqual({ name, agents: [{ id: agent.id, name: 'shared' }], result: 'managed: from the child' });
      // Same server: the pid file names the process started first.
      expect(await readFile(join(dir, '.tt', 'redis.pid'), 'utf8')).toBe(pid);
      await town.close();
    } finally {
      await town.close();
      expect(await stopManagedRedis(dir)).toBe(true);
    }
    expect(await stopManagedRedis(dir)).toBe(false);
  });
});

// ── spawnAgent ──────────────────────────────────────────────────────────────────────────────

describe('spawnAgent', () => {
  it('registers an agent that becomes idle with a worker', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('echo', { run: async () => 'ok', role: 'helper', nickname: 'Echo', tags: ['x'] });
    expect(agent.name).toBe('echo');
    expect(agent.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const info = await agent.info();
    expect(info).toMatchObject({
      id: agent.id,
      name: 'echo',
      shortId: agent.id.slice(0, 4),
      type: 'worker',
      state: 'idle',
      cli: 'in-process',
      role: 'helper',
      nickname: 'Echo',
      tags: ['x'],
      tasksCompleted: 0,
      tasksFailed: 0,
      claimBacklog: false,
    });
    expect(info.workerId).toEqual(expect.any(String));
    expect(info.currentTask).toBeUndefined();
  });

  it('accepts a preset name as the second argument', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('coder', { cli: 'codex', start: false });
    expect((await agent.info()).cli).toBe('codex');
    const other = await town.spawnAgent('writer', 'claude');
    expect((await other.info()).cli).toBe('claude');
    await other.stop({ force: true });
  });

  it('start: false leaves the agent cold, without a worker', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const info = await agent.info();
    expect(info.state).toBe('cold');
    expect(info.workerId).toBeUndefined();
    const task = await agent.assign('nobody runs this');
    await pause(200);
    expect((await town.task(task.id)).state).toBe('assigned');
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([task.id]);
  });

  it.each(['', 'bad name', 'a'.repeat(65), '-x', '.x', 'x:y', 'x{y}', 'x/y', 'é'])('refuses the invalid name %j', async (name) => {
    const town = await openTown();
    await expect(town.spawnAgent(name, { run: async () => 'x' })).rejects.toBeInstanceOf(InvalidNameError);
    expect(await town.agents()).toEqual([]);
  });

  it('accepts a 64-character name', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('a'.repeat(64), { start: false });
    expect((await agent.info()).name).toBe('a'.repeat(64));
  });

  it.each(['supervisor', 'Conductor', 'SUPERVISOR', 'conductor'])('refuses the reserved name %s', async (name) => {
    const town = await openTown();
    await expect(town.spawnAgent(name, { run: async () => 'x' })).rejects.toBeInstanceOf(ReservedNameError);
    expect(await town.agents()).toEqual([]);
  });

  it('refuses a second live agent of the same name', async () => {
    const town = await openTown();
    const first = await town.spawnAgent('dup', { run: async () => 'x' });
    await expect(town.spawnAgent('dup', { run: async () => 'y' })).rejects.toBeInstanceOf(AgentExistsError);
    const cold = await town.spawnAgent('cold', { start: false });
    await expect(town.spawnAgent('cold', { start: false })).rejects.toBeInstanceOf(AgentExistsError);
    expect((await town.agents()).map((a) => a.id).sort()).toEqual([first.id, cold.id].sort());
    expect((await first.info()).state).toBe('idle');
  });

  it.each([{ force: false }, { force: true }])('revives a stopped agent of the same name (same id) with %o', async ({ force }) => {
    const town = await openTown();
    const first = await town.spawnAgent('phoenix', { run: async () => 'first life' });
    await first.stop({ force });
    const again = await town.spawnAgent('phoenix', { run: async () => 'second life', role: 'reborn' });
    expect(again.id).toBe(first.id);
    const task = await again.assign('live');
    const done = await town.waitForTask(task.id, { timeoutMs: 5_000 });
    expect(done.result).toBe('second life');
    const info = await again.info();
    expect(info.state).toBe('idle');
    expect(info.role).toBe('reborn');
    expect(await town.agents()).toHaveLength(1);
  });

  it('revives a name stopped through another handle on the same town', async () => {
    const first = await openTown();
    const second = await openTown({ name: first.name }, first.root);
    const original = await first.spawnAgent('x', { run: async () => 'first handle' });
    await (await second.agent('x')).stop();
    const revived = await second.spawnAgent('x', { run: async () => 'second handle' });
    expect(revived.id).toBe(original.id);
    const task = await revived.assign('go');
    expect((await second.waitForTask(task.id, { timeoutMs: 5_000 })).result).toBe('second handle');
    expect((await revived.info()).state).toBe('idle');
  });

  it('a foreign event at the tail of the stream does not hold a new worker back', async () => {
    const town = await openTown();
    await town.spawnAgent('first', { run: async () => 'x' });
    // e.g. written by the Rust `tt` CLI: a type this version does not know
    await rawRedis().xadd(`${prefixOf(town.name)}events`, '*', 'event_type', 'agent_interrupted', 'data', '{"message":"hi"}');
    const started = Date.now();
    const agent = await town.spawnAgent('second', { run: async () => 'second' });
    expect(Date.now() - started).toBeLessThan(1_000);
    const task = await agent.assign('go');
    expect((await town.waitForTask(task.id, { timeoutMs: 5_000 })).result).toBe('second');
  });

  it('restart() after stop() brings the worker back', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('x', { run: async () => 'back' });
    await agent.stop();
    await agent.restart();
    const task = await agent.assign('go');
    expect((await town.waitForTask(task.id, { timeoutMs: 5_000 })).result).toBe('back');
    expect((await agent.info()).state).toBe('idle');
  });

  it('refuses an unknown preset, registering nothing', async () => {
    const town = await openTown();
    await expect(town.spawnAgent('x', 'no-such-cli')).rejects.toBeInstanceOf(UnknownCliError);
    await expect(town.spawnAgent('y', { cli: 'no-such-cli', start: false })).rejects.toBeInstanceOf(UnknownCliError);
    expect(await town.agents()).toEqual([]);
  });

  it.each<[string, Record<string, unknown>]>([
    ['an unknown option', { run: async () => 'x', bogus: true }],
    ['both cli and run', { cli: fakeCli(), run: async () => 'x' }],
    ['neither cli nor run (with a worker)', {}],
    ['a non-function run', { run: 'echo' }],
    ['a negative timeoutMs', { run: async () => 'x', timeoutMs: -1 }],
    ['a zero leaseMs', { run: async () => 'x', leaseMs: 0 }],
    ['a non-string role', { run: async () => 'x', role: 5 }],
    ['tags that are not strings', { run: async () => 'x', tags: [1] }],
    ["start: 'no'", { run: async () => 'x', start: 'no' }],
    ['a non-boolean claimBacklog', { run: async () => 'x', claimBacklog: 1 }],
    ['env values that are not strings', { cli: fakeCli(), env: { DEBUG: 1 } }],
    ['an env that is not an object', { cli: fakeCli(), env: 'DEBUG=1' }],
    ['an inline cli without command', { cli: { command: '' } }],
    ['an inline cli with an unknown prompt mode', { cli: { command: FAKE_AGENT, prompt: 'pipe' } }],
    ['an inline cli with non-string args', { cli: { command: FAKE_AGENT, args: [1] } }],
  ])('refuses %s with InvalidArgumentError, registering nothing', async (_, options) => {
    const town = await openTown();
    await expect(town.spawnAgent('x', options as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await town.agents()).toEqual([]);
  });
});

// ── town.agent(ref) ─────────────────────────────────────────────────────────────────────────

describe('town.agent(ref)', () => {
  it('finds an agent by name, id, short id and nickname', async () => {
    const town = await openTown();
    const a = await town.spawnAgent('alpha', { start: false, nickname: 'Al' });
    await town.spawnAgent('beta', { start: false, nickname: 'Be' });
    for (const ref of [a.name, a.id, a.id.toUpperCase(), a.id.slice(0, 4), a.id.slice(0, 8), 'Al']) {
      const found = await town.agent(ref);
      expect([found.id, found.name]).toEqual([a.id, 'alpha']);
    }
  });

  it('unknown references are AgentNotFoundError; an empty one InvalidArgumentError', async () => {
    const town = await openTown();
    const a = await town.spawnAgent('alpha', { start: false });
    for (const ref of ['nobody', UNKNOWN_ID, 'al', 'ALPHA']) {
      await expect(town.agent(ref)).rejects.toBeInstanceOf(AgentNotFoundError);
    }
    await expect(town.agent('')).rejects.toBeInstanceOf(InvalidArgumentError);
    await a.remove();
    await expect(town.agent('alpha')).rejects.toBeInstanceOf(AgentNotFoundError);
    await expect(town.agent(a.id)).rejects.toBeInstanceOf(AgentNotFoundError);
  });

  it('a nickname shared by two agents is AgentAmbiguousError naming both', async () => {
    const town = await openTown();
    const a = await town.spawnAgent('a', { start: false, nickname: 'Bob' });
    const b = await town.spawnAgent('b', { start: false, nickname: 'Bob' });
    const err = await town.agent('Bob').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentAmbiguousError);
    expect((err as Error).message).toContain(a.id);
    expect((err as Error).message).toContain(b.id);
    // the names still work
    expect((await town.agent('b')).id).toBe(b.id);
  });

  it('a short id shared by two agents is AgentAmbiguousError', async () => {
    const town = await openTown();
    // Register cold agents until two ids share their first four hex digits (about 300 on average).
    const byPrefix = new Map<string, string>();
    let pair: [string, string] | undefined;
    for (let batch = 0; pair === undefined && batch < 40; batch++) {
      const agents = await Promise.all(
        Array.from({ length: 100 }, (_, i) => town.spawnAgent(`a${batch}-${i}`, { start: false })),
      );
      for (const agent of agents) {
        const prefix = agent.id.slice(0, 4);
        const other = byPrefix.get(prefix);
        if (other !== undefined && pair === undefined) pair = [other, agent.id];
        byPrefix.set(prefix, agent.id);
      }
    }
    expect(pair).toBeDefined();
    const [first, second] = pair!;
    await expect(town.agent(first.slice(0, 4))).rejects.toBeInstanceOf(AgentAmbiguousError);
    // one more character usually settles it; the full id always does
    expect((await town.agent(first)).id).toBe(first);
    expect((await town.agent(second)).id).toBe(second);
  });
});

// ── agents() and status() ───────────────────────────────────────────────────────────────────

describe('agents() and status()', () => {
  it('agents() lists every agent, oldest first', async () => {
    const town = await openTown();
    expect(await town.agents()).toEqual([]);
    const a = await town.spawnAgent('zulu', { start: false });
    await pause(5); // distinct creation times
    const b = await town.spawnAgent('alpha', { run: async () => 'x' });
    const list = await town.agents();
    expect(list.map((x) => [x.id, x.name, x.state])).toEqual([
      [a.id, 'zulu', 'cold'],
      [b.id, 'alpha', 'idle'],
    ]);
    expect(list[0]!.createdAt).toBeInstanceOf(Date);
  });

  it('status() shows states, the current task, queue depths, task counts and the backlog', async () => {
    const town = await openTown();
    const echo = await town.spawnAgent('echo', { run: async () => 'done' });
    const done = await echo.assign('finish me');
    await town.waitForTask(done.id, { timeoutMs: 5_000 });
    const blocker = blockingHandler();
    const busy = await town.spawnAgent('busy', { run: blocker.run });
    const running = await busy.assign('keep running');
    await blocker.started.promise;
    const cold = await town.spawnAgent('cold', { start: false });
    await cold.assign('queued 1');
    await cold.assign('queued 2');
    await cold.send('a note');
    await town.backlog.add('unclaimed');

    const status = await town.status();
    expect(status.name).toBe(town.name);
    expect(status.tasks).toEqual({ pending: 1, assigned: 2, running: 1, completed: 1, failed: 0, cancelled: 0 });
    expect(status.backlog).toBe(1);
    const byName = Object.fromEntries(status.agents.map((a) => [a.name, a]));
    expect(Object.keys(byName).sort()).toEqual(['busy', 'cold', 'echo']);
    expect(byName.busy).toMatchObject({ state: 'working', currentTask: running.id, queued: 0 });
    expect(byName.cold).toMatchObject({ state: 'cold', queued: 3 });
    expect(byName.cold!.currentTask).toBeUndefined();
    expect(byName.echo).toMatchObject({ state: 'idle', queued: 0, tasksCompleted: 1 });

    blocker.release.resolve('released');
    await busy.waitForIdle({ timeoutMs: 5_000 });
    const after = await town.status();
    expect(after.tasks).toMatchObject({ running: 0, completed: 2 });
    expect(after.agents.find((a) => a.name === 'busy')).toMatchObject({ state: 'idle', tasksCompleted: 1 });
    expect(after.agents.find((a) => a.name === 'busy')!.currentTask).toBeUndefined();
  });
});

// ── tasks ───────────────────────────────────────────────────────────────────────────────────

describe('task(), tasks()', () => {
  it('task() reads a record; an unknown id is TaskNotFoundError, a bad one InvalidArgumentError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const created = await agent.assign({ description: 'read me', tags: ['a'], priority: 'high', maxAttempts: 5, timeoutMs: 1000 });
    const read = await town.task(created.id);
    expect(read).toEqual(created);
    await expect(town.task(UNKNOWN_ID)).rejects.toBeInstanceOf(TaskNotFoundError);
    await expect(town.task('')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.task(42 as never)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('tasks() filters by state, agent, tag and limit, newest first', async () => {
    const town = await openTown();
    const a = await town.spawnAgent('a', { start: false, nickname: 'Ann' });
    const b = await town.spawnAgent('b', { start: false });
    const created: TaskRecord[] = [];
    for (const [where, input] of [
      [a, { description: 't0', tags: ['x'] }],
      [b, { description: 't1', tags: ['x', 'y'] }],
      [undefined, { description: 't2', tags: ['y'] }],
      [a, { description: 't3' }],
    ] as const) {
      created.push(where ? await where.assign(input) : await town.backlog.add(input));
      await pause(3); // distinct creation times, so "newest first" is well defined
    }
    await town.completeTask(created[3]!.id, 'done by hand');
    const ids = (list: TaskRecord[]) => list.map((t) => t.description);

    expect(ids(await town.tasks())).toEqual(['t3', 't2', 't1', 't0']);
    expect(ids(await town.tasks({ limit: 2 }))).toEqual(['t3', 't2']);
    expect(ids(await town.tasks({ state: 'assigned' }))).toEqual(['t1', 't0']);
    expect(ids(await town.tasks({ state: ['pending', 'completed'] }))).toEqual(['t3', 't2']);
    expect(ids(await town.tasks({ agent: 'a' }))).toEqual(['t3', 't0']);
    expect(ids(await town.tasks({ agent: 'Ann', state: 'assigned' }))).toEqual(['t0']);
    expect(ids(await town.tasks({ agent: b.id }))).toEqual(['t1']);
    expect(ids(await town.tasks({ tag: 'x' }))).toEqual(['t1', 't0']);
    expect(ids(await town.tasks({ tag: 'y', limit: 1 }))).toEqual(['t2']);
    expect(await town.tasks({ tag: 'nope' })).toEqual([]);
  });

  it('tasks() refuses a bad filter', async () => {
    const town = await openTown();
    await expect(town.tasks({ limit: 0 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.tasks({ limit: 1.5 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.tasks({ agent: 'nobody' })).rejects.toBeInstanceOf(AgentNotFoundError);
    // a typo in a state must not silently match nothing
    await expect(town.tasks({ state: 'complete' as TaskState })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.tasks({ state: ['pending', 'done' as TaskState] })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  // Creation order comes from a counter, not the millisecond clock.
  it('tasks() is newest first even for tasks created within one millisecond', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    // Submitted in this order and pipelined: the server creates them in this order.
    const created = await Promise.all(Array.from({ length: 20 }, (_, i) => agent.assign(`t${i}`)));
    const listed = await town.tasks();
    expect(listed.map((t) => t.id)).toEqual(created.map((t) => t.id).reverse());
  });
});

describe('waitForTask', () => {
  it('resolves with the terminal record: completed, failed or cancelled', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('worker', {
      run: async (task) => {
        if (task.description === 'fail') throw new Error('it broke');
        return `ok: ${task.description}`;
      },
    });
    const ok = await agent.assign('succeed');
    const bad = await agent.assign('fail');
    const cold = await town.spawnAgent('cold', { start: false });
    const cancelled = await cold.assign('never');
    const waitCancelled = town.waitForTask(cancelled.id, { timeoutMs: 5_000 });
    await town.cancelTask(cancelled.id, 'not needed');

    expect(await town.waitForTask(ok.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'ok: succeed', attempts: 1 });
    expect(await town.waitForTask(bad.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'failed', error: 'it broke' });
    expect(await waitCancelled).toMatchObject({ state: 'cancelled', error: 'not needed' });
    // an already finished task resolves at once
    expect((await town.waitForTask(ok.id)).state).toBe('completed');
  });

  it('rejects with TimeoutError after timeoutMs', async () => {
    const town = await openTown();
    const task = await (await town.spawnAgent('cold', { start: false })).assign('stuck');
    const started = Date.now();
    await expect(town.waitForTask(task.id, { timeoutMs: 150 })).rejects.toBeInstanceOf(TimeoutError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('rejects with AbortedError through its signal', async () => {
    const town = await openTown();
    const task = await (await town.spawnAgent('cold', { start: false })).assign('stuck');
    await expect(town.waitForTask(task.id, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(AbortedError);
    await primeReader(town);
    const controller = new AbortController();
    const waiting = town.waitForTask(task.id, { signal: controller.signal });
    await town.task(task.id); // one round trip: the wait is listening by now
    controller.abort('changed my mind');
    const err = await waiting.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect((err as Error).cause).toBe('changed my mind');
  });

  // An abort while the wait starts the event reader (before its listener exists) still counts.
  it('rejects with AbortedError when aborted right after the call', async () => {
    const town = await openTown();
    const task = await (await town.spawnAgent('cold', { start: false })).assign('stuck');
    const controller = new AbortController();
    const waiting = town.waitForTask(task.id, { signal: controller.signal, timeoutMs: 1_000 });
    controller.abort();
    await expect(waiting).rejects.toBeInstanceOf(AbortedError);
  });

  it('rejects for unknown ids and bad options', async () => {
    const town = await openTown();
    await expect(town.waitForTask(UNKNOWN_ID, { timeoutMs: 1_000 })).rejects.toBeInstanceOf(TaskNotFoundError);
    await expect(town.waitForTask('', { timeoutMs: 1_000 })).rejects.toBeInstanceOf(InvalidArgumentError);
    const task = await town.backlog.add('x');
    await expect(town.waitForTask(task.id, { timeoutMs: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('cancelTask, completeTask, failTask', () => {
  type Settle = 'cancel' | 'complete' | 'fail';
  const expected: Record<Settle, Partial<TaskRecord>> = {
    cancel: { state: 'cancelled', error: 'outside' },
    complete: { state: 'completed', result: 'outside' },
    fail: { state: 'failed', error: 'outside' },
  };
  const settle = (town: Town, how: Settle, id: string, text = 'outside'): Promise<TaskRecord> =>
    how === 'cancel' ? town.cancelTask(id, text) : how === 'complete' ? town.completeTask(id, text) : town.failTask(id, text);

  async function expectCountsMatchTasks(town: Town): Promise<void> {
    const { tasks } = await town.status();
    const all = await town.tasks({ limit: 1000 });
    for (const state of Object.keys(tasks) as TaskState[]) {
      expect(tasks[state], state).toBe(all.filter((t) => t.state === state).length);
    }
  }

  it.each<Settle>(['cancel', 'complete', 'fail'])('%s on a pending (backlog) task', async (how) => {
    const town = await openTown();
    const task = await town.backlog.add('in the backlog');
    const record = await settle(town, how, task.id);
    expect(record).toMatchObject(expected[how]);
    expect(record.completedAt).toBeInstanceOf(Date);
    expect(await town.backlog.list()).toEqual([]);
    expect((await town.status()).backlog).toBe(0);
    await expectCountsMatchTasks(town);
  });

  it.each<Settle>(['cancel', 'complete', 'fail'])('%s on an assigned task takes it off the queue', async (how) => {
    const town = await openTown();
    const agent = await town.spawnAgent('late', { start: false });
    const task = await agent.assign({ description: 'queued', priority: 'urgent' });
    const other = await agent.assign('stays');
    expect(await settle(town, how, task.id)).toMatchObject({ ...expected[how], assignedTo: agent.id });
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([other.id]);
    // a worker that attaches later never runs it
    const ran: string[] = [];
    await town.runWorker('late', { run: async (t) => void ran.push(t.description) });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(ran).toEqual(['stays']);
    expect(await town.task(task.id)).toMatchObject(expected[how]);
    await expectCountsMatchTasks(town);
  });

  it('cancel on a running task aborts its handler and the task stays cancelled', async () => {
    const town = await openTown();
    const blocker = blockingHandler();
    const agent = await town.spawnAgent('busy', { run: blocker.run });
    const task = await agent.assign('long job');
    await blocker.started.promise;
    expect(await town.cancelTask(task.id, 'no longer needed')).toMatchObject({ state: 'cancelled', error: 'no longer needed' });
    await blocker.aborted.promise;
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(await town.task(task.id)).toMatchObject({ state: 'cancelled', error: 'no longer needed' });
    expect(await agent.info()).toMatchObject({ state: 'idle' });
    expect((await agent.info()).currentTask).toBeUndefined();
    await expectCountsMatchTasks(town);
    // and the agent keeps working
    const next = await agent.assign('next');
    await blocker.started.promise;
    blocker.release.resolve('fine');
    expect((await town.waitForTask(next.id, { timeoutMs: 5_000 })).state).toBe('completed');
  });

  it('completeTask on a running task keeps the external result when the handler returns later', async () => {
    const town = await openTown();
    const blocker = blockingHandler();
    const agent = await town.spawnAgent('busy', { run: blocker.run });
    const task = await agent.assign('long job');
    await blocker.started.promise;
    expect(await town.completeTask(task.id, 'done by a human')).toMatchObject({ state: 'completed', result: 'done by a human' });
    blocker.release.resolve('the handler disagrees');
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: 'done by a human' });
    await expectCountsMatchTasks(town);
  });

  it('failTask on a running task keeps the external error when the handler succeeds later', async () => {
    const town = await openTown();
    const blocker = blockingHandler();
    const agent = await town.spawnAgent('busy', { run: blocker.run });
    const task = await agent.assign('long job');
    await blocker.started.promise;
    expect(await town.failTask(task.id, 'requirements changed')).toMatchObject({ state: 'failed', error: 'requirements changed' });
    blocker.release.resolve('too late');
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const record = await town.task(task.id);
    expect(record).toMatchObject({ state: 'failed', error: 'requirements changed' });
    expect(record.result).toBeUndefined();
    await expectCountsMatchTasks(town);
  });

  it.each<[Settle, Settle]>([
    ['cancel', 'complete'],
    ['complete', 'cancel'],
    ['fail', 'fail'],
    ['complete', 'complete'],
  ])('%s then %s is InvalidTransitionError, the record unchanged', async (first, second) => {
    const town = await openTown();
    const task = await town.backlog.add('once');
    await settle(town, first, task.id);
    const before = await town.task(task.id);
    const err = await settle(town, second, task.id, 'a second opinion').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidTransitionError);
    expect((err as Error).message).toContain(before.state);
    expect(await town.task(task.id)).toEqual(before);
  });

  it.each<Settle>(['cancel', 'complete', 'fail'])('%s repeated word for word is no error (a re-sent request)', async (how) => {
    const town = await openTown();
    const task = await town.backlog.add('once');
    const first = await settle(town, how, task.id);
    expect(await settle(town, how, task.id)).toEqual(first);
    await expectCountsMatchTasks(town);
  });

  it.each<Settle>(['cancel', 'complete', 'fail'])('%s on an unknown id is TaskNotFoundError', async (how) => {
    const town = await openTown();
    await expect(settle(town, how, UNKNOWN_ID)).rejects.toBeInstanceOf(TaskNotFoundError);
    await expect(settle(town, how, '')).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

// ── events plumbing, recover, runWorker ─────────────────────────────────────────────────────

describe('on/off, events(), recover(), runWorker()', () => {
  it('on() delivers live events of one type; off() removes the listener', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('echo', { run: async () => 'ok' });
    const removed: TownEvent[] = [];
    const kept: TownEvent[] = [];
    const removedListener = (e: TownEvent) => removed.push(e);
    town.on('task.completed', removedListener);
    const firstSeen = deferred();
    const second = deferred();
    town.on('task.completed', (e) => {
      kept.push(e);
      if (kept.length === 1) firstSeen.resolve();
      if (kept.length === 2) second.resolve();
    });
    const first = await agent.assign('one');
    await firstSeen.promise;
    town.off('task.completed', removedListener);
    await agent.assign('two');
    await second.promise;
    expect(removed.map((e) => e.taskId)).toEqual([first.id]);
    expect(kept[0]).toMatchObject({ type: 'task.completed', taskId: first.id, agentId: agent.id });
    expect(kept[0]!.at).toBeInstanceOf(Date);
  });

  it('on() and events() refuse unknown event types and bad positions', async () => {
    const town = await openTown();
    expect(() => town.on('task.done' as never, (() => undefined) as never)).toThrow(InvalidArgumentError);
    expect(() => town.events({ types: ['task.done' as never] })).toThrow(InvalidArgumentError);
    expect(() => town.events({ since: 'yesterday' })).toThrow(InvalidArgumentError);
  });

  it('recover() reports what it did', async () => {
    const town = await openTown();
    await town.spawnAgent('echo', { run: async () => 'ok' });
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 0 });
  });

  it('recover() expires finished tasks past the retention period, and only those', async () => {
    // A long lease: the automatic sweep (every half lease) must not run before recover() does.
    const town = await openTown({ retentionMs: 60_000, leaseMs: 120_000 });
    const old = await town.backlog.add('finished long ago');
    const recent = await town.backlog.add('finished just now');
    const open = await town.backlog.add('still open');
    await town.completeTask(old.id, 'done');
    await town.cancelTask(recent.id);
    // Age the first one: its completion time is what retention counts from.
    await rawRedis().zadd(`${prefixOf(town.name)}idx:done`, Date.now() - 120_000, old.id);
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 1 });
    await expect(town.task(old.id)).rejects.toBeInstanceOf(TaskNotFoundError);
    expect((await town.task(recent.id)).state).toBe('cancelled');
    expect((await town.task(open.id)).state).toBe('pending');
    expect((await town.tasks()).map((t) => t.id).sort()).toEqual([recent.id, open.id].sort());
    expect((await town.status()).tasks).toMatchObject({ completed: 0, cancelled: 1, pending: 1 });
    expect(await town.recover()).toEqual({ reclaimed: 0, expired: 0 });
  });

  it('runWorker() refuses a second local worker, unknown agents and bad options', async () => {
    const town = await openTown();
    const cold = await town.spawnAgent('cold', { start: false });
    const worker = await town.runWorker('cold', { run: async () => 'attached' });
    expect(worker.agent.id).toBe(cold.id);
    await expect(town.runWorker('cold', { run: async () => 'again' })).rejects.toBeInstanceOf(WorkerActiveError);
    await expect(town.runWorker('nobody', { run: async () => 'x' })).rejects.toBeInstanceOf(AgentNotFoundError);
    await expect(town.runWorker('cold', { run: async () => 'x', bogus: 1 } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    // an agent registered without a CLI needs one (or a handler) to run
    await town.spawnAgent('bare', { start: false });
    await expect(town.runWorker('bare')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.runWorker('bare', { cli: 'no-such-cli' })).rejects.toBeInstanceOf(UnknownCliError);
    const preset = await town.spawnAgent('preset', { cli: fakeCli(), start: false });
    await expect(town.runWorker('preset', { cli: { command: '' } })).rejects.toBeInstanceOf(InvalidArgumentError);
    expect((await preset.info()).workerId).toBeUndefined();
    const task = await cold.assign('go');
    expect((await town.waitForTask(task.id, { timeoutMs: 5_000 })).result).toBe('attached');
  });
});

// ── close() ─────────────────────────────────────────────────────────────────────────────────

describe('close()', () => {
  it('is idempotent', async () => {
    const town = await openTown();
    await town.spawnAgent('echo', { run: async () => 'ok' });
    await Promise.all([town.close(), town.close()]);
    await town.close();
    await town[Symbol.asyncDispose]();
  });

  it('every method afterwards rejects with TownClosedError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = await agent.assign('x');
    await town.close();
    const calls: [string, () => Promise<unknown>][] = [
      ['spawnAgent', () => town.spawnAgent('new', { run: async () => 'x' })],
      ['agent', () => town.agent('cold')],
      ['agents', () => town.agents()],
      ['status', () => town.status()],
      ['task', () => town.task(task.id)],
      ['tasks', () => town.tasks()],
      ['waitForTask', () => town.waitForTask(task.id)],
      ['cancelTask', () => town.cancelTask(task.id)],
      ['completeTask', () => town.completeTask(task.id, 'x')],
      ['failTask', () => town.failTask(task.id, 'x')],
      ['send', () => town.send('cold', 'x')],
      ['broadcast', () => town.broadcast('x')],
      ['inbox', () => town.inbox()],
      ['recover', () => town.recover()],
      ['runWorker', () => town.runWorker('cold', { run: async () => 'x' })],
      ['backlog.add', () => town.backlog.add('x')],
      ['backlog.list', () => town.backlog.list()],
      ['backlog.claim', () => town.backlog.claim(task.id, 'cold')],
      ['backlog.remove', () => town.backlog.remove(task.id)],
      ['agent.info', () => agent.info()],
      ['agent.assign', () => agent.assign('x')],
      ['agent.send', () => agent.send('x')],
      ['agent.inbox', () => agent.inbox()],
      ['agent.pause', () => agent.pause()],
      ['agent.resume', () => agent.resume()],
      ['agent.drain', () => agent.drain()],
      ['agent.stop', () => agent.stop()],
      ['agent.restart', () => agent.restart()],
      ['agent.remove', () => agent.remove()],
      ['agent.waitForIdle', () => agent.waitForIdle()],
    ];
    for (const [name, call] of calls) {
      let result: Promise<unknown>;
      try {
        result = call();
      } catch (err) {
        throw new Error(`${name} threw synchronously instead of rejecting: ${String(err)}`);
      }
      await expect(result, name).rejects.toBeInstanceOf(TownClosedError);
    }
    expect(() => town.events()).toThrow(TownClosedError);
    expect(() => town.on('task.completed', () => undefined)).toThrow(TownClosedError);
  });

  it('pending waits reject with TownClosedError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = await agent.assign('never runs');
    await primeReader(town);
    const waitTask = town.waitForTask(task.id);
    const waitIdle = agent.waitForIdle();
    waitTask.catch(() => undefined);
    waitIdle.catch(() => undefined);
    await town.task(task.id); // one round trip: both waits are listening by now
    await town.close();
    await expect(waitTask).rejects.toBeInstanceOf(TownClosedError);
    await expect(waitIdle).rejects.toBeInstanceOf(TownClosedError);
  });

  // A close() while the wait starts the event reader (before its listener exists) still counts.
  it('waits started right before close() reject with TownClosedError', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = await agent.assign('never runs');
    const waitTask = town.waitForTask(task.id, { timeoutMs: 2_000 });
    waitTask.catch(() => undefined);
    await town.close();
    await expect(waitTask).rejects.toBeInstanceOf(TownClosedError);
  });

  it('hands a running task back after closeGraceMs instead of hanging', async () => {
    const town = await openTown({ closeGraceMs: 100 });
    const blocker = blockingHandler();
    const agent = await town.spawnAgent('busy', { run: blocker.run });
    const task = await agent.assign('endless');
    await blocker.started.promise;
    const started = Date.now();
    await town.close();
    expect(Date.now() - started).toBeLessThan(2_000);
    await blocker.aborted.promise;
    const observer = await openTown({ name: town.name }, town.root);
    const record = await observer.task(task.id);
    expect(record.state).toBe('assigned');
    expect((await (await observer.agent('busy')).inbox()).map((m) => m.taskId)).toEqual([task.id]);
  });

  const exitScript = `
    const { Town } = await import(process.env.TT_PKG);
    const [dir, url, fake, name] = process.argv.slice(2);
    const town = await Town.connect(dir, { redis: url, name });
    town.on('task.completed', () => {});
    town.on('error', () => {});
    const echo = await town.spawnAgent('echo', { run: async (t) => 'echo ' + t.description });
    const cli = await town.spawnAgent('cli', { cli: { command: fake } });
    const cold = await town.spawnAgent('cold', { start: false });
    const a = await echo.assign('one');
    const b = await cli.assign('two');
    await cold.assign('left queued');
    const results = [];
    for (const t of [a, b]) results.push((await town.waitForTask(t.id, { timeoutMs: 10000 })).result);
    await echo.waitForIdle({ timeoutMs: 5000 });
    await town.close();
    console.log(JSON.stringify({ results }));
    console.log('closed');
  `;

  // One child run serves both tests below.
  let exitDelay: Promise<number> | undefined;
  const exitDelayAfterClose = (): Promise<number> => (exitDelay ??= measureExitDelay());

  async function measureExitDelay(): Promise<number> {
    const child = await runNodeScript(exitScript, [await tempDir(), redisUrl(), FAKE_AGENT, uniqueName()], { timeoutMs: 15_000 });
    expect(child.code, child.stderr).toBe(0);
    expect(lastJson(child)).toEqual({ results: ['echo one', 'done: two'] });
    const closedAt = child.lineTimes.get('closed');
    expect(closedAt).toBeDefined();
    return child.exitedAt - closedAt!;
  }

  it('lets the Node process exit by itself after close() (no process.exit)', async () => {
    expect(await exitDelayAfterClose()).toBeLessThan(3_000);
  });

  // A worker drops its blocking connection twice (on stop and on release); a second ioredis
  // disconnect() would arm a 2 s timer that keeps the process alive.
  it('lets the Node process exit right after close() (well under a second)', async () => {
    expect(await exitDelayAfterClose()).toBeLessThan(1_000);
  });
});
