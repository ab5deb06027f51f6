/**
 * Messages: agent.send / town.send / town.broadcast / town.inbox, how informational messages
 * ride along with the next prompt, queries answered to the sender, validation, and the exact
 * wire format (the Rust Tinytown's JSON field order) read raw from Redis.
 */
import { describe, expect, it } from 'vitest';
import {
  AgentNotFoundError,
  DescriptionTooLargeError,
  InvalidArgumentError,
  type Message,
  type TaskContext,
  type TaskRecord,
} from '../src/index.js';
import { fakeCli, openTown } from './helpers/town.js';
import { deferred, prefixOf, rawRedis } from './helpers/util.js';

const SUPERVISOR_ID = '00000000-0000-0000-0000-000000000001';
const RFC3339_MICROS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

async function rawInbox(townName: string, id: string): Promise<Record<string, unknown>[]> {
  const entries = await rawRedis().lrange(`${prefixOf(townName)}inbox:${id}`, 0, -1);
  return entries.map((e) => JSON.parse(e) as Record<string, unknown>);
}

describe('informational messages', () => {
  it('agent.send() queues an info message in the inbox', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const id = await agent.send('The API schema is in docs/api.md');
    expect(await agent.inbox()).toEqual([
      {
        id,
        from: SUPERVISOR_ID,
        to: agent.id,
        type: 'info',
        priority: 'normal',
        createdAt: expect.any(Date),
        text: 'The API schema is in docs/api.md',
      },
    ]);
  });

  it('rides along with the next prompt of an in-process handler, once', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('late', { start: false });
    const sender = await town.spawnAgent('colleague', { start: false });
    const infoId = await agent.send('Use the v2 schema');
    const ackId = await town.send('late', 'looks good', { type: 'ack', from: 'colleague' });
    const first = await agent.assign('first task');
    const second = await agent.assign('second task');
    const seen = new Map<string, Message[]>();
    await town.runWorker('late', {
      run: async (task: TaskRecord, ctx: TaskContext) => {
        seen.set(task.id, ctx.messages);
        return 'ok';
      },
    });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(seen.get(first.id)).toEqual([
      expect.objectContaining({ id: infoId, type: 'info', text: 'Use the v2 schema', from: SUPERVISOR_ID }),
      expect.objectContaining({ id: ackId, type: 'ack', text: 'looks good', from: sender.id }),
    ]);
    // consumed by the first prompt: not repeated
    expect(seen.get(second.id)).toEqual([]);
    expect(await agent.inbox()).toEqual([]);
  });

  it("reaches a CLI agent's prompt", async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cli', { start: false });
    await agent.send('Remember: tabs, not spaces');
    const task = await agent.assign('[fake:echo] format the code');
    await town.runWorker('cli', { cli: fakeCli() });
    const done = await town.waitForTask(task.id, { timeoutMs: 10_000 });
    expect(done.state, done.error).toBe('completed');
    expect(done.result).toContain('[fake:echo] format the code');
    expect(done.result).toContain('## Messages for you');
    expect(done.result).toContain(`(info from ${SUPERVISOR_ID}) Remember: tabs, not spaces`);
  });

  it('messages queue by priority, first come first served within a priority', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = await agent.assign('queued work');
    await agent.send('low', { priority: 'low' });
    await agent.send('urgent', { priority: 'urgent' });
    await agent.send('high', { priority: 'high' });
    await agent.send('urgent 2', { priority: 'urgent' });
    await agent.send('normal');
    const texts = (await agent.inbox()).map((m) => m.text ?? m.taskId);
    expect(texts).toEqual(['urgent', 'urgent 2', 'high', task.id, 'normal', 'low']);
  });

  it('town.send to the supervisor lands in town.inbox()', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('reporter', { start: false });
    const id = await town.send('supervisor', 'status: green', { from: 'reporter' });
    expect(await town.inbox()).toEqual([expect.objectContaining({ id, from: agent.id, to: SUPERVISOR_ID, text: 'status: green' })]);
  });
});

describe('queries and task messages', () => {
  it('a query runs as a task and its answer reaches town.inbox() with the correlation id', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('oracle', { run: async (task) => `answer to: ${task.description}` });
    const queryId = await town.send('oracle', 'What is 2+2?', { type: 'query' });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const task = await town.task(queryId);
    expect(task).toMatchObject({ state: 'completed', description: 'What is 2+2?', tags: ['query'], assignedTo: agent.id });
    const answers = (await town.inbox()).filter((m) => m.correlationId === queryId);
    expect(answers).toEqual([
      expect.objectContaining({ from: agent.id, to: SUPERVISOR_ID, type: 'info', text: 'answer to: What is 2+2?', correlationId: queryId }),
    ]);
  });

  it("a query from another agent is answered to that agent's inbox; a failure is answered too", async () => {
    const town = await openTown();
    const oracle = await town.spawnAgent('oracle', {
      run: async (task) => {
        if (task.description.includes('impossible')) throw new Error('cannot know');
        return 'Prisma';
      },
    });
    const asker = await town.spawnAgent('asker', { start: false });
    const q1 = await town.send('oracle', 'Which ORM do we use?', { type: 'query', from: 'asker' });
    const q2 = await town.send('oracle', 'An impossible question', { type: 'query', from: asker.id });
    await oracle.waitForIdle({ timeoutMs: 5_000 });
    const inbox = await asker.inbox();
    expect(inbox.find((m) => m.correlationId === q1)).toMatchObject({ from: oracle.id, text: 'Prisma' });
    expect(inbox.find((m) => m.correlationId === q2)?.text).toMatch(/^failed: .*cannot know/);
    expect(await town.inbox()).toEqual([]);
    expect((await town.task(q2)).state).toBe('failed');
  });

  it('a task message runs as a task without an answer', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('doer', { run: async (task) => `did ${task.description}` });
    const id = await agent.send('Bump the version', { type: 'task' });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(await town.task(id)).toMatchObject({ state: 'completed', result: 'did Bump the version', tags: [] });
    expect(await town.inbox()).toEqual([]);
  });
});

describe('broadcast', () => {
  it('reaches every agent and says how many', async () => {
    const town = await openTown();
    expect(await town.broadcast('nobody home')).toBe(0);
    const agents = await Promise.all(['a', 'b', 'c'].map((n) => town.spawnAgent(n, { start: false })));
    const gone = await town.spawnAgent('gone', { start: false });
    await gone.remove();
    expect(await town.broadcast('Freeze: no merges until 18:00', { priority: 'high' })).toBe(3);
    for (const agent of agents) {
      expect(await agent.inbox()).toEqual([
        expect.objectContaining({ type: 'info', text: 'Freeze: no merges until 18:00', priority: 'high', to: agent.id }),
      ]);
    }
  });
});

describe('send validation', () => {
  it('an unknown recipient or sender is AgentNotFoundError', async () => {
    const town = await openTown();
    await town.spawnAgent('known', { start: false });
    await expect(town.send('nobody', 'hello')).rejects.toBeInstanceOf(AgentNotFoundError);
    await expect(town.send('known', 'hello', { from: 'nobody' })).rejects.toBeInstanceOf(AgentNotFoundError);
  });

  it.each<[string, unknown, Record<string, unknown>]>([
    ['an unknown type', 'x', { type: 'shout' }],
    ['the internal task_assign type', 'x', { type: 'task_assign' }],
    ['an unknown priority', 'x', { priority: 'asap' }],
    ['a non-string text', 42, {}],
    ['an unknown option', 'x', { prioirty: 'high' }],
    ['a numeric correlationId', 'x', { correlationId: 42 }],
  ])('%s is InvalidArgumentError, delivering nothing', async (_, text, options) => {
    const town = await openTown();
    const agent = await town.spawnAgent('known', { start: false });
    await expect(town.send('known', text as string, options)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(agent.send(text as string, options)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await agent.inbox()).toEqual([]);
  });

  it('broadcast refuses a bad message instead of reaching nobody', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('known', { start: false });
    await expect(town.broadcast('x', { priority: 'asap' as never })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(town.broadcast('x', { from: 'nobody' })).rejects.toBeInstanceOf(AgentNotFoundError);
    await expect(town.broadcast(42 as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await agent.inbox()).toEqual([]);
  });

  it('a message over maxDescriptionBytes is DescriptionTooLargeError', async () => {
    const town = await openTown({ maxDescriptionBytes: 100 });
    const agent = await town.spawnAgent('known', { start: false });
    await expect(agent.send('x'.repeat(101))).rejects.toBeInstanceOf(DescriptionTooLargeError);
    await expect(town.broadcast('x'.repeat(101))).rejects.toBeInstanceOf(DescriptionTooLargeError);
    expect(await agent.inbox()).toEqual([]);
  });
});

describe('wire format', () => {
  const order = (payload: string[]) => ['id', 'from', 'to', 'type', ...payload, 'priority', 'created_at', 'correlation_id'];

  it('messages are stored with the Rust field order and encodings', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('cold', { start: false });
    const task = await agent.assign('assigned work');
    const info = await agent.send('an info', { correlationId: 'corr-1' });
    const query = await town.send('cold', 'a question?', { type: 'query' });
    const work = await town.send('cold', 'a task', { type: 'task' });
    const ack = await town.send('cold', 'thanks!', { type: 'ack' });

    const raw = await rawInbox(town.name, agent.id);
    expect(raw.map((m) => Object.keys(m))).toEqual([
      order(['task_id']),
      order(['summary']),
      order(['question']),
      order(['description']),
      order(['ack_type']),
    ]);
    expect(raw.map((m) => m.type)).toEqual(['task_assign', 'informational', 'query', 'task', 'confirmation']);
    expect(raw.map((m) => m.id)).toEqual([expect.any(String), info, query, work, ack]);
    expect(raw[0]).toMatchObject({ from: SUPERVISOR_ID, to: agent.id, task_id: task.id, priority: 'normal', correlation_id: null });
    expect(raw[1]).toMatchObject({ summary: 'an info', correlation_id: 'corr-1' });
    expect(raw[2]).toMatchObject({ question: 'a question?' });
    expect(raw[3]).toMatchObject({ description: 'a task' });
    expect(raw[4]).toMatchObject({ ack_type: { type: 'acknowledged', reason: 'thanks!' } });
    for (const m of raw) {
      expect(m.created_at).toMatch(RFC3339_MICROS);
      expect(m.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    }
  });

  it("a query's answer (written by the server) uses the same order", async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('oracle', { run: async () => 'a "quoted" answer / with slash' });
    const queryId = await town.send('oracle', 'q?', { type: 'query' });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const raw = await rawInbox(town.name, SUPERVISOR_ID);
    expect(raw).toHaveLength(1);
    expect(Object.keys(raw[0]!)).toEqual(order(['summary']));
    expect(raw[0]).toMatchObject({
      from: agent.id,
      to: SUPERVISOR_ID,
      type: 'informational',
      summary: 'a "quoted" answer / with slash',
      priority: 'normal',
      correlation_id: queryId,
    });
    expect(raw[0]!.created_at).toMatch(RFC3339_MICROS);
  });

  it('backlog claims, by hand or automatic, write a task_assign in the same format', async () => {
    const town = await openTown();
    const byHand = await town.backlog.add({ description: 'claim me', priority: 'high' });
    const cold = await town.spawnAgent('cold', { start: false });
    await town.backlog.claim(byHand.id, 'cold');
    const auto = await town.backlog.add({ description: 'take me', priority: 'low' });
    const running = deferred();
    const release = deferred();
    const claimer = await town.spawnAgent('claimer', {
      claimBacklog: true,
      run: async () => {
        running.resolve();
        await release.promise;
        return 'ok';
      },
    });
    await running.promise;
    // while it runs, the claimed entry sits in the worker's processing list
    const redis = rawRedis();
    const workerId = (await claimer.info()).workerId!;
    const [claimed] = await redis.lrange(`${prefixOf(town.name)}processing:${workerId}`, 0, -1);
    release.resolve();
    await town.waitForTask(auto.id, { timeoutMs: 5_000 });
    const [delivered] = await redis.lrange(`${prefixOf(town.name)}inbox:${cold.id}`, 0, -1);
    const messages = [delivered, claimed].map((json) => JSON.parse(json!) as Record<string, unknown>);
    for (const m of messages) {
      expect(Object.keys(m)).toEqual(order(['task_id']));
      expect(m.created_at).toMatch(RFC3339_MICROS);
      expect(m).toMatchObject({ type: 'task_assign', from: SUPERVISOR_ID, correlation_id: null });
    }
    expect(messages[0]).toMatchObject({ task_id: byHand.id, to: cold.id, priority: 'high' });
    expect(messages[1]).toMatchObject({ task_id: auto.id, to: claimer.id, priority: 'low' });
    expect(await rawInbox(town.name, cold.id)).toEqual([messages[0]]);
  });
});
