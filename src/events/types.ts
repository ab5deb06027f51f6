/**
 * Town events: everything that happens in a town is appended to its Redis stream, and every
 * wait in this library listens to that stream.
 *
 * @module
 */
import { parseIso } from '../time.js';

/**
 * Event types: what can happen in a town. Each is a {@link TownEvent}'s `type`.
 *
 * @example
 * ```ts
 * import type { TownEventType } from 'tinytown';
 * const ends: TownEventType[] = ['task.completed', 'task.failed', 'task.cancelled'];
 * for await (const e of town.events({ types: ends })) console.log(e.type, e.taskId);
 * ```
 */
export type TownEventType =
  | 'agent.spawned'
  | 'agent.state'
  | 'agent.stopped'
  | 'agent.removed'
  | 'task.created'
  | 'task.assigned'
  | 'task.started'
  | 'task.completed'
  | 'task.failed'
  | 'task.retried'
  | 'task.reclaimed'
  | 'task.cancelled'
  | 'task.rejected'
  | 'task.progress'
  | 'message.sent'
  | 'message.received'
  | 'message.discarded'
  | 'backlog.added'
  | 'backlog.claimed'
  | 'backlog.removed'
  | 'group.completed'
  | 'budget.exceeded';

/** Every known event type, for validation. */
export const TOWN_EVENT_TYPES: readonly TownEventType[] = [
  'agent.spawned',
  'agent.state',
  'agent.stopped',
  'agent.removed',
  'task.created',
  'task.assigned',
  'task.started',
  'task.completed',
  'task.failed',
  'task.retried',
  'task.reclaimed',
  'task.cancelled',
  'task.rejected',
  'task.progress',
  'message.sent',
  'message.received',
  'message.discarded',
  'backlog.added',
  'backlog.claimed',
  'backlog.removed',
  'group.completed',
  'budget.exceeded',
];

/**
 * One event read from the town's stream.
 *
 * `data` holds the event's details, e.g. `oldState`/`newState` (and `force` on stops) for
 * `agent.state`, `attempt` for `task.started`, `to` (`'agent'` or `'backlog'`) and `reason`
 * (`'reclaim'`: its worker was lost; `'handback'`: a forced stop or a close gave it back) for
 * `task.reclaimed`, `message` (a human line) for all. `group.completed` (every task of a group
 * is over; `taskId` is the one that ended last) has `group`, `total`, `completed`, `failed`
 * and `cancelled`. `budget.exceeded` has `scope` (`'town'`, `'agent'` or `'task'`), `metric`
 * (`'costUsd'` or `'tokens'`), `limit`, `spent` and `action` (`'hold'`: the agent was paused
 * and the task put back; `'fail'`: the task failed). A task cancelled because a dependency
 * failed has `reason: 'dependency'` and `dependency` (its id); a held task that its last
 * dependency released is announced by `task.assigned` (or `backlog.added`) with `released: true`.
 * `task.progress` (an agent's `report_progress` town tool, see `tinytown/mcp`) has `message`
 * (the agent's line) and `percent` when it gave one; `task.completed` and `task.failed` written
 * by the agent itself (its `complete_task` / `fail_task` tools) have `by: 'agent'`.
 *
 * @example
 * ```ts
 * import type { TownEvent } from 'tinytown';
 * const log = (e: TownEvent) => console.log(e.at.toISOString(), e.type, e.agentId ?? '', e.taskId ?? '', e.data.message);
 * town.on('*', log);
 * ```
 */
export interface TownEvent {
  /** Stream entry id; pass it as `since` to resume after this event. */
  id: string;
  /** What happened. */
  type: TownEventType;
  /** When it happened. */
  at: Date;
  /** The agent concerned, if any. */
  agentId?: string;
  /** The task concerned, if any. */
  taskId?: string;
  /** The event's details (camelCase keys), e.g. `newState`, `attempt`, `reason`, `message`. */
  data: Record<string, unknown>;
}

/**
 * Listener map for `town.on()`: one typed listener per event type, plus `'*'` for all.
 *
 * @example
 * ```ts
 * import type { TownEventMap } from 'tinytown';
 * const onFailed: TownEventMap['task.failed'] = (e) => console.warn(e.taskId, e.data.message);
 * town.on('task.failed', onFailed);
 * ```
 */
export type TownEventMap = {
  [K in TownEventType | '*']: (event: TownEvent) => void;
};

const SNAKE_TO_CAMEL = /_([a-z])/g;
const WIRE_TO_TYPE: Record<string, TownEventType> = {
  agent_state_changed: 'agent.state',
  // The Rust CLI's `tt interrupt` / `tt resume` rewrite the agent's state and say so only this way.
  agent_interrupted: 'agent.state',
  agent_resumed: 'agent.state',
  ...Object.fromEntries(
    TOWN_EVENT_TYPES.filter((t) => t !== 'agent.state').map((t) => [t.replace('.', '_'), t]),
  ),
};

/**
 * The stream's `event_type` values that parse to one of `types` (ours, and the Rust CLI's
 * aliases: `agent_interrupted` is an `agent.state` too).
 */
export function wireTypesOf(types: Iterable<TownEventType>): string[] {
  const wanted = new Set(types);
  return Object.keys(WIRE_TO_TYPE).filter((wire) => wanted.has(WIRE_TO_TYPE[wire]!));
}

/** A stream entry's `event_type` field, read without parsing its payload. */
export function wireTypeOf(fields: readonly string[]): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'event_type') return fields[i + 1];
  return undefined;
}

/**
 * Parses one stream entry (`event_type`, `data`); `undefined` for entries this version does not
 * know (written by a newer version or another tool), which readers skip.
 */
export function parseEvent(id: string, fields: readonly string[]): TownEvent | undefined {
  let wire: string | undefined;
  let json: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === 'event_type') wire = fields[i + 1];
    else if (fields[i] === 'data') json = fields[i + 1];
  }
  let raw: Record<string, unknown> = {};
  try {
    const parsed: unknown = json === undefined ? {} : JSON.parse(json);
    if (typeof parsed === 'object' && parsed !== null) raw = parsed as Record<string, unknown>;
  } catch {
    // an unreadable payload still carries its type
  }
  const own = typeof raw.type === 'string' && KNOWN_TYPES.get(raw.type);
  const type = own || (wire === undefined ? undefined : WIRE_TO_TYPE[wire]);
  if (type === undefined) return undefined;
  // Every event is parsed by every town handle: plain loops, no regex per key.
  const data: Record<string, unknown> = {};
  let agentId: string | undefined;
  let taskId: string | undefined;
  let timestamp: unknown;
  for (const k in raw) {
    const v = raw[k];
    if (k === 'agent_id') agentId = typeof v === 'string' ? v : undefined;
    else if (k === 'task_id') taskId = typeof v === 'string' ? v : undefined;
    else if (k === 'timestamp') timestamp = v;
    // The Rust Tinytown writes states as `Paused`, `Idle` (its Debug names): ours are lowercase.
    else if (!own && (k === 'old_state' || k === 'new_state') && typeof v === 'string') data[camelCase(k)] = v.toLowerCase();
    else if (k !== 'type' && k !== 'event_type') data[camelCase(k)] = v;
  }
  const at = typeof timestamp === 'string' ? (parseIso(timestamp) ?? new Date(timestamp)) : new Date(NaN);
  const event: TownEvent = { id, type, at: Number.isNaN(at.getTime()) ? new Date(Number(id.split('-')[0])) : at, data };
  if (agentId !== undefined) event.agentId = agentId;
  if (taskId !== undefined) event.taskId = taskId;
  return event;
}

const KNOWN_TYPES = new Map<string, TownEventType>(TOWN_EVENT_TYPES.map((t) => [t, t]));

const camelNames = new Map<string, string>();

/** `old_state` → `oldState`, remembered: events repeat the same few keys. */
function camelCase(key: string): string {
  let name = camelNames.get(key);
  if (name === undefined) {
    name = key.replace(SNAKE_TO_CAMEL, (_, c: string) => c.toUpperCase());
    if (camelNames.size < 1000) camelNames.set(key, name);
  }
  return name;
}

/** Compares stream ids (`<ms>-<seq>`). */
export function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am - bm || as - bs;
}
