/**
 * Tasks: the unit of work an agent runs.
 *
 * @module
 */
import { z } from 'zod';
import { InvalidArgumentError } from './errors.js';

/**
 * Lifecycle of a task: `pending` (in the backlog) or `assigned` (in an agent's inbox), then
 * `running`, then `completed`, `failed` or `cancelled`, which are terminal.
 *
 * @example
 * ```ts
 * import type { TaskState } from 'tinytown';
 * const open: TaskState[] = ['pending', 'assigned', 'running'];
 * const inFlight = await town.tasks({ state: open });
 * ```
 */
export type TaskState = 'pending' | 'assigned' | 'running' | 'completed' | 'failed' | 'cancelled';

/**
 * The terminal states, in which a task never changes again.
 *
 * @example
 * ```ts
 * import { TERMINAL_STATES } from 'tinytown';
 * const task = await town.task(id);
 * if (TERMINAL_STATES.has(task.state)) console.log('over:', task.state);
 * ```
 */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set(['completed', 'failed', 'cancelled']);

/**
 * Delivery priority: `urgent` before `high` before `normal` before `low`, first come first served within each.
 *
 * @example
 * ```ts
 * import type { Priority } from 'tinytown';
 * const priority: Priority = 'urgent';
 * await agent.assign({ description: 'Fix the outage', priority });
 * ```
 */
export type Priority = 'low' | 'normal' | 'high' | 'urgent';

/**
 * Tokens and cost a CLI reported for a task, when it reports them (an in-process handler reports
 * them with `ctx.reportUsage`). Summed per task, per agent and per town.
 *
 * @example
 * ```ts
 * import type { TaskUsage } from 'tinytown';
 * const usage: TaskUsage | undefined = (await town.task(id)).usage;
 * console.log(`${usage?.inputTokens ?? 0} in, ${usage?.outputTokens ?? 0} out, $${usage?.costUsd ?? '?'}`);
 * ```
 */
export interface TaskUsage {
  /** Prompt tokens not read from a cache. */
  inputTokens?: number;
  /** Generated tokens. */
  outputTokens?: number;
  /** Prompt tokens read from the provider's cache. */
  cacheReadTokens?: number;
  /** Prompt tokens written to the provider's cache. */
  cacheWriteTokens?: number;
  /** Reasoning ("thinking") tokens, where the CLI counts them apart. */
  reasoningTokens?: number;
  /** Cost in US dollars, when the CLI reports one. */
  costUsd?: number;
  /** The model that did most of the work, when the CLI names it. */
  model?: string;
}

/**
 * Options of a task, next to its description.
 *
 * @example
 * ```ts
 * import { Task, type TaskOptions } from 'tinytown';
 * const options: TaskOptions = { tags: ['api'], priority: 'high', timeoutMs: 30 * 60_000, maxAttempts: 2 };
 * await backend.assign(new Task('Implement auth endpoints', options));
 * ```
 */
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
  /**
   * The task group it belongs to from the start (see `town.group()`); a group name, created by
   * its first task.
   */
  group?: string;
  /**
   * Ids of tasks that must complete before this one is queued. Until then it is held: its
   * state stays `pending`, it sits in no inbox and not in the backlog, and the completion of
   * its last dependency queues it (to its agent, or the backlog) in the same atomic step. Each
   * id must name an existing task (an unknown id, or a task that expired after the retention
   * period, is an `InvalidArgumentError`), so dependencies always point back in time and no
   * cycle can form. A dependency already completed counts as met; one that failed or was
   * cancelled is handled as `onDependencyFailure` says.
   */
  dependsOn?: readonly string[];
  /**
   * What a failed or cancelled dependency does to this task: `'cancel'` (default) cancels it
   * with the reason (`dependency <id> failed: …`), and its own dependants in turn; `'run'`
   * counts the dependency as met, so the task runs once all its dependencies are over.
   */
  onDependencyFailure?: 'cancel' | 'run';
  /**
   * Cost budget of the task in US dollars, over all its runs. Passed to CLIs that take one
   * (Claude Code's `--max-budget-usd`, as what is left); once its runs have spent it, the task
   * is not run again (no retry, no restart after a lost worker): it fails with the reason.
   */
  maxCostUsd?: number;
  /**
   * Token budget of the task (input + output tokens, as the CLI reports them), over all its
   * runs; spent, the task is not run again and fails with the reason.
   */
  maxTokens?: number;
}

/**
 * What `agent.assign` and `town.backlog.add` accept, next to a plain string or a {@link Task}.
 *
 * @example
 * ```ts
 * import type { TaskInput } from 'tinytown';
 * const input: TaskInput = { description: 'Triage flaky tests', tags: ['qa'], priority: 'low' };
 * await town.backlog.add(input);
 * ```
 */
export interface TaskInput extends TaskOptions {
  /** What to do: the prompt an agent CLI receives (with its instructions and notes). */
  description: string;
}

/**
 * A stored task, as read back from Redis.
 *
 * @example
 * ```ts
 * import type { TaskRecord } from 'tinytown';
 * const record: TaskRecord = await town.waitForTask(task.id);
 * if (record.state === 'completed') console.log(record.result);
 * else console.error(`${record.state} after ${record.attempts} attempt(s): ${record.error}`);
 * ```
 */
export interface TaskRecord {
  /** Task id (a UUID). */
  id: string;
  /** What to do. */
  description: string;
  /** Where the task is in its lifecycle. */
  state: TaskState;
  /** Agent id, while assigned (kept after it ends, to show who did it). */
  assignedTo?: string;
  /** When it was created. */
  createdAt: Date;
  /** When it last changed. */
  updatedAt: Date;
  /** When its last run started. */
  startedAt?: Date;
  /** When it reached a terminal state. */
  completedAt?: Date;
  /** The outcome text of a completed task. */
  result?: string;
  /** Why the task failed or was cancelled. */
  error?: string;
  /** The task this one was split from. */
  parentId?: string;
  /** Free-form labels. */
  tags: string[];
  /** How many times it was started. */
  attempts: number;
  /** Runs allowed before it fails for good. */
  maxAttempts: number;
  /** Delivery priority. */
  priority: Priority;
  /** Time limit of one run, when the task sets one. */
  timeoutMs?: number;
  /** Tokens and cost reported by the CLI, summed over the task's runs. */
  usage?: TaskUsage;
  /** The CLI's session id for the task's last run, when it reports one. */
  sessionId?: string;
  /** The task group it belongs to. */
  group?: string;
  /** The tasks it waited (or waits) for. While any is open, the task is `pending` and queued nowhere. */
  dependsOn?: string[];
  /** Set when a failed or cancelled dependency lets the task run anyway (`'run'`). */
  onDependencyFailure?: 'cancel' | 'run';
  /** Its cost budget in US dollars, when it has one. */
  maxCostUsd?: number;
  /** Its token budget, when it has one. */
  maxTokens?: number;
}

/**
 * Filter for `town.tasks()`.
 *
 * @example
 * ```ts
 * import type { TaskFilter } from 'tinytown';
 * const filter: TaskFilter = { state: ['failed', 'cancelled'], agent: 'backend', tag: 'api', limit: 20 };
 * for (const t of await town.tasks(filter)) console.log(t.id, t.error);
 * ```
 */
export interface TaskFilter {
  /** One state or several. */
  state?: TaskState | readonly TaskState[];
  /** Agent name, id, short id or nickname. */
  agent?: string;
  /** Only tasks carrying this tag. */
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
  group: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$').optional(),
  dependsOn: z.array(z.string().min(1).max(128)).max(1000).optional(),
  onDependencyFailure: z.enum(['cancel', 'run']).optional(),
  maxCostUsd: z.number().positive().finite().optional(),
  maxTokens: z.number().int().positive().optional(),
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
  /** What to do. */
  readonly description: string;
  readonly tags?: readonly string[];
  readonly parentId?: string;
  readonly priority?: Priority;
  readonly timeoutMs?: number;
  readonly maxAttempts?: number;
  readonly group?: string;
  readonly dependsOn?: readonly string[];
  readonly onDependencyFailure?: 'cancel' | 'run';
  readonly maxCostUsd?: number;
  readonly maxTokens?: number;

  constructor(description: string, options: TaskOptions = {}) {
    const input = parseTaskInput({ description, ...options });
    this.description = input.description;
    Object.assign(this, input);
  }
}

/** Validates what users pass as a task, turning a string into a {@link TaskInput}. */
export function parseTaskInput(input: string | TaskInput): TaskInput {
  // The common call, assign('…'): all the schema would check is a non-empty string.
  if (typeof input === 'string' && input !== '') return { description: input };
  const candidate = typeof input === 'string' ? { description: input } : { ...input };
  // Drop undefined members so `{ tags: undefined }` behaves like an absent option.
  for (const [k, v] of Object.entries(candidate)) if (v === undefined) delete (candidate as Record<string, unknown>)[k];
  const parsed = taskInputSchema.safeParse(candidate);
  if (!parsed.success) {
    throw new InvalidArgumentError(`Invalid task: ${formatIssues(parsed.error)}`, { cause: parsed.error });
  }
  // A dependency named twice is one dependency.
  if (parsed.data.dependsOn !== undefined) parsed.data.dependsOn = [...new Set(parsed.data.dependsOn)];
  return parsed.data;
}

/** One line per zod issue, with its path: what users need to fix their call. */
export function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}
