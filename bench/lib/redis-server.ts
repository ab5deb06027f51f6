/**
 * The bench's own redis-server: one process listening on both a unix socket and TCP loopback,
 * persistence off (`--save "" --appendonly no`) in a temporary folder, so both transports are
 * measured against the very same server and no disk write ever lands inside a measurement.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface BenchRedis {
  /** `unix:///…/redis.sock` */
  unixUrl: string;
  /** `redis://127.0.0.1:<port>` */
  tcpUrl: string;
  socketPath: string;
  port: number;
  version: string;
  /** The exact command line used, for RESULTS.md. */
  commandLine: string;
  /** An admin connection (unix socket) for FLUSHALL, INFO, MEMORY USAGE. */
  admin: Redis;
  stop(): Promise<void>;
}

export const REDIS_SERVER = process.env.BENCH_REDIS_SERVER ?? '/usr/bin/redis-server';

export async function startRedis(): Promise<BenchRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'tt-bench-'));
  const socketPath = join(dir, 'redis.sock');
  const port = await freePort();
  const args = [
    '--port', String(port), '--bind', '127.0.0.1',
    '--unixsocket', socketPath, '--unixsocketperm', '700',
    '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning',
    '--maxclients', '10000', '--maxmemory-policy', 'noeviction',
  ];
  const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const admin = new Redis({ path: socketPath, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  admin.on('error', () => undefined);
  await waitUntilUp(admin, child, () => stderr);
  const info = await admin.info('server');
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  return {
    unixUrl: `unix://${socketPath}`,
    tcpUrl: `redis://127.0.0.1:${port}`,
    socketPath,
    port,
    version,
    commandLine: `${REDIS_SERVER} ${args.map((a) => (a === '' ? '""' : a)).join(' ')}`,
    admin,
    async stop() {
      admin.disconnect();
      await stopChild(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** `redis-server --version`, without starting one. */
export function redisServerVersion(): string {
  const out = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' }).stdout ?? '';
  return /v=(\S+)/.exec(out)?.[1] ?? 'unknown';
}

async function waitUntilUp(admin: Redis, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  let exited = false;
  child.once('exit', () => (exited = true));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`redis-server exited at start: ${stderr()}`);
    try {
      if (admin.status === 'wait') await admin.connect();
      if ((await admin.ping()) === 'PONG') return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not answer within 10 s: ${stderr()}`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// ── INFO helpers ──────────────────────────────────────────────────────────────────────────────

/** `INFO commandstats` as command → calls. */
export async function commandCalls(admin: Redis): Promise<Map<string, number>> {
  const text = await admin.info('commandstats');
  const calls = new Map<string, number>();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1]!, Number(m[2]));
  return calls;
}

/** Per-command difference of two `commandCalls` snapshots (zero entries dropped). */
export function diffCalls(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [cmd, n] of after) {
    const d = n - (before.get(cmd) ?? 0);
    if (d > 0) out.set(cmd, d);
  }
  return out;
}

/** `used_memory` in bytes, after letting lazy frees settle. */
export async function usedMemory(admin: Redis): Promise<number> {
  const text = await admin.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(text)?.[1] ?? NaN);
}

/** Empties the server between runs, synchronously, so memory readings start clean. */
export async function flush(admin: Redis): Promise<void> {
  await admin.flushall('SYNC');
}
