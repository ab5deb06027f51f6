/**
 * The town: the entry point of the SDK. `Town.connect` loads `tinytown.json`, connects to
 * Redis (starting a managed local server when none is configured) and hands out agents.
 *
 * @module
 */
import { setMaxListeners } from 'node:events';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { EventEmitter } from 'eventemitter3';
import { Agent, type AgentInfo, type AgentOptions, type AgentWorkOptions } from './agent.js';
import { checkAgentOptions, cliLabel, registeredCli } from './agent-options.js';
import { Backlog } from './backlog.js';
import {
  checkAgentName,
  CONFIG_FILE,
  configRedis,
  loadConfig,
  NAME_PATTERN,
  parseTownOptions,
  type TownConfig,
  type TownOptions,
} from './config.js';
import {
  AgentErrorStateError,
  AgentNotFoundError,
  ConfigInvalidError,
  DescriptionTooLargeError,
  InvalidArgumentError,
  InvalidNameError,
  redact,
  TinytownError,
  TownClosedError,
  WorkerActiveError,
} from './errors.js';
import { EventReader } from './events/reader.js';
import { TaskGroup, type GroupProgress } from './group.js';
import { compareIds, parseEvent, TOWN_EVENT_TYPES, type TownEvent, type TownEventMap, type TownEventType } from './events/types.js';
import type { Message, SendOptions } from './message.js';
import { toolHost } from './mcp/host.js';
import { grantedTools } from './mcp/tools.js';
import { ensureManagedRedis } from './redis-server/managed.js';
import { defaultRunner } from './runner/child-process-runner.js';
import { resolveCli } from './runner/presets.js';
import { Connections, isClient, meansCluster, withRemoteSettings, type RedisInput, type RemoteRedisSettings } from './store/connection.js';
import { keyPrefix, SUPERVISOR_ID } from './store/keys.js';
import { Repository, type WriteReplication } from './store/repository.js';
import { defineScripts } from './store/scripts.js';
import {
  parseTaskInput,
  TERMINAL_STATES,
  type Priority,
  type Task,
  type TaskFilter,
  type TaskInput,
  type TaskRecord,
  type TaskState,
  type TaskUsage,
} from './task.js';
import { nowIso } from './time.js';
import { checkWaitOptions, waitUntil, type WaitOptions } from './wait.js';
import { cliExecutor, handlerExecutor, type Executor } from './worker/executor.js';
import { Worker } from './worker/worker.js';
import { WriteChannel } from './worker/write-channel.js';
import { dirtyError, ensureWorktree, removeWorktree, worktreeChanges } from './worktree.js';

const DEFAULTS = {
  leaseMs: 15_000,
  connectTimeoutMs: 10_000,
  retentionMs: 7 * 24 * 3600_000,
  maxDescriptionBytes: 1024 * 1024,
  eventsMaxLen: 10_000,
  closeGraceMs: 10_000,
};

/** Events after which a task may be over: the only ones a task wait re-reads state for. */
const ENDS_TASK: ReadonlySet<TownEventType> = new Set(['task.completed', 'task.failed', 'task.cancelled']);

/**
 * Events after which an agent may have become idle (or gone, or broken): its work ended, left
 * its queue, or its state changed. Assignments only make it busier, so they are not among them.
 */
const MAY_IDLE_AGENT: ReadonlySet<TownEventType> = new Set([
  'agent.state',
  'agent.stopped',
  'agent.removed',
  'task.completed',
  'task.failed',
  'task.cancelled',
  'task.reclaimed',
  'message.received',
  'message.discarded',
]);

/** What an idle wait reads: the events above, and `task.started` (busy again, see its `busy`). */
const IDLE_WAIT_EVENTS: ReadonlySet<TownEventType> = new Set([...MAY_IDLE_AGENT, 'task.started']);

/** `durability: 'replicated'`: how long a write waits for its replicas by default. */
const DEFAULT_REPLICA_TIMEOUT_MS = 1_000;

/** First backoff of an in-place retry. */
const DEFAULT_RETRY_DELAY_MS = 1_000;

/** Expired tasks removed per sweep at most, so one sweep never blocks Redis for long. */
const RETENTION_BATCH = 500;

/**
 * One agent in {@link TownStatus}: its record plus the depth of its inbox.
 *
 * @example
 * ```ts
 * import type { AgentStatus } from 'tinytown';
 * const { agents } = await town.status();
 * const backlogged: AgentStatus[] = agents.filter((a) => a.queued > 5);
 * ```
 */
export interface AgentStatus extends AgentInfo {
  /** Entries waiting in its inbox. */
  queued: number;
}

/**
 * A snapshot of the town, read in one round trip.
 *
 * @example
 * ```ts
 * import type { TownStatus } from 'tinytown';
 * const status: TownStatus = await town.status();
 * console.log(`${status.name}: ${status.tasks.running} running, ${status.backlog} in the backlog, $${status.usage.costUsd ?? 0}`);
 * for (const a of status.agents) console.log(a.name, a.state, a.queued);
 * ```
 */
export interface TownStatus {
  /** The town's name. */
  name: string;
  /** Every agent with its state and queue depth, oldest first. */
  agents: AgentStatus[];
  /** Tasks per state (terminal states count tasks still within retention). */
  tasks: Record<TaskState, number>;
  /** Tasks waiting in the backlog. */
  backlog: number;
  /** Tokens and cost of every run in the town, as the CLIs reported them. */
  usage: TaskUsage;
}

/**
 * Options of `town.events()`.
 *
 * @example
 * ```ts
 * import type { EventsOptions } from 'tinytown';
 * const options: EventsOptions = { since: lastSeenId ?? 'start', types: ['task.completed', 'task.failed'], agent: 'backend' };
 * for await (const e of town.events(options)) lastSeenId = e.id;
 * ```
 */
export interface EventsOptions {
  /**
   * `'now'` (default): events appended once iteration has started; `'start'`: the whole retained
   * stream first; or an event id: everything after it (resume where you left off).
   */
  since?: 'start' | 'now' | string;
  /** Only these event types (default: all). */
  types?: readonly TownEventType[];
  /** Agent name, id, short id or nickname. */
  agent?: string;
  /** Only events of this task id. */
  task?: string;
  /** Ends the iteration. */
  signal?: AbortSignal;
}

/**
 * What `town.recover()` did.
 *
 * @example
 * ```ts
 * import type { RecoverResult } from 'tinytown';
 * const { reclaimed, expired }: RecoverResult = await town.recover();
 * console.log(`${reclaimed} dead workers' work handed back, ${expired} old tasks removed`);
 * ```
 */
export interface RecoverResult {
  /** Workers found dead whose claimed work was handed back. */
  reclaimed: number;
  /** Terminal tasks removed after the retention period. */
  expired: number;
}

type Settings = typeof DEFAULTS;

/**
 * A town: agents, tasks and messages in one Redis.
 *
 * @example
 * ```ts
 * import { Town, Task, waitForIdle } from 'tinytown';
 *
 * await using town = await Town.connect('.');
 * const designer = await town.spawnAgent('designer', 'claude');
 * await designer.assign(new Task('Design auth API schema'));
 * await waitForIdle(designer);
 * console.log(await town.status());
 * ```
 */
export class Town implements AsyncDisposable {
  /** Unassigned work. */
  readonly backlog: Backlog;

  private readonly emitter = new EventEmitter<TownEventMap & { error: (err: unknown) => void }>();
  private readonly reader: EventReader;
  private writes: Promise<WriteChannel> | undefined;
  private readonly workers = new Map<string, Worker>();
  private readonly workOptions = new Map<string, AgentWorkOptions>();
  private readonly closing = new AbortController();
  private readonly sweeper: NodeJS.Timeout;
  private bridged = false;
  private closed: Promise<void> | undefined;
  /** When the command connection last became ready; the sweeper holds off for a while after. */
  private connectedAt = Date.now();
  private readonly onReconnect = (): void => {
    this.connectedAt = Date.now();
  };

  private constructor(
    /** The town's name (part of every Redis key). */
    readonly name: string,
    /** Absolute path of the folder holding `tinytown.json` and `.tt/`. */
    readonly root: string,
    /** The loaded `tinytown.json`, frozen. */
    readonly config: Readonly<TownConfig>,
    private readonly repo: Repository,
    private readonly settings: Settings,
  ) {
    this.backlog = new Backlog(this);
    this.reader = new EventReader(repo.connections, repo.keys.events, (err) => this.report(err));
    this.sweeper = setInterval(() => void this.sweep(), Math.max(50, Math.floor(settings.leaseMs / 2)));
    this.sweeper.unref();
    repo.connections.command.on('ready', this.onReconnect);
    repo.onUnconfirmed = (err) => this.report(err);
    // Every wait listens for the town's close: many at once are normal, not a leak.
    setMaxListeners(0, this.closing.signal);
  }

  /**
   * Opens a town. Loads `<dir>/tinytown.json` (creating it unless `create: false`), connects to
   * `options.redis`, `REDIS_URL` or the config's `redis.url`, and with none of them starts or
   * reuses a managed `redis-server` on a unix socket in `<dir>/.tt/`. Never hangs: connecting is
   * bounded by `connectTimeoutMs`.
   *
   * @example
   * ```ts
   * const town = await Town.connect('.', { leaseMs: 30_000 });
   * const remote = await Town.connect('.', { redis: 'rediss://worker:secret@redis.internal:6380' });
   * ```
   */
  static async connect(dir: string = process.cwd(), options: TownOptions = {}): Promise<Town> {
    parseTownOptions(options);
    const root = resolve(dir);
    const info = await stat(root).catch(() => undefined);
    if (!info?.isDirectory()) throw new ConfigInvalidError(`Town folder ${root} does not exist or is not a directory.`);
    const config = await loadConfig(root, options);
    const name = options.name ?? config.name;
    const layout = options.keyLayout ?? config.keyLayout ?? 'cluster';
    // The tinytown layout has no hash tag: a town's keys spread over a Cluster's slots, where
    // its multi-key scripts cannot run.
    if (layout === 'tinytown' && meansCluster(options.redis)) throw clusterRefused();
    const settings: Settings = {
      leaseMs: options.leaseMs ?? config.leaseMs ?? DEFAULTS.leaseMs,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      retentionMs: options.retentionMs ?? config.retentionMs ?? DEFAULTS.retentionMs,
      maxDescriptionBytes: options.maxDescriptionBytes ?? config.maxDescriptionBytes ?? DEFAULTS.maxDescriptionBytes,
      eventsMaxLen: options.eventsMaxLen ?? DEFAULTS.eventsMaxLen,
      closeGraceMs: options.closeGraceMs ?? DEFAULTS.closeGraceMs,
    };
    const configured: [RedisInput | undefined, string][] = [
      [options.redis, 'options.redis'],
      [process.env.REDIS_URL || undefined, 'REDIS_URL'], // `REDIS_URL=` (empty) means unset
      [configRedis(config).url, configRedis(config).source],
    ];
    const [chosen, source] = configured.find(([value]) => value !== undefined) ?? [undefined, ''];
    if (typeof chosen === 'string') checkRedisUrl(chosen, source);
    const durability = options.durability ?? 'default';
    const replication = replicationOf(options, chosen !== undefined);
    // Remote settings of the call always apply (and a client cannot take them); the file's only
    // to connections tinytown opens from a URL or options.
    const remote = remoteSettings(options);
    const remoteSource = Object.keys(remote).length > 0 ? 'Town.connect options' : `${CONFIG_FILE} redis`;
    if (chosen === undefined && Object.keys(remote).length > 0) {
      throw new ConfigInvalidError(
        `Town.connect options set ${Object.keys(remote).join(', ')} for a remote Redis, but none is configured: set options.redis, REDIS_URL or ${CONFIG_FILE} redis.url.`,
      );
    }
    const input: RedisInput =
      chosen === undefined
        ? (await ensureManagedRedis(root, { durability: durability === 'strict' ? 'strict' : 'default' })).url
        : await withRemoteSettings(chosen, isClient(chosen) ? remote : { ...remoteSettings(config.redis ?? {}), ...remote }, remoteSource);
    const connections = await Connections.open(input, settings.connectTimeoutMs);
    // A standalone client reaching a Cluster node would meet MOVED for every slot it does not
    // serve: the Cluster client routes each town to its slot's node.
    if (layout !== 'tinytown' && connections.server.clusterEnabled && !connections.cluster) {
      connections.closeAll();
      throw new ConfigInvalidError(
        `${source} points at a Redis Cluster node: pass the cluster as options.redis ({ cluster: [{ host, port }, …] } or an ioredis Cluster client) so each town's commands reach the node that serves its slot.`,
      );
    }
    defineScripts(connections.command);
    const repo = new Repository(connections, keyPrefix(name, layout), settings.eventsMaxLen, layout, replication);
    const maxCostUsd = options.maxCostUsd ?? config.maxCostUsd;
    const maxTokens = options.maxTokens ?? config.maxTokens;
    repo.townBudget = { ...(maxCostUsd !== undefined && { maxCostUsd }), ...(maxTokens !== undefined && { maxTokens }) };
    if (layout === 'tinytown') {
      try {
        // A standalone client can reach a Cluster node too: the server said so at connect.
        if (connections.cluster || connections.server.clusterEnabled) throw clusterRefused();
        await repo.discover(); // agents and tasks `tt` created while no tinytown process watched
      } catch (err) {
        connections.closeAll();
        throw err;
      }
    }
    return new Town(name, root, deepFreeze({ ...config, name }), repo, settings);
  }

  // ── agents ──────────────────────────────────────────────────────────────────────────────

  /**
   * Registers an agent and, unless `start: false`, starts its worker in this process. A name
   * whose agent is stopped (or whose worker died) is revived with the new options.
   *
   * @example
   * ```ts
   * const designer = await town.spawnAgent('designer', 'claude');
   * const backend = await town.spawnAgent('backend', { cli: 'codex', role: 'worker', timeoutMs: 20 * 60_000 });
   * const local = await town.spawnAgent('echo', { run: async (task) => `echo: ${task.description}` });
   * ```
   */
  async spawnAgent(name: string, cli?: string | AgentOptions): Promise<Agent> {
    this.ensureOpen();
    checkAgentName(name);
    const given: AgentOptions = typeof cli === 'string' ? { cli } : (cli ?? {});
    checkAgentOptions(given);
    const start = given.start !== false;
    // Resolved even for a cold agent: a mistyped preset must fail here, not when a worker attaches.
    if (given.cli !== undefined) resolveCli(given.cli, this.config.clis);
    // The worktree first: outside a repository, or with a bad branch name, nothing is registered.
    const worktree = given.worktree ? await ensureWorktree(this.root, name, given.worktree === true ? undefined : given.worktree.branch) : undefined;
    const options: AgentOptions = worktree ? { ...given, cwd: resolve(worktree.cwd, given.cwd ?? '.') } : given;
    const executor = start ? this.executorFor(name, options, given.role) : undefined;
    await this.localWorkerReleased(name);
    const { id } = await this.repo.spawnAgent({
      name,
      cli: cliLabel(options),
      ...(options.role !== undefined && { role: options.role }),
      ...(options.nickname !== undefined && { nickname: options.nickname }),
      tags: options.tags ?? [],
      claimBacklog: options.claimBacklog === true,
      ...(options.maxAttempts !== undefined && { maxAttempts: options.maxAttempts }),
      ...(options.maxCostUsd !== undefined && { maxCostUsd: options.maxCostUsd }),
      ...(options.maxTokens !== undefined && { maxTokens: options.maxTokens }),
      ...(worktree && { worktree: worktree.path }),
      initialState: start ? 'starting' : 'cold',
    });
    const agent = new Agent(this, id, name);
    this.workOptions.set(id, options);
    if (executor) await this.startWorker(agent, options, executor);
    return agent;
  }

  /**
   * A handle on an existing agent, by name, id, short id or nickname.
   *
   * @example
   * ```ts
   * const backend = await town.agent('backend');
   * ```
   */
  async agent(ref: string): Promise<Agent> {
    this.ensureOpen();
    if (typeof ref !== 'string' || ref.length === 0) throw new InvalidArgumentError('An agent reference must be a non-empty string.');
    const id = await this.repo.resolveAgent(ref);
    const info = await this.repo.getAgent(id);
    return new Agent(this, id, info.name);
  }

  /**
   * Every agent of the town, oldest first.
   *
   * @example
   * ```ts
   * for (const a of await town.agents()) console.log(a.name, a.state);
   * ```
   */
  async agents(): Promise<AgentInfo[]> {
    this.ensureOpen();
    await this.repo.discover(); // tinytown layout: agents `tt spawn` registered
    return this.repo.listAgents();
  }

  /**
   * Agents with their state, current task and queue depth; task counts by state; backlog size.
   * One round trip, whatever the town's size.
   *
   * @example
   * ```ts
   * const { agents, tasks, backlog } = await town.status();
   * console.log(`${tasks.running} running, ${backlog} in the backlog`);
   * ```
   */
  async status(): Promise<TownStatus> {
    this.ensureOpen();
    await this.repo.discover(); // tinytown layout: agents and tasks `tt` created
    const snapshot = await this.repo.status();
    const tasks = { pending: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
    for (const state of Object.keys(tasks) as TaskState[]) tasks[state] = Math.max(0, snapshot.counts[state] ?? 0);
    const agents = snapshot.agents
      .map(({ info, queued }) => ({ ...info, queued }))
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.name.localeCompare(b.name));
    return { name: this.name, agents, tasks, backlog: snapshot.backlog, usage: snapshot.usage ?? {} };
  }

  /**
   * Attaches a worker for an existing agent in this process: how agents run on other machines
   * against the same Redis. Without `cli` or `run`, the agent's registered CLI is used.
   *
   * @example
   * ```ts
   * const town = await Town.connect('.', { redis: process.env.TOWN_REDIS });
   * const worker = await town.runWorker('backend');
   * await worker.done;
   * ```
   */
  async runWorker(agentRef: string, options: AgentWorkOptions = {}): Promise<Worker> {
    this.ensureOpen();
    checkAgentOptions(options);
    const agent = await this.agent(agentRef);
    if (this.workers.has(agent.id)) {
      throw new WorkerActiveError(`Agent ${agent.name} already has a worker in this process.`);
    }
    const info = await agent.info();
    let work = options.cli !== undefined || options.run !== undefined ? options : { ...options, cli: registeredCli(info) };
    // An agent spawned with a worktree works there, wherever its worker runs (made if missing).
    if (info.worktree !== undefined && options.cwd === undefined) work = { ...work, cwd: (await ensureWorktree(this.root, info.name)).cwd };
    this.workOptions.set(agent.id, work);
    return this.startWorker(agent, work, this.executorFor(agent.name, work, info.role));
  }

  // ── tasks ───────────────────────────────────────────────────────────────────────────────

  /**
   * Reads a task.
   *
   * @example
   * ```ts
   * const { state, result } = await town.task(id);
   * ```
   */
  async task(id: string): Promise<TaskRecord> {
    this.ensureOpen();
    checkId(id, 'task id');
    return this.repo.getTask(id);
  }

  /**
   * Tasks, newest first, filtered by state, agent or tag.
   *
   * @example
   * ```ts
   * const failed = await town.tasks({ state: 'failed', limit: 20 });
   * ```
   */
  async tasks(filter: TaskFilter = {}): Promise<TaskRecord[]> {
    this.ensureOpen();
    const states = filter.state === undefined ? undefined : new Set(typeof filter.state === 'string' ? [filter.state] : filter.state);
    // A mistyped state ('complete') would otherwise match nothing, silently.
    for (const state of states ?? []) {
      if (!TASK_STATES.has(state)) {
        throw new InvalidArgumentError(`Unknown task state ${JSON.stringify(state)}: use ${[...TASK_STATES].join(', ')}.`);
      }
    }
    const limit = filter.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1) throw new InvalidArgumentError(`limit must be a positive integer, got ${String(limit)}.`);
    const agentId = filter.agent === undefined ? undefined : await this.repo.resolveAgent(filter.agent);
    await this.repo.discover(); // tinytown layout: tasks `tt` created
    return this.repo.listTasks(
      (t) =>
        (states === undefined || states.has(t.state)) &&
        (agentId === undefined || t.assignedTo === agentId) &&
        (filter.tag === undefined || t.tags.includes(filter.tag)),
      limit,
    );
  }

  /**
   * Resolves with the task's record once it is completed, failed or cancelled.
   *
   * @example
   * ```ts
   * const record = await town.waitForTask(task.id, { timeoutMs: 10 * 60_000 });
   * if (record.state === 'completed') console.log(record.result);
   * ```
   */
  async waitForTask(id: string, options?: WaitOptions): Promise<TaskRecord> {
    this.ensureOpen();
    checkId(id, 'task id');
    const wait = waitUntil(
      {
        reader: this.reader,
        closing: this.closing.signal,
        what: `task ${id} to end`,
        relevant: (event) => event.taskId === id && ENDS_TASK.has(event.type),
        types: ENDS_TASK,
        check: async () => {
          const task = await this.repo.getTask(id);
          return TERMINAL_STATES.has(task.state) ? task : undefined;
        },
      },
      options,
    );
    return this.untilClosed(wait);
  }

  /**
   * A handle on the task group `name` (Gastown's convoy): tasks across agents and the backlog,
   * counted together and awaited together. No Redis work: the group comes into being with its
   * first task (`group.assign`, `group.add`, or `group` in a {@link TaskInput}).
   *
   * @example
   * ```ts
   * const release = town.group('release-1.4');
   * await release.assign('backend', 'Implement auth endpoints');
   * await release.assign('frontend', 'Build the login page');
   * const { counts } = await release.wait({ timeoutMs: 30 * 60_000 });
   * ```
   */
  group(name: string): TaskGroup {
    this.ensureOpen();
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
      throw new InvalidNameError(`Invalid group name ${JSON.stringify(name)}: use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.`);
    }
    return new TaskGroup(this, name);
  }

  /**
   * Cancels a task. Queued, it leaves its queue; running, its process is stopped.
   *
   * @example
   * ```ts
   * await town.cancelTask(id, 'superseded by a new plan');
   * ```
   */
  async cancelTask(id: string, reason = 'cancelled'): Promise<TaskRecord> {
    this.ensureOpen();
    checkId(id, 'task id');
    await this.repo.settleTask(id, 'cancelled', reason);
    return this.repo.getTask(id);
  }

  /**
   * Completes a task from outside its worker; a worker still running it keeps this result.
   *
   * @example
   * ```ts
   * await town.completeTask(id, 'done by hand');
   * ```
   */
  async completeTask(id: string, result: string): Promise<TaskRecord> {
    this.ensureOpen();
    checkId(id, 'task id');
    await this.repo.settleTask(id, 'completed', String(result));
    return this.repo.getTask(id);
  }

  /**
   * Fails a task from outside its worker.
   *
   * @example
   * ```ts
   * await town.failTask(id, 'requirements changed');
   * ```
   */
  async failTask(id: string, error: string): Promise<TaskRecord> {
    this.ensureOpen();
    checkId(id, 'task id');
    await this.repo.settleTask(id, 'failed', String(error));
    return this.repo.getTask(id);
  }

  // ── messages ────────────────────────────────────────────────────────────────────────────

  /**
   * Sends a message to an agent (by reference) or to `'supervisor'` (your code's inbox).
   * Returns the message id.
   *
   * @example
   * ```ts
   * await town.send('backend', 'Use the v2 schema', { priority: 'high' });
   * await town.send('backend', 'What blocks you?', { type: 'query' }); // the answer comes to town.inbox()
   * ```
   */
  async send(to: string, text: string, options: SendOptions = {}): Promise<string> {
    this.ensureOpen();
    const draft = await this.prepareMessage(text, options);
    const recipient = to === 'supervisor' || to === SUPERVISOR_ID ? SUPERVISOR_ID : await this.repo.resolveAgent(to);
    return this.repo.send({ ...draft, to: recipient });
  }

  /**
   * Sends an informational message to every agent. Returns how many received it.
   *
   * @example
   * ```ts
   * await town.broadcast('Freeze: no merges until 18:00');
   * ```
   */
  async broadcast(text: string, options: Omit<SendOptions, 'type'> = {}): Promise<number> {
    this.ensureOpen();
    // Checked once, up front: a bad message must fail the call, not silently reach nobody.
    const draft = await this.prepareMessage(text, { ...options, type: 'info' });
    const ids = await this.repo.agentIds();
    const sent = await Promise.all(
      ids.map((id) =>
        this.repo.send({ ...draft, to: id }).catch((err: unknown) => {
          if (err instanceof AgentNotFoundError) return undefined; // removed since the listing
          throw err;
        }),
      ),
    );
    await this.repo.publishBroadcast(JSON.stringify({ text, at: nowIso() }));
    return sent.filter((id) => id !== undefined).length;
  }

  /** Validates a message and its options (naming what is wrong) and resolves its sender. */
  private async prepareMessage(
    text: unknown,
    options: SendOptions,
  ): Promise<{ from: string; type: NonNullable<SendOptions['type']>; text: string; priority: Priority; correlationId?: string }> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Send options must be an object.');
    const unknown = Object.keys(options).filter((k) => !SEND_OPTION_KEYS.has(k));
    if (unknown.length > 0) throw new InvalidArgumentError(`Unknown send option(s): ${unknown.join(', ')}.`);
    if (typeof text !== 'string') throw new InvalidArgumentError('A message must be a string.');
    this.checkSize(text, 'message');
    const type = options.type ?? 'info';
    if (!['task', 'query', 'info', 'ack'].includes(type)) {
      throw new InvalidArgumentError(`Unknown message type "${String(type)}": use task, query, info or ack.`);
    }
    const priority = options.priority ?? 'normal';
    if (!['low', 'normal', 'high', 'urgent'].includes(priority)) {
      throw new InvalidArgumentError(`Unknown priority "${String(priority)}": use low, normal, high or urgent.`);
    }
    const { correlationId } = options;
    // Stored as the wire's correlation_id, which readers expect to be a string.
    if (correlationId !== undefined && (typeof correlationId !== 'string' || correlationId.length === 0)) {
      throw new InvalidArgumentError('correlationId must be a non-empty string.');
    }
    // The Rust Tinytown reads correlation_id as a message id: anything else makes it drop the message.
    if (correlationId !== undefined && this.repo.tinytown && !UUID.test(correlationId)) {
      throw new InvalidArgumentError(`In the tinytown key layout correlationId must be a UUID (the Rust CLI reads it as a message id), got ${JSON.stringify(correlationId)}.`);
    }
    const from = options.from === undefined ? SUPERVISOR_ID : await this.repo.resolveAgent(options.from);
    return { from, type, text, priority, ...(correlationId !== undefined && { correlationId }) };
  }

  /**
   * Messages addressed to the supervisor (your code): answers to queries, reports from agents.
   *
   * @example
   * ```ts
   * for (const m of await town.inbox()) console.log(m.from, m.text);
   * ```
   */
  async inbox(): Promise<Message[]> {
    this.ensureOpen();
    return this.repo.inbox(SUPERVISOR_ID);
  }

  // ── events ──────────────────────────────────────────────────────────────────────────────

  /**
   * Events from the town's Redis stream as an async iterable: resumable from an event id, and
   * filterable. Ends when `signal` aborts or the town closes.
   *
   * @example
   * ```ts
   * for await (const event of town.events({ since: 'start', types: ['task.completed'] })) {
   *   console.log(event.taskId, event.at);
   * }
   * ```
   */
  events(options: EventsOptions = {}): AsyncIterable<TownEvent> {
    this.ensureOpen();
    const since = options.since ?? 'now';
    if (since !== 'start' && since !== 'now' && !/^\d+(-\d+)?$/.test(since)) {
      throw new InvalidArgumentError(`since must be 'start', 'now' or an event id like 1700000000000-0, got ${JSON.stringify(since)}.`);
    }
    for (const type of options.types ?? []) checkEventType(type);
    return this.iterate(since, options);
  }

  private async *iterate(since: string, options: EventsOptions): AsyncGenerator<TownEvent> {
    const agentId = options.agent === undefined ? undefined : await this.repo.resolveAgent(options.agent);
    const types = options.types === undefined ? undefined : new Set(options.types);
    const wanted = (e: TownEvent): boolean =>
      (types === undefined || types.has(e.type)) &&
      (agentId === undefined || e.agentId === agentId) &&
      (options.task === undefined || e.taskId === options.task);
    const after = /^\d/.test(since) ? (since.includes('-') ? since : `${since}-0`) : undefined;

    const live: TownEvent[] = [];
    let notify: (() => void) | undefined;
    const boundary = await this.reader.ensureStarted();
    const unsubscribe = this.reader.subscribe((e) => {
      live.push(e);
      notify?.();
    });
    const stop = (): void => notify?.();
    options.signal?.addEventListener('abort', stop);
    this.closing.signal.addEventListener('abort', stop);
    const ended = (): boolean => options.signal?.aborted === true || this.closing.signal.aborted;
    try {
      if (since !== 'now') {
        for await (const e of this.history(since === 'start' ? '-' : `(${after}`, boundary)) {
          if (ended()) return;
          if (wanted(e)) yield e;
        }
      }
      while (!ended()) {
        const e = live.shift();
        if (e === undefined) {
          await new Promise<void>((resolve) => (notify = resolve));
          notify = undefined;
          continue;
        }
        if ((after === undefined || compareIds(e.id, after) > 0) && wanted(e)) yield e;
      }
    } finally {
      unsubscribe();
      options.signal?.removeEventListener('abort', stop);
      this.closing.signal.removeEventListener('abort', stop);
    }
  }

  /** Events from `start` up to the reader's position, in pages. */
  private async *history(start: string, end: string): AsyncGenerator<TownEvent> {
    let cursor = start;
    for (;;) {
      const page = await this.repo.connections.command.xrange(this.repo.keys.events, cursor, end, 'COUNT', 500);
      for (const [id, fields] of page) {
        const event = parseEvent(id, fields);
        if (event) yield event;
      }
      if (page.length < 500) return;
      cursor = `(${page[page.length - 1]![0]}`;
    }
  }

  /**
   * Listens to live events of one type (or `'*'` for all, `'error'` for background faults such
   * as a lost Redis connection, which tinytown retries by itself).
   *
   * @example
   * ```ts
   * town.on('task.completed', (e) => console.log(`task ${e.taskId} done`));
   * town.on('error', (err) => console.warn('tinytown:', err));
   * ```
   */
  on<K extends TownEventType | '*' | 'error'>(
    type: K,
    listener: (TownEventMap & { error: (err: unknown) => void })[K],
  ): this {
    this.ensureOpen();
    if (type !== 'error' && type !== '*') checkEventType(type);
    this.emitter.on(type, listener as never);
    if (type !== 'error') this.bridge();
    return this;
  }

  /**
   * Removes a listener added with `on`.
   *
   * @example
   * ```ts
   * const log = (e: TownEvent) => console.log(e.type);
   * town.on('*', log);
   * town.off('*', log);
   * ```
   */
  off<K extends TownEventType | '*' | 'error'>(
    type: K,
    listener: (TownEventMap & { error: (err: unknown) => void })[K],
  ): this {
    this.emitter.off(type, listener as never);
    return this;
  }

  private bridge(): void {
    if (this.bridged) return;
    this.bridged = true;
    this.reader.subscribe((event) => {
      this.emitter.emit(event.type, event);
      this.emitter.emit('*', event);
    });
    this.reader.ensureStarted().catch((err: unknown) => this.report(err));
  }

  // ── lifecycle ───────────────────────────────────────────────────────────────────────────

  /**
   * Hands back the work of dead workers and expires old tasks now. It also runs by itself
   * every half lease in every process, one process per interval.
   *
   * @example
   * ```ts
   * const { reclaimed } = await town.recover();
   * ```
   */
  async recover(): Promise<RecoverResult> {
    this.ensureOpen();
    const { lost, expired } = await this.repo.sweep(this.settings.retentionMs, RETENTION_BATCH);
    return { reclaimed: lost, expired };
  }

  /**
   * Stops this process's workers (running tasks get `closeGraceMs` to finish, then go back to
   * their queue) and closes every connection; the process can exit right after. Idempotent.
   *
   * @example
   * ```ts
   * process.once('SIGTERM', () => void town.close());
   * ```
   */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  /**
   * Same as {@link Town.close}, for `await using town = await Town.connect()`.
   *
   * @example
   * ```ts
   * {
   *   await using town = await Town.connect('.');
   *   await town.spawnAgent('echo', { run: async (task) => task.description });
   * } // closed here, even when the block throws
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.sweeper);
    this.repo.connections.command.off('ready', this.onReconnect);
    this.closing.abort(new TownClosedError(`Town ${this.name} was closed.`));
    await Promise.all([...this.workers.values()].map((w) => w.stop({ graceMs: this.settings.closeGraceMs })));
    this.reader.stop();
    this.repo.connections.closeAll();
    this.emitter.removeAllListeners();
  }

  // ── used by Agent and Backlog ───────────────────────────────────────────────────────────

  /** @internal */
  async agentInfo(id: string): Promise<AgentInfo> {
    this.ensureOpen();
    return this.repo.getAgent(id);
  }

  /** @internal */
  async assignTo(agentId: string, input: string | TaskInput | Task): Promise<TaskRecord> {
    this.ensureOpen();
    return this.createTask(input, agentId);
  }

  /** @internal */
  async inboxOf(agentId: string): Promise<Message[]> {
    this.ensureOpen();
    return this.repo.inbox(agentId);
  }

  /** @internal */
  async controlAgent(agentId: string, action: 'pause' | 'resume' | 'drain' | 'stop', force = false): Promise<void> {
    this.ensureOpen();
    await this.repo.control(agentId, action, force);
    const local = this.workers.get(agentId);
    // The worker hears the change from the stream too; acting here makes a local stop immediate.
    if (action === 'stop' && local) {
      const stopping = local.stop({ force });
      if (force) await stopping;
    }
  }

  /** @internal */
  async restartAgent(agentId: string): Promise<void> {
    this.ensureOpen();
    const info = await this.repo.getAgent(agentId);
    const local = this.workers.get(agentId);
    if (local) await local.stop({ graceMs: this.settings.closeGraceMs });
    const work = this.workOptions.get(agentId) ?? { cli: registeredCli(info) };
    await this.startWorker(new Agent(this, agentId, info.name), work, this.executorFor(info.name, work, info.role));
  }

  /** @internal */
  async removeAgent(agentId: string): Promise<void> {
    this.ensureOpen();
    const info = await this.repo.getAgent(agentId);
    // Refused before anything changes: uncommitted work in its worktree is never thrown away.
    if (info.worktree !== undefined) {
      const changes = await worktreeChanges(info.worktree);
      if (changes.length > 0) throw dirtyError(info.name, info.worktree, changes, false);
    }
    await this.workers.get(agentId)?.stop({ force: true });
    await this.repo.removeAgent(agentId);
    this.workOptions.delete(agentId);
    if (info.worktree !== undefined) await removeWorktree(this.root, info.name, info.worktree);
  }

  /** @internal */
  async waitForAgentIdle(agentId: string, name: string, options?: WaitOptions): Promise<void> {
    this.ensureOpen();
    checkWaitOptions(options);
    const wait = waitUntil(
      {
        reader: this.reader,
        closing: this.closing.signal,
        what: `agent ${name} to be idle`,
        agentId,
        relevant: (event) => event.agentId === agentId && MAY_IDLE_AGENT.has(event.type),
        // Its next task started: not idle until that one ends, which is itself an event.
        busy: (event) => event.type === 'task.started' && event.agentId === agentId,
        types: IDLE_WAIT_EVENTS,
        check: async () => {
          const probe = await this.repo.idleProbe(agentId);
          if (probe.state === '') throw new AgentNotFoundError(`Agent ${name} was removed while waiting for it.`);
          if (probe.state === 'error') {
            throw new AgentErrorStateError(`Agent ${name} is in error: ${probe.error || 'unknown cause'}. Restart it with agent.restart().`);
          }
          return probe.currentTask === '' && probe.queued === 0 && probe.claimed === 0 ? true : undefined;
        },
      },
      options,
    );
    await this.untilClosed(wait);
  }

  /** @internal */
  async addToGroup(name: string, taskIds: unknown[]): Promise<number> {
    this.ensureOpen();
    if (taskIds.length === 0) throw new InvalidArgumentError('group.add() needs at least one task (an id or a record).');
    for (const id of taskIds) checkId(id, 'task id');
    return this.repo.groupAdd(name, [...new Set(taskIds as string[])]);
  }

  /** @internal */
  async cancelGroup(name: string, reason: string): Promise<number> {
    this.ensureOpen();
    this.checkSize(reason, 'cancel reason');
    return this.repo.groupCancel(name, reason);
  }

  /** @internal */
  async groupProgress(name: string): Promise<GroupProgress> {
    this.ensureOpen();
    const { total, counts } = await this.repo.groupProgress(name);
    const done = counts.completed + counts.failed + counts.cancelled;
    return { name, total, counts, done, complete: done === total };
  }

  /** @internal */
  async groupTasks(name: string): Promise<TaskRecord[]> {
    this.ensureOpen();
    return this.repo.groupTasks(name);
  }

  /** @internal */
  async waitForGroup(name: string, options?: WaitOptions): Promise<GroupProgress> {
    this.ensureOpen();
    checkWaitOptions(options);
    const wait = waitUntil(
      {
        reader: this.reader,
        closing: this.closing.signal,
        what: `group ${name} to complete`,
        // Announced by the step that ends its last task; nothing else can complete a group.
        relevant: (event) => event.type === 'group.completed' && event.data.group === name,
        check: async () => {
          const progress = await this.groupProgress(name);
          return progress.complete ? progress : undefined;
        },
      },
      options,
    );
    return this.untilClosed(wait);
  }

  /** @internal */
  async createBacklogTask(input: string | TaskInput | Task): Promise<TaskRecord> {
    this.ensureOpen();
    return this.createTask(input, undefined);
  }

  /** @internal */
  async backlogTasks(): Promise<TaskRecord[]> {
    this.ensureOpen();
    const ids = await this.repo.backlogIds();
    const tasks = await Promise.all(ids.map((id) => this.repo.getTask(id).catch(() => undefined)));
    return tasks.filter((t): t is TaskRecord => t !== undefined);
  }

  /** @internal */
  async claimBacklogTask(taskId: string, agentRef: string): Promise<TaskRecord> {
    this.ensureOpen();
    checkId(taskId, 'task id');
    const agentId = await this.repo.resolveAgent(agentRef);
    await this.repo.claimBacklog(taskId, agentId);
    return this.repo.getTask(taskId);
  }

  /** @internal */
  async removeBacklogTask(taskId: string, reason = 'removed from the backlog'): Promise<void> {
    this.ensureOpen();
    checkId(taskId, 'task id');
    await this.repo.removeFromBacklog(taskId, reason);
  }

  // ── internals ───────────────────────────────────────────────────────────────────────────

  private async createTask(input: string | TaskInput | Task, agentId: string | undefined): Promise<TaskRecord> {
    const task = parseTaskInput(input);
    this.checkSize(task.description, 'task description');
    const { id, at: created, maxAttempts, state, error } = await this.repo.createTask(task, agentId);
    return {
      id,
      description: task.description,
      state,
      ...(agentId !== undefined && state === 'assigned' && { assignedTo: agentId }),
      createdAt: created,
      updatedAt: created,
      ...(TERMINAL_STATES.has(state) && { completedAt: created }),
      ...(error !== undefined && { error }),
      ...(task.parentId !== undefined && { parentId: task.parentId }),
      tags: [...(task.tags ?? [])],
      attempts: 0,
      maxAttempts,
      priority: task.priority ?? 'normal',
      ...(task.timeoutMs !== undefined && { timeoutMs: task.timeoutMs }),
      ...(task.group !== undefined && { group: task.group }),
      ...(task.dependsOn !== undefined && task.dependsOn.length > 0 && { dependsOn: [...task.dependsOn] }),
      ...(task.onDependencyFailure === 'run' && { onDependencyFailure: 'run' as const }),
      ...(task.maxCostUsd !== undefined && { maxCostUsd: task.maxCostUsd }),
      ...(task.maxTokens !== undefined && { maxTokens: task.maxTokens }),
    };
  }

  private executorFor(name: string, options: AgentWorkOptions, role: string | undefined): Executor {
    if (options.run !== undefined) return handlerExecutor(options.run);
    if (options.cli === undefined) {
      throw new InvalidArgumentError(`Agent ${name} needs a cli (preset, custom name or { command }) or a run handler.`);
    }
    const definition = resolveCli(options.cli, this.config.clis);
    const byRole = this.config.tools ?? {};
    const grants = grantedTools(options.tools ?? (role !== undefined && Object.hasOwn(byRole, role) ? byRole[role] : byRole['*']));
    return cliExecutor({
      definition,
      ...(grants.length > 0 && { tools: toolHost({ agentName: name, grants, definition, repo: this.repo, report: (err) => this.report(err) }) }),
      runner: options.runner ?? defaultRunner,
      root: this.root,
      ...(options.instructions !== undefined && { instructions: options.instructions }),
      ...(options.cwd !== undefined && { cwd: resolve(this.root, options.cwd) }),
      ...(options.env !== undefined && { env: options.env }),
      ...(options.stallMs !== undefined && { stallMs: options.stallMs }),
      ...(options.continueSession !== undefined && { continueSession: options.continueSession }),
    });
  }

  /**
   * Waits for this process's worker of a stopped (or errored, or removed) agent named `name` to
   * finish releasing. Reviving the name before that lets the old worker's release mark the
   * revived agent stopped again.
   */
  private async localWorkerReleased(name: string): Promise<void> {
    for (const worker of [...this.workers.values()]) {
      if (worker.agent.name !== name) continue;
      const state = await this.repo.getAgent(worker.agent.id).then(
        (info) => info.state,
        () => undefined,
      );
      if (state === undefined || state === 'stopped' || state === 'error') await worker.done;
    }
  }

  private async startWorker(agent: Agent, options: AgentWorkOptions, executor: Executor): Promise<Worker> {
    const writes = await this.writeChannel();
    const worker = new Worker(
      {
        town: this,
        agent,
        repo: this.repo,
        connections: this.repo.connections,
        reader: this.reader,
        root: this.root,
        report: (err) => this.report(err),
        ...(writes && { writes }),
      },
      {
        executor,
        leaseMs: options.leaseMs ?? this.settings.leaseMs,
        claimBacklog: (options as AgentOptions).claimBacklog === true,
        retryDelayMs: options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS,
        ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
      },
    );
    await worker.start();
    this.workers.set(agent.id, worker);
    void worker.done.then(() => {
      if (this.workers.get(agent.id) === worker) this.workers.delete(agent.id);
    });
    return worker;
  }

  /** The workers' shared write connection, opened with the first worker (none when writes may not share one). */
  private writeChannel(): Promise<WriteChannel | undefined> {
    if (this.repo.replicated) return Promise.resolve(undefined);
    // A failed open is tried again by the next worker, not cached.
    this.writes ??= WriteChannel.open(this.repo.connections, this.repo, this.name).catch((err: unknown) => {
      this.writes = undefined;
      throw err;
    });
    return this.writes;
  }

  private async sweep(): Promise<void> {
    // Right after this process (re)connected, leases may look expired that live workers have
    // not had a chance to renew: a Redis restarted from its AOF brings every lease back expired
    // when it was down longer than the lease, and a worker may reconnect later than we did.
    // Give them a lease (and a second for their reconnect) first; other processes sweep meanwhile.
    // Not while disconnected either: a sweep queued now would run on reconnect, grace or not.
    if (this.repo.connections.command.status !== 'ready' || Date.now() - this.connectedAt < this.settings.leaseMs + 1_000) return;
    try {
      const interval = Math.max(50, Math.floor(this.settings.leaseMs / 2));
      if (await this.repo.takeSweepTurn(interval)) await this.repo.sweep(this.settings.retentionMs, RETENTION_BATCH);
    } catch (err) {
      this.report(err);
    }
  }

  private checkSize(text: string, what: string): void {
    const bytes = Buffer.byteLength(text, 'utf8');
    if (bytes > this.settings.maxDescriptionBytes) {
      throw new DescriptionTooLargeError(
        `The ${what} is ${bytes} bytes; the limit is ${this.settings.maxDescriptionBytes} (maxDescriptionBytes). Put large material in a file and reference its path.`,
      );
    }
  }

  /**
   * A wait that close() cut short rejects with TownClosedError, not with whatever the closed
   * connections made of its last read ("Connection is closed.").
   */
  private untilClosed<T>(wait: Promise<T>): Promise<T> {
    return wait.catch((err: unknown) => {
      if (this.closing.signal.aborted && !(err instanceof TinytownError)) throw this.closing.signal.reason;
      throw err;
    });
  }

  private report(err: unknown): void {
    if (this.closing.signal.aborted) return;
    this.emitter.emit('error', err);
  }

  /** Every Promise-returning method is `async`, so this (like argument checks) rejects rather than throws. */
  private ensureOpen(): void {
    if (this.closing.signal.aborted) throw new TownClosedError(`Town ${this.name} is closed; open it again with Town.connect().`);
  }
}

const SEND_OPTION_KEYS = new Set(['type', 'priority', 'from', 'correlationId']);

const TASK_STATES: ReadonlySet<TaskState> = new Set(['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled']);

/**
 * A Redis URL must parse and use a scheme we speak. Checked here because `new URL` throws a bare
 * TypeError that carries the whole URL, password included.
 */
function checkRedisUrl(url: string, source: string): void {
  let protocol: string;
  try {
    protocol = new URL(url).protocol;
  } catch {
    throw new ConfigInvalidError(`${source} is not a valid URL (${redact(url)}): use redis://[user:password@]host:port[/db], rediss://… or unix:///path/to/redis.sock.`);
  }
  if (protocol !== 'redis:' && protocol !== 'rediss:' && protocol !== 'unix:') {
    throw new ConfigInvalidError(`${source} has the unsupported scheme "${protocol}" (${redact(url)}): use redis://, rediss:// or unix://.`);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The settings of a remote Redis given in `from` (the options, or tinytown.json's `redis`). */
function remoteSettings(from: RemoteRedisSettings): RemoteRedisSettings {
  return {
    ...(from.username !== undefined && { username: from.username }),
    ...(from.passwordEnv !== undefined && { passwordEnv: from.passwordEnv }),
    ...(from.tls !== undefined && { tls: from.tls }),
  };
}

/** `durability: 'replicated'` settings, checked against the rest of the options. */
function replicationOf(options: TownOptions, remote: boolean): WriteReplication | undefined {
  if (options.durability !== 'replicated') {
    if (options.replicas !== undefined || options.replicaTimeoutMs !== undefined) {
      throw new ConfigInvalidError("replicas and replicaTimeoutMs apply with durability: 'replicated' only.");
    }
    return undefined;
  }
  if (!remote) {
    throw new ConfigInvalidError(
      "durability 'replicated' needs a Redis with replicas (a primary managed by Sentinel, or your own with replicas), but none is configured and the managed local redis-server has no replica. Set options.redis, REDIS_URL or tinytown.json redis.url.",
    );
  }
  return { replicas: options.replicas ?? 1, timeoutMs: options.replicaTimeoutMs ?? DEFAULT_REPLICA_TIMEOUT_MS };
}

function clusterRefused(): ConfigInvalidError {
  return new ConfigInvalidError(
    "keyLayout 'tinytown' cannot run on a Redis Cluster: its keys (tt:<town>:…, as the Rust tt CLI names them) carry no hash tag, so a town's keys spread over slots where its multi-key scripts cannot run. Use a standalone Redis (or a single primary), or the default 'cluster' layout.",
  );
}

function checkEventType(type: string): void {
  if (!(TOWN_EVENT_TYPES as readonly string[]).includes(type)) {
    throw new InvalidArgumentError(`Unknown event type "${type}". Known: ${TOWN_EVENT_TYPES.join(', ')}.`);
  }
}

function checkId(id: unknown, what: string): void {
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) throw new InvalidArgumentError(`A ${what} must be a non-empty string.`);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
