/**
 * Every failure a caller can cause or meet is a {@link TinytownError} with a stable
 * {@link ErrorCode}. One subclass per condition, so both `err.code === 'AGENT_NOT_FOUND'` and
 * `err instanceof AgentNotFoundError` work, the latter even across the ESM and CJS copies of
 * the package (the check uses a registry-wide symbol, not object identity).
 *
 * @module
 */

/**
 * The stable codes of {@link TinytownError}. They never change meaning between versions.
 *
 * @example
 * ```ts
 * import { TinytownError, type ErrorCode } from 'tinytown';
 * const retryLater: ErrorCode[] = ['REDIS_CONNECTION', 'TIMEOUT'];
 * try {
 *   await town.waitForTask(id, { timeoutMs: 60_000 });
 * } catch (err) {
 *   if (err instanceof TinytownError && retryLater.includes(err.code)) console.warn('try again later');
 *   else throw err;
 * }
 * ```
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_NAME'
  | 'RESERVED_NAME'
  | 'DESCRIPTION_TOO_LARGE'
  | 'AGENT_EXISTS'
  | 'AGENT_NOT_FOUND'
  | 'AGENT_AMBIGUOUS'
  | 'AGENT_ERROR'
  | 'WORKER_ACTIVE'
  | 'TASK_NOT_FOUND'
  | 'INVALID_TRANSITION'
  | 'NOT_IN_BACKLOG'
  | 'UNKNOWN_CLI'
  | 'CLI_NOT_FOUND'
  | 'CONFIG_INVALID'
  | 'CONFIG_NOT_FOUND'
  | 'CORRUPT_RECORD'
  | 'REDIS_CONNECTION'
  | 'REDIS_AUTH'
  | 'REDIS_VERSION'
  | 'REPLICATION_TIMEOUT'
  | 'REDIS_SERVER_NOT_FOUND'
  | 'REDIS_SERVER_START'
  | 'SOCKET_PATH_TOO_LONG'
  | 'TIMEOUT'
  | 'ABORTED'
  | 'TOWN_CLOSED'
  | 'NOT_A_GIT_REPOSITORY'
  | 'WORKTREE_DIRTY'
  | 'WORKTREE_FAILED';

const BRAND = Symbol.for('tinytown.error');

interface Branded {
  [BRAND]: true;
  code: ErrorCode;
}

function isBranded(value: unknown): value is Branded {
  return typeof value === 'object' && value !== null && (value as Partial<Branded>)[BRAND] === true;
}

/**
 * Options accepted by every error constructor.
 *
 * @example
 * ```ts
 * import { TimeoutError, type TinytownErrorOptions } from 'tinytown';
 * const options: TinytownErrorOptions = { cause: new Error('socket closed') };
 * throw new TimeoutError('gave up waiting for the review', options);
 * ```
 */
export interface TinytownErrorOptions {
  /** The underlying error, kept as `err.cause`. */
  cause?: unknown;
}

/**
 * Base class of every error tinytown throws or stores.
 *
 * @example
 * ```ts
 * import { TinytownError } from 'tinytown';
 * try {
 *   await town.agent('nobody');
 * } catch (err) {
 *   if (err instanceof TinytownError && err.code === 'AGENT_NOT_FOUND') console.log(err.message);
 *   else throw err;
 * }
 * ```
 */
export class TinytownError extends Error {
  /** The condition's code; subclasses fix it. */
  static readonly code: ErrorCode | undefined = undefined;
  /** Stable code naming the condition. */
  readonly code: ErrorCode;
  /** @internal Marks tinytown errors for `instanceof` across copies of the package. */
  declare readonly [BRAND]: true;

  constructor(code: ErrorCode, message: string, options: TinytownErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
    this.name = new.target.name;
  }

  /**
   * `instanceof` by brand and code, so it holds across duplicate copies of the package (an
   * application that loads both the ESM and the CJS build, or two installed versions).
   *
   * @example
   * ```ts
   * const cjs = require('tinytown');
   * const esm = await import('tinytown');
   * new cjs.TimeoutError('late') instanceof esm.TimeoutError; // true
   * new cjs.TimeoutError('late') instanceof esm.AbortedError; // false: another code
   * ```
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (!isBranded(value)) return false;
    return this.code === undefined || value.code === this.code;
  }
}

/** Defines the subclass for one code: the constructor takes a message and options. */
function errorClass<C extends ErrorCode>(code: C) {
  return class extends TinytownError {
    static override readonly code: C = code;
    declare readonly code: C;
    constructor(message: string, options?: TinytownErrorOptions) {
      super(code, message, options);
    }
  };
}

/**
 * An argument has the wrong type, range or shape.
 * @example
 * ```ts
 * await agent.waitForIdle({ timeoutMs: -1 }); // throws InvalidArgumentError
 * ```
 */
export class InvalidArgumentError extends errorClass('INVALID_ARGUMENT') {}
/**
 * A town or agent name does not match `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
 * @example
 * ```ts
 * await town.spawnAgent('bad name!'); // throws InvalidNameError
 * ```
 */
export class InvalidNameError extends errorClass('INVALID_NAME') {}
/**
 * The agent name is reserved (`supervisor`, `conductor`).
 * @example
 * ```ts
 * await town.spawnAgent('supervisor'); // throws ReservedNameError
 * ```
 */
export class ReservedNameError extends errorClass('RESERVED_NAME') {}
/**
 * A task description or message exceeds `maxDescriptionBytes` (default 1 MiB).
 * @example
 * ```ts
 * await agent.assign('x'.repeat(2 * 1024 * 1024)); // throws DescriptionTooLargeError
 * ```
 */
export class DescriptionTooLargeError extends errorClass('DESCRIPTION_TOO_LARGE') {}
/**
 * A live agent already has this name.
 * @example
 * ```ts
 * await town.spawnAgent('backend');
 * await town.spawnAgent('backend'); // throws AgentExistsError
 * ```
 */
export class AgentExistsError extends errorClass('AGENT_EXISTS') {}
/**
 * No agent matches the name, id, short id or nickname.
 * @example
 * ```ts
 * await town.agent('nobody'); // throws AgentNotFoundError
 * ```
 */
export class AgentNotFoundError extends errorClass('AGENT_NOT_FOUND') {}
/**
 * An agent reference (short id or nickname) matches more than one agent.
 * @example
 * ```ts
 * await town.agent('a1b2'); // throws AgentAmbiguousError if two ids start with a1b2
 * ```
 */
export class AgentAmbiguousError extends errorClass('AGENT_AMBIGUOUS') {}
/**
 * The agent is in state `error` (for example its worker was lost); waits on it reject with this.
 * @example
 * ```ts
 * await waitForIdle(agent); // rejects with AgentErrorStateError when the agent is in error
 * ```
 */
export class AgentErrorStateError extends errorClass('AGENT_ERROR') {}
/**
 * The agent already has a live worker (in this or another process).
 * @example
 * ```ts
 * await town.runWorker('backend'); // throws WorkerActiveError while another worker serves it
 * ```
 */
export class WorkerActiveError extends errorClass('WORKER_ACTIVE') {}
/**
 * No task has this id (or it expired after the retention period).
 * @example
 * ```ts
 * await town.task('00000000-0000-4000-8000-000000000000'); // throws TaskNotFoundError
 * ```
 */
export class TaskNotFoundError extends errorClass('TASK_NOT_FOUND') {}
/**
 * The requested change does not apply to the record's current state
 * (for example completing a task that is already cancelled).
 * @example
 * ```ts
 * await town.cancelTask(id);
 * await town.completeTask(id, 'done'); // throws InvalidTransitionError
 * ```
 */
export class InvalidTransitionError extends errorClass('INVALID_TRANSITION') {}
/**
 * The task is not (or no longer) in the backlog.
 * @example
 * ```ts
 * await town.backlog.claim(id, 'backend'); // throws NotInBacklogError if someone claimed it first
 * ```
 */
export class NotInBacklogError extends errorClass('NOT_IN_BACKLOG') {}
/**
 * The CLI name is neither a built-in preset nor defined in `tinytown.json` `clis`.
 * @example
 * ```ts
 * await town.spawnAgent('x', 'no-such-cli'); // throws UnknownCliError
 * ```
 */
export class UnknownCliError extends errorClass('UNKNOWN_CLI') {}
/**
 * The agent's CLI binary is not on PATH; the task fails with this and the agent stays usable.
 * @example
 * ```ts
 * const record = await town.waitForTask(id);
 * if (record.error?.startsWith('CLI_NOT_FOUND')) console.log('install the CLI');
 * ```
 */
export class CliNotFoundError extends errorClass('CLI_NOT_FOUND') {}
/**
 * `tinytown.json` or the options passed to `Town.connect` are invalid.
 * @example
 * ```ts
 * await Town.connect('.', { leaseMs: -5 }); // throws ConfigInvalidError
 * ```
 */
export class ConfigInvalidError extends errorClass('CONFIG_INVALID') {}
/**
 * `tinytown.json` is missing and `create: false` was passed.
 * @example
 * ```ts
 * await Town.connect('/tmp/empty', { create: false }); // throws ConfigNotFoundError
 * ```
 */
export class ConfigNotFoundError extends errorClass('CONFIG_NOT_FOUND') {}
/**
 * A record in Redis does not match the schema; the message names the key.
 * @example
 * ```ts
 * await town.task(id); // throws CorruptRecordError if tt:{town}:task:<id> was damaged
 * ```
 */
export class CorruptRecordError extends errorClass('CORRUPT_RECORD') {
  /** The Redis key holding the bad record, when known. */
  key?: string;
}
/**
 * Redis could not be reached within the connect timeout, or the connection failed.
 * @example
 * ```ts
 * await Town.connect('.', { redis: 'redis://10.0.0.9:6379', connectTimeoutMs: 2000 });
 * ```
 */
export class RedisConnectionError extends errorClass('REDIS_CONNECTION') {}
/**
 * Redis refused the credentials (they never appear in the message).
 * @example
 * ```ts
 * await Town.connect('.', { redis: 'redis://user:wrong@localhost:6379' }); // RedisAuthError
 * ```
 */
export class RedisAuthError extends errorClass('REDIS_AUTH') {}
/**
 * The Redis server is older than 6.2.
 * @example
 * ```ts
 * await Town.connect('.', { redis: 'redis://old-server:6379' }); // RedisVersionError
 * ```
 */
export class RedisVersionError extends errorClass('REDIS_VERSION') {}
/**
 * With `durability: 'replicated'`, a write was applied on the primary but not confirmed by
 * enough replicas within `replicaTimeoutMs`. It stands on the primary and survives unless the
 * primary fails before a replica copies it; tinytown does not retry it (retrying an assign
 * would make a second task). Read the state back once the replicas are healthy.
 * @example
 * ```ts
 * try {
 *   await agent.assign('Implement auth endpoints');
 * } catch (err) {
 *   if (err instanceof ReplicationTimeoutError) console.warn('written, not yet replicated:', err.message);
 *   else throw err;
 * }
 * ```
 */
export class ReplicationTimeoutError extends errorClass('REPLICATION_TIMEOUT') {}
/**
 * No `redis-server` binary was found for the managed local Redis.
 * @example
 * ```ts
 * await Town.connect('.'); // RedisServerNotFoundError: install redis-server or set REDIS_URL
 * ```
 */
export class RedisServerNotFoundError extends errorClass('REDIS_SERVER_NOT_FOUND') {}
/**
 * The managed `redis-server` did not start; the message quotes its log.
 * @example
 * ```ts
 * await Town.connect('.'); // RedisServerStartError when .tt/ is not writable
 * ```
 */
export class RedisServerStartError extends errorClass('REDIS_SERVER_START') {}
/**
 * No usable unix socket path (every candidate exceeds the OS limit).
 * @example
 * ```ts
 * await Town.connect('/a/very/deep/folder'); // SocketPathTooLongError when no fallback fits
 * ```
 */
export class SocketPathTooLongError extends errorClass('SOCKET_PATH_TOO_LONG') {}
/**
 * A wait exceeded its `timeoutMs`.
 * @example
 * ```ts
 * await waitForIdle(agent, { timeoutMs: 1000 }); // rejects with TimeoutError if still busy
 * ```
 */
export class TimeoutError extends errorClass('TIMEOUT') {}
/**
 * A wait was aborted through its `signal`.
 * @example
 * ```ts
 * const ac = new AbortController();
 * const p = town.waitForTask(id, { signal: ac.signal });
 * ac.abort(); // p rejects with AbortedError
 * ```
 */
export class AbortedError extends errorClass('ABORTED') {}
/**
 * The town was closed; create a new one with `Town.connect`.
 * @example
 * ```ts
 * await town.close();
 * await town.agents(); // throws TownClosedError
 * ```
 */
export class TownClosedError extends errorClass('TOWN_CLOSED') {}
/**
 * An agent asked for a git worktree (`worktree: true`), but the town's folder is not inside a
 * git repository (or `git` is not installed). Its own code rather than `CONFIG_INVALID`: the
 * options are valid, the folder is not a place for worktrees; catch it to fall back to running
 * the agent without one.
 * @example
 * ```ts
 * try {
 *   await town.spawnAgent('coder', { cli: 'claude', worktree: true });
 * } catch (err) {
 *   if (!(err instanceof NotAGitRepositoryError)) throw err;
 *   await town.spawnAgent('coder', { cli: 'claude' }); // no repository: share the folder
 * }
 * ```
 */
export class NotAGitRepositoryError extends errorClass('NOT_A_GIT_REPOSITORY') {}
/**
 * `agent.remove()` refused: the agent's git worktree holds uncommitted work (modified, staged
 * or untracked files). The agent and its worktree are left as they were; the message names the
 * worktree and its first changed files.
 * @example
 * ```ts
 * try {
 *   await agent.remove();
 * } catch (err) {
 *   if (err instanceof WorktreeDirtyError) console.log(err.message); // commit, stash or discard first
 *   else throw err;
 * }
 * ```
 */
export class WorktreeDirtyError extends errorClass('WORKTREE_DIRTY') {}
/**
 * git could not create, reuse or remove an agent's worktree (the repository has no commit yet,
 * the branch is checked out in another worktree, the folder is taken by something else); the
 * message quotes git.
 * @example
 * ```ts
 * await town.spawnAgent('coder', { cli: 'claude', worktree: true }); // WorktreeError in a repository with no commit
 * ```
 */
export class WorktreeError extends errorClass('WORKTREE_FAILED') {}

/**
 * Removes credentials from a URL or message so it can be shown or logged.
 *
 * @example
 * ```ts
 * redact('redis://user:secret@host:6379'); // 'redis://user:***@host:6379'
 * ```
 */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)([^:@/\s]*):([^@/\s]*)@/gi, '$1$2:***@');
  for (const secret of secrets) if (secret.length > 0) out = out.split(secret).join('***');
  return out;
}
