/**
 * Retries of retryable failures (in place, with backoff, up to maxAttempts) and usage
 * accounting (per task over its runs, per agent, per town), against a real Redis.
 */
import { describe, expect, it } from 'vitest';
import type { TaskUsage, TownEvent } from '../src/index.js';
import { collectHistory, deferred } from './helpers/kit.js';
import { FAKE_AGENT, openTown } from './helpers/town.js';

const WAIT = { timeoutMs: 10_000 };

/** An error a handler throws to ask for another run. */
function retryable(message: string): Error {
  return Object.assign(new Error(message), { retryable: true });
}

describe('retries', () => {
  it('runs a retryable failure again after a backoff, recording each attempt', async () => {
    const town = await openTown();
    const starts: number[] = [];
    const agent = await town.spawnAgent('flaky', {
      retryDelayMs: 50,
      run: async (_task, ctx) => {
        starts.push(Date.now());
        if (ctx.attempt < 3) throw retryable(`rate limited (attempt ${ctx.attempt})`);
        return `ok on attempt ${ctx.attempt}`;
      },
    });
    const task = await agent.assign({ description: 'flaky work', maxAttempts: 3 });
    const done = await town.waitForTask(task.id, WAIT);
    expect(done).toMatchObject({ state: 'completed', result: 'ok on attempt 3', attempts: 3 });
    expect(done.error).toBeUndefined();
    const retried = (await collectHistory(town)).filter((e: TownEvent) => e.type === 'task.retried' && e.taskId === task.id);
    expect(retried.map((e) => e.data.attempt)).toEqual([2, 3]);
    expect(retried[0]?.data.message).toBe('rate limited (attempt 1)');
    // exponential: the second wait (≈100 ms) is longer than the first (≈50 ms)
    const [a, b, c] = starts as [number, number, number];
    expect(b - a).toBeGreaterThanOrEqual(35);
    expect(c - b).toBeGreaterThanOrEqual(75);
    expect((await agent.info()).tasksCompleted).toBe(1);
  });

  it('fails with the last error once maxAttempts runs failed', async () => {
    const town = await openTown();
    let runs = 0;
    const agent = await town.spawnAgent('doomed', {
      retryDelayMs: 10,
      run: async () => {
        runs++;
        throw retryable(`still rate limited #${runs}`);
      },
    });
    const task = await agent.assign({ description: 'never works', maxAttempts: 2 });
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'failed', error: 'still rate limited #2', attempts: 2 });
    expect(runs).toBe(2);
  });

  it('does not retry an ordinary failure', async () => {
    const town = await openTown();
    let runs = 0;
    const agent = await town.spawnAgent('strict', {
      retryDelayMs: 10,
      run: async () => {
        runs++;
        throw new Error('bad input');
      },
    });
    const task = await agent.assign({ description: 'x', maxAttempts: 5 });
    expect(await town.waitForTask(task.id, WAIT)).toMatchObject({ state: 'failed', error: 'bad input', attempts: 1 });
    expect(runs).toBe(1);
  });

  it('a cancel during the backoff ends the task cancelled, with no further run', async () => {
    const town = await openTown();
    let runs = 0;
    const failedOnce = deferred();
    const agent = await town.spawnAgent('patient', {
      retryDelayMs: 60_000,
      run: async () => {
        runs++;
        failedOnce.resolve();
        throw retryable('busy, try later');
      },
    });
    const task = await agent.assign({ description: 'waits long', maxAttempts: 3 });
    await failedOnce.promise;
    await town.waitForTask(task.id, { timeoutMs: 200 }).catch(() => undefined); // let the retry be recorded
    await town.cancelTask(task.id, 'not needed');
    await agent.waitForIdle(WAIT);
    expect(await town.task(task.id)).toMatchObject({ state: 'cancelled', error: 'not needed' });
    expect(runs).toBe(1);
  });

  it('close() during the backoff hands the task back instead of failing it', async () => {
    const town = await openTown({ closeGraceMs: 100 });
    const failedOnce = deferred();
    const agent = await town.spawnAgent('interrupted', {
      retryDelayMs: 60_000,
      run: async () => {
        failedOnce.resolve();
        throw retryable('busy');
      },
    });
    const task = await agent.assign({ description: 'handed back', maxAttempts: 3 });
    await failedOnce.promise;
    await town.close();
    const other = await openTown({ name: town.name }, town.root);
    expect(await other.task(task.id)).toMatchObject({ state: 'assigned' });
  });
});

describe('usage', () => {
  const run1: TaskUsage = { inputTokens: 100, outputTokens: 20, costUsd: 0.01, model: 'm-1' };
  const run2: TaskUsage = { inputTokens: 50, outputTokens: 5, cacheReadTokens: 7, costUsd: 0.005, model: 'm-2' };

  it('sums a task’s runs, and totals per agent and per town (failed runs count)', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('metered', {
      retryDelayMs: 10,
      run: async (_task, ctx) => {
        if (ctx.attempt === 1) {
          ctx.reportUsage(run1);
          throw retryable('overloaded');
        }
        ctx.reportUsage(run2);
        return 'done';
      },
    });
    const other = await town.spawnAgent('metered-too', {
      run: async (_task, ctx) => {
        ctx.reportUsage({ inputTokens: 1, outputTokens: 1, costUsd: 0.001 });
        throw new Error('failed, but tokens were spent');
      },
    });
    const task = await agent.assign({ description: 'metered', maxAttempts: 2 });
    const failing = await other.assign('costly failure');
    expect((await town.waitForTask(task.id, WAIT)).usage).toEqual({
      inputTokens: 150,
      outputTokens: 25,
      cacheReadTokens: 7,
      costUsd: 0.015,
      model: 'm-2',
    });
    expect((await town.waitForTask(failing.id, WAIT)).usage).toMatchObject({ inputTokens: 1, costUsd: 0.001 });
    expect((await agent.info()).usage).toEqual({ inputTokens: 150, outputTokens: 25, cacheReadTokens: 7, costUsd: 0.015 });
    const status = await town.status();
    expect(status.usage).toEqual({ inputTokens: 151, outputTokens: 26, cacheReadTokens: 7, costUsd: 0.016 });
    expect(status.agents.find((a) => a.name === 'metered')?.usage?.inputTokens).toBe(150);
  });

  it('a town with no reported usage shows none', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('plain', { run: async () => 'ok' });
    await town.waitForTask((await agent.assign('x')).id, WAIT);
    expect((await town.status()).usage).toEqual({});
    expect((await agent.info()).usage).toBeUndefined();
  });
});

describe('CLI usage and sessions', () => {
  const claudeLike = {
    command: FAKE_AGENT,
    args: [],
    prompt: 'stdin' as const,
    output: 'claude-json' as const,
    sessionArgs: ['--session-id', '{sessionId}'],
    resumeArgs: ['--resume', '{sessionId}'],
  };

  it('records the usage and session a CLI reports, and resumes the session with continueSession', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('claude-like', { cli: claudeLike, continueSession: true });
    const first = await town.waitForTask((await agent.assign('first [fake:json=claude]')).id, WAIT);
    expect(first).toMatchObject({ state: 'completed', result: 'done: first [fake:json=claude]' });
    expect(first.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(first.usage).toMatchObject({ outputTokens: 456, costUsd: 0.0123, cacheReadTokens: 4000 });
    expect((await agent.info()).sessionId).toBe(first.sessionId);

    const second = await town.waitForTask((await agent.assign('second [fake:json=claude]')).id, WAIT);
    expect(second.sessionId).toBe(first.sessionId); // resumed by exact id
    expect((await town.status()).usage.costUsd).toBeCloseTo(0.0246, 6);
  });

  it('starts a fresh session per task without continueSession', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('fresh', { cli: claudeLike });
    const a = await town.waitForTask((await agent.assign('a [fake:json=claude]')).id, WAIT);
    const b = await town.waitForTask((await agent.assign('b [fake:json=claude]')).id, WAIT);
    expect(a.sessionId).toBeDefined();
    expect(b.sessionId).toBeDefined();
    expect(b.sessionId).not.toBe(a.sessionId);
  });

  it('a CLI error reported as is_error fails the task with its words, not retried', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('logged-out', { cli: claudeLike, retryDelayMs: 10 });
    const task = await agent.assign({ description: 'x [fake:json=claude] [fake:exit=1]', maxAttempts: 3 });
    const done = await town.waitForTask(task.id, WAIT);
    expect(done).toMatchObject({ state: 'failed', attempts: 1 });
    expect(done.error).toMatch(/not authenticated: Not logged in/);
  });
});
