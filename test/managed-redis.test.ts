/**
 * The managed local redis-server, against the real `redis-server` binary (TINYTOWN_REDIS_SERVER
 * or PATH). Every server started here is stopped in afterEach, and afterAll checks none is left.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rm,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  RedisServerNotFoundError,
  RedisServerStartError,
  RedisVersionError,
  SocketPathTooLongError,
} from '../src/errors.js';
import { ensureManagedRedis, stopManagedRedis } from '../src/redis-server/managed.js';

const repoRoot = dirname(dirname(fileURLToPath(import.meta.url)));
const fixtures = join(repoRoot, 'test', 'fixtures', 'managed');

/** Roots created by the current test; afterEach stops their servers and deletes them. */
let roots: string[] = [];
/** Every socket a server was started on, checked once more in afterAll. */
const sockets = new Set<string>();

async function freshRoot(): Promise<string> {
  // A space in the path: the server's arguments must never go through a shell or config parser.
  const root = await mkdtemp(join(tmpdir(), 'tt managed-'));
  roots.push(root);
  return root;
}

async function withClient<T>(socketPath: string, fn: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ path: socketPath, maxRetriesPerRequest: 1, lazyConnect: true });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

/** Pids of live redis-server processes serving `socketPath` (Redis puts it in its process title). */
async function serverPids(socketPath: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replaceAll('\0', ' ');
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const zombie = stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
      if (!zombie && cmdline.includes(`unixsocket:${socketPath}`)) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await once(child, 'exit');
  if (child.pid === undefined) throw new Error('no pid');
  return child.pid;
}

async function caught(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

async function ensure(root: string, options?: Parameters<typeof ensureManagedRedis>[1]) {
  const redis = await ensureManagedRedis(root, options);
  sockets.add(redis.socketPath);
  return redis;
}

beforeAll(async () => {
  // A checkout may lose the executable bit; the fixtures run through their shebang.
  for (const name of ['old-redis-server.cjs', 'failing-redis-server.cjs', 'silent-redis-server.cjs']) {
    await chmod(join(fixtures, name), 0o755);
  }
});

afterEach(async () => {
  const current = roots;
  roots = [];
  for (const root of current) await stopManagedRedis(root);
  for (const root of current) await rm(root, { recursive: true, force: true });
});

afterAll(async () => {
  for (const socketPath of sockets) expect(await serverPids(socketPath)).toEqual([]);
});

describe('ensureManagedRedis', () => {
  it('starts a server on <root>/.tt/redis.sock, then reuses it', async () => {
    const root = await freshRoot();
    const first = await ensure(root);
    const ttDir = join(await realpath(root), '.tt');
    expect(first).toEqual({
      socketPath: join(ttDir, 'redis.sock'),
      url: `unix://${join(ttDir, 'redis.sock')}`,
      started: true,
    });

    const second = await ensure(root);
    expect(second).toEqual({ ...first, started: false });
    expect(await withClient(second.socketPath, (c) => c.ping())).toBe('PONG');

    expect(await readFile(join(ttDir, '.gitignore'), 'utf8')).toBe('*\n');
    expect((await lstat(ttDir)).mode & 0o777).toBe(0o700);
    const socket = await lstat(first.socketPath);
    expect(socket.isSocket()).toBe(true);
    expect(socket.mode & 0o777).toBe(0o700);
    expect(await serverPids(first.socketPath)).toHaveLength(1);
  });

  it('runs with AOF on, no RDB snapshots, noeviction and no TCP port', async () => {
    const root = await freshRoot();
    const { socketPath } = await ensure(root);
    const config = await withClient(socketPath, async (c) => {
      const entries: Record<string, string> = {};
      for (const name of ['appendonly', 'appendfsync', 'save', 'maxmemory-policy', 'port']) {
        const [, value] = (await c.config('GET', name)) as [string, string];
        entries[name] = value;
      }
      return entries;
    });
    expect(config).toEqual({
      appendonly: 'yes',
      appendfsync: 'everysec',
      save: '',
      'maxmemory-policy': 'noeviction',
      port: '0',
    });
    expect((await lstat(join(await realpath(root), '.tt', 'appendonlydir'))).isDirectory()).toBe(true);
  });

  it("uses appendfsync always with durability: 'strict'", async () => {
    const root = await freshRoot();
    const { socketPath } = await ensure(root, { durability: 'strict' });
    const reply = await withClient(socketPath, (c) => c.config('GET', 'appendfsync'));
    expect(reply).toEqual(['appendfsync', 'always']);
  });

  it('starts exactly one server when two processes call it at the same time', async () => {
    const root = await freshRoot();
    const children = [0, 1].map(() =>
      spawn(process.execPath, ['--import', 'tsx', join(fixtures, 'ensure.ts'), root], {
        cwd: repoRoot,
        stdio: ['pipe', 'pipe', 'inherit'],
      }),
    );
    const outputs = children.map((child) =>
      createInterface({ input: child.stdout })[Symbol.asyncIterator](),
    );
    const nextJson = async (lines: AsyncIterator<string>): Promise<Record<string, unknown>> =>
      JSON.parse((await lines.next()).value as string) as Record<string, unknown>;
    // Both are loaded and waiting: release them together.
    for (const lines of outputs) expect(await nextJson(lines)).toEqual({ ready: true });
    for (const child of children) child.stdin.end('go\n');
    const results = await Promise.all(outputs.map(nextJson));
    await Promise.all(
      children.map((child) => (child.exitCode === null ? once(child, 'exit') : undefined)),
    );

    for (const result of results) expect(result.error).toBeUndefined();
    expect(results.map((r) => r.started).sort()).toEqual([false, true]);
    expect(results[0]?.socketPath).toBe(results[1]?.socketPath);
    const socketPath = results[0]?.socketPath as string;
    sockets.add(socketPath);
    expect(await serverPids(socketPath)).toHaveLength(1);
    expect(await withClient(socketPath, (c) => c.ping())).toBe('PONG');
  });

  it('falls back to a short per-user socket folder when the root is too deep', async () => {
    const base = await freshRoot();
    const root = join(base, 'x'.repeat(60), 'y'.repeat(60));
    roots.push(root);
    expect(Buffer.byteLength(root)).toBeGreaterThan(110);

    const redis = await ensure(root);
    expect(redis.started).toBe(true);
    expect(Buffer.byteLength(redis.socketPath)).toBeLessThanOrEqual(100);
    expect(redis.socketPath.startsWith(base)).toBe(false);
    const hash = createHash('sha256').update(await realpath(root)).digest('hex').slice(0, 16);
    expect(redis.socketPath.endsWith(`/${hash}.sock`)).toBe(true);
    const folder = await lstat(dirname(redis.socketPath));
    expect(folder.isDirectory() && !folder.isSymbolicLink()).toBe(true);
    expect(folder.mode & 0o777).toBe(0o700);
    expect(folder.uid).toBe(process.getuid?.());

    expect(await withClient(redis.socketPath, (c) => c.ping())).toBe('PONG');
    expect(await ensure(root)).toEqual({ ...redis, started: false });
  });

  it('throws SocketPathTooLongError when even the fallback folder is too long', async () => {
    const root = join(await freshRoot(), 'z'.repeat(110));
    const saved = { TMPDIR: process.env.TMPDIR, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR };
    const longTmp = join(tmpdir(), 't'.repeat(120));
    process.env.TMPDIR = longTmp;
    delete process.env.XDG_RUNTIME_DIR;
    try {
      const err = await caught(ensureManagedRedis(root));
      expect(err).toBeInstanceOf(SocketPathTooLongError);
      expect(err.message).toMatch(/shorter path/);
      expect(err.message).toMatch(/TMPDIR/);
      expect(err.message).toMatch(/REDIS_URL/);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it('throws RedisServerNotFoundError with install hints when the binary is missing', async () => {
    const root = await freshRoot();
    const err = await caught(ensureManagedRedis(root, { serverBinary: '/nonexistent/redis-server' }));
    expect(err).toBeInstanceOf(RedisServerNotFoundError);
    expect(err.message).toContain('apt-get install redis-server');
    expect(err.message).toContain('brew install redis');
    expect(err.message).toContain('TINYTOWN_REDIS_SERVER');
    expect(err.message).toContain('REDIS_URL');
    expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('throws RedisVersionError for a server older than 6.2', async () => {
    const root = await freshRoot();
    const serverBinary = join(fixtures, 'old-redis-server.cjs');
    const err = await caught(ensureManagedRedis(root, { serverBinary }));
    expect(err).toBeInstanceOf(RedisVersionError);
    expect(err.message).toContain('5.0.7');
    expect(err.message).toContain('6.2');
  });

  it('throws RedisServerStartError quoting the log when the server exits without starting', async () => {
    const root = await freshRoot();
    const serverBinary = join(fixtures, 'failing-redis-server.cjs');
    const err = await caught(ensureManagedRedis(root, { serverBinary, startTimeoutMs: 2_000 }));
    expect(err).toBeInstanceOf(RedisServerStartError);
    expect(err.message).toContain('exited with code 1');
    expect(err.message).toContain("Can't open the append-only file");
    expect(err.message).toContain('fake-redis: giving up');
  });

  it('throws RedisServerStartError when the server never answers within startTimeoutMs', async () => {
    const root = await freshRoot();
    const serverBinary = join(fixtures, 'silent-redis-server.cjs');
    const started = Date.now();
    const err = await caught(ensureManagedRedis(root, { serverBinary, startTimeoutMs: 300 }));
    expect(err).toBeInstanceOf(RedisServerStartError);
    expect(err.message).toContain('did not answer PING');
    expect(err.message).toContain('within 300 ms');
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
  });

  it('waits for a server that answers -LOADING, and reuses one that answers -NOAUTH', async () => {
    const root = await freshRoot();
    const ttDir = join(root, '.tt');
    await mkdir(ttDir, { mode: 0o700 });
    // A stand-in listening on the town's socket: loading twice, then up but password-protected.
    const loading = '-LOADING Redis is loading the dataset in memory';
    const replies = [loading, loading];
    let pings = 0;
    const fake = createServer((socket) => {
      socket.on('data', () => {
        pings += 1;
        socket.end(`${replies.shift() ?? '-NOAUTH Authentication required.'}\r\n`);
      });
    });
    const socketPath = join(await realpath(ttDir), 'redis.sock');
    fake.listen(socketPath);
    await once(fake, 'listening');
    try {
      const redis = await ensureManagedRedis(root, { serverBinary: '/nonexistent/redis-server' });
      expect(redis).toEqual({ socketPath, url: `unix://${socketPath}`, started: false });
      expect(pings).toBe(3);
    } finally {
      fake.close();
    }
  });

  it('ignores a stale lock left by a dead process', async () => {
    const root = await freshRoot();
    const ttDir = join(root, '.tt');
    await mkdir(ttDir, { mode: 0o700 });
    await writeFile(join(ttDir, 'redis.lock'), `${await deadPid()}\n`);
    const started = Date.now();
    const redis = await ensure(root, { startTimeoutMs: 5_000 });
    expect(redis.started).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000);
    await expect(lstat(join(ttDir, 'redis.lock'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('waits for a live lock and gives up after startTimeoutMs', async () => {
    const root = await freshRoot();
    const ttDir = join(root, '.tt');
    await mkdir(ttDir, { mode: 0o700 });
    // Our own parent is alive and is not this process: a lock it "holds" is live.
    await writeFile(join(ttDir, 'redis.lock'), `${process.ppid}\n`);
    const started = Date.now();
    const err = await caught(ensureManagedRedis(root, { startTimeoutMs: 300 }));
    expect(err).toBeInstanceOf(RedisServerStartError);
    expect(err.message).toContain(String(process.ppid));
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    await unlink(join(ttDir, 'redis.lock'));
  });

  it('replaces a server whose socket file was deleted instead of running two on one AOF', async () => {
    const root = await freshRoot();
    const first = await ensure(root);
    await withClient(first.socketPath, (c) => c.set('kept', 'yes'));
    const [oldPid] = await serverPids(first.socketPath);
    await unlink(first.socketPath);

    const second = await ensure(root);
    expect(second.started).toBe(true);
    const pids = await serverPids(second.socketPath);
    expect(pids).toHaveLength(1);
    expect(pids).not.toContain(oldPid);
    expect(await withClient(second.socketPath, (c) => c.get('kept'))).toBe('yes');
  });
});

describe('stopManagedRedis', () => {
  it('resolves false when nothing runs', async () => {
    expect(await stopManagedRedis(await freshRoot())).toBe(false);
    expect(await stopManagedRedis(join(tmpdir(), 'tinytown-no-such-root'))).toBe(false);
  });

  it('stops the server, and the next ensure restarts it with the data from the AOF', async () => {
    const root = await freshRoot();
    const first = await ensure(root);
    await withClient(first.socketPath, (c) => c.set('greeting', 'hello'));
    const pidFile = join(await realpath(root), '.tt', 'redis.pid');

    expect(await stopManagedRedis(root)).toBe(true);
    expect(await serverPids(first.socketPath)).toEqual([]);
    await expect(lstat(pidFile)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await stopManagedRedis(root)).toBe(false);

    const second = await ensure(root);
    expect(second).toEqual({ ...first, started: true });
    expect(await withClient(second.socketPath, (c) => c.get('greeting'))).toBe('hello');
  });
});
