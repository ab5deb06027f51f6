/**
 * The one place that knows key names. Every key of a town starts with the prefix built here.
 *
 * @module
 */

/**
 * `'cluster'` (default): `tt:{<town>}:` — the braces are a Redis Cluster hash tag, so all of a
 * town's keys live in one slot and multi-key scripts are legal on a Cluster.
 * `'tinytown'`: `tt:<town>:` — byte-compatible with the Rust Tinytown's `tt` CLI.
 *
 * @example
 * ```ts
 * const town = await Town.connect('.', { keyLayout: 'tinytown' }); // `tt status` sees this town
 * ```
 */
export type KeyLayout = 'cluster' | 'tinytown';

/** The supervisor's mailbox id (the Rust Tinytown's well-known id for the orchestrator). */
export const SUPERVISOR_ID = '00000000-0000-0000-0000-000000000001';

/** Builds the prefix for a town. */
export function keyPrefix(town: string, layout: KeyLayout): string {
  return layout === 'tinytown' ? `tt:${town}:` : `tt:{${town}}:`;
}

/**
 * Key names of one town. Extra keys of ours never start with `agent:` or `task:`, because the
 * Rust CLI lists those patterns and expects hashes there.
 */
export class Keys {
  constructor(
    readonly prefix: string,
    /** The layout the prefix was built for; the `tinytown` one also keeps the Rust CLI's extra keys. */
    readonly layout: KeyLayout = 'cluster',
  ) {}

  agent(id: string): string {
    return `${this.prefix}agent:${id}`;
  }
  task(id: string): string {
    return `${this.prefix}task:${id}`;
  }
  inbox(agentId: string): string {
    return `${this.prefix}inbox:${agentId}`;
  }
  urgent(agentId: string): string {
    return `${this.prefix}urgent:${agentId}`;
  }
  /** The Rust CLI's stop flag (`"1"`, set by `tt kill` / `tt close`); tinytown layout only. */
  stop(agentId: string): string {
    return `${this.prefix}stop:${agentId}`;
  }
  /** The Rust CLI's activity log (newest first, 10 lines, 1 h TTL); tinytown layout only. */
  activity(agentId: string): string {
    return `${this.prefix}activity:${agentId}`;
  }
  /** Per-agent event stream (`MAXLEN ~ 100`) the Rust CLI reads; tinytown layout only. */
  agentEvents(agentId: string): string {
    return `${this.prefix}events:agent:${agentId}`;
  }
  /** Informational messages and acks waiting to ride along with the agent's next prompt. */
  notes(agentId: string): string {
    return `${this.prefix}notes:${agentId}`;
  }
  /** Claimed, unfinished work of one worker instance. */
  processing(workerId: string): string {
    return `${this.prefix}processing:${workerId}`;
  }
  /** Liveness of one worker instance (a string with a PX expiry). */
  lease(workerId: string): string {
    return `${this.prefix}lease:${workerId}`;
  }
  get backlog(): string {
    return `${this.prefix}backlog`;
  }
  get events(): string {
    return `${this.prefix}events`;
  }
  get broadcast(): string {
    return `${this.prefix}broadcast`;
  }
  /** Set of agent ids. */
  get agents(): string {
    return `${this.prefix}idx:agents`;
  }
  /** Hash name → agent id. */
  get names(): string {
    return `${this.prefix}idx:names`;
  }
  /** Sorted set of task ids by creation order (score from the `seq:task` counter). */
  get tasks(): string {
    return `${this.prefix}idx:tasks`;
  }
  /** Sorted set of terminal task ids by completion time (ms), for retention. */
  get done(): string {
    return `${this.prefix}idx:done`;
  }
  /** Hash task state → count. */
  get counts(): string {
    return `${this.prefix}counts`;
  }
  /** Hash worker id → agent id, the live-worker registry the sweeper walks. */
  get workers(): string {
    return `${this.prefix}workers`;
  }
  /** Counter for fencing tokens. */
  get fence(): string {
    return `${this.prefix}seq:fence`;
  }
  /** SCAN pattern of agent hashes (tinytown layout: agents registered by `tt spawn` are found so). */
  get agentPattern(): string {
    return `${this.prefix}agent:*`;
  }
  /** SCAN pattern of task hashes (tinytown layout: tasks created by `tt` are found so). */
  get taskPattern(): string {
    return `${this.prefix}task:*`;
  }
  /** A task group's open count (hash field `open`: its tasks not yet terminal). */
  group(name: string): string {
    return `${this.prefix}group:${name}`;
  }
  /** A task group's task ids, by the order they joined (sorted set). */
  groupTasks(name: string): string {
    return `${this.prefix}group-tasks:${name}`;
  }
  /** Tasks held until this task ends (a list of ids); gone once it has ended. */
  dependants(taskId: string): string {
    return `${this.prefix}dependants:${taskId}`;
  }
  /** Guard so one sweep runs per interval per town. */
  get sweepLock(): string {
    return `${this.prefix}lock:sweep`;
  }
}
