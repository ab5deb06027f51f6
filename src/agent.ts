/**
 * Agents: named workers of a town. An {@link Agent} is a cheap handle (an id and a town);
 * create as many as you like, for agents running here or anywhere else.
 *
 * @module
 */
import { setMaxListeners } from 'node:events';
import type { Message, SendOptions } from './message.js';
import type { ToolName } from './mcp/tools.js';
import type { CliDefinition } from './runner/cli.js';
import type { ProcessRunner } from './runner/process-runner.js';
import type { Task, TaskInput, TaskRecord, TaskUsage } from './task.js';
import type { Town } from './town.js';
import type { WaitOptions } from './wait.js';

/**
 * Agent states, as the Rust Tinytown names them. `cold`: registered, no worker started yet;
 * `starting`: a worker is attaching; `idle` / `working`: serving its inbox; `paused`: no new work
 * starts; `draining`: finishing queued work, then stopping; `stopped`; `error`: its worker was
 * lost, its lease expired with no other worker to take over (see {@link AgentInfo.error}).
 *
 * @example
 * ```ts
 * import type { AgentState } from 'tinytown';
 * const busy = (state: AgentState) => state === 'working' || state === 'draining';
 * console.log(busy((await agent.info()).state));
 * ```
 */
export type AgentState = 'cold' | 'starting' | 'idle' | 'working' | 'paused' | 'draining' | 'stopped' | 'error';

/**
 * A stored agent, as read back from Redis.
 *
 * @example
 * ```ts
 * import type { AgentInfo } from 'tinytown';
 * const agents: AgentInfo[] = await town.agents();
 * for (const a of agents) console.log(a.name, a.state, `${a.tasksCompleted} done`, a.usage?.costUsd ?? 0);
 * ```
 */
export interface AgentInfo {
  /** Agent id (a UUID). */
  id: string;
  /** Agent name, unique among the town's agents. */
  name: string;
  /** The first four characters of the id, accepted wherever an agent reference is. */
  shortId: string;
  /** `worker` for agents; `supervisor` is the orchestrator's role in the Rust Tinytown. */
  type: 'worker' | 'supervisor';
  /** Where the agent is in its lifecycle. */
  state: AgentState;
  /** Preset or custom CLI name, or `in-process` for `run` handlers. */
  cli: string;
  /** A second name accepted wherever an agent reference is. */
  nickname?: string;
  /** Free-form role (`worker`, `reviewer`, …); backlog auto-claim matches it against task tags. */
  role?: string;
  /** Labels matched against backlog task tags by `claimBacklog`. */
  tags: string[];
  /** The running task's id. */
  currentTask?: string;
  /** When the agent was first spawned. */
  createdAt: Date;
  /** When a worker last attached to it or renewed its lease. */
  lastHeartbeat: Date;
  /** When its state last changed or it last started a task. */
  lastActiveAt: Date;
  /** Tasks it completed. */
  tasksCompleted: number;
  /** Tasks that failed on it. */
  tasksFailed: number;
  /** Work rounds completed: the Rust Tinytown's counter, which tinytown advances with `tasksCompleted`. */
  roundsCompleted: number;
  /** Whether it takes matching backlog tasks by itself when idle. */
  claimBacklog: boolean;
  /** The live worker instance serving the agent, if any. */
  workerId?: string;
  /** Why the agent is in `error`. */
  error?: string;
  /** The agent that spawned this one, when one did (Rust Tinytown field). */
  parentAgentId?: string;
  /** The CLI session of its last task, when the CLI reports one. */
  sessionId?: string;
  /** Tokens and cost of all its runs, when its CLI reports them. */
  usage?: TaskUsage;
  /** Its cost budget in US dollars (see {@link AgentOptions.maxCostUsd}). */
  maxCostUsd?: number;
  /** Its token budget (see {@link AgentOptions.maxTokens}). */
  maxTokens?: number;
  /** The git worktree it works in, when spawned with `worktree` (absolute path). */
  worktree?: string;
}

/**
 * What an in-process handler receives next to the task.
 *
 * @example
 * ```ts
 * import type { TaskContext, TaskRecord } from 'tinytown';
 * async function review(task: TaskRecord, ctx: TaskContext): Promise<string> {
 *   ctx.log(`attempt ${ctx.attempt}, ${ctx.messages.length} notes`);
 *   const res = await fetch('https://example.com/review', { method: 'POST', body: task.description, signal: ctx.signal });
 *   ctx.reportUsage({ inputTokens: 1200, outputTokens: 300 });
 *   return res.text();
 * }
 * await town.spawnAgent('reviewer', { run: review });
 * ```
 */
export interface TaskContext {
  /** Aborted when the task is cancelled, times out, or the worker must stop. */
  signal: AbortSignal;
  /** The agent running the task. */
  agent: Agent;
  /** The town the agent lives in (to assign follow-up work, send messages, …). */
  town: Town;
  /** Informational messages and acks that arrived for the agent since its last task. */
  messages: Message[];
  /** Appends a line to the task's log file (`.tt/logs/<agent>/<task-id>.log`). */
  log: (line: string) => void;
  /** 1 for the first run, 2 for the first retry, … */
  attempt: number;
  /**
   * Adds tokens and cost this run spent (an SDK-based agent knows them); summed on the task, the
   * agent and the town.
   */
  reportUsage: (usage: TaskUsage) => void;
}

/**
 * Runs one task in-process; its resolved value (a string, or anything JSON can encode) becomes
 * the task's result, a rejection its error. Throw an error with `retryable: true` to have the
 * task run again after a backoff (up to its `maxAttempts`).
 *
 * @example
 * ```ts
 * import type { TaskHandler } from 'tinytown';
 * const summarize: TaskHandler = async (task, ctx) => {
 *   const res = await fetch('https://example.com/summarize', { method: 'POST', body: task.description, signal: ctx.signal });
 *   if (res.status === 429) throw Object.assign(new Error('rate limited'), { retryable: true });
 *   return res.text();
 * };
 * await town.spawnAgent('summarizer', { run: summarize });
 * ```
 */
export type TaskHandler = (task: TaskRecord, context: TaskContext) => unknown;

/**
 * How an agent does its work: a CLI (preset name, custom name or inline definition) or a handler.
 * What `town.runWorker` takes; {@link AgentOptions} adds what is stored with the agent.
 *
 * @example
 * ```ts
 * import type { AgentWorkOptions } from 'tinytown';
 * const work: AgentWorkOptions = { cli: 'claude', cwd: 'services/api', timeoutMs: 20 * 60_000, continueSession: true };
 * await town.runWorker('backend', work);
 * ```
 */
export interface AgentWorkOptions {
  /** A preset (`claude`, `codex`, …), a name from `tinytown.json` `clis`, or an inline definition. */
  cli?: string | CliDefinition;
  /** An in-process handler instead of a CLI. */
  run?: TaskHandler;
  /** Where CLI processes start (default: child processes on this machine). */
  runner?: ProcessRunner;
  /** Prepended to every prompt. */
  instructions?: string;
  /** Working directory of the CLI (default: the town's root). */
  cwd?: string;
  /** Extra environment for the CLI. */
  env?: Record<string, string>;
  /** Per-task time limit when the task sets none. */
  timeoutMs?: number;
  /** Stop a CLI that printed nothing for this long (a stall, retried like a timeout). */
  stallMs?: number;
  /**
   * Resume the CLI session of the agent's previous task for the next one (by exact id, for CLIs
   * that support it), so the agent keeps its context across tasks.
   */
  continueSession?: boolean;
  /** This worker's lease (default: the town's `leaseMs`). */
  leaseMs?: number;
  /**
   * Delay before the first retry of a retryable failure (default 1 000 ms); each further retry
   * waits twice as long, up to a minute. Retries stop at the task's `maxAttempts`.
   */
  retryDelayMs?: number;
  /**
   * Town tools for the agent's CLI, over MCP (`tinytown/mcp`): `true` for all of them, or the
   * names of those it may use ({@link TOOL_NAMES}): `town_status`, `send_message`, `read_inbox`,
   * `backlog_list`, `backlog_claim`, `assign_task`, `report_progress`, `complete_task`,
   * `fail_task`. Tools not given are not even listed to the agent, and refused if called. For
   * each run the worker opens a private socket and has the CLI start tinytown's MCP server
   * against it (the presets that can: claude, codex, codex-mini, copilot, opencode, auggie,
   * goose; custom CLIs through `mcpArgs` / `mcpEnv`): the agent acts through its worker, scoped
   * to itself and its current task, and never sees Redis credentials. Default: none.
   */
  tools?: boolean | readonly ToolName[];
}

/**
 * Options of `town.spawnAgent`.
 *
 * @example
 * ```ts
 * import type { AgentOptions } from 'tinytown';
 * const options: AgentOptions = {
 *   cli: 'codex', role: 'worker', nickname: 'bob', tags: ['api'],
 *   instructions: 'You own the server code.', timeoutMs: 20 * 60_000, maxAttempts: 3, claimBacklog: true,
 * };
 * const backend = await town.spawnAgent('backend', options);
 * ```
 */
export interface AgentOptions extends AgentWorkOptions {
  /** Free-form role (`worker`, `reviewer`, …); backlog auto-claim matches it against task tags. */
  role?: string;
  /** A second name accepted wherever an agent reference is (`town.agent('bob')`). */
  nickname?: string;
  /** Matched against backlog task tags by `claimBacklog`. */
  tags?: string[];
  /** Start a worker in this process (default `true`); `false` leaves the agent `cold`. */
  start?: boolean;
  /** Idle agents take matching backlog tasks by themselves. */
  claimBacklog?: boolean;
  /** Default `maxAttempts` of tasks assigned to this agent that set none (else 3). */
  maxAttempts?: number;
  /**
   * Cost budget of the agent in US dollars, over all its runs (`info().usage.costUsd`). Once
   * spent, no new task starts on it: the next one goes back to the head of its queue, the agent
   * is paused and `budget.exceeded` says why. Raise it (spawn the stopped agent again with a
   * higher one) and `resume()`. A running task is not stopped; it finishes.
   */
  maxCostUsd?: number;
  /** Token budget of the agent (input + output tokens over all its runs); spent, as `maxCostUsd`. */
  maxTokens?: number;
  /**
   * Run the agent in a git worktree of its own: `<root>/.tt/worktrees/<name>` on the branch
   * `tt/<name>` (or `branch`), created from the current `HEAD` of the repository that holds
   * the town's folder, or reused when it exists. Its CLI runs there (in the worktree's copy of
   * the town folder, or of `cwd` under it). `agent.remove()` deletes a clean worktree (the
   * branch stays) and refuses one with uncommitted work (`WorktreeDirtyError`). Outside a git
   * repository: `NotAGitRepositoryError`; a name that makes no valid branch: `InvalidNameError`.
   */
  worktree?:
    | boolean
    | {
        /** The worktree's branch, instead of `tt/<name>`. */
        branch?: string;
      };
}

/**
 * Options of `agent.stop()`.
 *
 * @example
 * ```ts
 * import type { StopOptions } from 'tinytown';
 * const now: StopOptions = { force: true };
 * await agent.stop(now); // the running task goes back to the head of the queue
 * ```
 */
export interface StopOptions {
  /** Kill the running process now and hand its task back to the queue. */
  force?: boolean;
}

/**
 * A handle on one agent. Methods read or write Redis; the handle holds no state of its own.
 *
 * @example
 * ```ts
 * const backend = await town.spawnAgent('backend', { cli: 'codex', role: 'worker' });
 * const task = await backend.assign('Implement auth endpoints');
 * await backend.waitForIdle({ timeoutMs: 30 * 60_000 });
 * console.log((await town.task(task.id)).result);
 * ```
 */
export class Agent {
  /** @internal */
  constructor(
    /** The town this agent lives in. */
    readonly town: Town,
    /** Agent id (a UUID). */
    readonly id: string,
    /** Agent name. */
    readonly name: string,
  ) {}

  /**
   * Reads the agent's record.
   * @example
   * ```ts
   * const { state, tasksCompleted } = await agent.info();
   * ```
   */
  info(): Promise<AgentInfo> {
    return this.town.agentInfo(this.id);
  }

  /**
   * Queues a task for this agent: the task record and its inbox entry are written in one step.
   * @example
   * ```ts
   * await agent.assign('Fix the login bug');
   * await agent.assign({ description: 'Ship it', priority: 'urgent', timeoutMs: 600_000 });
   * ```
   */
  assign(input: string | TaskInput | Task): Promise<TaskRecord> {
    return this.town.assignTo(this.id, input);
  }

  /**
   * Sends a message to this agent (default type `info`, which rides along with its next prompt).
   * @example
   * ```ts
   * await agent.send('The API schema is in docs/api.md');
   * await agent.send('Which ORM do we use?', { type: 'query', from: 'reviewer' });
   * ```
   */
  send(text: string, options: SendOptions = {}): Promise<string> {
    return this.town.send(this.id, text, options);
  }

  /**
   * Messages waiting in the agent's inbox, in delivery order.
   * @example
   * ```ts
   * for (const m of await agent.inbox()) console.log(m.type, m.text);
   * ```
   */
  inbox(): Promise<Message[]> {
    return this.town.inboxOf(this.id);
  }

  /**
   * No new work starts until `resume()`; a running task finishes.
   * @example
   * ```ts
   * await agent.pause();
   * ```
   */
  async pause(): Promise<void> {
    await this.town.controlAgent(this.id, 'pause');
  }

  /**
   * Undoes `pause()`.
   * @example
   * ```ts
   * await agent.resume();
   * ```
   */
  async resume(): Promise<void> {
    await this.town.controlAgent(this.id, 'resume');
  }

  /**
   * Finishes the current and queued work, then stops.
   * @example
   * ```ts
   * await agent.drain();
   * await agent.waitForIdle();
   * ```
   */
  async drain(): Promise<void> {
    await this.town.controlAgent(this.id, 'drain');
  }

  /**
   * Stops the agent's worker, wherever it runs. The running task finishes first; with `force`
   * its process is killed and the task goes back to the head of the queue.
   * @example
   * ```ts
   * await agent.stop({ force: true });
   * ```
   */
  async stop(options: StopOptions = {}): Promise<void> {
    await this.town.controlAgent(this.id, 'stop', options.force === true);
  }

  /**
   * Stops the agent's worker in this process (if any) and starts a fresh one here.
   * @example
   * ```ts
   * await agent.restart();
   * ```
   */
  async restart(): Promise<void> {
    await this.town.restartAgent(this.id);
  }

  /**
   * Removes the agent. Its queued work goes to the backlog, never silently dropped.
   * @example
   * ```ts
   * await agent.remove();
   * console.log(await town.backlog.list());
   * ```
   */
  async remove(): Promise<void> {
    await this.town.removeAgent(this.id);
  }

  /**
   * Resolves when the agent is idle: nothing running, nothing queued. Rejects if it is in `error`.
   * @example
   * ```ts
   * await agent.waitForIdle({ timeoutMs: 60_000 });
   * ```
   */
  waitForIdle(options?: WaitOptions): Promise<void> {
    return this.town.waitForAgentIdle(this.id, this.name, options);
  }
}

/**
 * Resolves when every given agent is idle (see {@link Agent.waitForIdle}).
 *
 * @example
 * ```ts
 * import { waitForIdle } from 'tinytown';
 * await waitForIdle([backend, frontend], { timeoutMs: 30 * 60_000 });
 * ```
 */
export async function waitForIdle(agents: Agent | readonly Agent[], options: WaitOptions = {}): Promise<void> {
  const list = Array.isArray(agents) ? (agents as readonly Agent[]) : [agents as Agent];
  if (list.length === 1) return list[0]!.waitForIdle(options);
  // The first failure ends the whole wait: the others must not stay subscribed.
  const others = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, others.signal]) : others.signal;
  setMaxListeners(list.length + 10, signal); // one wait per agent listens to it
  try {
    await Promise.all(list.map((agent) => agent.waitForIdle({ ...options, signal })));
  } finally {
    others.abort();
  }
}
