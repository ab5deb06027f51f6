/**
 * Chooses the unix socket path of a town's managed `redis-server`.
 *
 * The natural place is `<root>/.tt/redis.sock`, but `sun_path` holds only 108 bytes on Linux and
 * 104 on macOS (both counting the NUL), so deep project folders need a short per-user folder
 * instead. The choice depends only on the root's real path and the environment, so every process
 * computes the same answer.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { access, chmod, lstat, mkdir, realpath } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { SocketPathTooLongError } from '../errors.js';

/**
 * Longest socket path we use, in bytes. Below both OS limits (107 and 103 usable bytes) with a
 * margin, because some platforms count the limit differently.
 *
 * @example
 * ```ts
 * Buffer.byteLength(socketPath) <= MAX_SOCKET_PATH_BYTES; // what socketPathFits checks
 * ```
 */
export const MAX_SOCKET_PATH_BYTES = 100;

/** File name of the socket inside `<root>/.tt/`. */
const LOCAL_SOCKET_NAME = 'redis.sock';

/**
 * Whether `path` fits in a `sockaddr_un` on every platform we support.
 *
 * @example
 * ```ts
 * socketPathFits('/home/me/project/.tt/redis.sock'); // true
 * socketPathFits('/' + 'x'.repeat(200)); // false
 * ```
 */
export function socketPathFits(path: string): boolean {
  return Buffer.byteLength(path, 'utf8') <= MAX_SOCKET_PATH_BYTES;
}

/**
 * The socket file name used in the short fallback folder: the first 16 hex digits of
 * `sha256(realRoot)`, so two towns never share a socket and the same town always finds its own.
 *
 * @example
 * ```ts
 * fallbackSocketName('/home/me/project'); // e.g. '3f1c0a9e7b2d4c11.sock'
 * ```
 */
export function fallbackSocketName(realRoot: string): string {
  return `${createHash('sha256').update(realRoot).digest('hex').slice(0, 16)}.sock`;
}

/**
 * Options of {@link resolveSocketPath}.
 *
 * @example
 * ```ts
 * // Only compute the path, e.g. to look for a running server:
 * await resolveSocketPath(realRoot, ttDir, { create: false });
 * ```
 */
export interface ResolveSocketPathOptions {
  /**
   * Create (and check) the fallback folder when it is needed. Without it the path is only
   * computed, which is what callers that look for an existing server want. Default `true`.
   */
  create?: boolean;
}

/**
 * Returns the absolute socket path for the town whose `.tt/` folder is `ttDir` and whose root's
 * real path is `realRoot`.
 *
 * Falls back, in order, to `$XDG_RUNTIME_DIR/tinytown/` (when set and owned by the current user)
 * and `<os.tmpdir()>/tinytown-<uid>/`; both are created with mode 0700 and refused when they are a
 * symlink or owned by someone else, since anyone who can write there could take over the socket.
 *
 * @throws {@link SocketPathTooLongError} when no candidate fits or no fallback folder is safe.
 * @example
 * ```ts
 * const root = await realpath('.');
 * const socketPath = await resolveSocketPath(root, join(root, '.tt'));
 * ```
 */
export async function resolveSocketPath(
  realRoot: string,
  ttDir: string,
  options: ResolveSocketPathOptions = {},
): Promise<string> {
  const local = join(ttDir, LOCAL_SOCKET_NAME);
  if (socketPathFits(local)) return local;

  const create = options.create ?? true;
  const name = fallbackSocketName(realRoot);
  const problems: string[] = [`${local} is ${Buffer.byteLength(local)} bytes`];
  for (const folder of await fallbackFolders()) {
    const candidate = join(folder, name);
    if (!socketPathFits(candidate)) {
      problems.push(`${candidate} is ${Buffer.byteLength(candidate)} bytes`);
      continue;
    }
    if (!create) return candidate;
    const unsafe = await ensurePrivateFolder(folder);
    if (unsafe === undefined) return candidate;
    problems.push(unsafe);
  }
  throw new SocketPathTooLongError(
    'No usable unix socket path for the managed redis-server ' +
      `(limit ${MAX_SOCKET_PATH_BYTES} bytes): ` +
      `${problems.join('; ')}. Move the project to a shorter path, set TMPDIR to a short folder ` +
      `you own (e.g. /tmp), or set REDIS_URL to use an existing Redis.`,
  );
}

/**
 * Per-user folders for short-lived sockets, best first: `$XDG_RUNTIME_DIR/tinytown` (when it is
 * ours), then `<tmpdir>/tinytown-<uid>`. Each must still pass {@link ensurePrivateFolder}.
 */
export async function fallbackFolders(): Promise<string[]> {
  const folders: string[] = [];
  const runtimeDir = process.env.XDG_RUNTIME_DIR;
  if (runtimeDir && runtimeDir.startsWith('/') && (await isOwnWritableFolder(runtimeDir))) {
    folders.push(join(runtimeDir, 'tinytown'));
  }
  folders.push(join(tmpdir(), `tinytown-${currentUserTag()}`));
  return folders;
}

/** `uid` where the platform has one; the user name otherwise. */
function currentUserTag(): string {
  return String(process.getuid?.() ?? userInfo().username);
}

/** An `$XDG_RUNTIME_DIR` left over from another user (e.g. after `su`) must not be used. */
async function isOwnWritableFolder(path: string): Promise<boolean> {
  try {
    const stats = await lstat(await realpath(path));
    if (!stats.isDirectory() || !ownedByCurrentUser(stats.uid)) return false;
    await access(path, constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Creates `folder` with mode 0700 if missing and checks it is a real folder owned by the current
 * user. Returns a description of the problem, or `undefined` when it is safe to use.
 */
export async function ensurePrivateFolder(folder: string): Promise<string | undefined> {
  try {
    await mkdir(folder, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      return `cannot create ${folder}: ${(err as Error).message}`;
    }
  }
  // lstat, not stat: a symlink planted by another user must not redirect our socket.
  const stats = await lstat(folder);
  if (stats.isSymbolicLink()) return `${folder} is a symlink`;
  if (!stats.isDirectory()) return `${folder} is not a folder`;
  if (!ownedByCurrentUser(stats.uid)) return `${folder} is owned by uid ${stats.uid}, not by us`;
  if ((stats.mode & 0o077) !== 0) await chmod(folder, 0o700);
  return undefined;
}

function ownedByCurrentUser(uid: number): boolean {
  const own = process.getuid?.();
  return own === undefined || own === uid;
}
