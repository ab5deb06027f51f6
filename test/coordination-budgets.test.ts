/**
 * Budgets (`maxCostUsd`, `maxTokens`) per town, agent and task, from the usage the runs report:
 * a spent town or agent budget holds the agent (its next task goes back to the head of the
 * queue, the agent is paused, `budget.exceeded` says why); a spent task budget fails the task
 * instead of running it again. The fake CLI prints Claude-like JSON (`total_cost_usd` 0.0123,
 * 1 200 input + 456 output tokens per run). Real Redis, real child processes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ConfigInvalidError,
  InvalidArgumentError,
  PRESETS,
  Town,
  withBudget,
  type CliDefinition,
  type TownEvent,
} from '../src/index.js';
import type { Repository } from '../src/store/repository.js';
import { collectHistory, waitForEvent } from './helpers/kit.js';
import { FAKE_AGENT, openTown, redisUrl, tempDir, track, uniqueName } from './helpers/town.js';
import { pause } from './helpers/util.js';

/** The fake agent reading the Claude result JSON, taking Claude's budget flag. */
const claudeLike: CliDefinition = {
  command: FAKE_AGENT,
  args: [],
  prompt: 'stdin',
  output: 'claude-json',
  budgetArgs: ['--max-budget-usd', '{maxBudgetUsd}'],
};
const RUN = '[fake:json=claude][fake:args]';

/** The `--max-budget-usd` values the fake CLI saw, per run, from the task's log. */
async function budgetFlags(town: Town, agent: string, taskId: string): Promise<(string | undefined)[]> {
  const log = await readFile(join(town.root, '.tt', 'logs', agent, `${taskId}.log`), 'utf8');
  return [...log.matchAll(/^args=(.*)$/gm)].map((m) => {
    const args = JSON.parse(m[1]!) as string[];
    const at = args.indexOf('--max-budget-usd');
    return at === -1 ? undefined : args[at + 1];
  });
}

const budgetEvents = async (town: Town): Promise<TownEvent[]> => (await collectHistory(town)).filter((e) => e.type === 'budget.exceeded');

describe('an agent budget', () => {
  it('stops dispatch once the reported cost passes it: the next task waits at the head of the queue, the agent pauses', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('spender', { cli: claudeLike, maxCostUsd: 0.02 });
    expect((await agent.info()).maxCostUsd).toBe(0.02);
    const [t1, t2, t3, t4] = [await agent.assign(RUN), await agent.assign(RUN), await agent.assign(RUN), await agent.assign(RUN)];
    const held = await waitForEvent(town, (e) => e.type === 'budget.exceeded', 15_000);
    expect(held).toMatchObject({ agentId: agent.id, taskId: t3!.id });
    expect(held.data).toMatchObject({ scope: 'agent', metric: 'costUsd', limit: 0.02, spent: 0.0246, action: 'hold' });
    expect(held.data.message).toBe('budget exceeded: agent spent $0.0246 of $0.02 (maxCostUsd)');
    for (const t of [t1!, t2!]) expect((await town.task(t.id)).state).toBe('completed');
    // Claude's own flag got what was left: all of it, then 0.02 - 0.0123
    expect(await budgetFlags(town, 'spender', t1!.id)).toEqual(['0.02']);
    expect(await budgetFlags(town, 'spender', t2!.id)).toEqual(['0.0077']);

    await pause(200);
    const info = await agent.info();
    expect(info.state).toBe('paused');
    expect(info.usage?.costUsd).toBeCloseTo(0.0246, 6);
    expect((await agent.inbox()).map((m) => m.taskId)).toEqual([t3!.id, t4!.id]);
    for (const t of [t3!, t4!]) expect((await town.task(t.id)).state).toBe('assigned');

    // resuming without more budget holds it again, and says so again
    await agent.resume();
    await waitForEvent(town, (e) => e.type === 'budget.exceeded' && e.id !== held.id, 10_000);
    expect((await agent.info()).state).toBe('paused');

    // a bigger budget (spawned again once stopped) lets the queue run
    await agent.stop();
    await town.spawnAgent('spender', { cli: claudeLike, maxCostUsd: 1 });
    for (const t of [t3!, t4!]) expect(await town.waitForTask(t.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed' });
    expect(await budgetFlags(town, 'spender', t3!.id)).toEqual(['0.9754']);
    expect(await budgetEvents(town)).toHaveLength(2);
  });

  it('counts tokens (input + output) against maxTokens', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('reader', { cli: claudeLike, maxTokens: 3000 });
    const tasks = [await agent.assign(RUN), await agent.assign(RUN), await agent.assign(RUN)];
    const held = await waitForEvent(town, (e) => e.type === 'budget.exceeded', 15_000);
    expect(held.taskId).toBe(tasks[2]!.id);
    expect(held.data).toMatchObject({ scope: 'agent', metric: 'tokens', limit: 3000, spent: 3312, action: 'hold' });
    expect(held.data.message).toBe('budget exceeded: agent spent 3312 tokens of 3000 (maxTokens)');
    expect(await budgetFlags(town, 'reader', tasks[0]!.id)).toEqual([undefined]); // no cost budget: no flag
  });
});

describe('a claimBacklog agent whose budget is spent', () => {
  it('leaves backlog work to others instead of taking it into its own queue', async () => {
    const town = await openTown();
    const spent = await town.spawnAgent('spent', { cli: claudeLike, claimBacklog: true, maxCostUsd: 0.01 });
    const first = await town.backlog.add(RUN);
    expect(await town.waitForTask(first.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed', assignedTo: spent.id });
    const second = await town.backlog.add(RUN);
    await pause(300);
    expect(await town.task(second.id)).toMatchObject({ state: 'pending' });
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([second.id]);
    expect((await spent.info()).state).toBe('idle'); // it never reached for it
    const fresh = await town.spawnAgent('fresh', { cli: claudeLike, claimBacklog: true });
    expect(await town.waitForTask(second.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed', assignedTo: fresh.id });
    expect(await budgetEvents(town)).toEqual([]);
  });
});

describe('a town budget', () => {
  it('holds every agent that reaches for new work once the town has spent it', async () => {
    const town = await openTown({ maxCostUsd: 0.01 });
    const first = await town.spawnAgent('first', { cli: claudeLike });
    const done = await first.assign(RUN);
    expect(await town.waitForTask(done.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed' });
    expect(await budgetFlags(town, 'first', done.id)).toEqual(['0.01']);
    const second = await town.spawnAgent('second', { cli: claudeLike });
    const waiting = await second.assign(RUN);
    const held = await waitForEvent(town, (e) => e.type === 'budget.exceeded', 10_000);
    expect(held).toMatchObject({ agentId: second.id, taskId: waiting.id });
    expect(held.data).toMatchObject({ scope: 'town', metric: 'costUsd', limit: 0.01, spent: 0.0123, action: 'hold' });
    expect((await town.status()).usage.costUsd).toBeCloseTo(0.0123, 6);
    await pause(100);
    expect((await town.task(waiting.id)).state).toBe('assigned');
    expect((await second.info()).state).toBe('paused');
  });

  it('comes from tinytown.json, validated', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name, maxCostUsd: 2.5, maxTokens: 1_000_000 }));
    const town = track(await Town.connect(dir, { redis: redisUrl() }));
    expect(town.config).toMatchObject({ maxCostUsd: 2.5, maxTokens: 1_000_000 });
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name, maxCostUsd: -1 }));
    await expect(Town.connect(dir, { redis: redisUrl() })).rejects.toBeInstanceOf(ConfigInvalidError);
    await expect(Town.connect(dir, { redis: redisUrl(), maxTokens: 0.5 } as never)).rejects.toBeInstanceOf(ConfigInvalidError);
  });
});

describe('a task budget', () => {
  it('fails the task instead of running it again once its runs have spent it', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('retrier', { cli: claudeLike, retryDelayMs: 10 });
    const task = await agent.assign({
      description: `${RUN}[fake:exit=1][fake:stderr=429 rate limit exceeded]`,
      maxCostUsd: 0.02,
      maxAttempts: 5,
    });
    expect(task.maxCostUsd).toBe(0.02);
    const record = await town.waitForTask(task.id, { timeoutMs: 15_000 });
    expect(record).toMatchObject({ state: 'failed', attempts: 2 });
    expect(record.error).toMatch(/^budget exceeded: the task spent \$0\.0246 of \$0\.02 \(maxCostUsd\); not retried after: .*429 rate limit exceeded/);
    expect(record.usage?.costUsd).toBeCloseTo(0.0246, 6);
    expect(await budgetFlags(town, 'retrier', task.id)).toEqual(['0.02', '0.0077']);
    const events = await budgetEvents(town);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ taskId: task.id, data: { scope: 'task', action: 'fail', limit: 0.02, spent: 0.0246 } });
    // the agent is not held by a task's budget
    const next = await agent.assign(RUN);
    expect(await town.waitForTask(next.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed' });
  });

  it('fails a task whose earlier runs spent its budget when it is about to start again; its dependants and group hear of it', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('later', { start: false });
    const spent = await agent.assign({ description: 'spent', maxTokens: 1000, group: 'g' });
    const after = await agent.assign({ description: 'after', dependsOn: [spent.id], group: 'g' });
    const fine = await agent.assign('fine');
    // as if a run whose worker was then lost had reported its usage
    const repo = (town as unknown as { repo: Repository }).repo;
    await repo.connections.command.hset(repo.keys.task(spent.id), 'usage', JSON.stringify({ inputTokens: 900, outputTokens: 200 }));
    await town.runWorker('later', { run: async (t) => t.description });
    expect(await town.waitForTask(spent.id, { timeoutMs: 5_000 })).toMatchObject({
      state: 'failed',
      attempts: 0,
      error: 'budget exceeded: the task spent 1100 tokens of 1000 (maxTokens)',
    });
    expect(await town.waitForTask(after.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'cancelled' });
    expect(await town.waitForTask(fine.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed' }); // the agent goes on
    expect(await town.group('g').wait({ timeoutMs: 1_000 })).toMatchObject({ counts: { failed: 1, cancelled: 1 } });
    const [event] = await budgetEvents(town);
    expect(event).toMatchObject({ taskId: spent.id, data: { scope: 'task', metric: 'tokens', limit: 1000, spent: 1100, action: 'fail' } });
  });

  it('refuses budgets that are not positive numbers', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('a', { start: false });
    for (const bad of [{ maxCostUsd: 0 }, { maxCostUsd: -1 }, { maxTokens: 1.5 }, { maxCostUsd: '1' }]) {
      await expect(agent.assign({ description: 'x', ...bad } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(town.spawnAgent('b', { run: async () => 'x', ...bad } as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
  });
});

describe('withBudget', () => {
  it("appends the CLI's budget flag with what is left; CLIs without one get none", () => {
    expect(PRESETS.claude.budgetArgs).toEqual(['--max-budget-usd', '{maxBudgetUsd}']);
    expect(withBudget(PRESETS.claude, 0.5)?.args?.slice(-2)).toEqual(['--max-budget-usd', '0.5']);
    expect(withBudget(PRESETS.claude, 0.1234567)?.args?.slice(-1)).toEqual(['0.123457']);
    expect(withBudget(PRESETS.claude, 1e-9)?.args?.slice(-1)).toEqual(['0.000001']);
    expect(withBudget(PRESETS.claude, 2)?.args?.slice(0, -2)).toEqual(PRESETS.claude.args);
    expect(withBudget(PRESETS.codex, 1)).toBeUndefined();
    expect(() => withBudget(PRESETS.claude, 0)).toThrow(InvalidArgumentError);
  });
});
