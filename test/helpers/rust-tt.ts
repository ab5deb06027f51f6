/**
 * What the Rust `tt` CLI (redis-field-engineering/tinytown v0.10) writes to Redis, command by
 * command, replayed with raw ioredis calls. Each function follows the Rust source it names:
 *
 * - `src/channel.rs`: `set_agent_state` / `set_task` (HDEL of unset optional fields, then HSET
 *   of the whole record, pipelined, read-modify-write), `parse_*_from_hash`, `send` (high and
 *   urgent LPUSH, normal and low RPUSH), `send_urgent` (LPUSH to `urgent:<id>`),
 *   `request_stop` (SET "1" EX 3600), `log_agent_activity` (LPUSH, LTRIM 0 9, EXPIRE 3600),
 *   `backlog_push` (RPUSH), `backlog_remove` (LREM 1).
 * - `src/message.rs`: `Message` (serde; `MessageType` is `#[serde(tag = "type",
 *   rename_all = "snake_case")]`, flattened), `ConfirmationType` (tagged the same way).
 * - `src/events.rs`: `TownEvent` (skip_serializing_if none), `EventStream::emit` (XADD
 *   `event_type`, `data`; town stream MAXLEN ~1000, agent stream MAXLEN ~100).
 * - `src/app/services/tasks.rs` `TaskService::complete`, `src/app/services/agents.rs`
 *   `AgentService::kill`, `src/town.rs` `Town::spawn_agent` / `AgentHandle::assign`,
 *   `src/main.rs` `BacklogAction::{Add, Claim}`, `Commands::Send`.
 *
 * Timestamps: chrono's `to_rfc3339()` in hashes (`…+00:00`), serde's `Z` form in JSON, both
 * with nanoseconds as a Linux clock gives them.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

export const SUPERVISOR = '00000000-0000-0000-0000-000000000001';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** chrono's `SecondsFormat::AutoSi` fraction: 0, 3, 6 or 9 digits, as few as are exact. */
function autoSi(nanos: string): string {
  const digits = nanos.padEnd(9, '0').slice(0, 9);
  if (/^0+$/.test(digits)) return '';
  if (digits.endsWith('000000')) return `.${digits.slice(0, 3)}`;
  if (digits.endsWith('000')) return `.${digits.slice(0, 6)}`;
  return `.${digits}`;
}

/** A moment with nanoseconds: `Utc::now()` on Linux. */
export interface RustTime {
  /** `to_rfc3339()`: what hashes hold. */
  hash: string;
  /** serde: what JSON holds. */
  json: string;
}

export function rustNow(date = new Date()): RustTime {
  const base = date.toISOString().slice(0, 19);
  const nanos = `${String(date.getMilliseconds()).padStart(3, '0')}${String(Math.floor(Math.random() * 1e6)).padStart(6, '0')}`;
  return { hash: `${base}${autoSi(nanos)}+00:00`, json: `${base}${autoSi(nanos)}Z` };
}

/** `DateTime::parse_from_rfc3339(s)` then `to_rfc3339()`: how a rewrite re-encodes a timestamp. */
function rewrite(value: string | undefined): string | undefined {
  const m = value === undefined ? null : /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(value);
  if (!m) return undefined;
  const offset = m[3] === 'Z' ? '+00:00' : m[3]!;
  return `${m[1]}${autoSi(m[2] ?? '')}${offset}`;
}

// ── records ───────────────────────────────────────────────────────────────────────────────

/** `crate::agent::Agent`, as `parse_agent_from_hash` reads it (timestamps as hash text). */
export interface RustAgent {
  id: string;
  name: string;
  nickname?: string;
  role_id?: string;
  parent_agent_id?: string;
  spawn_mode: string;
  agent_type: string;
  state: string;
  cli: string;
  current_task?: string;
  created_at: string;
  last_heartbeat: string;
  tasks_completed: number;
  rounds_completed: number;
  last_active_at: string;
}

/** `crate::task::Task`. */
export interface RustTask {
  id: string;
  description: string;
  state: string;
  assigned_to?: string;
  created_at: string;
  updated_at: string;
  started_at?: string;
  completed_at?: string;
  result?: string;
  parent_id?: string;
  tags: string[];
}

const AGENT_STATES = ['cold', 'starting', 'idle', 'working', 'paused', 'draining', 'stopped', 'error'];
const TASK_STATES = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled'];

/** `Channel::set_agent_state`. */
export async function setAgentState(redis: Redis, prefix: string, agent: RustAgent): Promise<void> {
  const key = `${prefix}agent:${agent.id}`;
  const fields: [string, string][] = [
    ['id', agent.id],
    ['name', agent.name],
    ['agent_type', agent.agent_type],
    ['state', agent.state],
    ['cli', agent.cli],
    ['created_at', agent.created_at],
    ['last_heartbeat', agent.last_heartbeat],
    ['tasks_completed', String(agent.tasks_completed)],
    ['rounds_completed', String(agent.rounds_completed)],
    ['last_active_at', agent.last_active_at],
    ['spawn_mode', agent.spawn_mode],
  ];
  await writeHash(redis, key, fields, agent, ['current_task', 'nickname', 'role_id', 'parent_agent_id']);
}

/**
 * How the Rust `set_*` write a record: `HSET` of the fields, `HDEL` of the optional ones it does
 * not have (a whole-record rewrite).
 */
async function writeHash<R extends object>(redis: Redis, key: string, fields: [string, string][], record: R, optional: readonly (keyof R & string)[]): Promise<void> {
  const remove: string[] = [];
  for (const field of optional) {
    const value = record[field];
    if (value !== undefined) fields.push([field, String(value)]);
    else remove.push(field);
  }
  const pipe = redis.pipeline();
  if (remove.length > 0) pipe.hdel(key, ...remove);
  pipe.hset(key, Object.fromEntries(fields));
  await pipe.exec();
}

/** `Channel::get_agent_state` (`parse_agent_from_hash`). */
export async function getAgentState(redis: Redis, prefix: string, id: string): Promise<RustAgent | undefined> {
  const f = await redis.hgetall(`${prefix}agent:${id}`);
  if (Object.keys(f).length === 0) return undefined;
  const now = rustNow().hash;
  const created = rewrite(f.created_at) ?? now;
  const uuid = (v: string | undefined) => (v !== undefined && UUID.test(v) ? v.toLowerCase() : undefined);
  const int = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : 0);
  return {
    id: f.id!,
    name: f.name ?? '',
    ...(f.nickname !== undefined && { nickname: f.nickname }),
    ...(f.role_id !== undefined && { role_id: f.role_id }),
    ...(uuid(f.parent_agent_id) && { parent_agent_id: uuid(f.parent_agent_id) }),
    spawn_mode: ['fresh', 'forkedcontext', 'resumed'].includes(f.spawn_mode ?? '') ? f.spawn_mode! : 'fresh',
    agent_type: f.agent_type === 'supervisor' ? 'supervisor' : 'worker',
    state: AGENT_STATES.includes(f.state ?? '') ? f.state! : 'starting',
    cli: f.cli ?? '',
    ...(uuid(f.current_task) && { current_task: uuid(f.current_task) }),
    created_at: created,
    last_heartbeat: rewrite(f.last_heartbeat) ?? now,
    tasks_completed: int(f.tasks_completed),
    rounds_completed: int(f.rounds_completed),
    last_active_at: rewrite(f.last_active_at) ?? created,
  };
}

/** `Channel::set_task`. */
export async function setTask(redis: Redis, prefix: string, task: RustTask): Promise<void> {
  const key = `${prefix}task:${task.id}`;
  const fields: [string, string][] = [
    ['id', task.id],
    ['description', task.description],
    ['state', task.state],
    ['created_at', task.created_at],
    ['updated_at', task.updated_at],
    ['tags', JSON.stringify(task.tags)],
  ];
  await writeHash(redis, key, fields, task, ['assigned_to', 'started_at', 'completed_at', 'result', 'parent_id']);
}

/** `Channel::get_task` (`parse_task_from_hash`). */
export async function getTask(redis: Redis, prefix: string, id: string): Promise<RustTask | undefined> {
  const f = await redis.hgetall(`${prefix}task:${id}`);
  if (Object.keys(f).length === 0) return undefined;
  const now = rustNow().hash;
  const uuid = (v: string | undefined) => (v !== undefined && UUID.test(v) ? v.toLowerCase() : undefined);
  let tags: string[] = [];
  try {
    const parsed: unknown = JSON.parse(f.tags ?? '[]');
    if (Array.isArray(parsed) && parsed.every((t) => typeof t === 'string')) tags = parsed as string[];
  } catch {
    // unwrap_or_default
  }
  return {
    id: f.id!,
    description: f.description ?? '',
    state: TASK_STATES.includes(f.state ?? '') ? f.state! : 'pending',
    ...(uuid(f.assigned_to) && { assigned_to: uuid(f.assigned_to) }),
    created_at: rewrite(f.created_at) ?? now,
    updated_at: rewrite(f.updated_at) ?? now,
    ...(rewrite(f.started_at) && { started_at: rewrite(f.started_at) }),
    ...(rewrite(f.completed_at) && { completed_at: rewrite(f.completed_at) }),
    ...(f.result !== undefined && { result: f.result }),
    ...(uuid(f.parent_id) && { parent_id: uuid(f.parent_id) }),
    tags,
  };
}

/** `Task::new(description)`. */
export function newTask(description: string, tags: string[] = []): RustTask {
  const now = rustNow().hash;
  return { id: randomUUID(), description, state: 'pending', created_at: now, updated_at: now, tags };
}

// ── messages ──────────────────────────────────────────────────────────────────────────────

/** `MessageType`, as serde tags it: `type` first, then the variant's fields in order. */
export type RustMessageType =
  | { type: 'task'; description: string }
  | { type: 'query'; question: string }
  | { type: 'informational'; summary: string }
  | { type: 'confirmation'; ack_type: { type: 'received' | 'acknowledged' | 'thanks' | 'approved' } | { type: 'rejected'; reason: string } }
  | { type: 'task_assign'; task_id: string }
  | { type: 'task_done'; task_id: string; result: string }
  | { type: 'task_failed'; task_id: string; error: string }
  | { type: 'status_request' }
  | { type: 'status_response'; state: string; current_task: string | null }
  | { type: 'ping' }
  | { type: 'pong' }
  | { type: 'shutdown' }
  | { type: 'custom'; kind: string; payload: string };

export interface RustMessage {
  id: string;
  from: string;
  to: string;
  msg_type: RustMessageType;
  priority: 'low' | 'normal' | 'high' | 'urgent';
  created_at: string;
  correlation_id: string | null;
}

/** `Message::new(from, to, msg_type)`. */
export function newMessage(from: string, to: string, msgType: RustMessageType): RustMessage {
  return { id: randomUUID(), from, to, msg_type: msgType, priority: 'normal', created_at: rustNow().json, correlation_id: null };
}

/** `serde_json::to_string(&message)`: the flattened, internally tagged layout. */
export function serializeMessage(m: RustMessage): string {
  return JSON.stringify({ id: m.id, from: m.from, to: m.to, ...m.msg_type, priority: m.priority, created_at: m.created_at, correlation_id: m.correlation_id });
}

/** `Channel::send`. */
export async function send(redis: Redis, prefix: string, m: RustMessage): Promise<void> {
  const inbox = `${prefix}inbox:${m.to}`;
  if (m.priority === 'urgent' || m.priority === 'high') await redis.lpush(inbox, serializeMessage(m));
  else await redis.rpush(inbox, serializeMessage(m));
}

/** `Channel::send_urgent` (`tt send --urgent`). */
export async function sendUrgent(redis: Redis, prefix: string, m: RustMessage): Promise<void> {
  await redis.lpush(`${prefix}urgent:${m.to}`, serializeMessage(m));
}

// ── events ────────────────────────────────────────────────────────────────────────────────

/** `TownEvent` (events.rs), serialized by serde: unset options are skipped. */
export interface RustEvent {
  event_type: string;
  agent_id?: string;
  task_id?: string;
  old_state?: string;
  new_state?: string;
  message: string;
  timestamp?: string;
}

/** The Rust `EventType` variants (`rename_all = "snake_case"`). */
export const RUST_EVENT_TYPES = new Set([
  'agent_state_changed', 'agent_spawned', 'agent_stopped', 'task_assigned', 'task_completed', 'task_failed',
  'mission_state_changed', 'mission_work_promoted', 'mission_work_assigned', 'mission_work_completed',
  'mission_work_blocked', 'mission_help_needed', 'mission_watch_triggered', 'mission_event', 'task_delegated',
  'agent_interrupted', 'agent_resumed', 'agent_completed', 'agent_failed', 'reviewer_handoff', 'reviewer_approval',
  'conductor_escalation',
]);

/** `EventStream::emit`. */
export async function emitEvent(redis: Redis, prefix: string, event: RustEvent): Promise<void> {
  const data = JSON.stringify({
    event_type: event.event_type,
    ...(event.agent_id !== undefined && { agent_id: event.agent_id }),
    ...(event.task_id !== undefined && { task_id: event.task_id }),
    ...(event.old_state !== undefined && { old_state: event.old_state }),
    ...(event.new_state !== undefined && { new_state: event.new_state }),
    message: event.message,
    timestamp: event.timestamp ?? rustNow().json,
  });
  await redis.xadd(`${prefix}events`, 'MAXLEN', '~', 1000, '*', 'event_type', event.event_type, 'data', data);
  if (event.agent_id !== undefined) {
    await redis.xadd(`${prefix}events:agent:${event.agent_id}`, 'MAXLEN', '~', 100, '*', 'event_type', event.event_type, 'data', data);
  }
}

// ── commands ──────────────────────────────────────────────────────────────────────────────

/** `Channel::log_agent_activity`. */
export async function logActivity(redis: Redis, prefix: string, id: string, line: string): Promise<void> {
  const key = `${prefix}activity:${id}`;
  await redis.lpush(key, line);
  await redis.ltrim(key, 0, 9);
  await redis.expire(key, 3600);
}

/** `tt spawn <name>` (`Town::spawn_agent`: `Agent::new`, state `starting`, a 1920s nickname). */
export async function spawn(redis: Redis, prefix: string, name: string, cli = 'claude'): Promise<RustAgent> {
  const now = rustNow().hash;
  const agent: RustAgent = {
    id: randomUUID(),
    name,
    nickname: 'Robert',
    spawn_mode: 'fresh',
    agent_type: 'worker',
    state: 'starting',
    cli,
    created_at: now,
    last_heartbeat: now,
    tasks_completed: 0,
    rounds_completed: 0,
    last_active_at: now,
  };
  await setAgentState(redis, prefix, agent);
  return agent;
}

/** `tt assign <agent> <task>` (`TaskService::assign` → `AgentHandle::assign`). */
export async function assign(redis: Redis, prefix: string, agentId: string, description: string): Promise<RustTask> {
  const task = newTask(description);
  task.assigned_to = agentId;
  task.state = 'assigned';
  task.updated_at = rustNow().hash;
  await setTask(redis, prefix, task);
  await send(redis, prefix, newMessage(SUPERVISOR, agentId, { type: 'task_assign', task_id: task.id }));
  return task;
}

/** `tt backlog add <description> --tags a,b`. */
export async function backlogAdd(redis: Redis, prefix: string, description: string, tags: string[] = []): Promise<RustTask> {
  const task = newTask(description, tags);
  await setTask(redis, prefix, task);
  await redis.rpush(`${prefix}backlog`, task.id);
  return task;
}

/** `tt backlog claim <task> <agent>`; false when the task is not in the backlog. */
export async function backlogClaim(redis: Redis, prefix: string, taskId: string, agentId: string): Promise<boolean> {
  if ((await redis.lrem(`${prefix}backlog`, 1, taskId)) === 0) return false;
  const task = await getTask(redis, prefix, taskId);
  if (task === undefined) return false;
  task.assigned_to = agentId; // Task::assign
  task.state = 'assigned';
  task.updated_at = rustNow().hash;
  await setTask(redis, prefix, task);
  await send(redis, prefix, newMessage(SUPERVISOR, agentId, { type: 'task_assign', task_id: taskId }));
  return true;
}

/** `tt task complete <task> --result <text>` (`TaskService::complete`). */
export async function taskComplete(redis: Redis, prefix: string, taskId: string, result?: string): Promise<void> {
  const task = await getTask(redis, prefix, taskId);
  if (task === undefined) throw new Error(`no task ${taskId}`);
  const wasTerminal = ['completed', 'failed', 'cancelled'].includes(task.state);
  const now = rustNow().hash;
  task.state = 'completed'; // Task::complete
  task.result = result ?? 'Completed';
  task.completed_at = now;
  task.updated_at = now;
  await setTask(redis, prefix, task);
  if (task.assigned_to === undefined) return;
  const agent = await getAgentState(redis, prefix, task.assigned_to);
  if (agent === undefined) return;
  if (agent.current_task === taskId) delete agent.current_task;
  agent.last_heartbeat = rustNow().hash;
  await setAgentState(redis, prefix, agent);
  if (!wasTerminal) await redis.hincrby(`${prefix}agent:${agent.id}`, 'tasks_completed', 1);
}

/** `tt kill <agent>` (`AgentService::kill`). */
export async function kill(redis: Redis, prefix: string, agentId: string): Promise<void> {
  await redis.set(`${prefix}stop:${agentId}`, '1', 'EX', 3600);
  const agent = await getAgentState(redis, prefix, agentId);
  if (agent !== undefined) {
    agent.state = 'stopped';
    await setAgentState(redis, prefix, agent);
  }
  await logActivity(redis, prefix, agentId, '🛑 Stop requested');
}

/** `tt close <agent>` (`AgentService::close`): draining, the stop flag, an `agent_stopped` event. */
export async function close(redis: Redis, prefix: string, agentId: string): Promise<void> {
  const agent = await getAgentState(redis, prefix, agentId);
  if (agent === undefined) throw new Error(`no agent ${agentId}`);
  const old = agent.state.charAt(0).toUpperCase() + agent.state.slice(1);
  agent.state = 'draining';
  await setAgentState(redis, prefix, agent);
  await redis.set(`${prefix}stop:${agentId}`, '1', 'EX', 3600);
  await logActivity(redis, prefix, agentId, '🔻 Closing (draining then stop)');
  await emitEvent(redis, prefix, { event_type: 'agent_stopped', agent_id: agentId, old_state: old, new_state: 'Draining', message: 'Agent closing (draining then stop)' });
}
