/**
 * Backlog auto-claim under contention: two idle agents with `claimBacklog: true` race for one
 * backlog task; exactly one wins it, atomically (auto_claim in lib.lua). Real Redis.
 */
import { describe, expect, it } from 'vitest';
import type { Agent, TaskRecord } from '../src/index.js';
import type { Repository } from '../src/store/repository.js';
import { collectHistory } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

describe('two idle agents racing for one backlog task', () => {
  it('exactly one wins it, every time', async () => {
    const town = await openTown();
    const runs: { task: string; agent: string }[] = [];
    const run = (name: string) => async (task: TaskRecord) => {
      runs.push({ task: task.id, agent: name });
      return name;
    };
    const agents: Agent[] = [
      await town.spawnAgent('left', { claimBacklog: true, run: run('left') }),
      await town.spawnAgent('right', { claimBacklog: true, run: run('right') }),
    ];
    const winners = new Set<string>();
    for (let round = 0; round < 15; round++) {
      await Promise.all(agents.map((a) => a.waitForIdle({ timeoutMs: 5_000 })));
      // both workers hear backlog.added and claim at once
      const task = await town.backlog.add(`contested ${round}`);
      const done = await town.waitForTask(task.id, { timeoutMs: 5_000 });
      expect(done).toMatchObject({ state: 'completed', attempts: 1 });
      expect(runs.filter((r) => r.task === task.id)).toEqual([{ task: task.id, agent: done.result }]);
      winners.add(done.result!);
    }
    await Promise.all(agents.map((a) => a.waitForIdle({ timeoutMs: 5_000 })));
    expect(runs).toHaveLength(15);
    const claims = (await collectHistory(town)).filter((e) => e.type === 'backlog.claimed');
    expect(claims).toHaveLength(15);
    expect(new Set(claims.map((e) => e.taskId)).size).toBe(15);
    expect(winners.size).toBeGreaterThanOrEqual(1);
  });

  it('when both claim in the same instant, the script lets one take it and the other gets nothing', async () => {
    const town = await openTown();
    // No workers: the two claims are made by hand, sent together, so they meet in Redis.
    const left = await town.spawnAgent('left', { claimBacklog: true, start: false });
    const right = await town.spawnAgent('right', { claimBacklog: true, start: false });
    const repo = (town as unknown as { repo: Repository }).repo;
    for (const agent of [left, right]) await repo.connections.command.hset(repo.keys.agent(agent.id), 'state', 'idle');
    const tasks: TaskRecord[] = [];
    for (let round = 0; round < 20; round++) {
      const task = await town.backlog.add(`raced ${round}`);
      tasks.push(task);
      const [a, b] = await Promise.all([repo.autoClaim(left.id), repo.autoClaim(right.id)]);
      expect([a, b].filter((id) => id !== undefined)).toEqual([task.id]);
      const winner = a === task.id ? left : right;
      expect(await town.task(task.id)).toMatchObject({ state: 'assigned', assignedTo: winner.id });
      // an agent with queued work claims nothing more: free the winner's inbox for the next round
      await town.completeTask(task.id, 'done');
    }
    expect(await town.backlog.list()).toEqual([]);
    const claims = (await collectHistory(town)).filter((e) => e.type === 'backlog.claimed');
    expect(claims.map((e) => e.taskId)).toEqual(tasks.map((t) => t.id));
  });
});
