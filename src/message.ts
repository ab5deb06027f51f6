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

/** A message as stored in an inbox. */
export interface Message {
  id: string;
  /** Sender id (the supervisor's is `00000000-0000-0000-0000-000000000001`). */
  from: string;
  to: string;
  type: MessageType;
  priority: Priority;
  createdAt: Date;
  correlationId?: string;
  /** The human text: a task's description, a query's question, an info summary, an ack reason. */
  text?: string;
  /** For `task_assign`, `task_done`, `task_failed`. */
  taskId?: string;
}

/** Options of `town.send` and `agent.send`. */
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
};

/** What {@link encodeMessage} needs. */
export interface MessageDraft {
  from: string;
  to: string;
  type: MessageType;
  priority?: Priority;
  text?: string;
  taskId?: string;
  correlationId?: string;
}

/**
 * Serializes a message exactly as the Rust Tinytown does: `id, from, to, type, <payload>,
 * priority, created_at, correlation_id`. Returns the JSON and the id.
 */
export function encodeMessage(draft: MessageDraft): { id: string; json: string } {
  const id = randomUUID();
  const wire: Record<string, unknown> = { id, from: draft.from, to: draft.to, type: WIRE_TYPE[draft.type] };
  if (draft.taskId !== undefined) wire.task_id = draft.taskId;
  const field = TEXT_FIELD[draft.type];
  if (field !== undefined) wire[field] = draft.text ?? '';
  if (draft.type === 'ack') wire.ack_type = { type: 'acknowledged', ...(draft.text ? { reason: draft.text } : {}) };
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
});

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
  const text = field !== undefined ? (m as Record<string, unknown>)[field] : m.ack_type?.reason;
  return {
    id: m.id,
    from: m.from,
    to: m.to,
    type,
    priority: m.priority,
    createdAt: new Date(m.created_at),
    ...(m.correlation_id ? { correlationId: m.correlation_id } : {}),
    ...(typeof text === 'string' ? { text } : {}),
    ...(m.task_id !== undefined ? { taskId: m.task_id } : {}),
  };
}
