/**
 * The worker against a real Redis and real child processes: one task at a time and in order,
 * in-process handlers, CLI runs (success, failure, crash, timeout with the whole process group
 * killed, no output), the environment and working directory of the CLI, logs and counters.
 */
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { waitForIdle, type TaskRecord } from '../src/index.js';
import { randomUUID } from 'node:crypto';
import { collectHistory, grandchildPid, killConnectionsNamed, prefixOf, procState, rawRedis, sleep, waitDead } from './helpers/kit.js';
import { fakeCli, openTown } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };

describe('worker: order and concurrency', () => {
  it('runs one task at a time: urgent, high, normal, low, FIFO within each', async () => {
    const town = await openTown();
    // No worker yet, so the whole queue is in place before the first claim.
    const agent = await town.spawnAgent('orderly', { start: false });
    const assigned = {
      n1: await agent.assign({ description: 'n1' }),
      h1: await agent.assign({ description: 'h1', priority: 'high' }),
      n2: await agent.assign({ description: 'n2', priority: 'normal' }),
      u1: await agent.assign({ description: 'u1', priority: 'urgent' }),
      n3: await agent.assign({ description: 'n3' }),
      l1: await agent.assign({ description: 'l1', priority: 'low' }),
    };
    const order: string[] = [];
    let running = 0;
    let maxRunning = 0;
    await town.runWorker('orderly', {
      run: async (task, ctx) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        order.push(`${task.description}@${ctx.attempt}`);
        await sleep(15); // overlap would show if a second task started meanwhile
        running--;
        return task.description;
      },
    });
    await agent.waitForIdle(WAIT);
    expect(order).toEqual(['u1@1', 'h1@1', 'n1@1', 'n2@1', 'n3@1', 'l1@1']);
    expect(maxRunning).toBe(1);
    for (const [name, t] of Object.entries(assigned)) {
      const record = await town.task(t.id);
      expect(record).toMatchObject({ state: 'completed', result: name, attempts: 1, assignedTo: agent.id });
      expect(record.startedAt).toBeInstanceOf(Date);
      expect(record.completedAt).toBeInstanceOf(Date);
    }
  });

  it('keeps FIFO order for tasks assigned while the worker runs', async () => {
    const town = await openTown();
    const order: string[] = [];
    const agent = await town.spawnAgent('fifo', {
      run: async (task) => {
        order.push(task.description);
        await sleep(2);
        return 'ok';
      },
    });
    const names = Array.from({ length: 20 }, (_, i) => `t${i}`);
    for (const name of names) await agent.assign(name);
    await agent.waitForIdle(WAIT);
    expect(order).toEqual(names);
  });
});

describe('worker: blocking connection', () => {
  it('resumes within a second after its BLMOVE connection is killed (not after the watchdog)', async () => {
    const town = await openTown();
    const name = `blip-${randomUUID().slice(0, 8)}`; // connection names carry the agent name
    const agent = await town.spawnAgent(name, { run: async (t) => `served ${t.description}` });
    const first = await agent.assign('before');
    await town.waitForTask(first.id, WAIT);
    await agent.waitForIdle(WAIT);
    expect(await killConnectionsNamed(`tinytown:worker:${name}`)).toBe(1);
    const t0 = performance.now();
    const task = await agent.assign('after the blip');
    expect(await town.waitForTask(task.id, { timeoutMs: 3_000 })).toMatchObject({ state: 'completed', result: 'served after the blip', attempts: 1 });
    expect(performance.now() - t0).toBeLessThan(1_500);
    // And stopping it is prompt too.
    const s0 = performance.now();
    await agent.stop({ force: true });
    expect(performance.now() - s0).toBeLessThan(1_000);
  });
});

describe('worker: shared write connection', () => {
  it('carries every worker\'s writes on one connection; killing it mid-run loses and repeats nothing', async () => {
    const town = await openTown();
    const runs = new Map<string, number>();
    const agents = await Promise.all(
      ['w1', 'w2', 'w3', 'w4', 'w5'].map((name) =>
        town.spawnAgent(name, {
          run: async (task) => {
            runs.set(task.id, (runs.get(task.id) ?? 0) + 1);
            return `done ${task.description}`;
          },
        }),
      ),
    );
    const writes = `tinytown:writes:${town.name}`;
    const list = (await rawRedis().client('LIST')) as string;
    expect(list.split('\n').filter((line) => line.split(' ').includes(`name=${writes}`))).toHaveLength(1);
    // No-op handlers: with five workers finishing back to back, writes are nearly always in flight.
    const tasks = await Promise.all(Array.from({ length: 500 }, (_, i) => agents[i % agents.length]!.assign(`t${i}`)));
    let kills = 0;
    for (let i = 0; i < 6; i++) {
      await sleep(8);
      kills += await killConnectionsNamed(writes);
    }
    expect(kills).toBeGreaterThan(0);
    await waitForIdle(agents, WAIT);
    for (const task of tasks) {
      expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: `done ${task.description}`, attempts: 1 });
      expect(runs.get(task.id)).toBe(1);
    }
  });
});

describe('worker: start sent behind its BLMOVE', () => {
  it('stamps the start when the task starts, not when the BLMOVE was sent', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('stamp', { run: async () => 'ok' });
    await agent.waitForIdle(WAIT);
    await sleep(1_200); // the worker has been blocked (and its start queued) for a while
    const task = await agent.assign('stamped');
    const done = await town.waitForTask(task.id, WAIT);
    // the server's clock, formatted like ours (RFC 3339, microseconds), within moments of now
    expect(done.startedAt!.getTime()).toBeGreaterThanOrEqual(done.createdAt.getTime() - 50);
    expect(Math.abs(done.startedAt!.getTime() - Date.now())).toBeLessThan(1_000);
    const started = (await collectHistory(town)).find((e) => e.type === 'task.started' && e.taskId === task.id);
    expect(started!.at.getTime()).toBeGreaterThanOrEqual(done.createdAt.getTime() - 50);
    expect(await rawRedis().hget(`${prefixOf(town)}task:${task.id}`, 'started_at')).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
  });
});

describe('worker: in-process handlers', () => {
  it('records values as results (non-strings JSON-encoded) and rejections as errors', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('handler', {
      run: async (task) => {
        switch (task.description) {
          case 'string':
            return 'plain text';
          case 'object':
            return { a: 1, b: [2, 'three'], c: null };
          case 'number':
            return 42;
          case 'boolean':
            return false;
          case 'nothing':
            return undefined;
          case 'reject':
            throw new Error('boom: the handler failed');
          default:
            throw new Error(`unexpected ${task.description}`);
        }
      },
    });
    const ids: Record<string, string> = {};
    for (const d of ['string', 'object', 'number', 'boolean', 'nothing', 'reject']) ids[d] = (await agent.assign(d)).id;
    await agent.waitForIdle(WAIT);
    const get = (d: string): Promise<TaskRecord> => town.task(ids[d]!);
    expect(await get('string')).toMatchObject({ state: 'completed', result: 'plain text', attempts: 1 });
    expect((await get('object')).result).toBe('{"a":1,"b":[2,"three"],"c":null}');
    expect(JSON.parse((await get('object')).result!)).toEqual({ a: 1, b: [2, 'three'], c: null });
    expect((await get('number')).result).toBe('42');
    expect((await get('boolean')).result).toBe('false');
    const nothing = await get('nothing');
    expect(nothing.state).toBe('completed');
    expect(nothing.result ?? '').toBe('');
    const rejected = await get('reject');
    expect(rejected).toMatchObject({ state: 'failed', error: 'boom: the handler failed', attempts: 1 });
    expect(rejected.result).toBeUndefined();

    const info = await agent.info();
    expect(info.tasksCompleted).toBe(5);
    expect(info.tasksFailed).toBe(1);
    expect(info.state).toBe('idle');
    expect(info.currentTask).toBeUndefined();
    const status = await town.status();
    expect(status.tasks).toMatchObject({ completed: 5, failed: 1, running: 0, assigned: 0 });
  });

  it('aborts a handler past the task timeout and fails the task', async () => {
    const town = await openTown();
    let aborted: unknown;
    const agent = await town.spawnAgent('slow', {
      run: (_task, ctx) =>
        new Promise((_, reject) => {
          ctx.signal.addEventListener('abort', () => {
            aborted = ctx.signal.reason;
            reject(ctx.signal.reason);
          });
        }),
    });
    const task = await agent.assign({ description: 'never ends', timeoutMs: 200 });
    const record = await town.waitForTask(task.id, WAIT);
    expect(record.state).toBe('failed');
    expect(record.error).toMatch(/timed out/);
    expect(aborted).toBeInstanceOf(Error);
  });
});

describe('worker: CLI agents', () => {
  it('completes with the CLI output and writes the log to .tt/logs/<agent>/<task-id>.log', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli-ok', { cli: fakeCli() });
    const task = await agent.assign('build the thing');
    const record = await town.waitForTask(task.id, WAIT);
    expect(record).toMatchObject({ state: 'completed', result: 'done: build the thing', attempts: 1 });
    const log = join(town.root, '.tt', 'logs', 'cli-ok', `${task.id}.log`);
    expect(existsSync(log)).toBe(true);
    expect(await readFile(log, 'utf8')).toContain('done: build the thing');
    const info = await agent.info();
    expect(info).toMatchObject({ tasksCompleted: 1, tasksFailed: 0, state: 'idle' });
  });

  it('fails on a non-zero exit with the stderr text in the error', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli-fail', { cli: fakeCli() });
    const task = await agent.assign('please [fake:fail]');
    const record = await town.waitForTask(task.id, WAIT);
    expect(record.state).toBe('failed');
    expect(record.error).toContain('something broke');
    expect(record.error).toMatch(/code 3/);
    expect(record.attempts).toBe(1);
    const log = await readFile(join(town.root, '.tt', 'logs', 'cli-fail', `${task.id}.log`), 'utf8');
    expect(log).toContain('something broke');
    expect(await agent.info()).toMatchObject({ tasksCompleted: 0, tasksFailed: 1, state: 'idle' });
  });

  it('fails when the CLI crashes (killed by a signal)', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli-crash', { cli: fakeCli() });
    const task = await agent.assign('[fake:crash]');
    const record = await town.waitForTask(task.id, WAIT);
    expect(record.state).toBe('failed');
    expect(record.error).toMatch(/SIGKILL/);
  });

  it('fails a clean exit that printed nothing', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli-silent', { cli: fakeCli() });
    const task = await agent.assign('[fake:silent]');
    const record = await town.waitForTask(task.id, WAIT);
    expect(record.state).toBe('failed');
    expect(record.error).toMatch(/printed nothing/);
    expect(record.result ?? '').toBe('');
  });

  it('kills the whole process group on a task timeout and fails the task "timed out"', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli-hang', { cli: fakeCli() });
    // Long enough for a slow machine to start the fake and its grandchild before the timeout.
    const task = await agent.assign({ description: 'wait forever [fake:grandchild] [fake:hang]', timeoutMs: 1_500 });
    const log = join(town.root, '.tt', 'logs', 'cli-hang', `${task.id}.log`);
    const pid = await grandchildPid(log);
    expect(await procState(pid)).toMatch(/^[RSD]$/); // alive while the task runs
    const record = await town.waitForTask(task.id, WAIT);
    expect(record.state).toBe('failed');
    expect(record.error).toMatch(/timed out/);
    await waitDead(pid);
    expect(await agent.info()).toMatchObject({ state: 'idle', tasksFailed: 1 });
    // The agent keeps working after a timeout.
    const next = await agent.assign('after the timeout');
    expect((await town.waitForTask(next.id, WAIT)).result).toBe('done: after the timeout');
  });

  it('hands TINYTOWN_* variables to the CLI and withholds REDIS_URL', async () => {
    const town = await openTown();
    const saved = process.env.REDIS_URL;
    process.env.REDIS_URL = 'redis://:hunter2@redis.example.invalid:6379';
    try {
      const fake = await town.spawnAgent('cli-env', { cli: fakeCli(), env: { EXTRA_FROM_AGENT: 'yes' } });
      const task = await fake.assign('[fake:env]');
      const record = await town.waitForTask(task.id, WAIT);
      expect(record.state).toBe('completed');
      const env = JSON.parse(record.result!) as Record<string, string>;
      expect(env).toMatchObject({
        TINYTOWN_TOWN: town.name,
        TINYTOWN_AGENT_ID: fake.id,
        TINYTOWN_AGENT_NAME: 'cli-env',
        TINYTOWN_TASK_ID: task.id,
      });

      // The fake prints only TINYTOWN_*; a node one-liner shows the whole environment.
      const printer = await town.spawnAgent('cli-env-all', {
        cli: { command: process.execPath, args: ['-e', 'process.stdout.write(JSON.stringify(process.env))'] },
        env: { EXTRA_FROM_AGENT: 'yes' },
      });
      const all = await town.waitForTask((await printer.assign('print the environment')).id, WAIT);
      expect(all.state).toBe('completed');
      const full = JSON.parse(all.result!) as Record<string, string>;
      expect(full.REDIS_URL).toBeUndefined();
      expect(JSON.stringify(full)).not.toContain('hunter2');
      expect(full.EXTRA_FROM_AGENT).toBe('yes');
      expect(full.TINYTOWN_AGENT_NAME).toBe('cli-env-all');
      expect(full.PATH).toBe(process.env.PATH);
    } finally {
      if (saved === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = saved;
    }
  });

  it("runs the CLI in the agent's cwd (relative to the town root), else in the root", async () => {
    const town = await openTown();
    await mkdir(join(town.root, 'sub', 'dir'), { recursive: true });
    const inSub = await town.spawnAgent('cli-cwd', { cli: fakeCli(), cwd: 'sub/dir' });
    const inRoot = await town.spawnAgent('cli-root', { cli: fakeCli() });
    const a = await inSub.assign('[fake:cwd]');
    const b = await inRoot.assign('[fake:cwd]');
    expect((await town.waitForTask(a.id, WAIT)).result).toBe(`cwd=${realpathSync(join(town.root, 'sub', 'dir'))}`);
    expect((await town.waitForTask(b.id, WAIT)).result).toBe(`cwd=${realpathSync(town.root)}`);
  });

  it('counts completed and failed tasks across CLI runs', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli-count', { cli: fakeCli() });
    const ids = [
      (await agent.assign('one')).id,
      (await agent.assign('two [fake:fail]')).id,
      (await agent.assign('three')).id,
      (await agent.assign('four [fake:exit=9]')).id,
    ];
    await agent.waitForIdle(WAIT);
    const states = await Promise.all(ids.map(async (id) => (await town.task(id)).state));
    expect(states).toEqual(['completed', 'failed', 'completed', 'failed']);
    expect(await agent.info()).toMatchObject({ tasksCompleted: 2, tasksFailed: 2, roundsCompleted: 2, state: 'idle' });
    for (const id of ids) expect((await town.task(id)).attempts).toBe(1);
  });
});
