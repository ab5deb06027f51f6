/**
 * Interoperability with the Rust Tinytown (`keyLayout: 'tinytown'`), on a real Redis.
 *
 * Raw Redis state is written exactly as the Rust `tt` CLI writes it (test/helpers/rust-tt.ts
 * replays its commands from the Rust source) and read through tinytown; what tinytown writes is
 * read back raw and checked field by field against the reference
 * (../shared/reference/tinytown-wire-format.md) and the Rust readers' expectations.
 */
import { spawnSync } from 'node:child_process';
import { Cluster, Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigInvalidError, Town, type TaskContext, type TaskRecord, type TownOptions } from '../src/index.js';
import { decodeMessage, encodeMessage, type MessageType } from '../src/message.js';
import { deferred, eventsUntil, eventually, rawRedis, sleep, waitForEvent } from './helpers/kit.js';
import { startRedisServer, type TestRedisServer } from './helpers/redis-server.js';
import * as tt from './helpers/rust-tt.js';
import { openTown, tempDir, uniqueName } from './helpers/town.js';

const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SUPERVISOR = tt.SUPERVISOR;

/** The payload fields of each message type, in the order `MessageType`'s variants declare them (message.rs). */
const PAYLOAD: Record<string, string[]> = {
  task: ['description'],
  query: ['question'],
  informational: ['summary'],
  confirmation: ['ack_type'],
  task_assign: ['task_id'],
  task_done: ['task_id', 'result'],
  task_failed: ['task_id', 'error'],
  status_request: [],
  status_response: ['state', 'current_task'],
  ping: [],
  pong: [],
  shutdown: [],
  custom: ['kind', 'payload'],
};

/** A tinytown-layout town, a raw client and the town's key prefix. */
async function rustTown(options: TownOptions = {}): Promise<{ town: Town; redis: Redis; p: string }> {
  const town = await openTown({ keyLayout: 'tinytown', ...options });
  return { town, redis: rawRedis(), p: `tt:${town.name}:` };
}

/** Checks one message as the Rust `Message` deserializer would see it, key order included. */
function expectRustMessage(json: string): Record<string, unknown> {
  const m = JSON.parse(json) as Record<string, unknown>;
  const type = m.type as string;
  expect(Object.keys(PAYLOAD)).toContain(type);
  expect(Object.keys(m)).toEqual(['id', 'from', 'to', 'type', ...PAYLOAD[type]!, 'priority', 'created_at', 'correlation_id']);
  expect(m.id).toMatch(UUID);
  expect(m.from).toMatch(UUID);
  expect(m.to).toMatch(UUID);
  expect(['low', 'normal', 'high', 'urgent']).toContain(m.priority);
  expect(m.created_at).toMatch(/Z$/);
  expect(m.created_at).toMatch(RFC3339_UTC);
  expect(m.correlation_id === null || UUID.test(m.correlation_id as string)).toBe(true);
  if (type === 'confirmation') {
    const ack = m.ack_type as { type: string; reason?: unknown };
    expect(['received', 'acknowledged', 'thanks', 'approved', 'rejected']).toContain(ack.type);
    if (ack.type === 'rejected') expect(typeof ack.reason).toBe('string');
  }
  for (const field of PAYLOAD[type]!) if (field !== 'ack_type' && field !== 'current_task') expect(typeof m[field]).toBe('string');
  if (type === 'status_response') expect(m.current_task === null || typeof m.current_task === 'string').toBe(true);
  // byte for byte what serde_json writes for the same message
  const { id, from, to, priority, created_at, correlation_id, ...payload } = m;
  expect(json).toBe(
    tt.serializeMessage({
      id: id as string,
      from: from as string,
      to: to as string,
      msg_type: payload as tt.RustMessageType,
      priority: priority as tt.RustMessage['priority'],
      created_at: created_at as string,
      correlation_id: correlation_id as string | null,
    }),
  );
  return m;
}

describe('what the Rust tt writes is read by tinytown (golden)', () => {
  it('lists, reads and counts an agent from `tt spawn` and tasks from `tt assign` and `tt backlog add`', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await tt.spawn(redis, p, 'backend');
    const assigned = await tt.assign(redis, p, agent.id, 'Implement the API');
    const backlog = await tt.backlogAdd(redis, p, 'Write the docs', ['docs', 'api']);
    // as chrono writes hashes: +00:00, the fraction in 3, 6 or 9 digits (SecondsFormat::AutoSi)
    expect(await redis.hget(`${p}agent:${agent.id}`, 'created_at')).toMatch(/^\S+:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$/);

    const agents = await town.agents();
    expect(agents).toEqual([
      expect.objectContaining({
        id: agent.id,
        name: 'backend',
        nickname: 'Robert',
        type: 'worker',
        state: 'starting',
        cli: 'claude',
        tasksCompleted: 0,
        tasksFailed: 0,
        roundsCompleted: 0,
        tags: [],
        claimBacklog: false,
      }),
    ]);
    expect(agents[0]!.createdAt.getTime()).toBe(new Date(agent.created_at).getTime());
    expect((await town.agent('backend')).id).toBe(agent.id);
    expect((await town.agent('Robert')).id).toBe(agent.id);
    expect((await town.agent(agent.id.slice(0, 6))).id).toBe(agent.id);

    expect((await town.tasks()).map((t) => t.id).sort()).toEqual([assigned.id, backlog.id].sort());
    expect(await town.task(assigned.id)).toMatchObject({
      state: 'assigned',
      assignedTo: agent.id,
      description: 'Implement the API',
      tags: [],
      attempts: 0,
      maxAttempts: 3,
      priority: 'normal',
    });
    expect(await town.task(backlog.id)).toMatchObject({ state: 'pending', tags: ['docs', 'api'] });
    expect((await town.backlog.list()).map((t) => t.id)).toEqual([backlog.id]);

    const status = await town.status();
    expect(status.tasks).toEqual({ pending: 1, assigned: 1, running: 0, completed: 0, failed: 0, cancelled: 0 });
    expect(status.backlog).toBe(1);
    expect(status.agents).toEqual([expect.objectContaining({ id: agent.id, queued: 1 })]);
    expect(await (await town.agent('backend')).inbox()).toEqual([
      expect.objectContaining({ type: 'task_assign', taskId: assigned.id, from: SUPERVISOR, to: agent.id, priority: 'normal' }),
    ]);
  });

  it('Town.connect finds what tt created while no tinytown process ran (SCAN, into the indexes)', async () => {
    const name = uniqueName();
    const redis = rawRedis();
    const p = `tt:${name}:`;
    const agent = await tt.spawn(redis, p, 'early');
    const task = await tt.backlogAdd(redis, p, 'early work');
    const done = await tt.backlogAdd(redis, p, 'already done');
    await tt.taskComplete(redis, p, done.id, 'finished before');
    await openTown({ name, keyLayout: 'tinytown' });
    expect(await redis.sismember(`${p}idx:agents`, agent.id)).toBe(1);
    expect(await redis.hget(`${p}idx:names`, 'early')).toBe(agent.id);
    expect(await redis.zscore(`${p}idx:tasks`, task.id)).not.toBeNull();
    // a terminal task joins the retention index, by its completion time
    expect(Number(await redis.zscore(`${p}idx:done`, done.id))).toBe(new Date((await redis.hget(`${p}task:${done.id}`, 'completed_at'))!).getTime());
    expect(await redis.zscore(`${p}idx:done`, task.id)).toBeNull();
  });

  it('reads messages of every type, from the inbox and the urgent list, and a worker survives them all', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await town.spawnAgent('mail', { start: false });
    const from = (await tt.spawn(redis, p, 'sender')).id;
    const taskId = (await tt.assign(redis, p, agent.id, 'assigned by tt')).id;
    await redis.del(`${p}inbox:${agent.id}`); // the task_assign is re-sent below, in order
    const correlation = '6b8f3c1e-2a4d-4e5f-9a7b-1c2d3e4f5a6b';
    const sent: [tt.RustMessageType, Record<string, unknown>][] = [
      [{ type: 'task', description: 'do the thing' }, { type: 'task', text: 'do the thing' }],
      [{ type: 'query', question: 'what blocks you?' }, { type: 'query', text: 'what blocks you?' }],
      [{ type: 'informational', summary: 'build is green' }, { type: 'info', text: 'build is green' }],
      [{ type: 'confirmation', ack_type: { type: 'thanks' } }, { type: 'ack', text: 'thanks' }],
      [{ type: 'confirmation', ack_type: { type: 'rejected', reason: 'too big' } }, { type: 'ack', text: 'rejected: too big' }],
      [{ type: 'task_assign', task_id: taskId }, { type: 'task_assign', taskId }],
      [{ type: 'task_done', task_id: taskId, result: 'shipped' }, { type: 'task_done', taskId, text: 'shipped' }],
      [{ type: 'task_failed', task_id: taskId, error: 'timeout' }, { type: 'task_failed', taskId, text: 'timeout' }],
      [{ type: 'status_request' }, { type: 'status_request' }],
      [{ type: 'status_response', state: 'working', current_task: taskId }, { type: 'status_response', text: 'working', taskId }],
      [{ type: 'status_response', state: 'idle', current_task: null }, { type: 'status_response', text: 'idle' }],
      [{ type: 'ping' }, { type: 'ping' }],
      [{ type: 'pong' }, { type: 'pong' }],
      [{ type: 'shutdown' }, { type: 'shutdown' }],
      [{ type: 'custom', kind: 'needs_attention', payload: '{"pr":7}' }, { type: 'custom', kind: 'needs_attention', text: '{"pr":7}' }],
    ];
    const expected: Record<string, unknown>[] = [];
    for (const [msgType, decoded] of sent) {
      const m = tt.newMessage(from, agent.id, msgType);
      if (msgType.type === 'query') m.correlation_id = correlation;
      await tt.send(redis, p, m);
      expected.push({
        id: m.id,
        from,
        to: agent.id,
        priority: 'normal',
        createdAt: new Date(m.created_at),
        ...(msgType.type === 'query' && { correlationId: correlation }),
        ...decoded,
      });
    }
    const urgent = tt.newMessage(SUPERVISOR, agent.id, { type: 'query', question: 'urgent: can you look now?' });
    await tt.sendUrgent(redis, p, urgent);
    const high = tt.newMessage(SUPERVISOR, agent.id, { type: 'informational', summary: 'heads-up' });
    high.priority = 'high';
    await tt.send(redis, p, high); // LPUSH: head of the inbox

    const inbox = await agent.inbox();
    expect(inbox).toEqual([
      expect.objectContaining({ id: urgent.id, type: 'query', text: 'urgent: can you look now?' }),
      expect.objectContaining({ id: high.id, type: 'info', priority: 'high', text: 'heads-up' }),
      ...expected,
    ]);
    for (const m of inbox) expect(Object.values(m)).not.toContain(undefined);

    // A worker takes the urgent list first, runs what is actionable, hands the rest to the next
    // prompt as notes.
    const last = await agent.assign('last');
    const ran: string[] = [];
    const notes = new Set<string>();
    await town.runWorker('mail', {
      run: async (task: TaskRecord, ctx: TaskContext) => {
        ran.push(task.description);
        for (const m of ctx.messages) notes.add(m.type);
        return task.description.includes('?') ? 'see src/auth.rs \\ lib/x' : 'ok';
      },
    });
    await agent.waitForIdle({ timeoutMs: 10_000 });
    expect(ran).toEqual(['urgent: can you look now?', 'do the thing', 'what blocks you?', 'assigned by tt', 'last']);
    expect((await town.task(last.id)).state).toBe('completed');
    expect([...notes].sort()).toEqual(['ack', 'info', 'task_done', 'task_failed', 'status_response', 'status_request', 'ping', 'pong', 'shutdown', 'custom'].sort());
    // the answers to the two queries, written by a Lua script, are what serde writes, byte for byte
    const answers = [...(await redis.lrange(`${p}inbox:${SUPERVISOR}`, 0, -1)), ...(await redis.lrange(`${p}inbox:${from}`, 0, -1))];
    expect(answers).toHaveLength(2);
    for (const json of answers) {
      expect(expectRustMessage(json)).toMatchObject({ type: 'informational', summary: 'see src/auth.rs \\ lib/x', priority: 'normal' });
    }
    expect(await agent.inbox()).toEqual([]);
    expect(await redis.llen(`${p}urgent:${agent.id}`)).toBe(0);
    expect((await town.task(taskId)).state).toBe('completed');
  });

  it('reads the Rust event stream: its names, its capitalised states; tt interrupt and tt resume hold and free a worker', async () => {
    const { town, redis, p } = await rustTown();
    const ran: string[] = [];
    const agent = await town.spawnAgent('pausable', { run: async (t) => (ran.push(t.description), 'ok') });
    await agent.waitForIdle({ timeoutMs: 5_000 });

    // `tt interrupt` (AgentService::interrupt): state rewritten, then an agent_interrupted event
    const paused = (await tt.getAgentState(redis, p, agent.id))!;
    paused.state = 'paused';
    await tt.setAgentState(redis, p, paused);
    await tt.emitEvent(redis, p, { event_type: 'agent_interrupted', agent_id: agent.id, old_state: 'Idle', new_state: 'Paused', message: 'Agent interrupted (paused)' });
    await tt.emitEvent(redis, p, { event_type: 'mission_event', message: 'a mission thing tinytown does not know' });
    const held = await agent.assign('wait for resume');
    await sleep(300);
    expect(ran).toEqual([]);
    expect((await town.task(held.id)).state).toBe('assigned');

    // `tt resume` (AgentService::resume)
    const resumed = (await tt.getAgentState(redis, p, agent.id))!;
    resumed.state = 'idle';
    await tt.setAgentState(redis, p, resumed);
    await redis.del(`${p}stop:${agent.id}`);
    await tt.emitEvent(redis, p, { event_type: 'agent_resumed', agent_id: agent.id, old_state: 'Paused', new_state: 'Idle', message: 'Agent resumed' });
    expect((await town.waitForTask(held.id, { timeoutMs: 5_000 })).state).toBe('completed');

    const events = await eventsUntil(town, (e) => e.type === 'agent.state' && e.data.newState === 'idle' && e.data.message === 'Agent resumed');
    const foreign = events.filter((e) => e.data.message === 'Agent interrupted (paused)' || e.data.message === 'Agent resumed');
    expect(foreign.map((e) => [e.type, e.agentId, e.data.oldState, e.data.newState])).toEqual([
      ['agent.state', agent.id, 'idle', 'paused'],
      ['agent.state', agent.id, 'paused', 'idle'],
    ]);
    expect(events.some((e) => e.data.message === 'a mission thing tinytown does not know')).toBe(false);
    for (const e of foreign) expect(e.at.getTime()).toBeGreaterThan(0);
  });
});

describe('what tinytown writes matches the reference (golden)', () => {
  it('agent hashes: every field the Rust reader needs, optional ones absent, RFC 3339 UTC timestamps', async () => {
    const { town, redis, p } = await rustTown();
    const plain = await town.spawnAgent('plain', { start: false });
    const dressed = await town.spawnAgent('dressed', { start: false, cli: 'codex', role: 'reviewer', nickname: 'Martha', tags: ['api'] });
    const h = await redis.hgetall(`${p}agent:${plain.id}`);
    expect(h).toMatchObject({
      id: plain.id,
      name: 'plain',
      agent_type: 'worker',
      state: 'cold',
      tasks_completed: '0',
      rounds_completed: '0',
      spawn_mode: 'fresh',
    });
    for (const f of ['created_at', 'last_heartbeat', 'last_active_at']) expect(h[f], f).toMatch(RFC3339_UTC);
    for (const f of ['current_task', 'nickname', 'role_id', 'parent_agent_id']) expect(Object.keys(h)).not.toContain(f);
    expect(Object.values(h)).not.toContain('');
    expect(await redis.hgetall(`${p}agent:${dressed.id}`)).toMatchObject({ cli: 'codex', role_id: 'reviewer', nickname: 'Martha' });

    // The Rust reader gets the record; its whole-record rewrite keeps ours readable, extras kept.
    const rust = await tt.getAgentState(redis, p, dressed.id);
    expect(rust).toMatchObject({ id: dressed.id, name: 'dressed', state: 'cold', agent_type: 'worker', cli: 'codex', role_id: 'reviewer', nickname: 'Martha', tasks_completed: 0 });
    expect(new Date(rust!.created_at).getTime()).toBe(new Date((await redis.hget(`${p}agent:${dressed.id}`, 'created_at'))!).getTime());
    await tt.setAgentState(redis, p, rust!);
    expect(await dressed.info()).toMatchObject({ name: 'dressed', role: 'reviewer', nickname: 'Martha', tags: ['api'], state: 'cold' });
  });

  it('task hashes: names, encodings, absent optional fields; a failed task keeps its error in result too', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await town.spawnAgent('worker', {
      run: async (t) => {
        if (t.description.startsWith('fail')) throw new Error('it broke');
        return 'all done';
      },
    });
    const queued = await town.backlog.add({ description: 'queued', tags: ['backend', 'api'] });
    const done = await agent.assign('finish me');
    const failed = await agent.assign('fail me');
    const child = await agent.assign({ description: 'child', parentId: done.id });
    for (const t of [done, failed, child]) await town.waitForTask(t.id, { timeoutMs: 5_000 });

    const raw = async (id: string) => redis.hgetall(`${p}task:${id}`);
    const q = await raw(queued.id);
    expect(q).toMatchObject({ id: queued.id, description: 'queued', state: 'pending', tags: '["backend","api"]' });
    for (const f of ['assigned_to', 'started_at', 'completed_at', 'result', 'parent_id']) expect(Object.keys(q)).not.toContain(f);

    const d = await raw(done.id);
    expect(d).toMatchObject({ state: 'completed', assigned_to: agent.id, result: 'all done', tags: '[]' });
    for (const f of ['created_at', 'updated_at', 'started_at', 'completed_at']) expect(d[f], f).toMatch(RFC3339_UTC);
    expect(Object.keys(d)).not.toContain('parent_id');
    expect(Object.keys(d)).not.toContain('error');

    const f = await raw(failed.id);
    expect(f).toMatchObject({ state: 'failed', result: 'it broke', error: 'it broke' });
    expect(await town.task(failed.id)).toMatchObject({ state: 'failed', error: 'it broke' });
    expect((await town.task(failed.id)).result).toBeUndefined();

    expect((await raw(child.id)).parent_id).toBe(done.id);
    for (const t of [q, d, f]) expect(Object.values(t)).not.toContain('');

    // as the Rust parser reads them
    expect(await tt.getTask(redis, p, done.id)).toMatchObject({ state: 'completed', assigned_to: agent.id, result: 'all done', tags: [] });
    expect(await tt.getTask(redis, p, failed.id)).toMatchObject({ state: 'failed', result: 'it broke' });
    expect(await tt.getTask(redis, p, child.id)).toMatchObject({ parent_id: done.id });
    // a failed task written by the Rust side (Task::fail: result only) reads as failed with that error
    const rustFailed = tt.newTask('failed by tt');
    Object.assign(rustFailed, { state: 'failed', result: 'rust error', completed_at: tt.rustNow().hash });
    await tt.setTask(redis, p, rustFailed);
    expect(await town.task(rustFailed.id)).toMatchObject({ state: 'failed', error: 'rust error' });
  });

  it('inbox messages: serde field order and encodings, byte for byte, for every message type', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await town.spawnAgent('mail', { start: false });
    await town.send('mail', 'please do this', { type: 'task' });
    await town.send('mail', 'why?', { type: 'query', correlationId: '6b8f3c1e-2a4d-4e5f-9a7b-1c2d3e4f5a6b' });
    await town.send('mail', 'fyi', { type: 'info', priority: 'high' });
    await town.send('mail', 'looks good', { type: 'ack' });
    await town.send('mail', '', { type: 'ack' });
    await agent.assign({ description: 'work', priority: 'urgent' });
    const raw = await redis.lrange(`${p}inbox:${agent.id}`, 0, -1);
    expect(raw).toHaveLength(6);
    const types = raw.map((json) => expectRustMessage(json).type);
    expect(types).toEqual(['task_assign', 'informational', 'task', 'query', 'confirmation', 'confirmation']);

    // and every type the encoder knows
    const all: MessageType[] = ['task', 'query', 'info', 'ack', 'task_assign', 'task_done', 'task_failed', 'status_request', 'status_response', 'ping', 'pong', 'shutdown', 'custom'];
    for (const type of all) {
      const { json } = encodeMessage({ from: SUPERVISOR, to: agent.id, type, text: 'x', taskId: agent.id, kind: 'k' });
      expectRustMessage(json);
      expect(decodeMessage(json)?.type).toBe(type);
    }
    const none = JSON.parse(encodeMessage({ from: SUPERVISOR, to: agent.id, type: 'status_response', text: 'idle' }).json) as Record<string, unknown>;
    expect(none.current_task).toBeNull();
  });

  it('refuses a correlationId the Rust side cannot read (not a UUID)', async () => {
    const { town } = await rustTown();
    await town.spawnAgent('mail', { start: false });
    await expect(town.send('mail', 'x', { correlationId: 'ticket-42' })).rejects.toThrow(/UUID/);
  });

  it('events: event_type and data, the Rust names, per-agent streams and the activity log', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await town.spawnAgent('ev', { run: async (t) => (t.description === 'bad' ? Promise.reject(new Error(`nope ${'é'.repeat(60)}`)) : 'ok') });
    for (let i = 0; i < 6; i++) await town.waitForTask((await agent.assign(`task ${i}`)).id, { timeoutMs: 5_000 });
    await town.waitForTask((await agent.assign('bad')).id, { timeoutMs: 5_000 });
    await agent.waitForIdle({ timeoutMs: 5_000 });

    const entries = await redis.xrange(`${p}events`, '-', '+');
    expect(entries.length).toBeGreaterThan(10);
    const wire = new Set<string>();
    for (const [, fields] of entries) {
      expect([fields[0], fields[2]]).toEqual(['event_type', 'data']);
      const data = JSON.parse(fields[3]!) as Record<string, unknown>;
      expect(data.event_type).toBe(fields[1]);
      expect(typeof data.message).toBe('string');
      expect(data.timestamp).toMatch(RFC3339_UTC);
      for (const k of ['agent_id', 'task_id']) if (k in data) expect(data[k], k).toMatch(UUID);
      for (const k of ['old_state', 'new_state']) if (k in data) expect(typeof data[k]).toBe('string');
      wire.add(fields[1]!);
    }
    // where the Rust enum has a name, that name
    for (const name of ['agent_spawned', 'agent_state_changed', 'task_assigned', 'task_completed', 'task_failed']) expect(wire).toContain(name);
    expect([...wire].filter((w) => tt.RUST_EVENT_TYPES.has(w)).sort()).toEqual(['agent_spawned', 'agent_state_changed', 'task_assigned', 'task_completed', 'task_failed']);

    // the per-agent stream the Rust `tt events --agent` reads: every event naming the agent
    const mine = entries.filter(([, f]) => (JSON.parse(f[3]!) as { agent_id?: string }).agent_id === agent.id);
    const stream = await redis.xrange(`${p}events:agent:${agent.id}`, '-', '+');
    expect(stream.map(([, f]) => f)).toEqual(mine.map(([, f]) => f));

    // the activity log `tt status --deep` shows: newest first, 10 lines, 1 h TTL
    const activity = await redis.lrange(`${p}activity:${agent.id}`, 0, -1);
    expect(activity).toHaveLength(10);
    expect(activity[0]).toMatch(/^❌ task [0-9a-f]{8} failed: nope é{37}…$/); // clipped, never inside a character
    expect(activity[1]).toMatch(/^▶️ task [0-9a-f]{8} started$/);
    expect(activity[2]).toMatch(/^✅ task [0-9a-f]{8} completed$/);
    const ttl = await redis.ttl(`${p}activity:${agent.id}`);
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);
  });

  it('the default layout keeps none of the Rust-only keys', async () => {
    const town = await openTown();
    const agent = await town.spawnAgent('plain', { run: async () => 'ok' });
    await town.waitForTask((await agent.assign('x')).id, { timeoutMs: 5_000 });
    await agent.stop();
    const redis = rawRedis();
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `tt:{${town.name}}:*`, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    expect(keys.length).toBeGreaterThan(5);
    expect(keys.filter((k) => /:(activity|stop|events:agent):/.test(k))).toEqual([]);
  });
});

describe('tt task complete on a running task', () => {
  it('the worker keeps that result, counters and indexes stay right, and it carries on', async () => {
    const { town, redis, p } = await rustTown();
    const gate = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('busy', {
      run: async (t) => {
        if (t.description === 'long job') {
          started.resolve();
          await gate.promise;
        }
        return 'worker result';
      },
    });
    const task = await agent.assign('long job');
    await started.promise;
    expect((await town.status()).tasks.running).toBe(1);
    expect((await agent.info()).currentTask).toBe(task.id);

    const waiting = town.waitForTask(task.id, { timeoutMs: 5_000 });
    await tt.taskComplete(redis, p, task.id, 'done by tt');
    expect((await town.status()).tasks).toEqual({ pending: 0, assigned: 0, running: 0, completed: 1, failed: 0, cancelled: 0 });

    gate.resolve();
    expect(await waiting).toMatchObject({ state: 'completed', result: 'done by tt' }); // announced for tt
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: 'done by tt' });
    const announced = (await redis.xrange(`${p}events`, '-', '+')).filter(([, f]) => f[1] === 'task_completed');
    expect(announced.map(([, f]) => JSON.parse(f[3]!) as Record<string, unknown>)).toEqual([
      expect.objectContaining({ task_id: task.id, agent_id: agent.id, external: true, message: 'task completed by another writer' }),
    ]);
    const info = await agent.info();
    expect(info).toMatchObject({ state: 'idle', tasksCompleted: 1, tasksFailed: 0 });
    expect(info.currentTask).toBeUndefined();
    expect((await town.status()).tasks).toEqual({ pending: 0, assigned: 0, running: 0, completed: 1, failed: 0, cancelled: 0 });
    expect(await redis.zscore(`${p}idx:done`, task.id)).not.toBeNull(); // expires after retention, like ours
    expect(await redis.hget(`${p}task:${task.id}`, 'completed_at')).toMatch(/\+00:00$/); // Rust's completion stands

    const next = await agent.assign('next job');
    expect(await town.waitForTask(next.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'worker result' });
    expect((await town.status()).tasks.completed).toBe(2);
    expect((await agent.info()).tasksCompleted).toBe(2);
  });

  it('on a queued task: a waiter wakes within a sweep interval; the worker later drops the entry', async () => {
    const { town, redis, p } = await rustTown({ leaseMs: 600 }); // a sweep every 300 ms (after a 1.6 s grace)
    const agent = await town.spawnAgent('later', { start: false });
    const task = await agent.assign('queued');
    const waiting = town.waitForTask(task.id, { timeoutMs: 5_000 });
    await sleep(200); // the waiter has looked once and waits for an event now
    await tt.taskComplete(redis, p, task.id, 'done by hand in tt');
    expect(await waiting).toMatchObject({ state: 'completed', result: 'done by hand in tt' });
    const event = await waitForEvent(town, (e) => e.type === 'task.completed' && e.taskId === task.id, 1_000);
    expect(event.data).toMatchObject({ external: true, message: 'task completed by another writer' });
    expect(await redis.zscore(`${p}idx:done`, task.id)).not.toBeNull();
    expect((await town.status()).tasks).toMatchObject({ assigned: 0, completed: 1 });

    const ran: string[] = [];
    await town.runWorker('later', { run: async (t) => (ran.push(t.description), 'ok') });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(ran).toEqual([]);
    expect(await agent.inbox()).toEqual([]);
    expect(await town.task(task.id)).toMatchObject({ state: 'completed', result: 'done by hand in tt' });
  });

  it('an agent record a foreign rewrite left `working` with nothing to do is settled to idle', async () => {
    const { town, redis, p } = await rustTown({ leaseMs: 600 });
    const agent = await town.spawnAgent('settle', { run: async () => 'ok' });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    // `tt task complete` read `working` before our finish set `idle`, and wrote it back after
    await redis.hset(`${p}agent:${agent.id}`, 'state', 'working');
    await waitForEvent(town, (e) => e.agentId === agent.id && e.type === 'agent.state' && e.data.oldState === 'working' && e.data.newState === 'idle' && e.data.message === 'queue empty', 3_000);
    expect((await agent.info()).state).toBe('idle');
  });
});

describe('the urgent list (tt send --urgent)', () => {
  it('an idle worker takes an urgent message within about a second', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await town.spawnAgent('u', { run: async () => 'ok' });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    await sleep(200); // the worker is blocked on its inbox now
    const m = tt.newMessage(SUPERVISOR, agent.id, { type: 'task', description: 'urgent fix' });
    const t0 = Date.now();
    await tt.sendUrgent(redis, p, m);
    await waitForEvent(town, (e) => e.type === 'task.completed' && e.taskId === m.id, 5_000);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect((await town.task(m.id)).description).toBe('urgent fix');
  });

  it('a busy worker takes it before the next inbox entry', async () => {
    const { town, redis, p } = await rustTown();
    const ran: string[] = [];
    const gate = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('order', {
      run: async (t) => {
        ran.push(t.description);
        if (t.description === 'A') {
          started.resolve();
          await gate.promise;
        }
        return 'ok';
      },
    });
    await agent.assign('A');
    await started.promise;
    await agent.assign('B');
    await tt.sendUrgent(redis, p, tt.newMessage(SUPERVISOR, agent.id, { type: 'task', description: 'C (urgent)' }));
    gate.resolve();
    await agent.waitForIdle({ timeoutMs: 5_000 });
    expect(ran).toEqual(['A', 'C (urgent)', 'B']);
  });
});

describe('tt backlog claim', () => {
  it('claims our backlog tasks and its own; the worker runs them; counts and backlog stay right', async () => {
    const { town, redis, p } = await rustTown();
    const agent = await town.spawnAgent('claimer', { run: async (t) => `did ${t.description}` });
    const ours = await town.backlog.add('from tinytown');
    const theirs = await tt.backlogAdd(redis, p, 'from tt', ['backend']);
    expect((await town.status()).tasks.pending).toBe(2);

    expect(await tt.backlogClaim(redis, p, ours.id, agent.id)).toBe(true);
    expect(await tt.backlogClaim(redis, p, theirs.id, agent.id)).toBe(true);
    expect(await town.waitForTask(ours.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'did from tinytown', assignedTo: agent.id });
    expect(await town.waitForTask(theirs.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'did from tt', tags: ['backend'] });
    await agent.waitForIdle({ timeoutMs: 5_000 });

    const status = await town.status();
    expect(status.backlog).toBe(0);
    expect(status.tasks).toEqual({ pending: 0, assigned: 0, running: 0, completed: 2, failed: 0, cancelled: 0 });
    expect(await town.backlog.list()).toEqual([]);
    expect(await tt.backlogClaim(redis, p, ours.id, agent.id)).toBe(false); // gone from the backlog
    // and tinytown's own claim of a task tt claimed first fails cleanly
    const third = await town.backlog.add('raced');
    expect(await tt.backlogClaim(redis, p, third.id, agent.id)).toBe(true);
    await expect(town.backlog.claim(third.id, 'claimer')).rejects.toThrow(/not in the backlog/);
  });
});

describe('tt kill and tt close (the stop flag)', () => {
  it('tt kill stops an idle worker within a heartbeat; the flag is consumed; later work stays queued', async () => {
    const { town, redis, p } = await rustTown({ leaseMs: 1_500 });
    const agent = await town.spawnAgent('victim', { start: false });
    const worker = await town.runWorker('victim', { run: async () => 'ok' });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const t0 = Date.now();
    await tt.kill(redis, p, agent.id);
    await worker.done;
    expect(Date.now() - t0).toBeLessThan(1_500);
    const info = await agent.info();
    expect(info.state).toBe('stopped');
    expect(info.workerId).toBeUndefined();
    expect(await redis.exists(`${p}stop:${agent.id}`)).toBe(0);
    const stopped = await waitForEvent(town, (e) => e.type === 'agent.stopped' && e.agentId === agent.id, 2_000);
    expect(stopped.data.message).toBe('stop requested (stop flag)');
    expect((await redis.lrange(`${p}activity:${agent.id}`, 0, -1))[0]).toMatch(/^🛑 stopped: stop requested/);
    const later = await agent.assign('after the kill');
    await sleep(300);
    expect((await town.task(later.id)).state).toBe('assigned');
  });

  it('tt kill during a task: the task finishes, nothing new starts, the worker stops', async () => {
    const { town, redis, p } = await rustTown({ leaseMs: 1_500 });
    const gate = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('busy', { start: false });
    const worker = await town.runWorker('busy', {
      run: async (t) => {
        if (t.description === 'first') {
          started.resolve();
          await gate.promise;
        }
        return 'ok';
      },
    });
    const first = await agent.assign('first');
    await started.promise;
    const second = await agent.assign('second');
    await tt.kill(redis, p, agent.id);
    await waitForEvent(town, (e) => e.type === 'agent.stopped' && e.agentId === agent.id, 3_000); // the heartbeat saw it
    gate.resolve();
    await worker.done;
    expect((await town.task(first.id)).state).toBe('completed');
    expect((await town.task(second.id)).state).toBe('assigned');
    expect((await agent.info()).state).toBe('stopped');
    expect(await agent.inbox()).toEqual([expect.objectContaining({ type: 'task_assign', taskId: second.id })]);
  });

  it('tt close drains: queued work is done first, then the worker stops', async () => {
    const { town, redis, p } = await rustTown({ leaseMs: 1_500 });
    const gate = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('drain', { start: false });
    const worker = await town.runWorker('drain', {
      run: async (t) => {
        if (t.description === 'first') {
          started.resolve();
          await gate.promise;
        }
        return 'ok';
      },
    });
    const first = await agent.assign('first');
    await started.promise;
    const second = await agent.assign('second');
    await tt.close(redis, p, agent.id);
    await eventually(async () => ((await redis.exists(`${p}stop:${agent.id}`)) === 0 ? true : undefined), 3_000, 'the flag consumed');
    gate.resolve();
    await worker.done;
    expect((await town.task(first.id)).state).toBe('completed');
    expect((await town.task(second.id)).state).toBe('completed');
    expect((await agent.info()).state).toBe('stopped');
  });

  it('stopping an agent no worker of ours serves sets the flag a Rust agent loop heeds; attaching a worker clears it', async () => {
    const { town, redis, p } = await rustTown();
    const rust = await tt.spawn(redis, p, 'looped');
    const agent = await town.agent('looped');
    await agent.stop();
    expect(await redis.get(`${p}stop:${rust.id}`)).toBe('1');
    const ttl = await redis.ttl(`${p}stop:${rust.id}`);
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);
    const worker = await town.runWorker('looped', { run: async () => 'ok' });
    expect(await redis.exists(`${p}stop:${rust.id}`)).toBe(0);
    expect((await agent.info()).state).toBe('idle');
    await worker.stop();
    // a stop while our worker serves it goes through our events, not the flag
    expect(await redis.exists(`${p}stop:${rust.id}`)).toBe(0);
  });
});

describe('an agent registered by tt spawn', () => {
  it('is listed, shown in status, and served by runWorker; the Rust reader sees the result', async () => {
    const { town, redis, p } = await rustTown();
    const rust = await tt.spawn(redis, p, 'rusty', 'claude');
    const job = await tt.assign(redis, p, rust.id, 'made by tt');
    const worker = await town.runWorker('rusty', { run: async (t) => `ran ${t.description}` });
    expect(await town.waitForTask(job.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'completed', result: 'ran made by tt', assignedTo: rust.id, attempts: 1 });
    await (await town.agent('rusty')).waitForIdle({ timeoutMs: 5_000 });
    expect(await town.agents()).toEqual([expect.objectContaining({ id: rust.id, name: 'rusty', nickname: 'Robert', state: 'idle', tasksCompleted: 1, cli: 'claude' })]);
    expect((await town.status()).agents).toEqual([expect.objectContaining({ id: rust.id, state: 'idle', queued: 0 })]);

    expect(await tt.getAgentState(redis, p, rust.id)).toMatchObject({ state: 'idle', tasks_completed: 1, rounds_completed: 1, nickname: 'Robert' });
    const back = await tt.getTask(redis, p, job.id);
    expect(back).toMatchObject({ state: 'completed', result: 'ran made by tt', assigned_to: rust.id });
    expect(back!.started_at).toMatch(RFC3339_UTC);
    expect(back!.completed_at).toMatch(RFC3339_UTC);
    await worker.stop();
    expect((await town.agent('rusty')).id).toBe(rust.id);
  });
});

describe('Redis Cluster', () => {
  it('a Cluster client with keyLayout tinytown is refused with ConfigInvalidError', async () => {
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    try {
      const err = await Town.connect(await tempDir(), { name: uniqueName(), keyLayout: 'tinytown', redis: cluster as unknown as Redis }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigInvalidError);
      expect((err as Error).message).toMatch(/Cluster/);
    } finally {
      cluster.disconnect();
    }
  });

  const haveServer = spawnSync(process.env.TINYTOWN_REDIS_SERVER ?? 'redis-server', ['--version']).status === 0;
  let server: TestRedisServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it.skipIf(!haveServer)('a server with cluster mode on, reached by URL, is refused too', async () => {
    server = await startRedisServer(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf']);
    const { port } = server;
    const err = await Town.connect(await tempDir(), { name: uniqueName(), keyLayout: 'tinytown', redis: `redis://127.0.0.1:${port}` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(/Cluster/);
  });
});

