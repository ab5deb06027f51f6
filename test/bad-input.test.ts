/**
 * SPEC §4 "bad input gets a clear, typed error" as one table: every case must reject (or throw)
 * with its TinytownError subclass and stable code, keep credentials out of the message, and
 * change nothing that is stored — every key of the town (type, value read per type, TTL or not)
 * and its tinytown.json are compared before and after. Many of these conditions have tests of
 * their own elsewhere (errors, town, config, agent tests); this table adds the "no change to
 * stored state" half and keeps them all in one place.
 *
 * On a private redis-server; the town holds live data (tasks in every state, a backlog, a cold
 * agent, an agent held by a live worker lease, corrupt records) so "changed nothing" means
 * something.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AgentErrorStateError,
  AgentExistsError,
  AgentNotFoundError,
  ConfigInvalidError,
  ConfigNotFoundError,
  CorruptRecordError,
  DescriptionTooLargeError,
  InvalidArgumentError,
  InvalidNameError,
  InvalidTransitionError,
  NotInBacklogError,
  RedisAuthError,
  RedisConnectionError,
  RedisServerNotFoundError,
  RedisVersionError,
  ReservedNameError,
  SocketPathTooLongError,
  TaskNotFoundError,
  TinytownError,
  Town,
  TownClosedError,
  UnknownCliError,
  WorkerActiveError,
  type Agent,
  type TaskRecord,
} from '../src/index.js';
import { freePort, snapshotKeys, startRestartableRedis, type RestartableRedis } from './helpers/faults.js';
import { tempDir, uniqueName } from './helpers/town.js';

const SECRET = 'Hunter2-very-secret';
let server: RestartableRedis;
let root = '';
let guarded: RestartableRedis; // requires a password
let redis: Redis;
let town: Town;
let closedTown: Town;
let cold: Agent;
let held: Agent;
let broken: Agent;
let completed: TaskRecord;
let assigned: TaskRecord;
let corruptTaskId: string;
let fakeOld: { url: string; close: () => Promise<void> };
let silent: { url: string; close: () => Promise<void> };
const MAX_BYTES = 4_096;

beforeAll(async () => {
  [server, guarded] = await Promise.all([startRestartableRedis(), startRestartableRedis({ extraArgs: ['--requirepass', SECRET] })]);
  redis = new Redis(server.url);
  root = await mkdtemp(join(tmpdir(), 'tt-bad-input-')); // not tempDir(): that one is removed after each test
  town = await Town.connect(root, { redis: server.url, name: uniqueName(), maxDescriptionBytes: MAX_BYTES });
  town.on('error', () => undefined);
  const p = `tt:{${town.name}}:`;

  // Live data of every kind.
  const worker = await town.spawnAgent('worker', { run: async () => 'ok' });
  completed = await worker.assign('done already');
  await town.waitForTask(completed.id, { timeoutMs: 10_000 });
  await worker.stop();
  cold = await town.spawnAgent('cold', { start: false });
  assigned = await cold.assign('waiting in the inbox');
  await town.backlog.add('waiting in the backlog');
  await town.send('cold', 'a note');
  // An agent held by a live worker of another process: its lease runs for the whole file.
  held = await town.spawnAgent('held', { start: false });
  await redis.set(`${p}lease:other-worker`, held.id, 'PX', 600_000);
  await redis.hset(`${p}workers`, 'other-worker', held.id);
  await redis.hset(`${p}agent:${held.id}`, 'worker_id', 'other-worker');
  // An agent in error.
  broken = await town.spawnAgent('broken', { start: false });
  await redis.hset(`${p}agent:${broken.id}`, 'state', 'error', 'error', 'worker lost');
  // A corrupt task record.
  corruptTaskId = '99999999-9999-4999-8999-999999999999';
  await redis.hset(`${p}task:${corruptTaskId}`, 'id', corruptTaskId, 'description', 'x', 'state', 'exploded', 'created_at', 'yesterday');
  await redis.zadd(`${p}idx:tasks`, 1_000_000, corruptTaskId);

  closedTown = await Town.connect(town.root, { redis: server.url, name: town.name });
  await closedTown.close();
  fakeOld = await fakeRedis('5.0.7');
  silent = await silentServer();
}, 60_000);

afterAll(async () => {
  await town?.close();
  redis?.disconnect();
  await Promise.all([server?.stop(), guarded?.stop(), fakeOld?.close(), silent?.close()]);
  if (root) await rm(root, { recursive: true, force: true });
});

/**
 * A TCP server speaking just enough RESP to pass for an old Redis: HELLO is an unknown command
 * (so a client falls back to RESP2), INFO reports `redis_version`, the rest answers +OK.
 */
async function fakeRedis(version: string): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (;;) {
        const parsed = parseCommand(buffer);
        if (!parsed) break;
        buffer = buffer.slice(parsed.length);
        const name = parsed.args[0]?.toUpperCase();
        if (name === 'HELLO') socket.write("-ERR unknown command 'HELLO'\r\n");
        else if (name === 'INFO') {
          const info = `# Server\r\nredis_version:${version}\r\nloading:0\r\n`;
          socket.write(`$${Buffer.byteLength(info)}\r\n${info}\r\n`);
        } else socket.write('+OK\r\n');
      }
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

function parseCommand(buffer: string): { args: string[]; length: number } | undefined {
  if (!buffer.startsWith('*')) return undefined;
  let at = buffer.indexOf('\r\n');
  if (at < 0) return undefined;
  const count = Number(buffer.slice(1, at));
  at += 2;
  const args: string[] = [];
  for (let i = 0; i < count; i++) {
    const end = buffer.indexOf('\r\n', at);
    if (end < 0) return undefined;
    const len = Number(buffer.slice(at + 1, end));
    if (buffer.length < end + 2 + len + 2) return undefined;
    args.push(buffer.slice(end + 2, end + 2 + len));
    at = end + 2 + len + 2;
  }
  return { args, length: at };
}

/** Accepts connections and never answers: an unreachable Redis that does not refuse. */
async function silentServer(): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await freePort();
  await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

/** Runs `fn` with environment variables set (undefined = unset), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** A folder holding a tinytown.json with `content`. */
async function folderWithConfig(content: string): Promise<string> {
  const dir = await tempDir();
  await writeFile(join(dir, 'tinytown.json'), content);
  return dir;
}

const run = async () => 'ran';
type ErrorClass = abstract new (...args: never[]) => TinytownError;
/** [description, the call, expected class, expected code] */
type Case = [string, () => unknown, ErrorClass, string];

const cases: Case[] = [
  // ── names ──
  ['agent name empty', () => town.spawnAgent('', { run }), InvalidNameError, 'INVALID_NAME'],
  ['agent name with a space', () => town.spawnAgent('has space', { run }), InvalidNameError, 'INVALID_NAME'],
  ['agent name starting with a dash', () => town.spawnAgent('-lead', { run }), InvalidNameError, 'INVALID_NAME'],
  ['agent name of 65 characters', () => town.spawnAgent('a'.repeat(65), { run }), InvalidNameError, 'INVALID_NAME'],
  ['agent name not a string', () => town.spawnAgent(42 as unknown as string, { run }), InvalidNameError, 'INVALID_NAME'],
  ['agent name with a path', () => town.spawnAgent('../etc', { run }), InvalidNameError, 'INVALID_NAME'],
  ['reserved agent name', () => town.spawnAgent('supervisor', { run }), ReservedNameError, 'RESERVED_NAME'],
  ['reserved agent name, other case', () => town.spawnAgent('Conductor', { run }), ReservedNameError, 'RESERVED_NAME'],
  ['a live agent of that name exists', () => town.spawnAgent('cold', { run }), AgentExistsError, 'AGENT_EXISTS'],
  ['town name invalid', () => Town.connect(town.root, { redis: server.url, name: 'bad name!' }), ConfigInvalidError, 'CONFIG_INVALID'],
  // ── sizes ──
  ['description over maxDescriptionBytes', () => cold.assign('x'.repeat(MAX_BYTES + 1)), DescriptionTooLargeError, 'DESCRIPTION_TOO_LARGE'],
  ['multi-byte description over the cap in bytes', () => cold.assign('é'.repeat(MAX_BYTES / 2 + 1)), DescriptionTooLargeError, 'DESCRIPTION_TOO_LARGE'],
  ['backlog task over the cap', () => town.backlog.add('y'.repeat(MAX_BYTES + 1)), DescriptionTooLargeError, 'DESCRIPTION_TOO_LARGE'],
  ['message over the cap', () => town.send('cold', 'z'.repeat(MAX_BYTES + 1)), DescriptionTooLargeError, 'DESCRIPTION_TOO_LARGE'],
  ['65 tags', () => cold.assign({ description: 'x', tags: Array.from({ length: 65 }, (_, i) => `t${i}`) }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  // ── types ──
  ['empty description', () => cold.assign(''), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['description a number', () => cold.assign(42 as unknown as string), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['unknown priority', () => cold.assign({ description: 'x', priority: 'asap' as 'high' }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['maxAttempts 0', () => cold.assign({ description: 'x', maxAttempts: 0 }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['timeoutMs negative', () => cold.assign({ description: 'x', timeoutMs: -1 }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['tags not an array', () => cold.assign({ description: 'x', tags: 'a,b' as unknown as string[] }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['agent timeoutMs a string', () => town.spawnAgent('typed', { run, timeoutMs: '5s' as unknown as number }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['both cli and run', () => town.spawnAgent('both', { cli: 'claude', run }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['message priority unknown', () => town.send('cold', 'hi', { priority: 'asap' as 'high' }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['message type unknown', () => town.send('cold', 'hi', { type: 'order' as 'info' }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['tasks() with an unknown state', () => town.tasks({ state: 'complete' as 'completed' }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['tasks() with limit 0', () => town.tasks({ limit: 0 }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['wait with a negative timeout', () => town.waitForTask(assigned.id, { timeoutMs: -1 }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['events() since garbage', () => town.events({ since: 'yesterday' }), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['on() an unknown event type', () => town.on('task.finished' as 'task.completed', () => undefined), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['task id empty', () => town.task(''), InvalidArgumentError, 'INVALID_ARGUMENT'],
  // ── unknown options ──
  ['unknown agent option', () => town.spawnAgent('opt', { run, retries: 3 } as never), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['unknown runWorker option', () => town.runWorker('cold', { run, concurrency: 2 } as never), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['unknown send option', () => town.send('cold', 'hi', { urgent: true } as never), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['unknown task option', () => cold.assign({ description: 'x', deadline: 5 } as never), InvalidArgumentError, 'INVALID_ARGUMENT'],
  ['unknown Town.connect option', () => Town.connect(town.root, { redis: server.url, name: town.name, lease: 5 } as never), ConfigInvalidError, 'CONFIG_INVALID'],
  ['Town.connect leaseMs too small', () => Town.connect(town.root, { redis: server.url, name: town.name, leaseMs: 5 }), ConfigInvalidError, 'CONFIG_INVALID'],
  ['unknown CLI preset', () => town.spawnAgent('cli', 'no-such-cli'), UnknownCliError, 'UNKNOWN_CLI'],
  // ── config files ──
  ['tinytown.json not JSON', async () => Town.connect(await folderWithConfig('{ name: oops'), { redis: server.url }), ConfigInvalidError, 'CONFIG_INVALID'],
  ['tinytown.json with an unknown key', async () => Town.connect(await folderWithConfig('{"name":"ok","leaseMS":5}'), { redis: server.url }), ConfigInvalidError, 'CONFIG_INVALID'],
  ['tinytown.json with a wrong type', async () => Town.connect(await folderWithConfig('{"name":"ok","leaseMs":"15s"}'), { redis: server.url }), ConfigInvalidError, 'CONFIG_INVALID'],
  ['no tinytown.json with create: false', async () => Town.connect(await tempDir(), { redis: server.url, create: false }), ConfigNotFoundError, 'CONFIG_NOT_FOUND'],
  ['Redis URL with an unknown scheme (password redacted)', () => Town.connect(town.root, { redis: `http://admin:${SECRET}@127.0.0.1:1`, name: town.name }), ConfigInvalidError, 'CONFIG_INVALID'],
  // ── references and transitions ──
  ['unknown agent', () => town.agent('nobody'), AgentNotFoundError, 'AGENT_NOT_FOUND'],
  ['message to an unknown agent', () => town.send('nobody', 'hi'), AgentNotFoundError, 'AGENT_NOT_FOUND'],
  ['unknown task', () => town.task('00000000-0000-4000-8000-000000000000'), TaskNotFoundError, 'TASK_NOT_FOUND'],
  ['cancel a completed task', () => town.cancelTask(completed.id), InvalidTransitionError, 'INVALID_TRANSITION'],
  ['pause a stopped agent', () => town.agent('worker').then((a) => a.pause()), InvalidTransitionError, 'INVALID_TRANSITION'],
  ['remove a task that is not in the backlog', () => town.backlog.remove(completed.id), NotInBacklogError, 'NOT_IN_BACKLOG'],
  ['claim a task that is not in the backlog', () => town.backlog.claim(assigned.id, 'cold'), NotInBacklogError, 'NOT_IN_BACKLOG'],
  ['a second worker for an agent with a live one', () => town.runWorker('held', { run }), WorkerActiveError, 'WORKER_ACTIVE'],
  ['remove an agent served by a live worker elsewhere', () => held.remove(), WorkerActiveError, 'WORKER_ACTIVE'],
  ['wait for an agent in error', () => broken.waitForIdle({ timeoutMs: 2_000 }), AgentErrorStateError, 'AGENT_ERROR'],
  ['call on a closed town', () => closedTown.status(), TownClosedError, 'TOWN_CLOSED'],
  // ── corrupt records ──
  ['corrupt task record', () => town.task(corruptTaskId), CorruptRecordError, 'CORRUPT_RECORD'],
  ['listing over a corrupt task record', () => town.tasks(), CorruptRecordError, 'CORRUPT_RECORD'],
  // ── the server ──
  ['Redis older than 6.2', () => Town.connect(town.root, { redis: fakeOld.url, name: town.name }), RedisVersionError, 'REDIS_VERSION'],
  ['wrong password (redacted)', () => Town.connect(town.root, { redis: `redis://default:${SECRET}-wrong@127.0.0.1:${guarded.port}`, name: town.name }), RedisAuthError, 'REDIS_AUTH'],
  ['no password for a server that needs one', () => Town.connect(town.root, { redis: guarded.url, name: town.name }), RedisAuthError, 'REDIS_AUTH'],
  ['unreachable Redis: refused', async () => Town.connect(town.root, { redis: `redis://u:${SECRET}@127.0.0.1:${await freePort()}`, name: town.name, connectTimeoutMs: 1_000 }), RedisConnectionError, 'REDIS_CONNECTION'],
  ['unreachable Redis: never answers (bounded by connectTimeoutMs)', () => Town.connect(town.root, { redis: silent.url, name: town.name, connectTimeoutMs: 500 }), RedisConnectionError, 'REDIS_CONNECTION'],
  [
    'managed Redis: socket path too long',
    async () => {
      const root = join(await tempDir(), 'z'.repeat(110));
      await mkdir(root);
      return withEnv({ REDIS_URL: undefined, TMPDIR: join(await tempDir(), 't'.repeat(120)), XDG_RUNTIME_DIR: undefined }, () =>
        Town.connect(root, { name: 'managed-long' }),
      );
    },
    SocketPathTooLongError,
    'SOCKET_PATH_TOO_LONG',
  ],
  [
    'managed Redis: missing binary',
    async () => {
      const root = await tempDir();
      return withEnv({ REDIS_URL: undefined, TINYTOWN_REDIS_SERVER: '/nonexistent/redis-server' }, () => Town.connect(root, { name: 'managed-missing' }));
    },
    RedisServerNotFoundError,
    'REDIS_SERVER_NOT_FOUND',
  ],
];

describe('bad input: a typed error with a stable code, and no change to stored state', () => {
  it('has at least 30 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
  });

  it.each(cases)('%s', async (_name, call, errorClass, code) => {
    const prefix = `tt:{${town.name}}:`;
    const config = await readFile(join(town.root, 'tinytown.json'), 'utf8');
    const before = await snapshotKeys(redis, prefix);
    const started = Date.now();
    let error: unknown;
    try {
      await call();
    } catch (err) {
      error = err;
    }
    const took = Date.now() - started;
    expect(error, 'expected a rejection').toBeInstanceOf(errorClass);
    expect(error).toBeInstanceOf(TinytownError);
    expect((error as TinytownError).code).toBe(code);
    expect((error as Error).message.length).toBeGreaterThan(10);
    expect(inspect(error, { depth: 10 })).not.toContain(SECRET); // message, cause and stack
    expect(took).toBeLessThan(5_000); // never hangs: connecting is bounded
    expect(await snapshotKeys(redis, prefix)).toEqual(before);
    expect(await readFile(join(town.root, 'tinytown.json'), 'utf8')).toBe(config);
  });
});
