/**
 * Tasks: the unit of work an agent runs.
 *
 * @module
 */
import { z } from 'zod';
import { InvalidArgumentError } from './errors.js';

/** Lifecycle of a task. `completed`, `failed` and `cancelled` are terminal. */
export type TaskState = 'pending' | 'assigned' | 'running' | 'completed' | 'failed' | 'cancelled';

/** The terminal states, in which a task never changes again. */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set(['completed', 'failed', 'cancelled']);

/** Delivery priority: `urgent` before `high` before `normal` before `low`, first come first served within each. */
export type Priority = 'low' | 'normal' | 'high' | 'urgent';

/** Tokens and cost a CLI reported for a task, when it reports them. */
export interface TaskUsage {
  inputTokens?: number;
  outputTokens?: number;
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
  reasoningTokens?: number;
  costUsd?: number;
  model?: string;
}

/** Options of a task, next to its description. */
export interface TaskOptions {
  /** Free-form labels; backlog auto-claim matches them against an agent's role and tags. */
  tags?: readonly string[];
  /** The task this one was split from. */
  parentId?: string;
  /** Default `normal`. */
  priority?: Priority;
  /** Kill the agent's process after this long (CLI agents); abort the handler's signal otherwise. */
  timeoutMs?: number;
  /** How many times the task may be started before a lost worker fails it. Default 3. */
  maxAttempts?: number;
}

/** What `agent.assign` and `town.backlog.add` accept, next to a plain string or a {@link Task}. */
export interface TaskInput extends TaskOptions {
  description: string;
}

/** A stored task, as read back from Redis. */
export interface TaskRecord {
  id: string;
  description: string;
  state: TaskState;
  /** Agent id, while assigned (kept after it ends, to show who did it). */
  assignedTo?: string;
  createdAt: Date;
  updatedAt: Date;
  startedAt?: Date;
  completedAt?: Date;
  /** The outcome text of a completed task. */
  result?: string;
  /** Why the task failed or was cancelled. */
  error?: string;
  parentId?: string;
  tags: string[];
  /** How many times it was started. */
  attempts: number;
  maxAttempts: number;
  priority: Priority;
  timeoutMs?: number;
  /** Tokens and cost reported by the CLI, summed over the task's runs. */
  usage?: TaskUsage;
  /** The CLI's session id for the task's last run, when it reports one. */
  sessionId?: string;
}

/** Filter for `town.tasks()`. */
export interface TaskFilter {
  state?: TaskState | readonly TaskState[];
  /** Agent name, id, short id or nickname. */
  agent?: string;
  tag?: string;
  /** Newest first; default 100. */
  limit?: number;
}

const priorities = ['low', 'normal', 'high', 'urgent'] as const;

/** Schema of {@link TaskInput}; unknown keys are refused so typos surface. */
export const taskInputSchema = z.strictObject({
  description: z.string().min(1, 'description must not be empty'),
  tags: z.array(z.string().min(1).max(64)).max(32).optional(),
  parentId: z.string().min(1).max(128).optional(),
  priority: z.enum(priorities).optional(),
  timeoutMs: z.number().int().positive().optional(),
  maxAttempts: z.number().int().min(1).max(100).optional(),
});

/**
 * A task to assign. A value object: build it, then pass it to `agent.assign` or `backlog.add`.
 *
 * @example
 * ```ts
 * import { Task } from 'tinytown';
 * await designer.assign(new Task('Design auth API schema', { tags: ['api'], priority: 'high' }));
 * ```
 */
export class Task implements TaskInput {
  readonly description: string;
  readonly tags?: readonly string[];
  readonly parentId?: string;
  readonly priority?: Priority;
  readonly timeoutMs?: number;
  readonly maxAttempts?: number;

  constructor(description: string, options: TaskOptions = {}) {
    const input = parseTaskInput({ description, ...options });
    this.description = input.description;
    Object.assign(this, input);
  }
}

/** Validates what users pass as a task, turning a string into a {@link TaskInput}. */
export function parseTaskInput(input: string | TaskInput): TaskInput {
  const candidate = typeof input === 'string' ? { description: input } : { ...input };
  // Drop undefined members so `{ tags: undefined }` behaves like an absent option.
  for (const [k, v] of Object.entries(candidate)) if (v === undefined) delete (candidate as Record<string, unknown>)[k];
  const parsed = taskInputSchema.safeParse(candidate);
  if (!parsed.success) {
    throw new InvalidArgumentError(`Invalid task: ${formatIssues(parsed.error)}`, { cause: parsed.error });
  }
  return parsed.data;
}

/** One line per zod issue, with its path: what users need to fix their call. */
export function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}
