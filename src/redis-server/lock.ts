/**
 * A cross-process lock file for startup code: `open(path, 'wx')` either creates the file or
 * fails, atomically, on every local file system. The file holds the owner's pid so a lock left
 * by a crashed process can be recognised and removed.
 *
 * Waiting polls with short sleeps: this runs once per process start, never in a worker loop.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** A lock whose file is still empty is being written; only after this long is it abandoned. */
const EMPTY_LOCK_GRACE_MS = 5_000;
/** Holding the break lock takes microseconds; one this old belongs to a crashed process. */
const BREAK_LOCK_STALE_MS = 10_000;
const POLL_MS = 25;

/** Lock files this process holds, so a stale lock carrying our own (reused) pid is recognised. */
const held = new Set<string>();

/**
 * Options of {@link withLock}.
 *
 * @example
 * ```ts
 * const options: LockOptions<string> = {
 *   timeoutMs: 10_000,
 *   whileWaiting: async () => ((await isUp()) ? 'up' : undefined),
 * };
 * ```
 */
export interface LockOptions<E> {
  /** Give up waiting after this long. */
  timeoutMs: number;
  /**
   * Called between polls while another process holds the lock. Returning a value other than
   * `undefined` stops waiting and resolves `withLock` with it (e.g. "the server is up now").
   */
  whileWaiting?: () => Promise<E | undefined>;
}

/**
 * Result of {@link withLock}: what `fn` returned, what `whileWaiting` returned, or a timeout.
 *
 * @example
 * ```ts
 * const result: LockResult<number, string> = await withLock(path, options, async () => 42);
 * if (result.kind === 'timeout') console.log('held by', result.holderPid);
 * ```
 */
export type LockResult<T, E> =
  | { kind: 'acquired'; value: T }
  | { kind: 'waited'; value: E }
  | { kind: 'timeout'; holderPid: number | undefined };

/**
 * Runs `fn` while holding the lock file `path`, waiting for other holders up to
 * `options.timeoutMs`. The lock is released in `finally`, also when `fn` throws.
 *
 * @example
 * ```ts
 * const lockFile = '/repo/.tt/redis.lock';
 * const result = await withLock(lockFile, { timeoutMs: 10_000 }, () => startServer());
 * if (result.kind === 'acquired') console.log('started', result.value);
 * ```
 */
export async function withLock<T, E = never>(
  path: string,
  options: LockOptions<E>,
  fn: () => Promise<T>,
): Promise<LockResult<T, E>> {
  const deadline = Date.now() + options.timeoutMs;
  const token = `${process.pid}\n${randomBytes(8).toString('hex')}\n`;
  for (;;) {
    if (await tryCreate(path, token)) break;
    const holder = await readLock(path);
    if (holder !== undefined && (await isStale(path, holder))) {
      await breakStaleLock(path, holder.content);
      continue;
    }
    const early = await options.whileWaiting?.();
    if (early !== undefined) return { kind: 'waited', value: early };
    if (Date.now() >= deadline) return { kind: 'timeout', holderPid: holder?.pid };
    await sleep(POLL_MS);
  }
  held.add(path);
  try {
    return { kind: 'acquired', value: await fn() };
  } finally {
    held.delete(path);
    await removeIfOurs(path, token);
  }
}

async function tryCreate(path: string, token: string): Promise<boolean> {
  try {
    await writeFile(path, token, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

interface LockContent {
  content: string;
  pid: number | undefined;
}

/** `undefined` when the lock vanished between our create attempt and this read. */
async function readLock(path: string): Promise<LockContent | undefined> {
  try {
    const content = await readFile(path, 'utf8');
    const pid = Number.parseInt(content.split('\n', 1)[0] ?? '', 10);
    return { content, pid: Number.isSafeInteger(pid) && pid > 0 ? pid : undefined };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function isStale(path: string, holder: LockContent): Promise<boolean> {
  if (holder.pid === undefined) return (await ageMs(path)) > EMPTY_LOCK_GRACE_MS;
  if (holder.pid === process.pid) return !held.has(path);
  return !isProcessAlive(holder.pid);
}

/**
 * Removes a stale lock, but only if it still holds the stale content: two waiters may both see
 * the same dead lock, and the slower one must not delete the fresh lock the faster one just
 * created. A short-lived `.break` lock makes the check-then-unlink atomic between them.
 */
async function breakStaleLock(path: string, staleContent: string): Promise<void> {
  const breaker = `${path}.break`;
  if (!(await tryCreate(breaker, `${process.pid}\n`))) {
    if ((await ageMs(breaker)) > BREAK_LOCK_STALE_MS) await unlinkQuietly(breaker);
    await sleep(POLL_MS);
    return;
  }
  try {
    const current = await readLock(path);
    if (current?.content === staleContent) await unlinkQuietly(path);
  } finally {
    await unlinkQuietly(breaker);
  }
}

async function removeIfOurs(path: string, token: string): Promise<void> {
  const current = await readLock(path);
  if (current?.content === token) await unlinkQuietly(path);
}

async function ageMs(path: string): Promise<number> {
  try {
    return Date.now() - (await stat(path)).mtimeMs;
  } catch {
    return 0;
  }
}

async function unlinkQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Whether a process with this pid exists and has not exited. A zombie (exited, not yet reaped,
 * which happens to daemons when PID 1 reaps lazily, as in some containers) counts as exited.
 *
 * @example
 * ```ts
 * isProcessAlive(process.pid); // true
 * ```
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !isZombie(pid);
}

/** Linux only; elsewhere we cannot tell cheaply and say no. */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command name, which is in parentheses and may itself contain ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}
