/**
 * How a worker turns one claimed task into an outcome: an in-process handler, or a CLI run
 * through a {@link ProcessRunner}.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TaskContext, TaskHandler } from '../agent.js';
import { decodeMessage, type Message } from '../message.js';
import { runCli, type CliDefinition } from '../runner/cli.js';
import type { ToolHost } from '../mcp/host.js';
import { withBudget, withSession } from '../runner/presets.js';
import type { ProcessRunner } from '../runner/process-runner.js';
import { isSecretEnv } from '../store/connection.js';
import type { TaskRecord, TaskUsage } from '../task.js';

/** The outcome of one run. */
export interface RunOutcome {
  ok: boolean;
  /** The result, or why it failed. */
  text: string;
  /** Tokens and cost the run spent, when reported (failed runs too). */
  usage?: TaskUsage | undefined;
  /** The CLI's session id, when reported. */
  sessionId?: string | undefined;
  /** A failure worth another run after a backoff (rate limit, timeout, …). */
  retryable?: boolean;
}

/** What an executor gets besides the task. */
export interface RunContext extends Omit<TaskContext, 'log' | 'messages' | 'reportUsage'> {
  notes: Message[];
  /** The CLI session of the agent's previous task, to continue it. */
  agentSession?: string;
  /** The smallest cost budget left (task, agent, town) in US dollars, when any applies. */
  budgetUsd?: number;
  logFile: string;
  /** The timeout that applies (task's own, else the agent's). */
  timeoutMs?: number;
  taskEnv: Record<string, string>;
  /** The run's claim (fencing token), for what the agent does through its town tools. */
  fence?: string;
}

/** Runs one task. Never throws: every failure is an outcome. */
export type Executor = (task: TaskRecord, context: RunContext) => Promise<RunOutcome>;

/** Wraps an in-process handler: its value is the result, its rejection the error. */
export function handlerExecutor(run: TaskHandler): Executor {
  return async (task, context) => {
    const { logFile, timeoutMs } = context;
    // The worker's signal serves as is; a timeout needs a signal of its own that also follows it.
    const signal = timeoutMs === undefined ? context.signal : AbortSignal.any([context.signal, AbortSignal.timeout(timeoutMs)]);
    let usage: TaskUsage | undefined;
    // Built field by field: what the handler gets is the TaskContext, nothing of the worker's own.
    const ctx: TaskContext = {
      signal,
      agent: context.agent,
      town: context.town,
      messages: context.notes,
      attempt: context.attempt,
      log: (line) => {
        mkdirSync(dirname(logFile), { recursive: true });
        appendFileSync(logFile, `${line}\n`);
      },
      reportUsage: (more) => {
        usage = addUsage(usage, more);
      },
    };
    let onAbort: (() => void) | undefined;
    try {
      const returned = run(task, ctx);
      // A value returned at once needs no race (it would win even against a fired signal).
      if (!isThenable(returned)) return { ok: true, text: stringify(returned), usage };
      // A handler that ignores its signal still ends its task when the signal fires: one promise
      // settled by whichever comes first (Promise.race would add two more per task).
      const value = await new Promise<unknown>((resolve, reject) => {
        onAbort = () => reject(abortReason(signal, timeoutMs));
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
        returned.then(resolve, reject);
      });
      return { ok: true, text: stringify(value), usage };
    } catch (thrown) {
      // A handler that rejects with its signal's reason failed because of the abort: say why.
      const err = signal.aborted && thrown === signal.reason ? abortReason(signal, timeoutMs) : thrown;
      return { ok: false, text: describeError(err), retryable: isRetryable(err), usage };
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  };
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as PromiseLike<unknown>).then === 'function';
}

/** AbortSignal.timeout's reason is a DOMException named TimeoutError: say what timed out. */
function abortReason(signal: AbortSignal, timeoutMs: number | undefined): unknown {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') return new Error(`timed out after ${timeoutMs}ms`);
  return reason;
}

/** Runs a CLI per task: prompt built from the task, instructions and notes; never a shell. */
export function cliExecutor(options: {
  definition: CliDefinition;
  runner: ProcessRunner;
  root: string;
  instructions?: string;
  cwd?: string;
  env?: Record<string, string>;
  stallMs?: number;
  continueSession?: boolean;
  /** Town tools over MCP for each run (agents with `tools`). */
  tools?: ToolHost;
}): Executor {
  return async (task, context) => {
    const session = sessionDefinition(options.definition, options.continueSession === true ? context.agentSession : undefined);
    const definition = context.budgetUsd === undefined ? session : (withBudget(session, context.budgetUsd) ?? session);
    let tools;
    try {
      tools = await options.tools?.open(task, context, definition);
    } catch (err) {
      return { ok: false, text: `could not open the agent's town tools: ${describeError(err)}` };
    }
    const result = await runCli({
      definition: tools?.definition ?? definition,
      prompt: buildPrompt(task, options.instructions, context.notes),
      cwd: options.cwd ?? options.root,
      env: { ...childEnvironment(), ...options.env, ...context.taskEnv, ...tools?.env },
      logFile: context.logFile,
      promptDir: join(options.root, '.tt', 'prompts'),
      runner: options.runner,
      signal: context.signal,
      ...(context.timeoutMs !== undefined && { timeoutMs: context.timeoutMs }),
      ...(options.stallMs !== undefined && { stallMs: options.stallMs }),
    }).finally(() => tools?.close());
    const spent = { usage: result.usage, sessionId: result.sessionId };
    return result.ok
      ? { ok: true, text: result.text, ...spent }
      : { ok: false, text: result.error ?? `failed (${result.failure ?? 'unknown'})`, retryable: result.retryable, ...spent };
  };
}

/**
 * Resumes the agent's previous session when asked and the CLI can; otherwise starts a session
 * whose id we mint, where the CLI lets us, so it is known even if the run dies.
 */
function sessionDefinition(definition: CliDefinition, previous: string | undefined): CliDefinition {
  if (previous !== undefined) {
    const resumed = withSession(definition, previous, 'resume');
    if (resumed) return resumed;
  }
  return withSession(definition, randomUUID(), 'new') ?? definition;
}

/**
 * The prompt: the task alone when there is nothing else, so what the user wrote reaches the
 * CLI byte for byte; otherwise instructions, the task and waiting messages in sections.
 */
export function buildPrompt(task: TaskRecord, instructions: string | undefined, notes: readonly Message[]): string {
  if (!instructions && notes.length === 0) return task.description;
  const parts: string[] = [];
  if (instructions) parts.push(instructions.trim(), '');
  parts.push('## Task', '', task.description);
  if (notes.length > 0) {
    parts.push('', '## Messages for you', '');
    for (const note of notes) parts.push(`- (${note.type} from ${note.from}) ${note.text ?? ''}`);
  }
  return parts.join('\n');
}

/** Parses the raw notes the start script returned. */
export function parseNotes(raw: readonly string[]): Message[] {
  return raw.map(decodeMessage).filter((m): m is Message => m !== undefined);
}

/**
 * Variables that could hand the agent our Redis credentials never reach its process: these, and
 * any a town was told holds its password (`passwordEnv`).
 */
const WITHHELD_ENV = /^(REDIS_URL|REDIS_PASSWORD|REDISCLI_AUTH|TINYTOWN_REDIS_.*)$/;

function childEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !WITHHELD_ENV.test(k) && !isSecretEnv(k)) env[k] = v;
  return env;
}

function stringify(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Sums two usage reports field by field; the latest model wins. */
export function addUsage(a: TaskUsage | undefined, b: TaskUsage): TaskUsage {
  const sum: TaskUsage = { ...a };
  for (const field of ['inputTokens', 'outputTokens', 'cacheReadTokens', 'cacheWriteTokens', 'reasoningTokens', 'costUsd'] as const) {
    const value = b[field];
    if (typeof value === 'number' && Number.isFinite(value)) sum[field] = (sum[field] ?? 0) + value;
  }
  if (b.model !== undefined) sum.model = b.model;
  return sum;
}

/** Handlers ask for a retry by throwing an error with `retryable: true`. */
function isRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === true;
}

function describeError(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return stringify(err) || 'failed';
}
