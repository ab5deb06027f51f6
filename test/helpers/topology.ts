/**
 * Redis topologies for the scale-out tests (test/scale-*.test.ts), all on loopback and all of
 * the test's own: a primary with a replica watched by three sentinels, and a Redis Cluster.
 * Every process is a child of the test process; `stop()` kills them and removes their folders.
 *
 * No vitest import, so the helpers can be tried from a script.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './redis-server.js';

const run = promisify(execFile);
const REDIS_SERVER = process.env.TINYTOWN_REDIS_SERVER ?? 'redis-server';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 50 ms until it returns a value other than undefined or false. */
export async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(50);
  }
}

/** One redis-server (or sentinel) process, restartable on the same port and folder. */
export interface ServerProcess {
  port: number;
  dir: string;
  readonly running: boolean;
  /** Its pid while running. */
  readonly pid: number | undefined;
  /** SIGKILL, resolved once it has exited. */
  kill(): Promise<void>;
  /** Starts it again with (possibly) other arguments. */
  restart(extraArgs?: readonly string[]): Promise<void>;
}

const children = new Set<ChildProcess>();

/** Kills every server process these helpers started (afterAll safety net). */
export function killAllServers(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  children.clear();
}

/**
 * Starts `redis-server` (or `redis-sentinel <conf>` when `sentinelConf` is given) and resolves
 * once it logs that it is ready.
 */
export async function startServer(options: {
  port: number;
  dir: string;
  args?: readonly string[];
  sentinelConf?: string;
  /** Listen here instead of 127.0.0.1. */
  bind?: string;
  /** A command to run the server under, e.g. `['ip', 'netns', 'exec', 'host']` (it must exec it). */
  launcher?: readonly string[];
}): Promise<ServerProcess> {
  await mkdir(options.dir, { recursive: true });
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const launch = async (extra: readonly string[]): Promise<void> => {
    const [command, args] = options.sentinelConf
      ? sentinelCommand(options.sentinelConf)
      : [
          REDIS_SERVER,
          [
            '--port', String(options.port),
            '--bind', options.bind ?? '127.0.0.1',
            '--dir', options.dir,
            '--save', '',
            '--appendonly', 'no',
            // A replica's first sync starts at once (the default waits 5 s for more replicas).
            '--repl-diskless-sync-delay', '0',
            ...(options.args ?? []),
            ...extra,
          ],
        ];
    const [exe, ...prefix] = [...(options.launcher ?? []), command];
    const proc = spawn(exe!, [...prefix, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    children.add(proc);
    exited = new Promise<void>((resolve) =>
      proc.once('exit', () => {
        children.delete(proc);
        resolve();
      }),
    );
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${command} on port ${options.port} did not start:\n${log}`)), 15_000);
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      proc.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`${command} on port ${options.port} exited while starting:\n${log}`));
      });
      const onData = (d: Buffer): void => {
        log += d.toString();
        if (/Ready to accept connections|Sentinel ID is/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
    });
  };
  await launch([]);
  return {
    port: options.port,
    dir: options.dir,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    get pid() {
      return child !== undefined && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    async kill() {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    async restart(extraArgs = []) {
      if (child && child.exitCode === null && child.signalCode === null) throw new Error('still running');
      await launch(extraArgs);
    },
  };
}

/** Debian's `redis-sentinel` when installed (CI installs it), else `redis-server --sentinel`. */
function sentinelCommand(conf: string): [string, string[]] {
  return process.env.TINYTOWN_REDIS_SENTINEL
    ? [process.env.TINYTOWN_REDIS_SENTINEL, [conf]]
    : hasSentinelBinary
      ? ['redis-sentinel', [conf]]
      : [REDIS_SERVER, [conf, '--sentinel']];
}

let hasSentinelBinary = false;

/** Whether `redis-sentinel` is on PATH (Debian package `redis-sentinel`). */
export async function findSentinelBinary(): Promise<boolean> {
  hasSentinelBinary = await run('redis-sentinel', ['--version']).then(
    () => true,
    () => false,
  );
  return hasSentinelBinary;
}

/** A short-lived client for checks (no retries: a dead server fails the check at once). */
export async function ask<T>(port: number, fn: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

/**
 * Waits until the primary on `port` counts a replica as acknowledging (a write, then `WAIT 1`):
 * a replica that has just synced is online for its primary only after its first ACK, up to a
 * second later, and `WAIT` counts only online replicas.
 */
export async function replicaAcknowledging(port: number, timeoutMs = 15_000): Promise<void> {
  await until(
    `a replica of ${port} acknowledging writes`,
    () => ask(port, async (c) => (await c.set('tt-test-probe', String(Date.now())), Number(await c.wait(1, 500)) >= 1)),
    timeoutMs,
  );
}

// ── Sentinel ─────────────────────────────────────────────────────────────────────────────

/** A primary, a replica and three sentinels (quorum 2) watching them as `name`. */
export interface SentinelSet {
  name: string;
  primary: ServerProcess;
  replica: ServerProcess;
  sentinels: ServerProcess[];
  /** `[{ host, port }]` of the sentinels, for ioredis. */
  sentinelAddresses: { host: string; port: number }[];
  /** The port the sentinels currently name as the primary (asks each until one answers). */
  currentPrimaryPort(): Promise<number>;
  stop(): Promise<void>;
}

export async function startSentinelSet(options: { downAfterMs?: number } = {}): Promise<SentinelSet> {
  const name = 'ttprimary';
  const root = await mkdtemp(join(tmpdir(), 'tt-sentinel-'));
  const [primaryPort, replicaPort, ...sentinelPorts] = await distinctPorts(5);
  const started: ServerProcess[] = [];
  try {
    const primary = await startServer({ port: primaryPort!, dir: join(root, 'primary') });
    started.push(primary);
    const replica = await startServer({ port: replicaPort!, dir: join(root, 'replica'), args: ['--replicaof', '127.0.0.1', String(primaryPort)] });
    started.push(replica);
    await until('the replica in sync', () => ask(replicaPort!, async (c) => /master_link_status:up/.test(await c.info('replication'))));
    const sentinels: ServerProcess[] = [];
    for (const port of sentinelPorts) {
      const dir = join(root, `sentinel-${port}`);
      await mkdir(dir, { recursive: true });
      const conf = join(dir, 'sentinel.conf');
      await writeFile(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
          `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${name} 10000`,
          `sentinel parallel-syncs ${name} 1`,
          '',
        ].join('\n'),
      );
      const sentinel = await startServer({ port, dir, sentinelConf: conf });
      sentinels.push(sentinel);
      started.push(sentinel);
    }
    // Sentinels find each other and the replica through the primary (hello messages every 2 s):
    // a failover needs them all to know each other.
    for (const s of sentinels) {
      await until(
        `sentinel ${s.port} to know the others and the replica`,
        () =>
          ask(s.port, async (c) => {
            const others = (await c.call('SENTINEL', 'SENTINELS', name)) as unknown[];
            const replicas = (await c.call('SENTINEL', 'REPLICAS', name)) as unknown[];
            return others.length === sentinels.length - 1 && replicas.length === 1;
          }),
        20_000,
      );
    }
    await replicaAcknowledging(primaryPort!);
    return {
      name,
      primary,
      replica,
      sentinels,
      sentinelAddresses: sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
      async currentPrimaryPort() {
        for (const s of sentinels) {
          if (!s.running) continue;
          const reply = await ask(s.port, (c) => c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)).catch(() => undefined);
          if (Array.isArray(reply)) return Number(reply[1]);
        }
        throw new Error('no sentinel answers');
      },
      async stop() {
        await Promise.all(started.map((p) => p.kill()));
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(started.map((p) => p.kill()));
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

// ── Cluster ──────────────────────────────────────────────────────────────────────────────

/** A Redis Cluster of primaries only, on loopback. */
export interface TestCluster {
  nodes: ServerProcess[];
  /** `[{ host, port }]` of every node, for ioredis. */
  addresses: { host: string; port: number }[];
  /** The port of the primary serving `slot`. */
  ownerOf(slot: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startCluster(primaries = 3): Promise<TestCluster> {
  const root = await mkdtemp(join(tmpdir(), 'tt-cluster-'));
  const ports = await distinctPorts(primaries);
  const nodes: ServerProcess[] = [];
  try {
    for (const port of ports) {
      const dir = join(root, String(port));
      nodes.push(
        await startServer({
          port,
          dir,
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000'],
        }),
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 30_000,
    });
    for (const port of ports) {
      await until(`cluster node ${port} ok`, () => ask(port, async (c) => /cluster_state:ok/.test((await c.call('CLUSTER', 'INFO')) as string)), 20_000);
    }
    const ownerOf = async (slot: number): Promise<number> => {
      const ranges = (await ask(ports[0]!, (c) => c.call('CLUSTER', 'SLOTS'))) as [number, number, [string, number, ...unknown[]]][];
      const range = ranges.find(([from, to]) => slot >= from && slot <= to);
      if (!range) throw new Error(`no node serves slot ${slot}`);
      return Number(range[2][1]);
    };
    return {
      nodes,
      addresses: ports.map((port) => ({ host: '127.0.0.1', port })),
      ownerOf,
      async stop() {
        await Promise.all(nodes.map((n) => n.kill()));
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill()));
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

async function distinctPorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  // Cluster nodes also listen on port + 10000: keep both below 65536.
  while (ports.size < n) {
    const port = await freePort();
    if (port < 55_000) ports.add(port);
  }
  return [...ports];
}
