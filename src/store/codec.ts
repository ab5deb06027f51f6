/**
 * Records ⇄ Redis hashes, in the Rust Tinytown's field names and encodings. Everything read
 * back is validated: a damaged record is a {@link CorruptRecordError} naming its key, never a
 * crash and never a silently invented default.
 *
 * @module
 */
import { z } from 'zod';
import type { AgentInfo } from '../agent.js';
import { CorruptRecordError } from '../errors.js';
import { formatIssues, type TaskRecord, type TaskUsage } from '../task.js';
import { parseIso } from '../time.js';

const timestamp = z.string().transform((value, ctx) => {
  const date = parseIso(value);
  if (date === undefined) {
    ctx.addIssue({ code: 'custom', message: `not an RFC 3339 timestamp: ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return date;
});

const count = z.string().regex(/^\d+$/, 'not a non-negative integer').transform(Number);

const jsonOf = <T extends z.ZodType>(schema: T) =>
  z.string().transform((value, ctx): z.output<T> => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not JSON' });
      return z.NEVER;
    }
    const result = schema.safeParse(parsed);
    if (!result.success) {
      ctx.addIssue({ code: 'custom', message: formatIssues(result.error) });
      return z.NEVER;
    }
    return result.data;
  });

const tags = jsonOf(z.array(z.string()));

const usageSchema: z.ZodType<TaskUsage> = z.object({
  inputTokens: z.number().optional(),
  outputTokens: z.number().optional(),
  cacheReadTokens: z.number().optional(),
  cacheWriteTokens: z.number().optional(),
  reasoningTokens: z.number().optional(),
  costUsd: z.number().optional(),
  model: z.string().optional(),
});

const amount = z.string().regex(/^-?\d+(\.\d+)?(e[+-]?\d+)?$/i, 'not a number').transform(Number);

/** Summed usage fields (`input_tokens`, …, `cost_usd`), under an optional prefix. */
const USAGE_TOTALS = {
  inputTokens: 'input_tokens',
  outputTokens: 'output_tokens',
  cacheReadTokens: 'cache_read_tokens',
  cacheWriteTokens: 'cache_write_tokens',
  reasoningTokens: 'reasoning_tokens',
  costUsd: 'cost_usd',
} as const;

/** Reads summed usage from hash fields (`<prefix>input_tokens`, …); `undefined` when none. */
export function decodeUsageTotals(fields: Record<string, unknown>, prefix = ''): TaskUsage | undefined {
  const usage: TaskUsage = {};
  for (const [name, field] of Object.entries(USAGE_TOTALS)) {
    const value = fields[`${prefix}${field}`];
    const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
    if (Number.isFinite(n)) usage[name as keyof typeof USAGE_TOTALS] = n;
  }
  return Object.keys(usage).length > 0 ? usage : undefined;
}

/** @internal exported for the test that holds the fast readers to the schemas. */
export const taskHash = z.object({
  id: z.string().min(1),
  description: z.string(),
  state: z.enum(['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled']),
  created_at: timestamp,
  updated_at: timestamp,
  tags: tags.optional(),
  assigned_to: z.string().optional(),
  started_at: timestamp.optional(),
  completed_at: timestamp.optional(),
  result: z.string().optional(),
  error: z.string().optional(),
  parent_id: z.string().optional(),
  attempts: count.optional(),
  max_attempts: count.optional(),
  priority: z.enum(['low', 'normal', 'high', 'urgent']).optional(),
  timeout_ms: count.optional(),
  usage: jsonOf(usageSchema).optional(),
  session_id: z.string().optional(),
  group: z.string().optional(),
  depends_on: jsonOf(z.array(z.string())).optional(),
  on_dep_failure: z.enum(['cancel', 'run']).optional(),
  max_cost_usd: amount.optional(),
  max_tokens: count.optional(),
});

/** @internal exported for the test that holds the fast readers to the schemas. */
export const agentHash = z.object({
  id: z.string().min(1),
  name: z.string().min(1),
  agent_type: z.enum(['worker', 'supervisor']),
  state: z.enum(['cold', 'starting', 'idle', 'working', 'paused', 'draining', 'stopped', 'error']),
  cli: z.string(),
  created_at: timestamp,
  last_heartbeat: timestamp,
  last_active_at: timestamp,
  tasks_completed: count,
  rounds_completed: count,
  current_task: z.string().optional(),
  nickname: z.string().optional(),
  role_id: z.string().optional(),
  parent_agent_id: z.string().optional(),
  tags: tags.optional(),
  tasks_failed: count.optional(),
  worker_id: z.string().optional(),
  error: z.string().optional(),
  claim_backlog: z.enum(['0', '1']).optional(),
  session_id: z.string().optional(),
  usage_input_tokens: amount.optional(),
  usage_output_tokens: amount.optional(),
  usage_cache_read_tokens: amount.optional(),
  usage_cache_write_tokens: amount.optional(),
  usage_reasoning_tokens: amount.optional(),
  usage_cost_usd: amount.optional(),
  max_cost_usd: amount.optional(),
  max_tokens: count.optional(),
  worktree: z.string().optional(),
});

/** Default attempts when a record predates the field (the Rust CLI does not write it). */
export const DEFAULT_MAX_ATTEMPTS = 3;

function parseHash<T extends z.ZodType>(schema: T, key: string, fields: Record<string, string>): z.output<T> {
  const result = schema.safeParse(fields);
  if (!result.success) {
    const err = new CorruptRecordError(
      `Corrupt record at ${key}: ${formatIssues(result.error)}. Fix or delete the key; tinytown will not guess its contents.`,
      { cause: result.error },
    );
    err.key = key;
    throw err;
  }
  return result.data;
}

const TASK_STATES: ReadonlySet<string> = new Set(taskHash.shape.state.options);
const PRIORITIES: ReadonlySet<string> = new Set(['low', 'normal', 'high', 'urgent']);
const COUNT = /^\d+$/;
const AMOUNT = /^-?\d+(\.\d+)?(e[+-]?\d+)?$/i;

/**
 * {@link taskHash} without zod, for the paths every task takes (each start, each wait's
 * re-read), where zod's generic machinery was the costliest step of decoding: the same checks
 * and the same output, or `undefined` at the first field that fails them (then the schema
 * runs, and names every issue). The rarely set JSON fields still go through their schemas.
 */
export function readTaskHash(f: Record<string, unknown>): z.output<typeof taskHash> | undefined {
  const { id, description, state, tags, usage, depends_on: dependsOn } = f;
  if (typeof id !== 'string' || id === '' || typeof description !== 'string' || typeof state !== 'string' || !TASK_STATES.has(state)) return undefined;
  const createdAt = time(f.created_at);
  const updatedAt = time(f.updated_at);
  if (createdAt === undefined || updatedAt === undefined) return undefined;
  const h: z.output<typeof taskHash> = { id, description, state: state as TaskRecord['state'], created_at: createdAt, updated_at: updatedAt };
  if (tags !== undefined) {
    const list = stringArray(tags);
    if (list === undefined) return undefined;
    h.tags = list;
  }
  for (const name of ['assigned_to', 'result', 'error', 'parent_id', 'session_id', 'group'] as const) {
    const value = f[name];
    if (value === undefined) continue;
    if (typeof value !== 'string') return undefined;
    h[name] = value;
  }
  for (const name of ['started_at', 'completed_at'] as const) {
    if (f[name] === undefined) continue;
    const at = time(f[name]);
    if (at === undefined) return undefined;
    h[name] = at;
  }
  for (const name of ['attempts', 'max_attempts', 'timeout_ms', 'max_tokens'] as const) {
    const value = f[name];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !COUNT.test(value)) return undefined;
    h[name] = Number(value);
  }
  const { priority, on_dep_failure: onDepFailure, max_cost_usd: maxCost } = f;
  if (priority !== undefined) {
    if (typeof priority !== 'string' || !PRIORITIES.has(priority)) return undefined;
    h.priority = priority as TaskRecord['priority'];
  }
  if (onDepFailure !== undefined) {
    if (onDepFailure !== 'cancel' && onDepFailure !== 'run') return undefined;
    h.on_dep_failure = onDepFailure;
  }
  if (maxCost !== undefined) {
    if (typeof maxCost !== 'string' || !AMOUNT.test(maxCost)) return undefined;
    h.max_cost_usd = Number(maxCost);
  }
  if (usage !== undefined) {
    const parsed = taskHash.shape.usage.safeParse(usage);
    if (!parsed.success) return undefined;
    h.usage = parsed.data;
  }
  if (dependsOn !== undefined) {
    const list = stringArray(dependsOn);
    if (list === undefined) return undefined;
    h.depends_on = list;
  }
  return h;
}

function time(value: unknown): Date | undefined {
  return typeof value === 'string' ? parseIso(value) : undefined;
}

/** A JSON array of strings, or `undefined`. */
function stringArray(value: unknown): string[] | undefined {
  if (typeof value !== 'string') return undefined;
  if (value === '[]') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined;
  }
  return Array.isArray(parsed) && parsed.every((item) => typeof item === 'string') ? parsed : undefined;
}

/** Converts a task hash (`HGETALL`) into a {@link TaskRecord}. */
export function decodeTask(key: string, fields: Record<string, string>): TaskRecord {
  const h = readTaskHash(fields) ?? parseHash(taskHash, key, fields);
  // The Rust Tinytown keeps a failed task's error in `result` (and so does the tinytown layout,
  // next to `error`): for a failed task that text is its error, not a result.
  const failure = h.state === 'failed' && h.result !== undefined && (h.error === undefined || h.error === h.result);
  const error = failure ? h.result : h.error;
  const result = failure ? undefined : h.result;
  return {
    id: h.id,
    description: h.description,
    state: h.state,
    ...(h.assigned_to !== undefined && { assignedTo: h.assigned_to }),
    createdAt: h.created_at,
    updatedAt: h.updated_at,
    ...(h.started_at !== undefined && { startedAt: h.started_at }),
    ...(h.completed_at !== undefined && { completedAt: h.completed_at }),
    ...(result !== undefined && { result }),
    ...(error !== undefined && { error }),
    ...(h.parent_id !== undefined && { parentId: h.parent_id }),
    tags: h.tags ?? [],
    attempts: h.attempts ?? 0,
    maxAttempts: h.max_attempts ?? DEFAULT_MAX_ATTEMPTS,
    priority: h.priority ?? 'normal',
    ...(h.timeout_ms !== undefined && { timeoutMs: h.timeout_ms }),
    ...(h.usage !== undefined && { usage: h.usage }),
    ...(h.session_id !== undefined && { sessionId: h.session_id }),
    ...(h.group !== undefined && { group: h.group }),
    ...(h.depends_on !== undefined && { dependsOn: h.depends_on }),
    ...(h.on_dep_failure !== undefined && { onDependencyFailure: h.on_dep_failure }),
    ...(h.max_cost_usd !== undefined && { maxCostUsd: h.max_cost_usd }),
    ...(h.max_tokens !== undefined && { maxTokens: h.max_tokens }),
  };
}

/** The fields of an agent hash that an {@link AgentInfo} shows: what `status` reads (HMGET). */
export const AGENT_FIELDS: readonly string[] = Object.keys(agentHash.shape);

const AGENT_STATES: ReadonlySet<string> = new Set(agentHash.shape.state.options);
const AGENT_TEXT = ['current_task', 'nickname', 'role_id', 'parent_agent_id', 'worker_id', 'error', 'session_id', 'worktree'] as const;
const AGENT_AMOUNTS = [
  'usage_input_tokens',
  'usage_output_tokens',
  'usage_cache_read_tokens',
  'usage_cache_write_tokens',
  'usage_reasoning_tokens',
  'usage_cost_usd',
  'max_cost_usd',
] as const;

/**
 * {@link agentHash} without zod, for `status()` (a thousand agents a call) and every other
 * agent read: the same checks and output, or `undefined` at the first field that fails them
 * (then the schema runs, and names every issue).
 */
export function readAgentHash(f: Record<string, unknown>): z.output<typeof agentHash> | undefined {
  const { id, name, agent_type: type, state, cli, tags, claim_backlog: claim } = f;
  if (typeof id !== 'string' || id === '' || typeof name !== 'string' || name === '') return undefined;
  if ((type !== 'worker' && type !== 'supervisor') || typeof state !== 'string' || !AGENT_STATES.has(state) || typeof cli !== 'string') return undefined;
  const createdAt = time(f.created_at);
  const lastHeartbeat = time(f.last_heartbeat);
  const lastActiveAt = time(f.last_active_at);
  const { tasks_completed: completed, rounds_completed: rounds } = f;
  if (createdAt === undefined || lastHeartbeat === undefined || lastActiveAt === undefined) return undefined;
  if (typeof completed !== 'string' || !COUNT.test(completed) || typeof rounds !== 'string' || !COUNT.test(rounds)) return undefined;
  const h: z.output<typeof agentHash> = {
    id,
    name,
    agent_type: type,
    state: state as AgentInfo['state'],
    cli,
    created_at: createdAt,
    last_heartbeat: lastHeartbeat,
    last_active_at: lastActiveAt,
    tasks_completed: Number(completed),
    rounds_completed: Number(rounds),
  };
  for (const field of AGENT_TEXT) {
    const value = f[field];
    if (value === undefined) continue;
    if (typeof value !== 'string') return undefined;
    h[field] = value;
  }
  for (const field of AGENT_AMOUNTS) {
    const value = f[field];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !AMOUNT.test(value)) return undefined;
    h[field] = Number(value);
  }
  for (const field of ['tasks_failed', 'max_tokens'] as const) {
    const value = f[field];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !COUNT.test(value)) return undefined;
    h[field] = Number(value);
  }
  if (tags !== undefined) {
    const list = stringArray(tags);
    if (list === undefined) return undefined;
    h.tags = list;
  }
  if (claim !== undefined) {
    if (claim !== '0' && claim !== '1') return undefined;
    h.claim_backlog = claim;
  }
  return h;
}

/** Converts an agent hash (`HGETALL`) into an {@link AgentInfo}. */
export function decodeAgent(key: string, fields: Record<string, string>): AgentInfo {
  const h = readAgentHash(fields) ?? parseHash(agentHash, key, fields);
  return {
    id: h.id,
    name: h.name,
    shortId: h.id.slice(0, 4),
    type: h.agent_type,
    state: h.state,
    cli: h.cli,
    ...(h.nickname !== undefined && { nickname: h.nickname }),
    ...(h.role_id !== undefined && { role: h.role_id }),
    tags: h.tags ?? [],
    ...(h.current_task !== undefined && { currentTask: h.current_task }),
    createdAt: h.created_at,
    lastHeartbeat: h.last_heartbeat,
    lastActiveAt: h.last_active_at,
    tasksCompleted: h.tasks_completed,
    tasksFailed: h.tasks_failed ?? 0,
    roundsCompleted: h.rounds_completed,
    claimBacklog: h.claim_backlog === '1',
    ...(h.worker_id !== undefined && { workerId: h.worker_id }),
    ...(h.error !== undefined && { error: h.error }),
    ...(h.parent_agent_id !== undefined && { parentAgentId: h.parent_agent_id }),
    ...(h.session_id !== undefined && { sessionId: h.session_id }),
    ...optional('usage', decodeUsageTotals(h, 'usage_')),
    ...(h.max_cost_usd !== undefined && { maxCostUsd: h.max_cost_usd }),
    ...(h.max_tokens !== undefined && { maxTokens: h.max_tokens }),
    ...(h.worktree !== undefined && { worktree: h.worktree }),
  };
}

function optional<K extends string, V>(name: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [name]: value }) as { [P in K]?: V };
}

/** ioredis returns HGETALL as a flat array under RESP3 legacy mapping or an object: accept both. */
export function toFields(reply: unknown): Record<string, string> {
  if (Array.isArray(reply)) {
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
    return out;
  }
  return (reply ?? {}) as Record<string, string>;
}
