/**
 * A worker serves one agent: it blocks on the agent's inbox, claims one entry at a time by an
 * atomic move into its own processing list, runs it, records the outcome (fenced), and holds a
 * lease for as long as it lives — including while a long process runs.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { join, sep } from 'node:path';
import type { Redis } from 'ioredis';
import pRetry from 'p-retry';
import type { Agent } from '../agent.js';
import { WorkerActiveError } from '../errors.js';
import { waitForReady, withWatchdog, type EventReader } from '../events/reader.js';
import { compareIds, type TownEvent, type TownEventType } from '../events/types.js';
import { isConnectionFault, type Connections } from '../store/connection.js';
import type { Repository, StartResult } from '../store/repository.js';
import type { TaskRecord } from '../task.js';
import type { Town } from '../town.js';
import { parseNotes, type Executor, type RunContext, type RunOutcome } from './executor.js';
import { abandonable, WriteChannel } from './write-channel.js';

/**
 * How long one BLMOVE blocks at most, and never longer than a heartbeat interval (leaseMs / 3):
 * a worker frozen while blocked would otherwise still be handed an entry after its lease ran out
 * and the sweeper forgot it, into a processing list nobody reclaims. The watchdog allows the
 * block plus a grace period.
 */
const BLOCK_SECONDS = 5;
/**
 * Tinytown layout: the Rust CLI puts `tt send --urgent` in a separate urgent list, which a
 * BLMOVE on the inbox does not watch. An idle worker looks there before each BLMOVE, and blocks
 * at most this long, so an urgent message from a foreign writer waits at most about a second;
 * a busy worker takes it before the next inbox entry (finish looks at the urgent list first).
 */
const URGENT_BLOCK_SECONDS = 1;
const WATCHDOG_GRACE_MS = 3_000;
/** How long a stopping worker tries to release its claims before leaving them to its lease. */
const RELEASE_TIMEOUT_MS = 3_000;
/** Notes handed to one prompt at most. */
const MAX_NOTES = 50;

/** Everything a worker needs from its town. */
export interface WorkerDeps {
  town: Town;
  agent: Agent;
  repo: Repository;
  connections: Connections;
  reader: EventReader;
  root: string;
  report: (err: unknown) => void;
  /** The town handle's shared connection for worker writes, when writes may share one. */
  writes?: WriteChannel;
}

/** A worker's settings. */
export interface WorkerSettings {
  executor: Executor;
  leaseMs: number;
  claimBacklog: boolean;
  timeoutMs?: number;
  /** First retry delay; each further retry waits twice as long (capped at a minute). */
  retryDelayMs: number;
}

/** A task this worker has claimed and started, with the inbox entry it came from. */
interface Claimed {
  entry: string;
  started: StartResult & { kind: 'task' };
}

/** Why a running task was interrupted. */
type Interruption = 'cancelled' | 'handback' | 'lease-lost';

interface CurrentRun {
  task: TaskRecord;
  controller: AbortController;
  interruption?: Interruption;
}

/**
 * A running worker. Obtain one from `town.spawnAgent` (implicitly) or `town.runWorker`.
 *
 * @example
 * ```ts
 * const worker = await town.runWorker('backend', { cli: 'codex' });
 * process.once('SIGTERM', () => void worker.stop());
 * await worker.done;
 * ```
 */
export class Worker {
  /** This worker instance's id; leases and processing lists belong to it. */
  readonly id = randomUUID();
  /** Settles when the worker has stopped and released everything. */
  readonly done: Promise<void>;

  private conn: Redis | undefined;
  /** Where this worker's writes go when they may not share the town's channel: its own connection. */
  private ownChannel: WriteChannel | undefined;
  /** `conn` was closed for a stop: writes go to the command connection from then on. */
  private connDropped = false;
  /** Writes in flight through {@link ownWrite}: a stop leaves `conn` open for them. */
  private writing = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private current: CurrentRun | undefined;
  private stopping = false;
  private handback = false;
  /** Set by giveUp(): a write still waiting for Redis is abandoned, not awaited. */
  private gaveUp: Error | undefined;
  /** How to abandon each write in flight ({@link abandonable}). */
  private readonly abandon = new Set<(reason: Error) => void>();
  private resync = false;
  private stateVersion = 0;
  /**
   * The newest event when this worker registered: older agent state changes (a predecessor's
   * `stopped`, delivered late by a lagging reader) are not orders for this worker. Until the
   * registration returns, state events wait in `early`.
   */
  private registeredAt: string | undefined;
  private early: TownEvent[] = [];
  private wake: (() => void) | undefined;
  private resolveDone!: () => void;
  private logFolder: string | undefined;

  /** @internal */
  constructor(
    private readonly deps: WorkerDeps,
    private readonly settings: WorkerSettings,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  /** Where this agent's task logs go (`.tt/logs/<agent>/`), with its trailing separator. */
  private get logDir(): string {
    return (this.logFolder ??= join(this.deps.root, '.tt', 'logs', this.deps.agent.name, sep));
  }

  /** The agent this worker serves. */
  get agent(): Agent {
    return this.deps.agent;
  }

  /**
   * Registers with Redis (taking over from a dead predecessor) and starts the loop.
   * @internal `town.spawnAgent` and `town.runWorker` call it.
   */
  async start(): Promise<void> {
    const { repo, reader, connections, agent } = this.deps;
    await reader.ensureStarted();
    const own = reader.subscribe((event) => this.onEvent(event), agent.id, OWN_EVENTS);
    // Backlog arrivals name no agent: only a claiming worker listens to every event.
    const all = this.settings.claimBacklog
      ? reader.subscribe(
          (event) => {
            if (entersBacklog(event)) this.onEvent(event);
          },
          undefined,
          BACKLOG_EVENTS,
        )
      : undefined;
    this.unsubscribe = () => {
      own();
      all?.();
    };
    try {
      this.conn = await connections.openBlocking(`worker:${agent.name}`);
      repo.prepareWorkerConnection(this.conn);
      if (!this.deps.writes) this.ownChannel = new WriteChannel(this.conn);
      this.registered((await repo.registerWorker(agent.id, this.id, this.settings.leaseMs)).eventId);
    } catch (err) {
      this.unsubscribe();
      if (this.conn) connections.dropBlocking(this.conn);
      this.resolveDone();
      throw err;
    }
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), Math.max(50, Math.floor(this.settings.leaseMs / 3)));
    void this.loop(this.conn).finally(() => this.resolveDone());
  }

  /**
   * Stops the worker. A running task gets `graceMs` to finish; after that (or at once with
   * `force`) its process is stopped and the task goes back to the head of the agent's queue.
   *
   * @example
   * ```ts
   * const worker = await town.runWorker('backend');
   * process.once('SIGTERM', () => void worker.stop({ graceMs: 30_000 }));
   * ```
   */
  async stop(options: { graceMs?: number; force?: boolean } = {}): Promise<void> {
    this.requestStop(options.force === true);
    // Armed even when nothing runs yet: a task may be starting right now.
    const timer = options.graceMs === undefined ? undefined : setTimeout(() => this.giveUp(), options.graceMs);
    await this.done;
    clearTimeout(timer);
  }

  private requestStop(force: boolean): void {
    this.stopping = true;
    if (force) this.giveUp();
    this.wake?.();
    // Unblock a waiting BLMOVE; an entry it moved meanwhile is handed back on release.
    if (!this.current && this.writing === 0) this.dropConn();
  }

  private dropConn(): void {
    if (this.conn === undefined) return;
    this.connDropped = true;
    this.deps.connections.dropBlocking(this.conn);
  }

  /** Hands the running task back now, and stops retrying writes (Redis may be away for long). */
  private giveUp(): void {
    this.handback = true;
    this.gaveUp ??= new Error('worker stopping: gave up waiting for Redis');
    for (const reject of this.abandon) reject(this.gaveUp);
    this.interrupt('handback');
  }

  private interrupt(why: Interruption): void {
    const run = this.current;
    if (!run || run.interruption) return;
    run.interruption = why;
    if (why === 'handback') this.handback = true;
    run.controller.abort(new Error(why === 'cancelled' ? 'task cancelled' : `worker stopping (${why})`));
  }

  private registered(eventId: string): void {
    this.registeredAt = eventId;
    for (const event of this.early.splice(0)) this.onEvent(event);
  }

  private onEvent(event: TownEvent): void {
    const { agent } = this.deps;
    if (event.type === 'task.cancelled' && event.taskId !== undefined && event.taskId === this.current?.task.id) {
      this.interrupt('cancelled');
      return;
    }
    if (entersBacklog(event) && this.settings.claimBacklog && !this.current && !this.stopping) {
      void this.deps.repo.autoClaim(agent.id).catch(this.deps.report);
      return;
    }
    if (event.agentId !== agent.id) return;
    if (event.type === 'agent.removed') {
      this.requestStop(true);
    } else if (event.type === 'agent.state') {
      if (this.registeredAt === undefined) {
        this.early.push(event);
        return;
      }
      if (compareIds(event.id, this.registeredAt) <= 0) return; // from before this worker attached
      this.stateVersion++;
      if (event.data.newState === 'stopped' || event.data.newState === 'error') this.requestStop(event.data.force === true);
      this.wake?.();
    }
  }

  private async loop(conn: Redis): Promise<void> {
    const { repo, agent, report } = this.deps;
    if (this.settings.claimBacklog) await repo.autoClaim(agent.id).catch(report);
    while (!this.stopping) {
      const versionBefore = this.stateVersion;
      const claimed = await this.claim(conn);
      if (claimed === undefined || (this.stopping && claimed.started === undefined)) continue;
      const { entry } = claimed;
      let started;
      try {
        started = claimed.started ?? (await this.ownWrite((via) => repo.start(this.id, agent.id, entry, MAX_NOTES, via)));
      } catch (err) {
        report(err);
        this.resync = true;
        continue;
      }
      if (started.kind === 'task') {
        // While the agent has a queue, each finish hands over the next task: no BLMOVE, no start.
        let next: Claimed | undefined = { entry, started };
        while (next !== undefined) next = await this.execute(next.entry, next.started);
      } else if (started.kind === 'held') {
        if (started.state !== 'paused') break;
        await this.waitForStateChange(versionBefore);
      } else if (started.kind === 'lost') {
        break;
      }
    }
    await this.release();
  }

  private get blockSeconds(): number {
    const seconds = Math.min(BLOCK_SECONDS, Math.max(10, Math.floor(this.settings.leaseMs / 3)) / 1000);
    return this.deps.repo.tinytown ? Math.min(seconds, URGENT_BLOCK_SECONDS) : seconds;
  }

  /**
   * The next inbox entry: first anything left in our processing list after a fault, then (in
   * the tinytown layout) the urgent list, then a blocking move from the inbox — sent together
   * with its start where it can be ({@link Repository.claimAndStart}), so `started` comes too.
   */
  private async claim(conn: Redis): Promise<{ entry: string; started?: StartResult } | undefined> {
    const { repo, connections, agent } = this.deps;
    const keys = repo.keys;
    try {
      if (this.resync) {
        const left = await connections.command.lindex(keys.processing(this.id), 0);
        this.resync = false;
        if (left) return { entry: left };
      }
      if (repo.tinytown) {
        const urgent = await connections.command.lmove(keys.urgent(agent.id), keys.processing(this.id), 'LEFT', 'RIGHT');
        if (urgent) return { entry: urgent };
      }
      const timeoutMs = this.blockSeconds * 1000 + WATCHDOG_GRACE_MS;
      if (!repo.replicated) {
        return await withWatchdog(conn, repo.claimAndStart(conn, this.id, agent.id, this.blockSeconds, MAX_NOTES), timeoutMs);
      }
      const entry = await withWatchdog(conn, conn.blmove(keys.inbox(agent.id), keys.processing(this.id), 'LEFT', 'RIGHT', this.blockSeconds), timeoutMs);
      return entry ? { entry } : undefined;
    } catch (err) {
      if (this.stopping) return undefined;
      // The move may have happened without us seeing the reply: look in our list next time.
      this.resync = true;
      this.deps.report(err);
      await waitForReady(conn);
      return undefined;
    }
  }

  /** Runs one started task and records its outcome; returns the next task when finish started one. */
  private async execute(entry: string, started: StartResult & { kind: 'task' }): Promise<Claimed | undefined> {
    const { fence, task, agentSession, budgetUsd } = started;
    const notes = parseNotes(started.notes);
    const { town, agent, repo } = this.deps;
    const controller = new AbortController();
    const run: CurrentRun = { task, controller };
    this.current = run;
    const timeoutMs = task.timeoutMs ?? this.settings.timeoutMs;
    const context: RunContext = {
      signal: controller.signal,
      agent,
      town,
      attempt: task.attempts,
      notes,
      ...(agentSession !== undefined && { agentSession }),
      ...(budgetUsd !== undefined && { budgetUsd }),
      logFile: `${this.logDir}${task.id}.log`,
      ...(timeoutMs !== undefined && { timeoutMs }),
      fence,
      taskEnv: {
        TINYTOWN_TOWN: town.name,
        TINYTOWN_AGENT_ID: agent.id,
        TINYTOWN_AGENT_NAME: agent.name,
        TINYTOWN_TASK_ID: task.id,
      },
    };
    const outcome = await this.runWithRetries(task, fence, context, run);
    this.current = undefined;
    // Handed back or lease lost: the entry stays claimed; release (or a reclaim) requeues it.
    if (run.interruption === 'handback' || run.interruption === 'lease-lost') return undefined;
    try {
      const { next } = await this.ownWrite((via) =>
        repo.finish({
          workerId: this.id,
          agentId: agent.id,
          taskId: task.id,
          fence,
          entry,
          outcome: outcome.ok ? 'completed' : 'failed',
          text: outcome.text,
          ...(outcome.usage && { usage: outcome.usage }),
          ...(outcome.sessionId && { sessionId: outcome.sessionId }),
          notesUsed: notes.length,
          ...(!this.stopping && { fetchNext: { maxNotes: MAX_NOTES } }),
        }, via),
      );
      return next;
    } catch (err) {
      // Could not record it: the lease lapses and the task is reclaimed, never lost.
      this.deps.report(err);
      return undefined;
    }
  }

  /**
   * Runs the task; a retryable failure (rate limit, timeout, stall, a handler error marked
   * `retryable`) runs again after an exponential backoff, keeping the claim, until the task's
   * `maxAttempts`. Each retry is recorded (attempts + 1, `task.retried`) before it waits.
   */
  private async runWithRetries(task: TaskRecord, fence: string, context: RunContext, run: CurrentRun): Promise<RunOutcome> {
    let outcome = await this.runExecutor(task, context);
    let attempts = task.attempts;
    // A stopping worker keeps retrying: its grace period, not the retry, decides when to hand back.
    while (!outcome.ok && outcome.retryable === true && attempts < task.maxAttempts && !run.interruption) {
      const recorded = await this.ownWrite((via) =>
        this.deps.repo.retryRun({
          workerId: this.id,
          agentId: this.deps.agent.id,
          taskId: task.id,
          fence,
          attempt: attempts,
          error: outcome.text,
          ...(outcome.usage && { usage: outcome.usage }),
        }, via),
      );
      if ('stop' in recorded) return { ...outcome, usage: undefined }; // settled elsewhere: finish says so
      // Its own budget is spent (the usage is recorded): fail it with both reasons, no retry.
      if ('budget' in recorded) return { ok: false, text: `${recorded.budget}; not retried after: ${outcome.text}`, usage: undefined };
      attempts = recorded.attempts;
      if (!(await backoff(this.settings.retryDelayMs, attempts - 1, run.controller.signal))) return { ...outcome, usage: undefined };
      // The next run gets what is left of its budget now (the CLI's own flag), not what was left at the start.
      const { budgetUsd: _spent, ...rest } = context;
      outcome = await this.runExecutor(
        { ...task, attempts },
        { ...rest, attempt: attempts, ...(recorded.budgetUsd !== undefined && { budgetUsd: recorded.budgetUsd }) },
      );
    }
    return outcome;
  }

  /** Executors report failures as outcomes; a custom one that throws still fails only its task. */
  private async runExecutor(task: TaskRecord, context: Parameters<Executor>[1]): Promise<RunOutcome> {
    try {
      return await this.settings.executor(task, context);
    } catch (err) {
      return { ok: false, text: err instanceof Error ? err.message : String(err) };
    }
  }

  /**
   * Retries a state write through connection faults for as long as Redis stays away (at most
   * 250 ms apart, so it lands right after Redis is back), other failures 200 times; gives up
   * only when the worker is stopping hard (giveUp()), then at once, even mid-attempt.
   */
  private persist<T>(write: () => Promise<T>): Promise<T> {
    const attempt = (): Promise<T> => (this.gaveUp ? Promise.reject(this.gaveUp) : abandonable(write(), this.abandon));
    // The first try goes straight out: retry machinery only for the writes that need it.
    return attempt().catch(() =>
      pRetry(attempt, {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 50,
        maxTimeout: 250,
        shouldRetry: ({ error, retriesConsumed }) => !this.handback && (isConnectionFault(error) || retriesConsumed < 200),
      }),
    );
  }

  /**
   * A write of the worker's own (start, finish, retry), persisted: on the town handle's
   * {@link WriteChannel} when it is ready, else (`durability: 'replicated'`) on the worker's
   * blocking connection, idle between BLMOVEs — both send it at once, where the auto-pipelined
   * command connection holds it until its next tick and behind the batch it has in flight.
   * Otherwise (reconnecting, closed for a stop) on the command connection, whose offline queue
   * and re-sending serve a Redis that is away.
   */
  private ownWrite<T>(write: (via: Redis) => Promise<T>): Promise<T> {
    this.writing++;
    return this.persist(() => {
      const channel = this.deps.writes ?? (this.connDropped ? undefined : this.ownChannel);
      return channel?.ready ? channel.send(write) : write(this.deps.connections.command);
    }).finally(() => this.writing--);
  }

  private waitForStateChange(since: number): Promise<void> {
    if (this.stateVersion !== since || this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        resolve();
      };
    });
  }

  private async heartbeat(): Promise<void> {
    const { repo, agent, report } = this.deps;
    try {
      const beat = await repo.heartbeat(this.id, agent.id, this.settings.leaseMs);
      // A stop the Rust CLI requested (`tt kill`): the running task finishes, nothing new starts.
      if (beat === 'stop') this.requestStop(false);
      if (beat !== 'lost') return;
    } catch (err) {
      report(err); // Redis unreachable: keep running; the lease decides
      return;
    }
    // Our lease lapsed (frozen, cut off): the work may be running elsewhere now.
    this.interrupt('lease-lost');
    try {
      this.registered((await repo.registerWorker(agent.id, this.id, this.settings.leaseMs)).eventId);
    } catch (err) {
      if (!(err instanceof WorkerActiveError)) report(err);
      this.requestStop(false);
    }
  }

  private async release(): Promise<void> {
    clearInterval(this.heartbeatTimer);
    this.unsubscribe?.();
    const { repo, agent, report } = this.deps;
    this.dropConn();
    // Bounded, so a stop or close() with Redis away does not wait for Redis (commands queue for
    // ~10 s per attempt): the lease expires and the sweeper hands the work back instead.
    const giveUp = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        giveUp.abort();
        reject(new Error(`Redis did not take the release of worker ${this.id} within ${RELEASE_TIMEOUT_MS} ms; its lease will lapse instead`));
      }, RELEASE_TIMEOUT_MS);
    });
    const releasing = pRetry(() => repo.releaseWorker(this.id, agent.id, 'stopped', 'worker stopped'), {
      retries: 5,
      minTimeout: 50,
      signal: giveUp.signal,
    });
    releasing.catch(() => undefined);
    try {
      await Promise.race([releasing, timeout]);
    } catch (err) {
      report(err); // the lease expires and the sweeper hands the work back
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Events that put a task in the backlog: an addition, or the work of a lost worker whose agent
 * has no other (`task.reclaimed` to the backlog, e.g. a host cut off): another host's agent
 * that takes backlog work picks it up at once.
 */
/** The events of its agent a worker acts on (see `onEvent`); the reader parses no others for it. */
const OWN_EVENTS: readonly TownEventType[] = ['task.cancelled', 'agent.removed', 'agent.state'];

/** The events that may put work in the backlog. */
const BACKLOG_EVENTS: readonly TownEventType[] = ['backlog.added', 'task.reclaimed'];

function entersBacklog(event: TownEvent): boolean {
  return event.type === 'backlog.added' || (event.type === 'task.reclaimed' && event.data.to === 'backlog');
}

/** Waits `base * 2^(n-1)` ms (±20 %, at most a minute); resolves false if aborted first. */
function backoff(baseMs: number, n: number, signal: AbortSignal): Promise<boolean> {
  const ms = Math.min(60_000, baseMs * 2 ** Math.max(0, n - 1)) * (0.8 + Math.random() * 0.4);
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const done = (completed: boolean): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(completed);
    };
    const onAbort = (): void => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
