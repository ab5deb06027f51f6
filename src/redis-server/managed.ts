/**
 * The managed local `redis-server`: with no Redis configured, a town runs its own server as a
 * daemon on a unix socket, with AOF, pidfile and log in `<root>/.tt/`, and every process working
 * on that town reuses it.
 *
 * Only Node built-ins here (no ioredis): this code decides whether a server exists before any
 * client is created, and a raw `PING` over the socket is all it needs.
 *
 * @module
 */
import { execFile, spawn } from 'node:child_process';
import {
  chmod,
  lstat,
  mkdir,
  open,
  readFile,
  realpath,
  rename,
  unlink,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
import { createConnection } from 'node:net';
import { isAbsolute, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  InvalidArgumentError,
  RedisServerNotFoundError,
  RedisServerStartError,
  RedisVersionError,
} from '../errors.js';
import { isProcessAlive, withLock } from './lock.js';
import { resolveSocketPath, socketPathFits } from './socket-path.js';

/**
 * Options of {@link ensureManagedRedis}.
 *
 * @example
 * ```ts
 * const options: ManagedRedisOptions = { durability: 'strict', startTimeoutMs: 30_000 };
 * await ensureManagedRedis('.', options);
 * ```
 */
export interface ManagedRedisOptions {
  /** 'strict' → appendfsync always; default everysec. */
  durability?: 'default' | 'strict';
  /** Binary to run; default env TINYTOWN_REDIS_SERVER, else `redis-server` on PATH. */
  serverBinary?: string;
  /** How long to wait for the server to answer PING after starting it (default 10_000). */
  startTimeoutMs?: number;
}

/**
 * A running managed server, as returned by {@link ensureManagedRedis}.
 *
 * @example
 * ```ts
 * const { socketPath, url, started } = await ensureManagedRedis('.');
 * // socketPath: '/home/me/project/.tt/redis.sock', url: 'unix:///home/me/project/.tt/redis.sock'
 * ```
 */
export interface ManagedRedis {
  /** Absolute unix socket path the server listens on. */
  socketPath: string;
  /** Same as a URL: `unix://<socketPath>` */
  url: string;
  /** true when this call started the server, false when it reused a running one. */
  started: boolean;
}

const DEFAULT_START_TIMEOUT_MS = 10_000;
const MIN_VERSION = { major: 6, minor: 2 } as const;
/** A healthy server answers PING in well under a millisecond; this only bounds a hung one. */
const PING_TIMEOUT_MS = 1_000;
const POLL_MS = 20;
/** How long `stopManagedRedis` waits for each step (SHUTDOWN, SIGTERM, SIGKILL). */
const SHUTDOWN_WAIT_MS = 5_000;
const SIGTERM_WAIT_MS = 3_000;
const SIGKILL_WAIT_MS = 2_000;
const LOG_TAIL_LINES = 20;
const LOG_TAIL_MAX_BYTES = 64 * 1024;

const execFileAsync = promisify(execFile);

/**
 * Starts or reuses the town's redis-server for the town rooted at `root` (state in `<root>/.tt/`).
 *
 * Safe to call from many processes at once: an exclusive lock file (`.tt/redis.lock`) makes sure
 * only one of them starts a server; the others wait for it and reuse it.
 *
 * @throws {@link RedisServerNotFoundError} when the binary is missing.
 * @throws {@link RedisVersionError} when the binary is older than Redis 6.2.
 * @throws {@link RedisServerStartError} when the server does not come up; the message quotes
 *   its log.
 * @throws {@link SocketPathTooLongError} when no unix socket path fits the OS limit.
 * @example
 * ```ts
 * const redis = await ensureManagedRedis('/home/me/project');
 * const client = new Redis({ path: redis.socketPath });
 * console.log(redis.started ? 'started' : 'reused', redis.url);
 * ```
 */
export async function ensureManagedRedis(
  root: string,
  options: ManagedRedisOptions = {},
): Promise<ManagedRedis> {
  const timeoutMs = checkOptions(options);
  const town = await prepareTown(root);
  const found = await findRunning(town, Date.now() + timeoutMs);
  if (found !== undefined) return describe(found, false);

  const result = await withLock(
    town.lockFile,
    {
      timeoutMs,
      // Another process is starting it: reuse it as soon as it answers instead of waiting for
      // that process to release the lock.
      whileWaiting: async () => firstReady(town),
    },
    async () => {
      const again = await findRunning(town, Date.now() + timeoutMs);
      if (again !== undefined) return describe(again, false);
      await startServer(town, options, timeoutMs);
      return describe(town.socketPath, true);
    },
  );
  switch (result.kind) {
    case 'acquired':
      return result.value;
    case 'waited':
      return describe(result.value, false);
    case 'timeout':
      throw new RedisServerStartError(
        `Timed out after ${timeoutMs} ms waiting for process ${result.holderPid ?? '(unknown)'} ` +
          `to start redis-server (it holds ${town.lockFile}). ` +
          'If that process is gone, delete the lock file.',
      );
  }
}

/**
 * Stops the town's managed redis-server if running (SHUTDOWN; falls back to SIGTERM then
 * SIGKILL of the pidfile's pid). Resolves true if a server was stopped. Never blocks on a
 * snapshot: the server runs with `--save ""` and is sent `SHUTDOWN NOSAVE`, so only the AOF is
 * flushed.
 *
 * @example
 * ```ts
 * if (await stopManagedRedis('/home/me/project')) console.log('redis-server stopped');
 * ```
 */
export async function stopManagedRedis(root: string): Promise<boolean> {
  const town = await locateTown(root);
  if (town === undefined) return false;
  const result = await withLock(town.lockFile, { timeoutMs: DEFAULT_START_TIMEOUT_MS }, () =>
    stopServer(town),
  );
  // A start that hangs past its own timeout must not prevent stopping: go ahead without the lock.
  return result.kind === 'acquired' ? result.value : stopServer(town);
}

// ---------------------------------------------------------------------------------------------
// Town paths

/** Every path of one town's managed server. All absolute. */
interface TownPaths {
  realRoot: string;
  ttDir: string;
  socketPath: string;
  pidFile: string;
  logFile: string;
  lockFile: string;
  /**
   * Holds the socket path the server was started with. The computed path depends on the
   * environment (`XDG_RUNTIME_DIR`, `TMPDIR`), and a process with a different environment must
   * still find the running server rather than start a second one on the same AOF.
   */
  socketRecord: string;
}

function townPaths(realRoot: string, socketPath: string): TownPaths {
  const ttDir = join(realRoot, '.tt');
  return {
    realRoot,
    ttDir,
    socketPath,
    pidFile: join(ttDir, 'redis.pid'),
    logFile: join(ttDir, 'redis.log'),
    lockFile: join(ttDir, 'redis.lock'),
    socketRecord: join(ttDir, 'redis.sockpath'),
  };
}

/** Creates `<root>/.tt/` (0700, git-ignored) and picks the socket path. */
async function prepareTown(root: string): Promise<TownPaths> {
  const absRoot = resolve(root);
  await mkdir(absRoot, { recursive: true });
  const realRoot = await realpath(absRoot);
  const ttDir = join(realRoot, '.tt');
  await ensurePrivateDir(ttDir);
  await writeIfMissing(join(ttDir, '.gitignore'), '*\n');
  return townPaths(realRoot, await resolveSocketPath(realRoot, ttDir));
}

/** Like {@link prepareTown} but creates nothing; `undefined` when the town has no `.tt/`. */
async function locateTown(root: string): Promise<TownPaths | undefined> {
  let realRoot: string;
  try {
    realRoot = await realpath(resolve(root));
    await lstat(join(realRoot, '.tt'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const ttDir = join(realRoot, '.tt');
  return townPaths(realRoot, await resolveSocketPath(realRoot, ttDir, { create: false }));
}

async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // An existing .tt/ (e.g. made by hand or by an older version) may be group-readable; the
  // AOF in it holds every task and message.
  const stats = await lstat(dir);
  if ((stats.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
}

async function writeIfMissing(path: string, content: string): Promise<void> {
  try {
    await writeFile(path, content, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** The recorded socket path first (it is what the running server uses), then the computed one. */
async function candidateSockets(town: TownPaths): Promise<string[]> {
  let recorded: string;
  try {
    recorded = (await readFile(town.socketRecord, 'utf8')).trim();
  } catch {
    return [town.socketPath];
  }
  const usable = isAbsolute(recorded) && socketPathFits(recorded) && recorded !== town.socketPath;
  return usable ? [recorded, town.socketPath] : [town.socketPath];
}

/** Writes via rename so a reader never sees half a path. */
async function recordSocketPath(town: TownPaths): Promise<void> {
  const temp = `${town.socketRecord}.${process.pid}.tmp`;
  await writeFile(temp, `${town.socketPath}\n`, { mode: 0o600 });
  await rename(temp, town.socketRecord);
}

function describe(socketPath: string, started: boolean): ManagedRedis {
  return { socketPath, url: `unix://${socketPath}`, started };
}

function checkOptions(options: ManagedRedisOptions): number {
  const { durability, startTimeoutMs = DEFAULT_START_TIMEOUT_MS } = options;
  if (durability !== undefined && durability !== 'default' && durability !== 'strict') {
    throw new InvalidArgumentError(
      `durability must be 'default' or 'strict', got ${String(durability)}`,
    );
  }
  if (!Number.isFinite(startTimeoutMs) || startTimeoutMs <= 0) {
    throw new InvalidArgumentError(
      `startTimeoutMs must be a positive number, got ${startTimeoutMs}`,
    );
  }
  return startTimeoutMs;
}

// ---------------------------------------------------------------------------------------------
// Liveness

/** What a raw `PING` over the socket found. */
type Probe =
  | { state: 'ready' }
  /** Up but replaying the AOF (`-LOADING`): it will be ready soon. */
  | { state: 'loading' }
  /** Accepts connections but did not answer in time (e.g. running a long script). */
  | { state: 'busy' }
  /** Answered with another error (`-NOAUTH`, ...): a server is there; clients will see it. */
  | { state: 'error'; reply: string }
  | { state: 'down' };

function probe(socketPath: string, timeoutMs = PING_TIMEOUT_MS): Promise<Probe> {
  return new Promise((resolvePromise) => {
    const socket = createConnection({ path: socketPath });
    let buffer = '';
    let settled = false;
    const finish = (result: Probe): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(result);
    };
    // Something holds the socket open without answering: treat it as a live server, never
    // start a second one over it.
    const timer = setTimeout(() => finish({ state: 'busy' }), timeoutMs);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      const end = buffer.indexOf('\r\n');
      if (end >= 0) finish(classifyReply(buffer.slice(0, end)));
    });
    // ENOENT (no socket file), ECONNREFUSED (stale file), or closed before answering.
    socket.once('error', () => finish({ state: 'down' }));
    socket.once('close', () => finish({ state: 'down' }));
  });
}

function classifyReply(line: string): Probe {
  if (line === '+PONG') return { state: 'ready' };
  if (line.startsWith('-LOADING')) return { state: 'loading' };
  return { state: 'error', reply: line };
}

function isUsable(result: Probe): boolean {
  return result.state === 'ready' || result.state === 'error';
}

/** The first candidate socket that answers now, without waiting. */
async function firstReady(town: TownPaths): Promise<string | undefined> {
  for (const socketPath of await candidateSockets(town)) {
    if (isUsable(await probe(socketPath))) return socketPath;
  }
  return undefined;
}

/**
 * The socket of the running server, waiting (until `deadline`) for one that is loading or busy;
 * `undefined` when none runs.
 */
async function findRunning(town: TownPaths, deadline: number): Promise<string | undefined> {
  for (const socketPath of await candidateSockets(town)) {
    const first = await probe(socketPath);
    if (first.state === 'down') continue;
    const last = await waitUntilUsable(socketPath, deadline, first);
    if (isUsable(last)) return socketPath;
    throw new RedisServerStartError(
      `redis-server on ${socketPath} is ${last.state} and did not answer PING ` +
        'before the start timeout.' +
        (await logTailMessage(town.logFile, 0)),
    );
  }
  return undefined;
}

async function waitUntilUsable(
  socketPath: string,
  deadline: number,
  first?: Probe,
  gaveUp: () => Promise<boolean> = async () => false,
): Promise<Probe> {
  let result = first ?? (await probe(socketPath));
  while (!isUsable(result) && Date.now() < deadline && !(await gaveUp())) {
    await sleep(POLL_MS);
    result = await probe(socketPath, Math.max(1, Math.min(PING_TIMEOUT_MS, deadline - Date.now())));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Starting

async function startServer(
  town: TownPaths,
  options: ManagedRedisOptions,
  timeoutMs: number,
): Promise<void> {
  const binary = serverBinary(options);
  await checkVersion(binary, timeoutMs);
  await stopOrphan(town);
  await recordSocketPath(town);

  const logOffset = await fileSize(town.logFile);
  const deadline = Date.now() + timeoutMs;
  const args = serverArgs(town, options.durability ?? 'default');
  const launch = await run(binary, args, timeoutMs, town.ttDir);
  if (launch.spawnError !== undefined) throw notFound(binary, launch.spawnError);
  if (launch.code !== 0) {
    const how =
      launch.code === null
        ? `was killed (${launch.signal ?? 'timeout'})`
        : `exited with code ${launch.code}`;
    throw new RedisServerStartError(
      `${binary} ${how} instead of starting.` +
        outputMessage(launch.output) +
        (await logTailMessage(town.logFile, logOffset)),
    );
  }

  // The daemon writes its pidfile once it listens: a pidfile whose process is gone means it died.
  const died = async (): Promise<boolean> => {
    const pid = await readPidFile(town.pidFile);
    return pid !== undefined && !isProcessAlive(pid);
  };
  const result = await waitUntilUsable(town.socketPath, deadline, undefined, died);
  if (isUsable(result)) return;
  await terminateQuietly(town);
  throw new RedisServerStartError(
    `redis-server did not answer PING on ${town.socketPath} within ${timeoutMs} ms ` +
      `(${(await died()) ? 'it exited' : `last state: ${result.state}`}).` +
      (await logTailMessage(town.logFile, logOffset)),
  );
}

function serverBinary(options: ManagedRedisOptions): string {
  const fromEnv = process.env.TINYTOWN_REDIS_SERVER;
  if (options.serverBinary !== undefined) return options.serverBinary;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : 'redis-server';
}

function serverArgs(town: TownPaths, durability: 'default' | 'strict'): string[] {
  return [
    '--unixsocket', town.socketPath,
    '--unixsocketperm', '700',
    '--port', '0',
    '--daemonize', 'yes',
    '--pidfile', town.pidFile,
    '--logfile', town.logFile,
    '--dir', town.ttDir,
    '--appendonly', 'yes',
    '--appendfsync', durability === 'strict' ? 'always' : 'everysec',
    // No RDB snapshots: a server whose snapshot fails on shutdown refuses to exit.
    '--save', '',
    '--maxmemory-policy', 'noeviction',
  ];
}

/** Runs `<binary> --version` and refuses anything older than Redis 6.2. */
async function checkVersion(binary: string, timeoutMs: number): Promise<void> {
  const result = await run(binary, ['--version'], timeoutMs);
  if (result.spawnError !== undefined) throw notFound(binary, result.spawnError);
  // Redis prints `Redis server v=7.0.15 sha=...`, Valkey `Valkey server v=8.0.1 ...`.
  const match = /\bv=(\d+)\.(\d+)(?:\.(\d+))?/.exec(result.output);
  if (result.code !== 0 || match === null) {
    throw new RedisServerStartError(
      `\`${binary} --version\` did not print a Redis version` +
        (result.code === 0 ? '' : ` (exit code ${String(result.code)})`) +
        '.' + outputMessage(result.output),
    );
  }
  const major = Number(match[1]);
  const minor = Number(match[2]);
  if (major < MIN_VERSION.major || (major === MIN_VERSION.major && minor < MIN_VERSION.minor)) {
    const found = match[3] === undefined ? `${major}.${minor}` : `${major}.${minor}.${match[3]}`;
    throw new RedisVersionError(
      `${binary} is version ${found}; tinytown needs Redis ` +
        `${MIN_VERSION.major}.${MIN_VERSION.minor} or newer (or Valkey). Upgrade it, point ` +
        'TINYTOWN_REDIS_SERVER at a newer binary, or set REDIS_URL.',
    );
  }
}

function notFound(binary: string, cause: NodeJS.ErrnoException): RedisServerNotFoundError {
  const problem = cause.code === 'EACCES' ? 'is not executable' : 'was not found';
  return new RedisServerNotFoundError(
    `redis-server ${problem} (tried "${binary}"). Install it ` +
      '(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), ' +
      'or set TINYTOWN_REDIS_SERVER to the path of a redis-server binary, ' +
      'or set REDIS_URL to use an existing Redis.',
    { cause },
  );
}

/**
 * A server whose socket file was deleted (e.g. by a /tmp cleaner) still runs and writes the AOF;
 * starting a second one on the same folder would corrupt it, so stop the first.
 */
async function stopOrphan(town: TownPaths): Promise<void> {
  const pid = await readPidFile(town.pidFile);
  if (pid === undefined || !isProcessAlive(pid)) return;
  if ((await isOurServer(pid, town)) === true) await terminate(pid);
}

async function terminateQuietly(town: TownPaths): Promise<void> {
  const pid = await readPidFile(town.pidFile);
  if (pid !== undefined && isProcessAlive(pid) && (await isOurServer(pid, town)) !== false) {
    await terminate(pid);
  }
}

// ---------------------------------------------------------------------------------------------
// Stopping

async function stopServer(town: TownPaths): Promise<boolean> {
  let stopped = false;
  const pid = await readPidFile(town.pidFile);
  for (const socketPath of await candidateSockets(town)) {
    if ((await probe(socketPath)).state === 'down') continue;
    stopped = true;
    const refusal = await sendShutdown(socketPath);
    // A refusal (e.g. -NOAUTH) will not turn into an exit: go straight to signals.
    if (refusal !== undefined || (await waitGone(socketPath, pid, SHUTDOWN_WAIT_MS))) break;
  }
  if (pid !== undefined && isProcessAlive(pid) && (await isOurServer(pid, town)) !== false) {
    stopped = true;
    await terminate(pid);
  }
  if (pid !== undefined && !isProcessAlive(pid)) await unlinkQuietly(town.pidFile);
  return stopped;
}

/**
 * Sends `SHUTDOWN NOSAVE` and waits for the server to close the connection. NOSAVE skips RDB
 * even if save points were configured at runtime; the AOF is still flushed and fsynced.
 * Resolves with the server's reply, which is always a refusal (success closes the connection
 * without one), or `undefined`.
 */
function sendShutdown(socketPath: string): Promise<string | undefined> {
  return new Promise((resolvePromise) => {
    const socket = createConnection({ path: socketPath });
    let settled = false;
    const done = (reply?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(reply);
    };
    const timer = setTimeout(() => done(), SHUTDOWN_WAIT_MS);
    socket.once('connect', () => socket.write('*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n'));
    socket.on('data', (chunk: Buffer) => done(chunk.toString('utf8').trim()));
    socket.once('error', () => done());
    socket.once('close', () => done());
  });
}

/** Whether the server went away within `ms`: its process when the pid is known, else its socket. */
async function waitGone(socketPath: string, pid: number | undefined, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  const gone = async (): Promise<boolean> =>
    pid !== undefined ? !isProcessAlive(pid) : (await probe(socketPath)).state === 'down';
  while (!(await gone())) {
    if (Date.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
  return true;
}

/** SIGTERM (a clean shutdown that flushes the AOF), then SIGKILL. */
async function terminate(pid: number): Promise<void> {
  const steps = [['SIGTERM', SIGTERM_WAIT_MS], ['SIGKILL', SIGKILL_WAIT_MS]] as const;
  for (const [signal, waitMs] of steps) {
    try {
      process.kill(pid, signal);
    } catch {
      return; // already gone (or not ours to signal)
    }
    const deadline = Date.now() + waitMs;
    while (isProcessAlive(pid)) {
      if (Date.now() >= deadline) break;
      await sleep(POLL_MS);
    }
    if (!isProcessAlive(pid)) return;
  }
}

/**
 * Guards against a recycled pid in a stale pidfile: `true` when the process looks like our
 * server, `false` when it clearly is something else, `undefined` when we cannot tell.
 * Redis and Valkey set their process title to `<binary> unixsocket:<path>`.
 */
async function isOurServer(pid: number, town: TownPaths): Promise<boolean | undefined> {
  const command = await processCommand(pid);
  if (command === undefined) return undefined;
  if (/redis|valkey/i.test(command)) return true;
  return (await candidateSockets(town)).some((socketPath) => command.includes(socketPath));
}

async function processCommand(pid: number): Promise<string | undefined> {
  try {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ').trim();
    return cmdline === '' ? undefined : cmdline;
  } catch {
    if (process.platform === 'linux') return undefined;
  }
  try {
    const { stdout } = await execFileAsync('ps', ['-o', 'command=', '-p', String(pid)], {
      timeout: 2_000,
    });
    return stdout.trim() === '' ? undefined : stdout.trim();
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  spawnError?: NodeJS.ErrnoException;
}

/**
 * Runs a command without a shell and resolves when it exits. Unlike `execFile`, it does not wait
 * for stdout/stderr to close: a daemon child that kept them open would hang us forever.
 */
function run(command: string, args: string[], timeoutMs: number, cwd?: string): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    let output = '';
    const collect = (chunk: Buffer): void => {
      if (output.length < LOG_TAIL_MAX_BYTES) output += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolvePromise({ code: null, signal: null, output, spawnError: err });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // Let already-written output arrive, then stop listening.
      setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        resolvePromise({ code, signal, output });
      }, 50);
    });
  });
}

async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await lstat(path)).size;
  } catch {
    return 0;
  }
}

/** The last lines the server logged since `offset`, formatted for an error message. */
async function logTailMessage(logFile: string, offset: number): Promise<string> {
  const tail = await readLogTail(logFile, offset);
  return tail === ''
    ? ` Nothing was written to ${logFile}.`
    : `\nLast lines of ${logFile}:\n${tail}`;
}

async function readLogTail(logFile: string, offset: number): Promise<string> {
  let handle: FileHandle;
  try {
    handle = await open(logFile, 'r');
  } catch {
    return '';
  }
  try {
    const size = (await handle.stat()).size;
    const start = Math.max(offset <= size ? offset : 0, size - LOG_TAIL_MAX_BYTES);
    const buffer = Buffer.alloc(size - start);
    await handle.read(buffer, 0, buffer.length, start);
    const lines = buffer.toString('utf8').split('\n').filter((line) => line.trim() !== '');
    return lines.slice(-LOG_TAIL_LINES).join('\n');
  } finally {
    await handle.close();
  }
}

function outputMessage(output: string): string {
  const text = output.trim();
  if (text === '') return '';
  return `\nOutput:\n${text.split('\n').slice(-LOG_TAIL_LINES).join('\n')}`;
}

async function unlinkQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
