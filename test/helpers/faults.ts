/**
 * Tools for the fault-injection tests (test/faults*.test.ts) and the soak script:
 *
 * - a private redis-server that a test may kill (SIGKILL) and restart on the same port, socket
 *   and folder, with its AOF — so the shared test Redis is never touched;
 * - worker processes (test/fixtures/child-worker.mjs on the built package) whose every output
 *   line is kept, so a test can kill one at a precise moment ("on its 2nd task start");
 * - a snapshot of every key of a town (type, value, TTL presence), to prove that a refused
 *   call changed nothing.
 *
 * No vitest import: the soak script (test/soak/soak.ts) uses these outside vitest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { freePort } from './redis-server.js';

export { freePort };

// ── a private, restartable redis-server ───────────────────────────────────────────────────

/** A redis-server that can be killed and restarted with its data. */
export interface RestartableRedis {
  port: number;
  /** `redis://127.0.0.1:<port>` */
  url: string;
  /** Unix socket path, when started with `unixSocket: true`. */
  socketPath?: string;
  /** Its data folder (AOF). */
  dir: string;
  /** Pid of the running server (undefined while it is down). */
  readonly pid: number | undefined;
  /** Sends a signal (default SIGKILL) and resolves once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port, socket and folder (replaying the AOF). */
  restart(): Promise<void>;
  /** Kills it for good and removes its folder. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a private redis-server with AOF. `appendfsync` defaults to `always`: the tests assert
 * that every acknowledged write survives a kill, which `always` guarantees (Redis replies only
 * after the write is in the AOF); `everysec` may lose up to about a second (two when an fsync is
 * slow), which would make "no acknowledged task lost" a matter of timing.
 */
export async function startRestartableRedis(
  options: { appendfsync?: 'always' | 'everysec'; unixSocket?: boolean; extraArgs?: readonly string[] } = {},
): Promise<RestartableRedis> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'tt-faults-redis-'));
  const socketPath = options.unixSocket ? join(dir, 'redis.sock') : undefined;
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--save', '',
    '--appendonly', 'yes',
    '--appendfsync', options.appendfsync ?? 'always',
    ...(socketPath ? ['--unixsocket', socketPath, '--unixsocketperm', '700'] : []),
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;

  const launch = async (): Promise<void> => {
    const proc = spawn(process.env.TINYTOWN_REDIS_SERVER ?? 'redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${log}`)), 15_000);
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      proc.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited while starting:\n${log}`));
      });
      proc.stdout!.on('data', (d: Buffer) => {
        log += d.toString();
        // With AOF, "Ready" comes after the data is loaded.
        if (log.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    });
  };

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    ...(socketPath && { socketPath }),
    dir,
    get pid() {
      return child?.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
    async restart() {
      if (child && child.exitCode === null && child.signalCode === null) throw new Error('redis-server is still running');
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ── worker processes ──────────────────────────────────────────────────────────────────────

const FIXTURE = fileURLToPath(new URL('../fixtures/child-worker.mjs', import.meta.url));

/** What a worker process's handler does with each task (see test/fixtures/child-worker.mjs). */
export type ChildHandler = 'hang' | 'stop-self' | 'ok' | 'slow';

/** A worker process. */
export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  /** Its worker id (once `ready`). */
  workerId: string;
  /** Every stdout line so far. */
  readonly lines: readonly string[];
  /** Resolves with the words after `<prefix> ` of the `n`-th line starting so (1-based; past lines count). */
  nth(prefix: string, n?: number, timeoutMs?: number): Promise<string[]>;
  /** Lines starting with `<prefix> `, split into words (prefix dropped). */
  all(prefix: string): string[][];
  /** Resolves when the process has exited. */
  exited: Promise<void>;
  /** SIGKILL, then wait for the exit. */
  kill(): Promise<void>;
}

export interface WorkerProcessOptions {
  /** Path of the built package's ESM entry. */
  dist: string;
  redisUrl: string;
  root: string;
  town: string;
  agent: string;
  handler: ChildHandler;
  leaseMs?: number;
  /** `slow` handler: how long each task takes. */
  slowMs?: number;
  /** Keep retrying registration while a predecessor's lease still runs (a replacement started at once). */
  waitForLease?: boolean;
  /** The worker takes matching backlog tasks when idle. */
  claimBacklog?: boolean;
  /** The process's town `leaseMs` (its sweeper runs every half of it); default the town default. */
  townLeaseMs?: number;
  /** The process's town `closeGraceMs` (SIGTERM closes its town). */
  closeGraceMs?: number;
  /** Wait for `ready` (default true). */
  waitReady?: boolean;
  /**
   * A command the worker runs under, e.g. `['ip', 'netns', 'exec', 'host-a']` to run it on
   * another "host" (a network namespace). It must exec the worker, so the pid stays the worker's.
   */
  launcher?: readonly string[];
}

const processes = new Set<ChildProcess>();

/** Kills every worker process still running (for afterEach / the soak's exit). */
export function killAllWorkerProcesses(): void {
  for (const child of processes) {
    try {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    } catch {
      // gone already
    }
  }
  processes.clear();
}

/** Starts a worker process and (by default) waits until its worker is attached. */
export async function startWorkerProcess(options: WorkerProcessOptions): Promise<WorkerProcess> {
  const [command, ...prefix] = [...(options.launcher ?? []), process.execPath];
  const child = spawn(command!, [...prefix, FIXTURE], {
    env: {
      ...process.env,
      TT_DIST: options.dist,
      REDIS_URL: options.redisUrl,
      TT_ROOT: options.root,
      TT_TOWN: options.town,
      TT_AGENT: options.agent,
      TT_HANDLER: options.handler,
      TT_LEASE_MS: String(options.leaseMs ?? 600),
      TT_SLOW_MS: String(options.slowMs ?? 100),
      TT_WAIT_LEASE: options.waitForLease ? '1' : '',
      TT_CLAIM_BACKLOG: options.claimBacklog ? '1' : '',
      TT_TOWN_LEASE_MS: options.townLeaseMs === undefined ? '' : String(options.townLeaseMs),
      TT_CLOSE_GRACE_MS: options.closeGraceMs === undefined ? '' : String(options.closeGraceMs),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  processes.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      processes.delete(child);
      resolve();
    });
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) w();
  });
  const matching = (prefix: string): string[][] =>
    lines.filter((l) => l === prefix || l.startsWith(`${prefix} `)).map((l) => l.slice(prefix.length + 1).split(' '));
  const nth = (prefix: string, n = 1, timeoutMs = 15_000): Promise<string[]> =>
    new Promise((resolve, reject) => {
      let done = false;
      const check = (): void => {
        const found = matching(prefix)[n - 1];
        if (!found || done) return;
        finish();
        resolve(found);
      };
      const finish = (): void => {
        done = true;
        clearTimeout(timer);
        waiters.delete(check);
        child.off('exit', onExit);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`worker process printed no ${n}. "${prefix}" line within ${timeoutMs} ms; stderr:\n${stderr}`));
      }, timeoutMs);
      const onExit = (): void => {
        // lines already read may still be delivered: give readline a turn
        setImmediate(() => {
          check();
          if (done) return;
          finish();
          reject(new Error(`worker process exited before its ${n}. "${prefix}" line; stderr:\n${stderr}`));
        });
      };
      waiters.add(check);
      child.once('exit', onExit);
      check();
    });
  const proc: WorkerProcess = {
    child,
    pid: child.pid!,
    workerId: '',
    lines,
    nth,
    all: matching,
    exited,
    async kill() {
      try {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      } catch {
        // gone already
      }
      await exited;
    },
  };
  if (options.waitReady !== false) [proc.workerId] = (await nth('ready', 1, 20_000)) as [string];
  return proc;
}

// ── snapshots of stored state ─────────────────────────────────────────────────────────────

/**
 * Every key under `prefix` with its type, its value read per type (hash fields, set members and
 * sorted-set members sorted; lists and streams in order) and whether it has a TTL. Not DUMP: a
 * hash in hashtable encoding DUMPs its fields in bucket order, which incremental rehashing
 * changes without any write. The sweep guard (`lock:sweep`) is left out: it is a timer's
 * mutex, not stored state.
 */
export async function snapshotKeys(redis: Redis, prefix: string): Promise<Record<string, string>> {
  const keys: string[] = [];
  let cursor = '0';
  // Glob characters in the prefix (none in tinytown's, but a town name may hold them) escaped.
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const out: Record<string, string> = {};
  for (const key of keys.sort()) {
    if (key === `${prefix}lock:sweep`) continue;
    const [type, ttl] = await Promise.all([redis.type(key), redis.pttl(key)]);
    let value: unknown;
    switch (type) {
      case 'string':
        value = await redis.get(key);
        break;
      case 'hash':
        value = Object.entries(await redis.hgetall(key)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        break;
      case 'list':
        value = await redis.lrange(key, 0, -1);
        break;
      case 'set':
        value = (await redis.smembers(key)).sort();
        break;
      case 'zset':
        value = await redis.zrange(key, '0', '-1', 'WITHSCORES');
        break;
      case 'stream':
        value = await redis.xrange(key, '-', '+');
        break;
      default:
        value = `(${type})`;
    }
    out[key] = `${type} ttl=${ttl >= 0 ? 'yes' : 'no'} ${JSON.stringify(value)}`;
  }
  return out;
}
