/**
 * Calls of `assign` and `finish` made in one turn of the event loop reach Redis as one script
 * call per 32 (src/store/script-batch.ts), each with its own reply or error, in the order they
 * were made, and a batch cut by a lost connection is sent again without doing anything twice.
 */
import { describe, expect, it } from 'vitest';
import { AgentNotFoundError, type Town } from '../src/index.js';
import type { Repository } from '../src/store/repository.js';
import { prefixOf, rawRedis, sleep, watchCommands } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

/** Script calls (EVAL/EVALSHA, not commands inside scripts) of the town with an argument `carries`, while `fn` runs. */
async function scriptCalls(town: Town, carries: RegExp, fn: () => Promise<unknown>): Promise<number> {
  let calls = 0;
  const monitor = await watchCommands(rawRedis(), (_time, args, source) => {
    if (source.includes('lua') || !args.some((a) => a.includes(town.name))) return;
    if (/^eval(sha)?$/i.test(args[0]!) && args.some((a) => carries.test(a))) calls++;
  });
  await sleep(100); // monitor attached
  try {
    await fn();
    await sleep(100); // the last lines reach the monitor
  } finally {
    monitor.stop();
  }
  return calls;
}

describe('gathering script calls', () => {
  it('sends 100 concurrent assigns as at most 4 script calls, queued in the order they were made', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('queue', { run: async () => 'ok' });
    await agent.pause();
    let tasks: { id: string }[] = [];
    const calls = await scriptCalls(town, /^task \d+$/, async () => {
      tasks = await Promise.all(Array.from({ length: 100 }, (_, i) => agent.assign(`task ${i}`)));
    });
    expect(calls).toBeLessThanOrEqual(4);
    expect(new Set(tasks.map((t) => t.id)).size).toBe(100);
    const queued = await town.tasks({ agent: agent.id, limit: 200 });
    expect(queued).toHaveLength(100);
    const repo = (town as unknown as { repo: Repository }).repo;
    const inbox = await repo.connections.command.lrange(repo.keys.inbox(agent.id), 0, -1);
    expect(inbox.map((entry) => JSON.parse(entry).task_id)).toEqual(tasks.map((t) => t.id));
    const descriptions = await Promise.all(tasks.map(async (t) => (await town.task(t.id)).description));
    expect(descriptions).toEqual(tasks.map((_, i) => `task ${i}`));
  });

  it("answers each call with its own reply: one item's error fails that call only", async () => {
    const town = await openTown();
    const [a, gone, c] = await Promise.all(
      ['a', 'gone', 'c'].map((name) => town.spawnAgent(name, { run: async () => 'ok' })),
    );
    await Promise.all([a!.pause(), c!.pause()]);
    await gone!.remove();
    let results: PromiseSettledResult<{ id: string }>[] = [];
    const calls = await scriptCalls(town, /^(one|two|three)$/, async () => {
      results = await Promise.allSettled([a!.assign('one'), gone!.assign('two'), c!.assign('three')]);
    });
    expect(calls).toBe(1);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(AgentNotFoundError);
    for (const r of [results[0], results[2]]) {
      const task = await town.task((r as PromiseFulfilledResult<{ id: string }>).value.id);
      expect(task.state).toBe('assigned');
    }
    expect((await town.status()).tasks.assigned).toBe(2);
  });

  it('keeps a Redis error raised by one item (a clobbered key) to that call', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('strict', { run: async () => 'ok' });
    await agent.pause();
    await rawRedis().set(`${prefixOf(town)}task:clobbered`, 'not a hash');
    let results: PromiseSettledResult<{ id: string }>[] = [];
    const calls = await scriptCalls(town, /^(one|two|three)$/, async () => {
      results = await Promise.allSettled([
        agent.assign('one'),
        agent.assign({ description: 'two', dependsOn: ['clobbered'] }),
        agent.assign('three'),
      ]);
    });
    expect(calls).toBe(1);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    expect((await town.status()).tasks.assigned).toBe(2);
  });

  it('sends gathered calls before any other script made after them', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('ordered', { run: async () => 'ok' });
    await agent.pause();
    const repo = (town as unknown as { repo: Repository }).repo;
    // Straight at the repository, so nothing but the gathering stands between the two calls.
    const created = repo.createTask({ description: 'first' }, agent.id);
    const status = await repo.status();
    await created;
    expect(status.counts.assigned).toBe(1);
  });

  it('drains 600 tasks over 20 agents with finishes gathered: each runs once and completes once', async () => {
    const town = await openTown();
    const runs = new Map<string, number>();
    const agents = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        town.spawnAgent(`w${i}`, {
          run: async (task) => {
            runs.set(task.id, (runs.get(task.id) ?? 0) + 1);
            return 'ok';
          },
        }),
      ),
    );
    const tasks = await Promise.all(Array.from({ length: 600 }, (_, i) => agents[i % 20]!.assign(`t${i}`)));
    await Promise.all(tasks.map((t) => town.waitForTask(t.id, { timeoutMs: 20_000 })));
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(runs.size).toBe(600);
    const status = await town.status();
    // the per-state counters, summed over each batch and written once per call
    expect(status.tasks).toMatchObject({ completed: 600, running: 0, assigned: 0 });
    expect(status.agents.reduce((sum, a) => sum + a.tasksCompleted, 0)).toBe(600);
  });
});
