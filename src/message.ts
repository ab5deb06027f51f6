/**
 * Messages between agents and the supervisor (your code), in the Rust Tinytown's JSON format.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Priority } from './task.js';
import { nowIso } from './time.js';

/**
 * Message types. `task` and `query` are actionable (the agent runs them; a query's answer is
 * sent back to its sender); `info` and `ack` wait in the agent's notes and ride along with its
 * next prompt; `task_assign` is what `agent.assign` sends.
 *
 * @example
 * ```ts
 * import type { MessageType } from 'tinytown';
 * const actionable: MessageType[] = ['task', 'query'];
 * const todo = (await agent.inbox()).filter((m) => actionable.includes(m.type));
 * ```
 */
export type MessageType =
  | 'task'
  | 'query'
  | 'info'
  | 'ack'
  | 'task_assign'
  | 'task_done'
  | 'task_failed'
  | 'status_request'
  | 'status_response'
  | 'ping'
  | 'pong'
  | 'shutdown'
  | 'custom';

/**
 * A message as stored in an inbox.
 *
 * @example
 * ```ts
 * import type { Message } from 'tinytown';
 * const inbox: Message[] = await town.inbox();
 * for (const m of inbox) console.log(m.createdAt.toISOString(), m.from, m.type, m.text);
 * ```
 */
export interface Message {
  /** Message id (a UUID). */
  id: string;
  /** Sender id (the supervisor's is `00000000-0000-0000-0000-000000000001`). */
  from: string;
  /** Recipient id (an agent's, or the supervisor's). */
  to: string;
  /** What kind of message it is. */
  type: MessageType;
  /** Delivery priority. */
  priority: Priority;
  /** When it was sent. */
  createdAt: Date;
  /** The message or task this one answers (a query's answer carries the query's task id). */
  correlationId?: string;
  /**
   * The human text: a task's description, a query's question, an info summary, an ack reason
   * (an ack the Rust CLI wrote says `received`, `thanks`, `approved` or `rejected: <reason>`),
   * a task's result or error, a status response's state, a custom message's payload.
   */
  text?: string;
  /** For `task_assign`, `task_done`, `task_failed`; a status response's current task. */
  taskId?: string;
  /** For `custom` messages (written by the Rust Tinytown): their kind. */
  kind?: string;
}

/**
 * Options of `town.send` and `agent.send`.
 *
 * @example
 * ```ts
 * import type { SendOptions } from 'tinytown';
 * const ask: SendOptions = { type: 'query', priority: 'high', from: 'reviewer' };
 * await town.send('backend', 'Which ORM do we use?', ask);
 * ```
 */
export interface SendOptions {
  /** Default `info`. */
  type?: 'task' | 'query' | 'info' | 'ack';
  /** Default `normal`; `high` and `urgent` are delivered first. */
  priority?: Priority;
  /** Sender agent (name, id, short id or nickname); default the supervisor. */
  from?: string;
  /** Links an answer to the message it answers. */
  correlationId?: string;
}

/** Public type → the Rust Tinytown's `type` value. */
const WIRE_TYPE: Record<MessageType, string> = {
  task: 'task',
  query: 'query',
  info: 'informational',
  ack: 'confirmation',
  task_assign: 'task_assign',
  task_done: 'task_done',
  task_failed: 'task_failed',
  status_request: 'status_request',
  status_response: 'status_response',
  ping: 'ping',
  pong: 'pong',
  shutdown: 'shutdown',
  custom: 'custom',
};
const PUBLIC_TYPE = new Map(Object.entries(WIRE_TYPE).map(([k, v]) => [v, k as MessageType]));

/** The field carrying the text, per wire type. */
const TEXT_FIELD: Partial<Record<MessageType, string>> = {
  task: 'description',
  query: 'question',
  info: 'summary',
  task_done: 'result',
  task_failed: 'error',
  status_response: 'state',
  custom: 'payload',
};

/** What {@link encodeMessage} needs. */
export interface MessageDraft {
  from: string;
  to: string;
  type: MessageType;
  priority?: Priority;
  text?: string;
  taskId?: string;
  /** A custom message's kind. */
  kind?: string;
  correlationId?: string;
}

/**
 * Serializes a message exactly as the Rust Tinytown does (serde: `type` is the enum's tag,
 * flattened, its payload fields follow in declaration order): `id, from, to, type, <payload>,
 * priority, created_at, correlation_id`. Returns the JSON and the id.
 */
export function encodeMessage(draft: MessageDraft): { id: string; json: string } {
  const id = randomUUID();
  const wire: Record<string, unknown> = { id, from: draft.from, to: draft.to, type: WIRE_TYPE[draft.type] };
  const text = draft.text ?? '';
  switch (draft.type) {
    case 'task':
    case 'query':
    case 'info':
      wire[TEXT_FIELD[draft.type]!] = text;
      break;
    case 'ack':
      // A unit variant with a `reason` the Rust side ignores (only `rejected` declares one).
      wire.ack_type = { type: 'acknowledged', ...(draft.text ? { reason: draft.text } : {}) };
      break;
    case 'task_assign':
      wire.task_id = draft.taskId ?? '';
      break;
    case 'task_done':
    case 'task_failed':
      wire.task_id = draft.taskId ?? '';
      wire[TEXT_FIELD[draft.type]!] = text;
      break;
    case 'status_response':
      wire.state = text;
      wire.current_task = draft.taskId ?? null; // Option<String>: null, never absent
      break;
    case 'custom':
      wire.kind = draft.kind ?? '';
      wire.payload = text;
      break;
    default: // status_request, ping, pong, shutdown: no payload
      break;
  }
  wire.priority = draft.priority ?? 'normal';
  wire.created_at = nowIso();
  wire.correlation_id = draft.correlationId ?? null;
  return { id, json: JSON.stringify(wire) };
}

const wireMessageSchema = z.looseObject({
  id: z.string(),
  from: z.string(),
  to: z.string(),
  type: z.string(),
  priority: z.enum(['low', 'normal', 'high', 'urgent']).catch('normal'),
  created_at: z.string(),
  correlation_id: z.string().nullable().optional(),
  task_id: z.string().optional(),
  ack_type: z.looseObject({ type: z.string(), reason: z.string().optional() }).optional(),
  kind: z.string().optional(),
  current_task: z.string().nullable().optional(),
});

/** An ack's text: its reason; for one the Rust CLI wrote, what `tt inbox` shows. */
function ackText(ack: { type: string; reason?: string | undefined } | undefined): string | undefined {
  if (ack === undefined) return undefined;
  if (ack.type === 'rejected') return `rejected: ${ack.reason ?? ''}`;
  return ack.reason ?? (ack.type === 'acknowledged' ? undefined : ack.type);
}

/** Parses one inbox entry; `undefined` when it is not a message we can read. */
export function decodeMessage(json: string): Message | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    return undefined;
  }
  const parsed = wireMessageSchema.safeParse(raw);
  if (!parsed.success) return undefined;
  const m = parsed.data;
  const type = PUBLIC_TYPE.get(m.type) ?? 'custom';
  const field = TEXT_FIELD[type];
  const text = field !== undefined ? (m as Record<string, unknown>)[field] : ackText(m.ack_type);
  const taskId = m.task_id ?? (type === 'status_response' ? m.current_task : undefined);
  return {
    id: m.id,
    from: m.from,
    to: m.to,
    type,
    priority: m.priority,
    createdAt: new Date(m.created_at),
    ...(m.correlation_id ? { correlationId: m.correlation_id } : {}),
    ...(typeof text === 'string' ? { text } : {}),
    ...(typeof taskId === 'string' ? { taskId } : {}),
    ...(type === 'custom' && m.kind !== undefined ? { kind: m.kind } : {}),
  };
}
