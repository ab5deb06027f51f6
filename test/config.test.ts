/**
 * Town.connect: tinytown.json (creation, naming, validation), connect options, Redis selection
 * and connection errors, key layouts. Against the real test Redis.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { inspect } from 'node:util';
import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ConfigInvalidError,
  ConfigNotFoundError,
  RedisAuthError,
  RedisConnectionError,
  TinytownError,
  Town,
  type TownOptions,
} from '../src/index.js';
import { startRedisServer } from './helpers/redis-server.js';
import { fakeCli, openTown, redisUrl, tempDir, track, uniqueName } from './helpers/town.js';
import { rawRedis, withRedisUrlEnv } from './helpers/util.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function connect(dir: string, options: TownOptions = {}): Promise<Town> {
  return track(await Town.connect(dir, { redis: redisUrl(), ...options }));
}

async function readConfig(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(dir, 'tinytown.json'), 'utf8')) as Record<string, unknown>;
}

async function scanKeys(client: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

function git(dir: string, ...args: string[]): void {
  execFileSync('git', args, { cwd: dir, stdio: 'ignore' });
}

describe('tinytown.json', () => {
  it('is created with the folder name when missing', async () => {
    const dir = await tempDir();
    const town = await connect(dir);
    expect(town.name).toBe(basename(dir));
    expect(town.root).toBe(dir);
    expect(await readConfig(dir)).toEqual({ name: basename(dir) });
    expect(town.config.name).toBe(basename(dir));
  });

  it('turns an awkward folder name into a valid town name', async () => {
    const dir = await tempDir('__my project (v2) ');
    const suffix = basename(dir).slice('__my project (v2) '.length);
    const town = await connect(dir);
    expect(town.name).toBe(`my-project-v2-${suffix}`);
    expect((await readConfig(dir)).name).toBe(town.name);
  });

  it('is named <repo>-<branch> in a fresh git repository', async () => {
    const dir = await tempDir();
    git(dir, 'init', '-q', '-b', 'main');
    const town = await connect(dir);
    expect(town.name).toBe(`${basename(dir)}-main`);
  });

  it('takes the repository (not the subfolder) and cleans the branch name', async () => {
    const dir = await tempDir();
    git(dir, 'init', '-q', '-b', 'feature/login');
    const sub = join(dir, 'packages', 'api');
    await mkdir(sub, { recursive: true });
    const town = await connect(sub);
    expect(town.name).toBe(`${basename(dir)}-feature-login`);
    expect(existsSync(join(sub, 'tinytown.json'))).toBe(true);
  });

  it('ignores GIT_DIR and friends inherited from the environment (e.g. inside a git hook)', async () => {
    const other = await tempDir();
    git(other, 'init', '-q', '-b', 'elsewhere');
    const dir = await tempDir();
    const saved = { GIT_DIR: process.env.GIT_DIR, GIT_WORK_TREE: process.env.GIT_WORK_TREE };
    process.env.GIT_DIR = join(other, '.git');
    process.env.GIT_WORK_TREE = other;
    try {
      const town = await connect(dir);
      expect(town.name).toBe(basename(dir));
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('options.name overrides the derived name and is written to a new file', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const town = await connect(dir, { name });
    expect(town.name).toBe(name);
    expect(await readConfig(dir)).toEqual({ name });
  });

  it('options.name overrides an existing file without rewriting it', async () => {
    const dir = await tempDir();
    const fileName = uniqueName();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: fileName, leaseMs: 5000 }));
    const name = uniqueName();
    const town = await connect(dir, { name });
    expect(town.name).toBe(name);
    expect(town.config).toEqual({ name, leaseMs: 5000 });
    expect(await readConfig(dir)).toEqual({ name: fileName, leaseMs: 5000 });
  });

  it('loads an existing file', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const config = {
      $schema: 'https://example.com/tinytown.schema.json',
      name,
      keyLayout: 'tinytown',
      leaseMs: 4000,
      retentionMs: 60_000,
      maxDescriptionBytes: 2048,
    };
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify(config));
    const town = await connect(dir);
    expect(town.name).toBe(name);
    const { $schema: _, ...rest } = config;
    expect(town.config).toEqual(rest);
  });

  it('create: false without a file is ConfigNotFoundError and creates nothing', async () => {
    const dir = await tempDir();
    const err = await Town.connect(dir, { redis: redisUrl(), create: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigNotFoundError);
    expect((err as Error).message).toContain(dir);
    expect(existsSync(join(dir, 'tinytown.json'))).toBe(false);
  });

  it('create: false with a file connects', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name }));
    const town = await connect(dir, { create: false });
    expect(town.name).toBe(name);
  });

  it.each([
    ['invalid JSON', '{ "name": "x", ', /not valid JSON/],
    ['an unknown key', JSON.stringify({ name: 'ok', leaseMS: 5000 }), /leaseMS/],
    ['a bad name', JSON.stringify({ name: 'bad name' }), /name/],
    ['a name that is too long', JSON.stringify({ name: 'a'.repeat(65) }), /name/],
    ['no name', JSON.stringify({ leaseMs: 5000 }), /name/],
    ['a leaseMs of the wrong type', JSON.stringify({ name: 'ok', leaseMs: 'fast' }), /leaseMs/],
    ['an unknown keyLayout', JSON.stringify({ name: 'ok', keyLayout: 'flat' }), /keyLayout/],
    ['a bad custom cli', JSON.stringify({ name: 'ok', clis: { mine: { command: 'x', shell: true } } }), /clis\.mine/],
    ['an array', '[]', /tinytown\.json is invalid/],
  ])('a file with %s is ConfigInvalidError naming the problem', async (_, text, pattern) => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), text);
    const err = await Town.connect(dir, { redis: redisUrl() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).toContain(join(dir, 'tinytown.json'));
  });

  it('custom clis from the file are usable by name', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: uniqueName(), clis: { fake: fakeCli() } }));
    const town = await connect(dir);
    const agent = await town.spawnAgent('cli', 'fake');
    expect((await agent.info()).cli).toBe('fake');
    const task = await agent.assign('write the docs');
    const done = await town.waitForTask(task.id, { timeoutMs: 10_000 });
    expect(done.result).toBe('done: write the docs');
    // a worker attached later (here, or on another machine) finds the CLI by its registered name
    const cold = await town.spawnAgent('later', { cli: 'fake', start: false });
    const queued = await cold.assign('attach first');
    await town.runWorker('later');
    expect((await town.waitForTask(queued.id, { timeoutMs: 10_000 })).result).toBe('done: attach first');
  });

  it('town.config is deeply frozen', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: uniqueName(), clis: { fake: fakeCli() } }));
    const town = await connect(dir);
    expect(Object.isFrozen(town.config)).toBe(true);
    expect(Object.isFrozen(town.config.clis)).toBe(true);
    expect(Object.isFrozen(town.config.clis?.fake)).toBe(true);
    expect(() => {
      (town.config as { name: string }).name = 'changed';
    }).toThrow(TypeError);
    expect(() => {
      (town.config.clis as Record<string, unknown>).other = { command: 'x' };
    }).toThrow(TypeError);
    expect(town.config.name).toBe(town.name);
  });
});

describe('connect options', () => {
  it.each<[string, Record<string, unknown>, RegExp]>([
    ['an unknown key', { leaseMS: 100 }, /leaseMS/],
    ['a negative leaseMs', { leaseMs: -5 }, /leaseMs/],
    ['a fractional connectTimeoutMs', { connectTimeoutMs: 1.5 }, /connectTimeoutMs/],
    ['an unknown keyLayout', { keyLayout: 'flat' }, /keyLayout/],
    ['an invalid name', { name: 'bad name' }, /name/],
    ['a non-boolean create', { create: 'no' }, /create/],
    ['an unknown durability', { durability: 'paranoid' }, /durability/],
  ])('%s is ConfigInvalidError naming it', async (_, options, pattern) => {
    const dir = await tempDir();
    const err = await Town.connect(dir, { redis: redisUrl(), ...(options as TownOptions) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(pattern);
    // Options are checked before anything is written.
    expect(existsSync(join(dir, 'tinytown.json'))).toBe(false);
  });

  it('a missing folder is ConfigInvalidError', async () => {
    const dir = join(await tempDir(), 'does', 'not', 'exist');
    const err = await Town.connect(dir, { redis: redisUrl() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toContain(dir);
    expect(existsSync(dir)).toBe(false);
  });

  it('a file instead of a folder is ConfigInvalidError', async () => {
    const file = join(await tempDir(), 'plain.txt');
    await writeFile(file, 'x');
    await expect(Town.connect(file, { redis: redisUrl() })).rejects.toBeInstanceOf(ConfigInvalidError);
  });

  it('options.redis wins over REDIS_URL, which wins over tinytown.json redis.url', async () => {
    const unreachable = 'redis://127.0.0.1:1';
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: uniqueName(), redis: { url: unreachable } }));
    // REDIS_URL beats the file
    const viaEnv = await withRedisUrlEnv(redisUrl(), () => Town.connect(dir, { connectTimeoutMs: 2000 }));
    track(viaEnv);
    expect(await viaEnv.agents()).toEqual([]);
    // options.redis beats REDIS_URL
    const viaOption = await withRedisUrlEnv(unreachable, () => Town.connect(dir, { redis: redisUrl(), connectTimeoutMs: 2000 }));
    track(viaOption);
    expect(await viaOption.agents()).toEqual([]);
    // and with neither, the file's url is the one used
    const err = await withRedisUrlEnv(undefined, () => Town.connect(dir, { connectTimeoutMs: 500 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect((err as Error).message).toContain('127.0.0.1:1');
  });

  it.each([
    ['not a url', /not a valid URL/],
    ['redis://:hunter2@[::1', /not a valid URL/],
    ['redis://admin:hunter2@127.0.0.1:99999', /not a valid URL/],
    ['http://admin:hunter2@localhost:6379', /unsupported scheme "http:"/],
    ['localhost:6379', /unsupported scheme/],
  ])('a bad Redis URL (%s) is ConfigInvalidError naming its source, never its password', async (url, pattern) => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: uniqueName(), redis: { url } }));
    const attempts: [string, () => Promise<Town>][] = [
      ['options.redis', () => Town.connect(dir, { redis: url })],
      ['REDIS_URL', () => withRedisUrlEnv(url, () => Town.connect(dir))],
      ['tinytown.json redis.url', () => withRedisUrlEnv(undefined, () => Town.connect(dir))],
    ];
    for (const [source, attempt] of attempts) {
      const err = await attempt().catch((e: unknown) => e);
      expect(err, source).toBeInstanceOf(ConfigInvalidError);
      expect((err as Error).message).toMatch(pattern);
      expect((err as Error).message).toContain(source);
      expect(inspect(err, { depth: 10 })).not.toContain('hunter2');
    }
  });

  it.each([12345, true, [], null])('options.redis %j is ConfigInvalidError, not a silent localhost:6379', async (redis) => {
    const err = await Town.connect(await tempDir(), { redis: redis as never, connectTimeoutMs: 500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toContain('redis');
  });

  it('an empty REDIS_URL counts as unset', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: uniqueName(), redis: { url: redisUrl() } }));
    const town = track(await withRedisUrlEnv('', () => Town.connect(dir)));
    expect(await town.agents()).toEqual([]);
  });

  it('tinytown.json redis.url is used when nothing else is configured', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name, redis: { url: redisUrl() } }));
    const town = track(await withRedisUrlEnv(undefined, () => Town.connect(dir)));
    await town.spawnAgent('a', { start: false });
    expect(await rawRedis().exists(`tt:{${name}}:idx:agents`)).toBe(1);
  });

  it('accepts an ioredis client and leaves it open after close()', async () => {
    const client = rawRedis();
    const town = await Town.connect(await tempDir(), { redis: client, name: uniqueName() });
    await town.spawnAgent('a', { start: false });
    await town.close();
    expect(await client.ping()).toBe('PONG');
  });

  it('accepts ioredis options', async () => {
    const url = new URL(redisUrl());
    const town = track(
      await Town.connect(await tempDir(), { redis: { host: url.hostname, port: Number(url.port) }, name: uniqueName() }),
    );
    expect((await town.status()).agents).toEqual([]);
  });
});

describe('connection failures', () => {
  it('an unreachable Redis is RedisConnectionError within the connect timeout', async () => {
    const started = Date.now();
    const err = await Town.connect(await tempDir(), { redis: 'redis://127.0.0.1:1', connectTimeoutMs: 500 }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect((err as Error).message).toContain('redis://127.0.0.1:1');
  });

  it('a server that accepts but never answers is RedisConnectionError after connectTimeoutMs', async () => {
    const sockets = new Set<Socket>();
    const server: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    );
    const { port } = server.address() as { port: number };
    const started = Date.now();
    const err = await Town.connect(await tempDir(), { redis: `redis://127.0.0.1:${port}`, connectTimeoutMs: 500 }).catch(
      (e: unknown) => e,
    );
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(1500);
  });

  it('a wrong password is RedisAuthError that never shows the password', async () => {
    const server = await startRedisServer(['--requirepass', 'right-horse-battery']);
    cleanups.push(() => server.stop());
    const password = 'S3cr3t:p@ss/word';
    const encoded = encodeURIComponent(password);
    for (const url of [
      `redis://:${encoded}@127.0.0.1:${server.port}`,
      `redis://default:${encoded}@127.0.0.1:${server.port}`,
    ]) {
      const started = Date.now();
      const err = await Town.connect(await tempDir(), { redis: url, connectTimeoutMs: 2000 }).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(err).toBeInstanceOf(RedisAuthError);
      expect(err).toBeInstanceOf(TinytownError);
      const everything = `${String(err)}\n${(err as Error).stack ?? ''}\n${inspect(err, { depth: 10 })}`;
      for (const secret of [password, encoded, 'S3cr3t']) expect(everything).not.toContain(secret);
    }
  });

  it('no password against a server that needs one is RedisAuthError', async () => {
    const server = await startRedisServer(['--requirepass', 'right-horse-battery']);
    cleanups.push(() => server.stop());
    const err = await Town.connect(await tempDir(), { redis: `redis://127.0.0.1:${server.port}`, connectTimeoutMs: 2000 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RedisAuthError);
    expect((err as Error).message).not.toContain('right-horse-battery');
  });

  it('the right password connects', async () => {
    const server = await startRedisServer(['--requirepass', 'right-horse-battery']);
    cleanups.push(() => server.stop());
    const town = track(
      await Town.connect(await tempDir(), { redis: `redis://:right-horse-battery@127.0.0.1:${server.port}`, name: uniqueName() }),
    );
    await town.spawnAgent('a', { start: false });
    expect((await town.agents()).map((a) => a.name)).toEqual(['a']);
    await town.close();
  });
});

describe('key layout', () => {
  async function populate(town: Town): Promise<{ agentId: string; taskId: string }> {
    const agent = await town.spawnAgent('worker', { run: async () => 'ok' });
    const task = await agent.assign('do it');
    await town.waitForTask(task.id, { timeoutMs: 10_000 });
    await town.backlog.add('later');
    await agent.send('fyi');
    return { agentId: agent.id, taskId: task.id };
  }

  it("default keys are tt:{<name>}: (a Cluster hash tag)", async () => {
    const town = await openTown();
    const { agentId, taskId } = await populate(town);
    const keys = await scanKeys(rawRedis(), `*${town.name}*`);
    expect(keys.length).toBeGreaterThan(5);
    for (const key of keys) expect(key.startsWith(`tt:{${town.name}}:`)).toBe(true);
    expect(keys).toContain(`tt:{${town.name}}:agent:${agentId}`);
    expect(keys).toContain(`tt:{${town.name}}:task:${taskId}`);
    expect(keys).toContain(`tt:{${town.name}}:events`);
  });

  it("keyLayout 'tinytown' keys are tt:<name>: and agent:/task: keys are hashes", async () => {
    const town = await openTown({ keyLayout: 'tinytown' });
    const { agentId, taskId } = await populate(town);
    const client = rawRedis();
    const keys = await scanKeys(client, `*${town.name}*`);
    expect(keys.length).toBeGreaterThan(5);
    for (const key of keys) expect(key.startsWith(`tt:${town.name}:`)).toBe(true);
    expect(keys).toContain(`tt:${town.name}:agent:${agentId}`);
    expect(keys).toContain(`tt:${town.name}:task:${taskId}`);
    expect(keys).toContain(`tt:${town.name}:backlog`);
    // The Rust CLI lists `agent:*` and `task:*` and HGETALLs them.
    for (const key of keys.filter((k) => /^tt:[^:]+:(agent|task):/.test(k))) expect(await client.type(key)).toBe('hash');
  });

  it('keyLayout from tinytown.json is honoured', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name, keyLayout: 'tinytown' }));
    const town = await connect(dir);
    const agent = await town.spawnAgent('a', { start: false });
    expect(await rawRedis().exists(`tt:${name}:agent:${agent.id}`)).toBe(1);
  });

  it('a keyLayout option is remembered in a new tinytown.json', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const first = await connect(dir, { name, keyLayout: 'tinytown' });
    expect(await readConfig(dir)).toEqual({ name, keyLayout: 'tinytown' });
    const agent = await first.spawnAgent('a', { start: false });
    const again = await connect(dir);
    expect((await again.agents()).map((a) => a.id)).toEqual([agent.id]);
  });

  it('two layouts of one name are two separate towns', async () => {
    const name = uniqueName();
    const cluster = await openTown({ name });
    const tinytown = await openTown({ name, keyLayout: 'tinytown' });
    await cluster.spawnAgent('only-in-cluster', { start: false });
    expect(await tinytown.agents()).toEqual([]);
    expect((await cluster.agents()).map((a) => a.name)).toEqual(['only-in-cluster']);
  });
});
