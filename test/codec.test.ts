/**
 * Records ⇄ Redis hashes: the Rust Tinytown's field names and encodings on the way in, strict
 * validation on the way out. A damaged record is a CorruptRecordError naming its key, from
 * every read path, never a crash and never an invented default.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CorruptRecordError, TinytownError } from '../src/index.js';
import { agentHash, decodeAgent, decodeTask, readAgentHash, readTaskHash, taskHash, toFields } from '../src/store/codec.js';
import { openTown } from './helpers/town.js';
import { prefixOf, rawRedis } from './helpers/util.js';

const TS = '2026-03-09T20:03:14.667655Z';
const RFC3339_MICROS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** A task hash as the Rust `tt` CLI writes it (no fields of ours). */
function rustTask(id = randomUUID()): Record<string, string> {
  return { id, description: 'Fix the login bug', state: 'pending', created_at: TS, updated_at: TS, tags: '["backend","api"]' };
}

/** An agent hash as the Rust `tt` CLI writes it. */
function rustAgent(id = randomUUID()): Record<string, string> {
  return {
    id,
    name: 'backend',
    agent_type: 'worker',
    state: 'idle',
    cli: 'claude',
    created_at: TS,
    last_heartbeat: TS,
    last_active_at: TS,
    tasks_completed: '4',
    rounds_completed: '7',
    spawn_mode: 'fresh',
  };
}

function expectCorrupt(fn: () => unknown, key: string, field: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(CorruptRecordError);
  const err = caught as CorruptRecordError;
  expect(err.key).toBe(key);
  expect(err.message).toContain(key);
  expect(err.message).toContain(field);
  expect(err.cause).toBeDefined();
}

describe('decodeTask', () => {
  it('reads a Rust record, filling only the fields it never writes', () => {
    const fields = rustTask();
    expect(decodeTask('k', fields)).toEqual({
      id: fields.id,
      description: 'Fix the login bug',
      state: 'pending',
      createdAt: new Date(TS),
      updatedAt: new Date(TS),
      tags: ['backend', 'api'],
      attempts: 0,
      maxAttempts: 3,
      priority: 'normal',
    });
  });

  it('reads every field of ours and ignores internal ones', () => {
    const fields = {
      ...rustTask(),
      state: 'completed',
      assigned_to: 'a1',
      started_at: '2026-03-09T20:04:00Z',
      completed_at: '2026-03-09T21:04:00+01:00',
      result: 'done',
      error: 'first try failed',
      parent_id: 'p1',
      attempts: '2',
      max_attempts: '5',
      priority: 'urgent',
      timeout_ms: '60000',
      usage: JSON.stringify({ inputTokens: 10, outputTokens: 5, costUsd: 0.01, model: 'm' }),
      message: '{"id":"x"}',
      fence: '12',
      worker_id: 'w1',
      reply_to: 'r1',
    };
    const task = decodeTask('k', fields);
    expect(task).toMatchObject({
      state: 'completed',
      assignedTo: 'a1',
      startedAt: new Date('2026-03-09T20:04:00Z'),
      completedAt: new Date('2026-03-09T20:04:00Z'),
      result: 'done',
      error: 'first try failed',
      parentId: 'p1',
      attempts: 2,
      maxAttempts: 5,
      priority: 'urgent',
      timeoutMs: 60000,
      usage: { inputTokens: 10, outputTokens: 5, costUsd: 0.01, model: 'm' },
    });
    expect(Object.keys(task)).not.toContain('fence');
  });

  it.each<[string, Record<string, string | undefined>, string]>([
    ['an unknown state', { state: 'bogus' }, 'state'],
    ['an uppercase state', { state: 'Pending' }, 'state'],
    ['a created_at that is not a timestamp', { created_at: 'yesterday' }, 'created_at'],
    ['an impossible date', { updated_at: '2026-13-45T99:99:99Z' }, 'updated_at'],
    ['a date without a zone', { created_at: '2026-03-09T20:03:14' }, 'created_at'],
    ['tags that are not JSON', { tags: 'backend,api' }, 'tags'],
    ['tags that are not a list of strings', { tags: '[1,2]' }, 'tags'],
    ['negative attempts', { attempts: '-1' }, 'attempts'],
    ['fractional max_attempts', { max_attempts: '1.5' }, 'max_attempts'],
    ['an unknown priority', { priority: 'asap' }, 'priority'],
    ['usage that is not JSON', { usage: '{' }, 'usage'],
    ['no description', { description: undefined }, 'description'],
    ['no id', { id: undefined }, 'id'],
    ['no created_at', { created_at: undefined }, 'created_at'],
  ])('refuses %s', (_, change, field) => {
    const fields: Record<string, string> = { ...rustTask() };
    for (const [k, v] of Object.entries(change)) {
      if (v === undefined) delete fields[k];
      else fields[k] = v;
    }
    expectCorrupt(() => decodeTask('tt:{x}:task:1', fields), 'tt:{x}:task:1', field);
  });
});

describe('decodeAgent', () => {
  it('reads a Rust record, filling only the fields it never writes', () => {
    const fields = rustAgent();
    expect(decodeAgent('k', fields)).toEqual({
      id: fields.id,
      name: 'backend',
      shortId: fields.id!.slice(0, 4),
      type: 'worker',
      state: 'idle',
      cli: 'claude',
      tags: [],
      createdAt: new Date(TS),
      lastHeartbeat: new Date(TS),
      lastActiveAt: new Date(TS),
      tasksCompleted: 4,
      tasksFailed: 0,
      roundsCompleted: 7,
      claimBacklog: false,
    });
  });

  it('reads the optional fields', () => {
    const agent = decodeAgent('k', {
      ...rustAgent(),
      current_task: 't1',
      nickname: 'Bee',
      role_id: 'reviewer',
      parent_agent_id: 'p1',
      tags: '["a"]',
      tasks_failed: '2',
      worker_id: 'w1',
      error: 'lost',
      claim_backlog: '1',
    });
    expect(agent).toMatchObject({
      currentTask: 't1',
      nickname: 'Bee',
      role: 'reviewer',
      parentAgentId: 'p1',
      tags: ['a'],
      tasksFailed: 2,
      workerId: 'w1',
      error: 'lost',
      claimBacklog: true,
    });
  });

  it.each<[string, Record<string, string | undefined>, string]>([
    ['an unknown state', { state: 'bogus' }, 'state'],
    ['an unknown agent_type', { agent_type: 'robot' }, 'agent_type'],
    ['a non-numeric tasks_completed', { tasks_completed: 'many' }, 'tasks_completed'],
    ['a bad last_heartbeat', { last_heartbeat: 'now' }, 'last_heartbeat'],
    ['a claim_backlog that is not 0/1', { claim_backlog: 'yes' }, 'claim_backlog'],
    ['no name', { name: undefined }, 'name'],
    ['no rounds_completed', { rounds_completed: undefined }, 'rounds_completed'],
  ])('refuses %s', (_, change, field) => {
    const fields: Record<string, string> = { ...rustAgent() };
    for (const [k, v] of Object.entries(change)) {
      if (v === undefined) delete fields[k];
      else fields[k] = v;
    }
    expectCorrupt(() => decodeAgent('tt:{x}:agent:1', fields), 'tt:{x}:agent:1', field);
  });
});

describe('toFields', () => {
  it('accepts a flat array, an object or nothing', () => {
    expect(toFields(['a', '1', 'b', '2'])).toEqual({ a: '1', b: '2' });
    expect(toFields({ a: '1' })).toEqual({ a: '1' });
    expect(toFields(null)).toEqual({});
  });
});

describe('records in Redis', () => {
  it('agents and tasks are stored with the Rust field names and encodings', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('worker', { run: async () => 'the result', role: 'dev' });
    const task = await agent.assign({ description: 'encode me', tags: ['a', 'b'] });
    await town.waitForTask(task.id, { timeoutMs: 5_000 });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const redis = rawRedis();
    const a = await redis.hgetall(`${prefixOf(town.name)}agent:${agent.id}`);
    expect(a).toMatchObject({
      id: agent.id,
      name: 'worker',
      agent_type: 'worker',
      state: 'idle',
      cli: 'in-process',
      tasks_completed: '1',
      rounds_completed: '1',
      spawn_mode: 'fresh',
      role_id: 'dev',
    });
    for (const f of ['created_at', 'last_heartbeat', 'last_active_at']) expect(a[f], f).toMatch(RFC3339_MICROS);
    // optional fields are absent when unset, never empty
    expect(Object.keys(a)).not.toContain('nickname');
    expect(Object.keys(a)).not.toContain('current_task');
    expect(Object.values(a)).not.toContain('');

    const t = await redis.hgetall(`${prefixOf(town.name)}task:${task.id}`);
    expect(t).toMatchObject({
      id: task.id,
      description: 'encode me',
      state: 'completed',
      tags: '["a","b"]',
      assigned_to: agent.id,
      result: 'the result',
      attempts: '1',
    });
    // our own defaults stay implicit (normal priority, 3 attempts): queued tasks stay small
    expect(Object.keys(t)).not.toContain('priority');
    expect(Object.keys(t)).not.toContain('max_attempts');
    expect(await town.task(task.id)).toMatchObject({ priority: 'normal', maxAttempts: 3 });
    for (const f of ['created_at', 'updated_at', 'started_at', 'completed_at']) expect(t[f], f).toMatch(RFC3339_MICROS);
    expect(Object.keys(t)).not.toContain('parent_id');
    expect(Object.values(t)).not.toContain('');
  });

  it('a revived agent drops the optional fields it no longer has', async () => {
    const town = await openTown();
    const first = await town.spawnAgent('x', { start: false, nickname: 'Nick', role: 'dev' });
    await first.stop();
    await town.spawnAgent('x', { start: false });
    const a = await rawRedis().hgetall(`${prefixOf(town.name)}agent:${first.id}`);
    expect(Object.keys(a)).not.toContain('nickname');
    expect(Object.keys(a)).not.toContain('role_id');
    expect((await first.info()).nickname).toBeUndefined();
  });

  it('records written by the Rust CLI are read back (tinytown key layout)', async () => {
    const town = await openTown({ keyLayout: 'tinytown' });
    const task = rustTask();
    const agent = rustAgent();
    const redis = rawRedis();
    await redis.hset(`tt:${town.name}:task:${task.id}`, task);
    await redis.hset(`tt:${town.name}:agent:${agent.id}`, agent);
    expect(await town.task(task.id!)).toMatchObject({ id: task.id, state: 'pending', tags: ['backend', 'api'], maxAttempts: 3 });
    const handle = await town.agent(agent.id!);
    expect(handle.name).toBe('backend');
    expect(await handle.info()).toMatchObject({ state: 'idle', cli: 'claude', tasksCompleted: 4 });
  });
});

describe('corrupt records through the public API', () => {
  it.each([
    ['state', 'bogus'],
    ['created_at', 'yesterday'],
    ['tags', 'not json'],
    ['attempts', 'two'],
  ])('a task whose %s is %j: task(), tasks() and waitForTask() throw CorruptRecordError naming the key', async (field, value) => {
    const town = await openTown();
    const record = await town.backlog.add('soon damaged');
    const key = `${prefixOf(town.name)}task:${record.id}`;
    await rawRedis().hset(key, field, value);
    for (const read of [() => town.task(record.id), () => town.tasks(), () => town.waitForTask(record.id, { timeoutMs: 2_000 })]) {
      const err = await read().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CorruptRecordError);
      expect((err as CorruptRecordError).key).toBe(key);
      expect((err as Error).message).toContain(key);
      expect((err as Error).message).toContain(field);
    }
    // the town keeps working for everything else
    expect((await town.backlog.add('healthy')).state).toBe('pending');
  });

  it.each([
    ['state', 'bogus'],
    ['created_at', 'yesterday'],
    ['tasks_completed', '-3'],
  ])('an agent whose %s is %j: agents(), agent.info(), agent() and status() throw CorruptRecordError naming the key', async (field, value) => {
    const town = await openTown();
    const agent = await town.spawnAgent('victim', { start: false });
    await town.spawnAgent('bystander', { start: false });
    const key = `${prefixOf(town.name)}agent:${agent.id}`;
    await rawRedis().hset(key, field, value);
    for (const read of [() => town.agents(), () => agent.info(), () => town.agent('victim'), () => town.status()]) {
      const err = await read().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CorruptRecordError);
      expect(err).toBeInstanceOf(TinytownError);
      expect((err as CorruptRecordError).key).toBe(key);
      expect((err as Error).message).toContain(field);
    }
    expect((await (await town.agent('bystander')).info()).state).toBe('cold');
  });

  it('status() names the real key of an agent hash that lost its id', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('victim', { start: false });
    const key = `${prefixOf(town.name)}agent:${agent.id}`;
    await rawRedis().hdel(key, 'id');
    const err = await town.status().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptRecordError);
    expect((err as CorruptRecordError).key).toBe(key);
  });
});

/**
 * decodeTask and decodeAgent check records without zod on the hot paths (readTaskHash,
 * readAgentHash) and fall back to the schemas only when that check fails. A field added to a
 * schema but not to its fast reader would be dropped silently: every schema field needs a sample
 * here, and both ways must read it the same.
 */
describe('fast readers agree with the schemas', () => {
  const taskSample: Record<string, string> = {
    id: 't1', description: 'Do it', state: 'failed', created_at: TS, updated_at: TS, tags: '["a","b"]',
    assigned_to: 'a1', started_at: TS, completed_at: TS, result: 'r', error: 'e', parent_id: 'p1',
    attempts: '2', max_attempts: '3', priority: 'high', timeout_ms: '5000',
    usage: '{"inputTokens":10,"outputTokens":5,"costUsd":0.25}', session_id: 's1', group: 'g1',
    depends_on: '["t0"]', on_dep_failure: 'run', max_cost_usd: '1.5', max_tokens: '1000',
  };
  const agentSample: Record<string, string> = {
    id: 'a1', name: 'backend', agent_type: 'worker', state: 'idle', cli: 'claude', created_at: TS,
    last_heartbeat: TS, last_active_at: TS, tasks_completed: '4', rounds_completed: '5',
    current_task: 't1', nickname: 'bob', role_id: 'worker', parent_agent_id: 'p', tags: '["api"]',
    tasks_failed: '1', worker_id: 'w1', error: 'x', claim_backlog: '1', session_id: 's',
    usage_input_tokens: '10', usage_output_tokens: '20', usage_cache_read_tokens: '3',
    usage_cache_write_tokens: '4', usage_reasoning_tokens: '5', usage_cost_usd: '0.5',
    max_cost_usd: '2', max_tokens: '100', worktree: '/w',
  };

  it('every schema field has a sample, and both ways read all of it identically', () => {
    expect(Object.keys(taskSample).sort()).toEqual(Object.keys(taskHash.shape).sort());
    expect(Object.keys(agentSample).sort()).toEqual(Object.keys(agentHash.shape).sort());
    expect(readTaskHash(taskSample)).toEqual(taskHash.parse(taskSample));
    expect(readAgentHash(agentSample)).toEqual(agentHash.parse(agentSample));
    // Only the required fields, too.
    const minimalTask = { id: 't', description: '', state: 'pending', created_at: TS, updated_at: TS };
    expect(readTaskHash(minimalTask)).toEqual(taskHash.parse(minimalTask));
  });

  it('what the schema refuses, the fast reader leaves to the schema', () => {
    for (const [field, bad] of Object.entries({ state: 'lost', attempts: '-1', priority: 'asap', tags: '[1]', created_at: 'yesterday', max_cost_usd: 'NaN' })) {
      const record = { ...taskSample, [field]: bad };
      expect(taskHash.safeParse(record).success, field).toBe(false);
      expect(readTaskHash(record), field).toBeUndefined();
    }
    for (const [field, bad] of Object.entries({ agent_type: 'robot', claim_backlog: 'yes', tasks_completed: '1.5', last_heartbeat: '' })) {
      const record = { ...agentSample, [field]: bad };
      expect(agentHash.safeParse(record).success, field).toBe(false);
      expect(readAgentHash(record), field).toBeUndefined();
    }
  });
});
