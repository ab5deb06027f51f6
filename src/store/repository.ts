/**
 * The town's data access: every write is one Lua script (see `lua/`), every read is validated
 * by the codec. Callers above this layer never see a key name or a raw reply.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { AgentInfo } from '../agent.js';
import {
  AgentAmbiguousError,
  AgentExistsError,
  AgentNotFoundError,
  InvalidArgumentError,
  InvalidTransitionError,
  NotInBacklogError,
  ReplicationTimeoutError,
  TaskNotFoundError,
  WorkerActiveError,
} from '../errors.js';
import { decodeMessage, encodeMessage, type Message, type MessageType } from '../message.js';
import type { Priority, TaskInput, TaskRecord, TaskState, TaskUsage } from '../task.js';
import { nowIso, parseIso } from '../time.js';
import { AGENT_FIELDS, decodeAgent, decodeTask, decodeUsageTotals, toFields } from './codec.js';
import { isClusterClient, type Connections, type RedisClient } from './connection.js';
import { Keys, SUPERVISOR_ID, type KeyLayout } from './keys.js';
import { batchScript, flushScriptBatches } from './script-batch.js';
import { defineScripts, isBatched, pipelineScript, READ_ONLY_SCRIPTS, runScript, runScriptAndWait, STATUS, type ScriptName, type ScriptReply } from './scripts.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What an agent's registration needs. */
export interface AgentRegistration {
  name: string;
  cli: string;
  role?: string;
  nickname?: string;
  tags: readonly string[];
  claimBacklog: boolean;
  /** Default attempts of tasks assigned to this agent. */
  maxAttempts?: number;
  /** `starting` when a worker follows, `cold` when none is started. */
  initialState: 'starting' | 'cold';
  /** The agent's budget. */
  maxCostUsd?: number;
  maxTokens?: number;
  /** The git worktree it works in. */
  worktree?: string;
}

/** A budget: cost in US dollars, tokens (input + output). */
export interface Budget {
  maxCostUsd?: number;
  maxTokens?: number;
}

/** The outcome of the start script. */
export type StartResult =
  | { kind: 'task'; fence: string; task: TaskRecord; notes: string[]; agentSession?: string; budgetUsd?: number }
  | { kind: 'held'; state: string }
  | { kind: 'discarded' }
  | { kind: 'note' }
  | { kind: 'lost' };

/** The outcome of the finish script. */
export type FinishResult = 'recorded' | 'stale' | 'superseded' | 'missing';

/** What waitForIdle reads. */
export interface IdleProbe {
  state: string;
  currentTask: string;
  queued: number;
  claimed: number;
  error: string;
}

/** What a heartbeat learned: the lease is renewed, lost, or renewed with a stop requested. */
export type HeartbeatResult = 'alive' | 'lost' | 'stop';

/**
 * `durability: 'replicated'`: each state-changing script is followed, in the same round trip,
 * by `WAIT <replicas> <timeoutMs>`.
 */
export interface WriteReplication {
  replicas: number;
  timeoutMs: number;
}

/**
 * Writes a worker (or a sweeper, or discovery) makes for itself. With `durability:
 * 'replicated'`, one that no replica confirmed in time is reported, not thrown: the worker
 * carries on. Every other write is a caller's, and rejects. (Heartbeats do not wait at all: a
 * lost renewal only shortens a lease.)
 */
const WORKER_WRITES: ReadonlySet<ScriptName> = new Set<ScriptName>([
  'registerWorker',
  'releaseWorker',
  'start',
  'finish',
  'retry',
  'sweep',
  'backlogAutoClaim',
  'adopt',
]);

/** The writes a worker may send on its own connection (see {@link Repository.prepareWorkerConnection}). */
const OWN_CONNECTION_WRITES: readonly ScriptName[] = ['start', 'finish', 'retry'];

/** Agents and tasks listed per adopt script run. */
const ADOPT_BATCH = 500;

const TERMINAL: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled']);

/** Raw material for `town.status()`. */
export interface StatusSnapshot {
  counts: Record<string, number>;
  backlog: number;
  agents: { info: AgentInfo; queued: number }[];
  usage?: TaskUsage;
}

export class Repository {
  readonly keys: Keys;
  /** The town's budget, checked by every start of this process's workers. */
  townBudget: Budget = {};

  /**
   * Where a worker's write that no replica confirmed is reported (`durability: 'replicated'`):
   * the worker carries on, see {@link WriteReplication}.
   */
  onUnconfirmed: (err: ReplicationTimeoutError) => void = () => undefined;

  constructor(
    readonly connections: Connections,
    prefix: string,
    private readonly eventsMaxLen: number,
    layout: KeyLayout = 'cluster',
    /** `durability: 'replicated'`: how many replicas must confirm each write, and how long to wait. */
    private readonly replication?: WriteReplication,
  ) {
    this.keys = new Keys(prefix, layout);
  }

  /** Whether this town uses the Rust Tinytown's key layout (and so may have foreign writers). */
  get tinytown(): boolean {
    return this.keys.layout === 'tinytown';
  }

  private get redis() {
    return this.connections.command;
  }

  private run(name: ScriptName, ...args: (string | number)[]): Promise<ScriptReply> {
    return this.runAt(new Date(), name, ...args);
  }

  /** Runs a script with the common ARGV head; `now` becomes the records' timestamps. */
  private runAt(now: Date, name: ScriptName, ...args: (string | number)[]): Promise<ScriptReply> {
    return this.runOn(this.redis, now, name, args);
  }

  /** {@link runAt} on a given client: the command connection, or a worker's own. */
  private runOn(client: Redis, now: Date, name: ScriptName, args: (string | number)[]): Promise<ScriptReply> {
    const head = [this.keys.prefix, nowIso(now), now.getTime(), this.eventsMaxLen];
    const replicated = this.replication !== undefined && !READ_ONLY_SCRIPTS.has(name) && name !== 'heartbeat';
    // (each replicated write waits for its own WAIT: not gathered)
    if (!replicated && isBatched(name)) return batchScript(client, name, this.keys.events, head, args);
    flushScriptBatches(client);
    if (!replicated) return runScript(client, name, this.keys.events, head, args);
    return this.runReplicated(client, name, head, args, this.replication!);
  }

  /**
   * Readies a worker's own connection for its start, finish and retry writes, which it may then
   * pass as `via`: a duplicate of the command connection carries none of its scripts.
   */
  prepareWorkerConnection(client: Redis): void {
    defineScripts(client, OWN_CONNECTION_WRITES);
  }

  /**
   * A write and its `WAIT` in one round trip (see `runScriptAndWait`). Unconfirmed, a caller's
   * write rejects with ReplicationTimeoutError; a worker's write is taken as done (it stands on
   * the primary) and reported, as its loss in a failover is outlived by the lease and fencing
   * machinery: a lost start or finish means the task runs again (at-least-once).
   */
  private async runReplicated(
    client: Redis,
    name: ScriptName,
    head: (string | number)[],
    args: (string | number)[],
    { replicas, timeoutMs }: WriteReplication,
  ): Promise<ScriptReply> {
    const { reply, confirmed } = await runScriptAndWait(client, name, this.keys.events, head, args, replicas, timeoutMs);
    if (confirmed >= replicas) return reply;
    const err = new ReplicationTimeoutError(
      `${confirmed} of ${replicas} replica(s) confirmed the ${name} write within ${timeoutMs} ms (replicaTimeoutMs). It is applied on the primary and survives unless the primary fails before a replica copies it; it was not retried. Check the replicas (INFO replication: connected_slaves) — durability 'replicated' needs ${replicas} connected.`,
    );
    if (!WORKER_WRITES.has(name)) throw err;
    this.onUnconfirmed(err);
    return reply;
  }

  // ── agents ──────────────────────────────────────────────────────────────────────────────

  /** Registers (or revives) an agent; returns its id. */
  async spawnAgent(reg: AgentRegistration): Promise<{ id: string; revived: boolean }> {
    const [status, id, state] = await this.run(
      'spawn',
      randomUUID(),
      reg.name,
      reg.cli,
      reg.role ?? '',
      reg.nickname ?? '',
      JSON.stringify(reg.tags),
      reg.claimBacklog ? '1' : '0',
      reg.initialState,
      reg.maxAttempts ?? '',
      reg.maxCostUsd ?? '',
      reg.maxTokens ?? '',
      reg.worktree ?? '',
    );
    if (status === STATUS.AGENT_EXISTS) {
      throw new AgentExistsError(
        `An agent named "${reg.name}" is already live (state ${String(state)}). Pick another name, stop or remove it first, or attach to it with town.runWorker("${reg.name}").`,
      );
    }
    return { id: String(id), revived: status === 1 };
  }

  /** Attaches a worker; returns the agent's state and the id of the newest event at that moment. */
  async registerWorker(agentId: string, workerId: string, leaseMs: number): Promise<{ state: string; eventId: string }> {
    const [status, detail, eventId] = await this.run('registerWorker', agentId, workerId, leaseMs);
    if (status === STATUS.AGENT_NOT_FOUND) throw this.agentGone(agentId);
    if (status === STATUS.WORKER_ACTIVE) {
      throw new WorkerActiveError(
        `Agent ${agentId} already has a live worker (${String(detail)}). Stop it first, or wait for its lease to expire if its process died.`,
      );
    }
    return { state: String(detail), eventId: String(eventId ?? '0-0') };
  }

  async heartbeat(workerId: string, agentId: string, leaseMs: number): Promise<HeartbeatResult> {
    const [status] = await this.run('heartbeat', workerId, agentId, leaseMs);
    return status === 1 ? 'alive' : status === 2 ? 'stop' : 'lost';
  }

  async releaseWorker(workerId: string, agentId: string, finalState: '' | 'stopped', reason: string): Promise<void> {
    await this.run('releaseWorker', workerId, agentId, finalState, reason);
  }

  async control(agentId: string, action: 'pause' | 'resume' | 'drain' | 'stop', force = false): Promise<string> {
    const [status, state] = await this.run('control', agentId, action, force ? '1' : '0');
    if (status === STATUS.AGENT_NOT_FOUND) throw this.agentGone(agentId);
    if (status === STATUS.INVALID_TRANSITION) {
      throw new InvalidTransitionError(`Cannot ${action} agent ${agentId} in state ${String(state)}.`);
    }
    return String(state);
  }

  async removeAgent(agentId: string): Promise<number> {
    const [status, detail] = await this.run('removeAgent', agentId);
    if (status === STATUS.AGENT_NOT_FOUND) throw this.agentGone(agentId);
    if (status === STATUS.WORKER_ACTIVE) {
      throw new WorkerActiveError(
        `Agent ${agentId} has a live worker (${String(detail)}) in another process. Stop the agent first (agent.stop()), then remove it.`,
      );
    }
    return Number(detail);
  }

  async getAgent(agentId: string): Promise<AgentInfo> {
    const key = this.keys.agent(agentId);
    const fields = toFields(await this.redis.hgetall(key));
    if (Object.keys(fields).length === 0) throw this.agentGone(agentId);
    return decodeAgent(key, fields);
  }

  async listAgents(): Promise<AgentInfo[]> {
    const ids = await this.redis.smembers(this.keys.agents);
    const replies = await Promise.all(ids.map((id) => this.redis.hgetall(this.keys.agent(id))));
    const agents: AgentInfo[] = [];
    replies.forEach((reply, i) => {
      const fields = toFields(reply);
      if (Object.keys(fields).length > 0) agents.push(decodeAgent(this.keys.agent(ids[i]!), fields));
    });
    return agents.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.name.localeCompare(b.name));
  }

  /**
   * Finds an agent by name, id, short id (leading characters of the id) or nickname. In the
   * tinytown layout a miss looks again after listing agents another writer registered.
   */
  async resolveAgent(ref: string): Promise<string> {
    try {
      return await this.lookupAgent(ref);
    } catch (err) {
      if (!this.tinytown || !(err instanceof AgentNotFoundError) || (await this.discover()).agents === 0) throw err;
      return this.lookupAgent(ref);
    }
  }

  private async lookupAgent(ref: string): Promise<string> {
    const byName = await this.redis.hget(this.keys.names, ref);
    if (byName) return byName;
    if (UUID.test(ref)) {
      if (await this.redis.exists(this.keys.agent(ref.toLowerCase()))) return ref.toLowerCase();
      throw this.notFound(ref);
    }
    const ids = await this.redis.smembers(this.keys.agents);
    const lower = ref.toLowerCase();
    const byShortId = /^[0-9a-f]{4,}$/.test(lower) ? ids.filter((id) => id.startsWith(lower)) : [];
    if (byShortId.length === 1) return byShortId[0]!;
    if (byShortId.length > 1) throw this.ambiguous(ref, byShortId);
    const nicknames = await Promise.all(ids.map((id) => this.redis.hget(this.keys.agent(id), 'nickname')));
    const byNickname = ids.filter((_, i) => nicknames[i] === ref);
    if (byNickname.length === 1) return byNickname[0]!;
    if (byNickname.length > 1) throw this.ambiguous(ref, byNickname);
    throw this.notFound(ref);
  }

  async idleProbe(agentId: string): Promise<IdleProbe> {
    const [state, currentTask, queued, claimed, error] = await this.run('idle', agentId);
    return {
      state: String(state),
      currentTask: String(currentTask),
      queued: Number(queued),
      claimed: Number(claimed),
      error: String(error),
    };
  }

  async status(): Promise<StatusSnapshot> {
    const [rawCounts, backlog, rawAgents, rawUsage] = (await this.run('status', ...AGENT_FIELDS)) as unknown as [
      unknown,
      number,
      string,
      unknown,
    ];
    const counts: Record<string, number> = {};
    for (const [state, n] of Object.entries(toFields(rawCounts))) counts[state] = Number(n);
    const agents = (JSON.parse(rawAgents) as [string, (string | false)[], number][]).map(([id, values, queued]) => {
      const fields: Record<string, string> = {};
      for (let i = 0; i < AGENT_FIELDS.length; i++) if (typeof values[i] === 'string') fields[AGENT_FIELDS[i]!] = values[i] as string;
      return { info: decodeAgent(this.keys.agent(id), fields), queued: Number(queued) };
    });
    const usage = decodeUsageTotals(toFields(rawUsage));
    return { counts, backlog: Number(backlog), agents, ...(usage && { usage }) };
  }

  // ── tasks ───────────────────────────────────────────────────────────────────────────────

  /** Creates a task on an agent's inbox (or the backlog when `agentId` is undefined). */
  async createTask(
    input: TaskInput,
    agentId: string | undefined,
    from = SUPERVISOR_ID,
  ): Promise<{ id: string; at: Date; maxAttempts: number; state: TaskState; error?: string }> {
    const taskId = randomUUID();
    const at = new Date();
    const priority: Priority = input.priority ?? 'normal';
    const message =
      agentId === undefined
        ? ''
        : encodeMessage({ from, to: agentId, type: 'task_assign', taskId, priority }).json;
    const [status, maxAttempts, state, error] = await this.runAt(
      at,
      'assign',
      taskId,
      agentId ?? '',
      input.description,
      JSON.stringify(input.tags ?? []),
      priority,
      input.maxAttempts ?? '',
      input.timeoutMs ?? '',
      input.parentId ?? '',
      message,
      input.group ?? '',
      input.dependsOn !== undefined && input.dependsOn.length > 0 ? JSON.stringify(input.dependsOn) : '',
      input.onDependencyFailure === 'run' ? 'run' : '',
      input.maxCostUsd ?? '',
      input.maxTokens ?? '',
    );
    if (status === STATUS.AGENT_NOT_FOUND) throw this.agentGone(agentId ?? '');
    if (status === STATUS.INVALID_DEPENDENCY) {
      throw new InvalidArgumentError(
        state === 'self'
          ? `A task cannot depend on itself (${String(maxAttempts)}).`
          : `dependsOn names ${String(maxAttempts)}, which is no task of this town: a dependency must exist when the task is created (it may have expired after the retention period).`,
      );
    }
    return {
      id: taskId,
      at,
      maxAttempts: Number(maxAttempts),
      state: String(state) as TaskState,
      ...(typeof error === 'string' && error !== '' && { error }),
    };
  }

  async getTask(taskId: string): Promise<TaskRecord> {
    const key = this.keys.task(taskId);
    const fields = toFields(await this.redis.hgetall(key));
    if (Object.keys(fields).length === 0) {
      throw new TaskNotFoundError(`No task ${taskId} in this town (it may have expired after the retention period).`);
    }
    return decodeTask(key, fields);
  }

  /** Reads tasks newest first, keeping those `keep` accepts, up to `limit`. */
  async listTasks(keep: (task: TaskRecord) => boolean, limit: number): Promise<TaskRecord[]> {
    const out: TaskRecord[] = [];
    const page = Math.max(limit, 100);
    for (let offset = 0; out.length < limit; offset += page) {
      const ids = await this.redis.zrevrange(this.keys.tasks, offset, offset + page - 1);
      if (ids.length === 0) break;
      const replies = await Promise.all(ids.map((id) => this.redis.hgetall(this.keys.task(id))));
      replies.forEach((reply, i) => {
        const fields = toFields(reply);
        if (Object.keys(fields).length === 0 || out.length >= limit) return;
        const task = decodeTask(this.keys.task(ids[i]!), fields);
        if (keep(task)) out.push(task);
      });
    }
    return out;
  }

  async settleTask(taskId: string, outcome: 'cancelled' | 'completed' | 'failed', text: string): Promise<TaskState> {
    const [status, state] = await this.run('settle', taskId, outcome, text);
    if (status === STATUS.TASK_NOT_FOUND) throw new TaskNotFoundError(`No task ${taskId} in this town.`);
    if (status === STATUS.INVALID_TRANSITION) {
      throw new InvalidTransitionError(`Task ${taskId} is already ${String(state)}; it cannot become ${outcome}.`);
    }
    return state as TaskState;
  }

  // ── an agent's own actions (town tools its worker serves), fenced by its run ────────────

  /** The agent completes or fails its running task; see settle-fenced.lua. */
  async settleFenced(agentId: string, taskId: string, fence: string, outcome: 'completed' | 'failed', text: string): Promise<void> {
    const [status, state] = await this.run('settleFenced', agentId, taskId, fence, outcome, text, randomUUID());
    if (status === STATUS.TASK_NOT_FOUND) throw new TaskNotFoundError(`No task ${taskId} in this town.`);
    if (status === STATUS.STALE_FENCE) {
      throw new InvalidTransitionError(
        `Task ${taskId} is no longer this agent's current run (state ${String(state)}): it was handed back, reclaimed or reassigned, so its outcome is not the agent's to record.`,
      );
    }
    if (status === STATUS.INVALID_TRANSITION) {
      throw new InvalidTransitionError(`Task ${taskId} is already ${String(state)}; it cannot become ${outcome}.`);
    }
  }

  /** A `task.progress` event for the agent's running task; see progress.lua. */
  async reportProgress(agentId: string, taskId: string, fence: string, message: string, percent?: number): Promise<void> {
    const [status, state] = await this.run('progress', agentId, taskId, fence, message, percent ?? '');
    if (status === STATUS.TASK_NOT_FOUND) throw new TaskNotFoundError(`No task ${taskId} in this town.`);
    if (status === STATUS.STALE_FENCE) {
      throw new InvalidTransitionError(`Task ${taskId} is no longer this agent's current run (state ${String(state)}): progress is not recorded.`);
    }
  }

  /** Notes (info messages, acks) stored for an agent's next prompt, oldest first. */
  async notes(agentId: string): Promise<Message[]> {
    const raw = await this.redis.lrange(this.keys.notes(agentId), 0, -1);
    return raw.map(decodeMessage).filter((m): m is Message => m !== undefined);
  }

  // ── worker transitions ──────────────────────────────────────────────────────────────────

  /** `via`: the worker's own connection (see {@link prepareWorkerConnection}); default the command connection. */
  async start(workerId: string, agentId: string, entry: string, maxNotes: number, via: Redis = this.redis): Promise<StartResult> {
    const { maxCostUsd, maxTokens } = this.townBudget;
    return this.decodeStart(await this.runOn(via, new Date(), 'start', [workerId, agentId, entry, maxNotes, maxCostUsd ?? '', maxTokens ?? '']));
  }

  /**
   * Whether writes wait for replicas (`durability: 'replicated'`): each is followed by a WAIT on
   * its own connection. Then a worker neither sends its start behind its BLMOVE
   * ({@link claimAndStart}: the start must be followed by its WAIT) nor shares a write connection
   * with other workers (a WAIT blocks its connection until replicas confirm, and would hold every
   * other worker's write behind it).
   */
  get replicated(): boolean {
    return this.replication !== undefined;
  }

  /**
   * The worker's BLMOVE and the start of what it moves, sent together on the worker's own
   * connection (prepared by {@link prepareWorkerConnection}): Redis runs the start the moment
   * the BLMOVE returns, so an idle agent's task starts one round trip after its assign, where
   * BLMOVE-then-start took two. `undefined` when the BLMOVE timed out. Rejects when either part
   * failed: the entry may then be in the processing list, started or not, and the worker resyncs
   * from there (start is idempotent).
   */
  async claimAndStart(conn: Redis, workerId: string, agentId: string, blockSeconds: number, maxNotes: number): Promise<{ entry: string; started: StartResult } | undefined> {
    const { maxCostUsd, maxTokens } = this.townBudget;
    const pipeline = conn.pipeline();
    pipeline.blmove(this.keys.inbox(agentId), this.keys.processing(workerId), 'LEFT', 'RIGHT', blockSeconds);
    // '' for now: the start runs when the BLMOVE returns, so it takes the server's clock then.
    const head = [this.keys.prefix, '', '', this.eventsMaxLen];
    pipelineScript(pipeline, 'start', this.keys.events, head, [workerId, agentId, '', maxNotes, maxCostUsd ?? '', maxTokens ?? '']);
    const [moved, start] = (await pipeline.exec()) ?? [];
    if (moved?.[0]) throw moved[0];
    if (start === undefined) throw new Error('start: no reply in its pipeline');
    if (start[0]) throw start[0];
    const [entry, reply] = start[1] as [string, unknown[]?];
    if (entry === '' || reply === undefined) return undefined;
    return { entry, started: this.decodeStart(reply) };
  }

  private decodeStart(reply: readonly unknown[]): StartResult {
    switch (reply[0]) {
      case 1: {
        const key = this.keys.task('');
        const fields = toFields(reply[2]);
        return {
          kind: 'task',
          fence: String(reply[1]),
          task: decodeTask(key + (fields.id ?? ''), fields),
          notes: (reply[3] as string[]) ?? [],
          ...(reply[4] ? { agentSession: String(reply[4]) } : {}),
          ...(reply[5] && Number(reply[5]) > 0 ? { budgetUsd: Number(reply[5]) } : {}),
        };
      }
      case 2:
        return { kind: 'held', state: String(reply[1]) };
      case 3:
        return { kind: 'discarded' };
      case 4:
        return { kind: 'note' };
      default:
        return { kind: 'lost' };
    }
  }

  async finish(args: {
    workerId: string;
    agentId: string;
    taskId: string;
    fence: string;
    entry: string;
    outcome: 'completed' | 'failed';
    text: string;
    usage?: TaskUsage;
    sessionId?: string;
    notesUsed: number;
    /** Start the agent's next queued task in the same step (up to this many notes with it). */
    fetchNext?: { maxNotes: number };
  }, via: Redis = this.redis): Promise<{ result: FinishResult; next?: { entry: string; started: StartResult & { kind: 'task' } } }> {
    const [status, , next] = await this.runOn(via, new Date(), 'finish', [
      args.workerId,
      args.agentId,
      args.taskId,
      args.fence,
      args.entry,
      args.outcome,
      args.text,
      args.usage ? JSON.stringify(args.usage) : '',
      args.notesUsed,
      randomUUID(),
      args.sessionId ?? '',
      randomUUID(),
      args.fetchNext ? '1' : '0',
      args.fetchNext?.maxNotes ?? 0,
      this.townBudget.maxCostUsd ?? '',
      this.townBudget.maxTokens ?? '',
    ]);
    const result: FinishResult =
      status === STATUS.STALE_FENCE
        ? 'stale'
        : status === STATUS.SUPERSEDED
          ? 'superseded'
          : status === STATUS.TASK_NOT_FOUND
            ? 'missing'
            : 'recorded';
    if (!Array.isArray(next)) return { result };
    const started = this.decodeStart(next);
    if (started.kind !== 'task') return { result };
    return { result, next: { entry: String(next[next.length - 1]), started } };
  }

  /**
   * Records a failed run that will be retried in place (same claim); returns the new attempt
   * count, or why not to retry.
   */
  async retryRun(args: {
    workerId: string;
    agentId: string;
    taskId: string;
    fence: string;
    /** The attempt that failed. */
    attempt: number;
    error: string;
    usage?: TaskUsage;
  }, via: Redis = this.redis): Promise<{ attempts: number; budgetUsd?: number } | { stop: FinishResult } | { budget: string }> {
    const [status, detail, left] = await this.runOn(via, new Date(), 'retry', [
      args.workerId,
      args.agentId,
      args.taskId,
      args.fence,
      args.error,
      args.usage ? JSON.stringify(args.usage) : '',
      args.attempt,
      this.townBudget.maxCostUsd ?? '',
      this.townBudget.maxTokens ?? '',
    ]);
    if (status === STATUS.STALE_FENCE) return { stop: 'stale' };
    if (status === STATUS.SUPERSEDED) return { stop: 'superseded' };
    if (status === STATUS.TASK_NOT_FOUND) return { stop: 'missing' };
    if (status === 2) return { budget: String(detail) };
    return { attempts: Number(detail), ...(left && Number(left) > 0 ? { budgetUsd: Number(left) } : {}) };
  }

  async sweep(retentionMs: number, batch: number): Promise<{ lost: number; expired: number }> {
    const [lost, expired] = await this.run('sweep', retentionMs, batch);
    return { lost: Number(lost), expired: Number(expired) };
  }

  /** One sweep per interval per town, whichever process gets there first. */
  async takeSweepTurn(ms: number): Promise<boolean> {
    return (await this.redis.set(this.keys.sweepLock, String(process.pid), 'PX', ms, 'NX')) === 'OK';
  }

  // ── task groups ─────────────────────────────────────────────────────────────────────────

  /** Adds existing tasks to a group; returns how many joined. */
  async groupAdd(name: string, taskIds: readonly string[]): Promise<number> {
    const [status, detail, other] = await this.run('groupAdd', name, JSON.stringify(taskIds));
    if (status === STATUS.TASK_NOT_FOUND) throw new TaskNotFoundError(`No task ${String(detail)} in this town: nothing was added to group ${name}.`);
    if (status === STATUS.GROUP_CONFLICT) {
      throw new InvalidArgumentError(`Task ${String(detail)} belongs to group ${String(other)} already (a task is in one group at most): nothing was added to group ${name}.`);
    }
    return Number(detail);
  }

  /** Cancels every task of a group not over yet, in one step; returns how many that was. */
  async groupCancel(name: string, reason: string): Promise<number> {
    const [ended] = await this.run('groupCancel', name, reason);
    return Number(ended);
  }

  /** A group's tasks counted by state, in one round trip. */
  async groupProgress(name: string): Promise<{ total: number; counts: Record<TaskState, number> }> {
    const reply = (await this.run('groupProgress', name)) as unknown as number[];
    const [total = 0, pending = 0, assigned = 0, running = 0, completed = 0, failed = 0, cancelled = 0] = reply.map(Number);
    return { total, counts: { pending, assigned, running, completed, failed, cancelled } };
  }

  /** A group's tasks, in the order they joined (those removed after retention are skipped). */
  async groupTasks(name: string): Promise<TaskRecord[]> {
    const ids = await this.redis.zrange(this.keys.groupTasks(name), '0', '-1');
    const replies = await Promise.all(ids.map((id) => this.redis.hgetall(this.keys.task(id))));
    const tasks: TaskRecord[] = [];
    replies.forEach((reply, i) => {
      const fields = toFields(reply);
      if (Object.keys(fields).length > 0) tasks.push(decodeTask(this.keys.task(ids[i]!), fields));
    });
    return tasks;
  }

  // ── backlog and messages ────────────────────────────────────────────────────────────────

  async backlogIds(): Promise<string[]> {
    return this.redis.lrange(this.keys.backlog, 0, -1);
  }

  async claimBacklog(taskId: string, agentId: string): Promise<void> {
    const priority = ((await this.redis.hget(this.keys.task(taskId), 'priority')) ?? 'normal') as Priority;
    const message = encodeMessage({ from: SUPERVISOR_ID, to: agentId, type: 'task_assign', taskId, priority }).json;
    const [status] = await this.run('backlogClaim', taskId, agentId, message);
    if (status === STATUS.AGENT_NOT_FOUND) throw this.agentGone(agentId);
    if (status === STATUS.NOT_IN_BACKLOG) throw new NotInBacklogError(`Task ${taskId} is not in the backlog (claimed or removed already).`);
  }

  async autoClaim(agentId: string): Promise<string | undefined> {
    const [status, taskId] = await this.run('backlogAutoClaim', agentId, randomUUID(), this.townBudget.maxCostUsd ?? '', this.townBudget.maxTokens ?? '');
    return status === 1 ? String(taskId) : undefined;
  }

  async removeFromBacklog(taskId: string, reason: string): Promise<void> {
    const [status] = await this.run('backlogRemove', taskId, reason);
    if (status === STATUS.NOT_IN_BACKLOG) throw new NotInBacklogError(`Task ${taskId} is not in the backlog.`);
  }

  async send(args: {
    to: string;
    from: string;
    type: MessageType;
    text: string;
    priority: Priority;
    correlationId?: string;
  }): Promise<string> {
    const { id, json } = encodeMessage(args);
    const [status] = await this.run('send', args.to, json, id, args.type, args.from);
    if (status === STATUS.AGENT_NOT_FOUND) throw this.agentGone(args.to);
    return id;
  }

  async inbox(agentId: string): Promise<Message[]> {
    const [urgent, inbox] = await Promise.all([
      this.redis.lrange(this.keys.urgent(agentId), 0, -1),
      this.redis.lrange(this.keys.inbox(agentId), 0, -1),
    ]);
    return [...urgent, ...inbox].map(decodeMessage).filter((m): m is Message => m !== undefined);
  }

  async agentIds(): Promise<string[]> {
    await this.discover();
    return this.redis.smembers(this.keys.agents);
  }

  // ── foreign writers (tinytown layout) ───────────────────────────────────────────────────

  /**
   * Tinytown layout: lists in this town's indexes the agents and tasks another writer created
   * (`tt spawn`, `tt assign`, `tt backlog add` write only their hashes), found with SCAN, never
   * KEYS. Returns how many were new. A no-op without Redis work in the cluster layout, whose
   * records only tinytown writes.
   */
  async discover(): Promise<{ agents: number; tasks: number }> {
    if (!this.tinytown) return { agents: 0, tasks: 0 };
    const agentStart = this.keys.agent('').length;
    const taskStart = this.keys.task('').length;
    const [agentKeys, taskKeys] = await Promise.all([this.scanHashes(this.keys.agentPattern), this.scanHashes(this.keys.taskPattern)]);
    const agentIds = agentKeys.map((k) => k.slice(agentStart));
    const taskIds = taskKeys.map((k) => k.slice(taskStart));
    const [listedAgents, listedTasks] = await Promise.all([
      agentIds.length > 0 ? this.redis.smismember(this.keys.agents, ...agentIds) : [],
      taskIds.length > 0 ? this.redis.zmscore(this.keys.tasks, ...taskIds) : [],
    ]);
    const agents = agentIds.filter((_, i) => listedAgents[i] === 0);
    const newTasks = taskIds.filter((_, i) => listedTasks[i] === null);
    if (agents.length === 0 && newTasks.length === 0) return { agents: 0, tasks: 0 };
    const fields = await Promise.all(newTasks.map((id) => this.redis.hmget(this.keys.task(id), 'created_at', 'state', 'completed_at', 'updated_at')));
    const time = (value: string | null | undefined): number | undefined => (value ? parseIso(value)?.getTime() : undefined);
    // Listed oldest first, so tasks() shows them in their creation order among themselves.
    const tasks = newTasks
      .map((id, i) => {
        const [created, state, completed, updated] = fields[i]!;
        return { id, created: time(created) ?? 0, done: TERMINAL.has(state ?? '') ? (time(completed) ?? time(updated) ?? null) : null };
      })
      .sort((a, b) => a.created - b.created);
    let adopted = { agents: 0, tasks: 0 };
    for (let i = 0; i < Math.max(agents.length, tasks.length); i += ADOPT_BATCH) {
      const found = {
        agents: agents.slice(i, i + ADOPT_BATCH),
        tasks: tasks.slice(i, i + ADOPT_BATCH).map((t) => [t.id, t.done]),
      };
      const [a, t] = await this.run('adopt', JSON.stringify(found));
      adopted = { agents: adopted.agents + Number(a), tasks: adopted.tasks + Number(t) };
    }
    return adopted;
  }

  /** Keys of hashes matching `pattern`, by SCAN (incremental; never blocks the server). */
  private async scanHashes(pattern: string): Promise<string[]> {
    const keys = new Set<string>();
    // SCAN walks one server's keyspace: on a Cluster, every primary's.
    const client = this.redis as RedisClient;
    const nodes: Redis[] = isClusterClient(client) ? client.nodes('master') : [this.redis];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000, 'TYPE', 'hash');
        for (const key of batch) keys.add(key);
        cursor = next;
      } while (cursor !== '0');
    }
    return [...keys];
  }

  async publishBroadcast(json: string): Promise<void> {
    await this.redis.publish(this.keys.broadcast, json);
  }

  // ── errors ──────────────────────────────────────────────────────────────────────────────

  private agentGone(agentId: string): AgentNotFoundError {
    return new AgentNotFoundError(`Agent ${agentId} no longer exists in this town (removed).`);
  }

  private notFound(ref: string): AgentNotFoundError {
    return new AgentNotFoundError(
      `No agent "${ref}" in this town. Use a name, id, short id or nickname from town.agents().`,
    );
  }

  private ambiguous(ref: string, ids: string[]): AgentAmbiguousError {
    return new AgentAmbiguousError(
      `"${ref}" matches ${ids.length} agents (${ids.join(', ')}). Use the agent's name or a longer id.`,
    );
  }
}
