/**
 * The error model: one class per code, all TinytownError, `cause` kept, `instanceof` across the
 * built ESM and CJS copies of the package, and credential redaction.
 */
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import { ZodError } from 'zod';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tinytown from '../src/index.js';
import {
  AbortedError,
  AgentAmbiguousError,
  AgentErrorStateError,
  AgentExistsError,
  AgentNotFoundError,
  CliNotFoundError,
  ConfigInvalidError,
  ConfigNotFoundError,
  CorruptRecordError,
  DescriptionTooLargeError,
  InvalidArgumentError,
  InvalidNameError,
  InvalidTransitionError,
  NotAGitRepositoryError,
  NotInBacklogError,
  RedisAuthError,
  RedisConnectionError,
  RedisServerNotFoundError,
  RedisServerStartError,
  RedisVersionError,
  ReplicationTimeoutError,
  ReservedNameError,
  SocketPathTooLongError,
  TaskNotFoundError,
  TimeoutError,
  TinytownError,
  Town,
  TownClosedError,
  UnknownCliError,
  WorkerActiveError,
  WorktreeDirtyError,
  WorktreeError,
  redact,
  type ErrorCode,
} from '../src/index.js';
import { builtPackage } from './helpers/build.js';
import { openTown, redisUrl, tempDir } from './helpers/town.js';

type ErrorClass = new (message: string, options?: { cause?: unknown }) => TinytownError;

const CLASSES: [ErrorClass, ErrorCode][] = [
  [InvalidArgumentError, 'INVALID_ARGUMENT'],
  [InvalidNameError, 'INVALID_NAME'],
  [ReservedNameError, 'RESERVED_NAME'],
  [DescriptionTooLargeError, 'DESCRIPTION_TOO_LARGE'],
  [AgentExistsError, 'AGENT_EXISTS'],
  [AgentNotFoundError, 'AGENT_NOT_FOUND'],
  [AgentAmbiguousError, 'AGENT_AMBIGUOUS'],
  [AgentErrorStateError, 'AGENT_ERROR'],
  [WorkerActiveError, 'WORKER_ACTIVE'],
  [TaskNotFoundError, 'TASK_NOT_FOUND'],
  [InvalidTransitionError, 'INVALID_TRANSITION'],
  [NotInBacklogError, 'NOT_IN_BACKLOG'],
  [UnknownCliError, 'UNKNOWN_CLI'],
  [CliNotFoundError, 'CLI_NOT_FOUND'],
  [ConfigInvalidError, 'CONFIG_INVALID'],
  [ConfigNotFoundError, 'CONFIG_NOT_FOUND'],
  [CorruptRecordError, 'CORRUPT_RECORD'],
  [RedisConnectionError, 'REDIS_CONNECTION'],
  [RedisAuthError, 'REDIS_AUTH'],
  [RedisVersionError, 'REDIS_VERSION'],
  [ReplicationTimeoutError, 'REPLICATION_TIMEOUT'],
  [RedisServerNotFoundError, 'REDIS_SERVER_NOT_FOUND'],
  [RedisServerStartError, 'REDIS_SERVER_START'],
  [SocketPathTooLongError, 'SOCKET_PATH_TOO_LONG'],
  [TimeoutError, 'TIMEOUT'],
  [AbortedError, 'ABORTED'],
  [TownClosedError, 'TOWN_CLOSED'],
  [NotAGitRepositoryError, 'NOT_A_GIT_REPOSITORY'],
  [WorktreeDirtyError, 'WORKTREE_DIRTY'],
  [WorktreeError, 'WORKTREE_FAILED'],
];

describe('error classes', () => {
  it('every exported error class is listed here, once per code', () => {
    const exported = Object.entries(tinytown).filter(
      ([, v]) => typeof v === 'function' && Object.prototype.isPrototypeOf.call(TinytownError.prototype, v.prototype),
    );
    expect(exported.map(([name]) => name).sort()).toEqual(CLASSES.map(([c]) => c.name).sort());
    expect(new Set(CLASSES.map(([, code]) => code)).size).toBe(CLASSES.length);
  });

  it.each(CLASSES)('%o has its code, name, message and cause, and is a TinytownError', (Class, code) => {
    const cause = new Error('underlying');
    const err = new Class('what went wrong', { cause });
    expect(err).toBeInstanceOf(Error);
    expect(err).toBeInstanceOf(TinytownError);
    expect(err).toBeInstanceOf(Class);
    expect(err.code).toBe(code);
    expect((Class as unknown as { code: ErrorCode }).code).toBe(code);
    expect(err.name).toBe(Class.name);
    expect(err.message).toBe('what went wrong');
    expect(err.cause).toBe(cause);
    expect(String(err)).toBe(`${Class.name}: what went wrong`);
    expect(err.stack).toContain('what went wrong');
    for (const [Other, otherCode] of CLASSES) {
      if (otherCode !== code) expect(err, `${Class.name} vs ${Other.name}`).not.toBeInstanceOf(Other);
    }
    // without a cause, there is no `cause` property at all
    expect('cause' in new Class('x')).toBe(false);
  });

  it('CorruptRecordError carries the key', () => {
    const err = new CorruptRecordError('bad');
    expect(err.key).toBeUndefined();
    err.key = 'tt:{x}:task:1';
    expect(err.key).toBe('tt:{x}:task:1');
  });

  it('lookalikes are not TinytownErrors', () => {
    for (const value of [new Error('x'), { code: 'AGENT_NOT_FOUND', message: 'x' }, null, undefined, 'AGENT_NOT_FOUND', 42]) {
      expect(value instanceof TinytownError).toBe(false);
      expect(value instanceof AgentNotFoundError).toBe(false);
    }
    const plain = Object.assign(new Error('x'), { code: 'AGENT_NOT_FOUND' });
    expect(plain instanceof AgentNotFoundError).toBe(false);
  });
});

describe('instanceof across copies of the package', () => {
  type Pkg = typeof tinytown;
  let esm: Pkg;
  let cjs: Pkg;

  beforeAll(async () => {
    const built = await builtPackage();
    esm = (await import(pathToFileURL(built.esm).href)) as Pkg;
    cjs = createRequire(import.meta.url)(built.cjs) as Pkg;
  });

  it('the copies are distinct classes', () => {
    expect(esm.AgentNotFoundError).not.toBe(cjs.AgentNotFoundError);
    expect(esm.AgentNotFoundError).not.toBe(AgentNotFoundError);
    expect(cjs.TinytownError).not.toBe(TinytownError);
  });

  it.each(CLASSES.map(([c]) => c.name))('%s made by one copy is recognised by the others', (name) => {
    const copies = { src: tinytown, esm, cjs } as Record<string, Pkg>;
    for (const [maker, pkg] of Object.entries(copies)) {
      const Class = pkg[name as keyof Pkg] as unknown as ErrorClass;
      const err = new Class('x');
      for (const [checker, other] of Object.entries(copies)) {
        const label = `${maker} → ${checker}`;
        expect(err instanceof (other[name as keyof Pkg] as unknown as ErrorClass), label).toBe(true);
        expect(err instanceof other.TinytownError, label).toBe(true);
        const different = name === 'TimeoutError' ? other.AbortedError : other.TimeoutError;
        expect(err instanceof different, label).toBe(false);
      }
    }
  });

  it('an error thrown by the CJS copy is caught by the ESM classes, and the reverse', async () => {
    const missing = join(await tempDir(), 'missing');
    const fromCjs = await cjs.Town.connect(missing, { redis: redisUrl() }).catch((e: unknown) => e);
    expect(fromCjs).toBeInstanceOf(esm.ConfigInvalidError);
    expect(fromCjs).toBeInstanceOf(ConfigInvalidError);
    expect(fromCjs).toBeInstanceOf(esm.TinytownError);
    expect(fromCjs).not.toBeInstanceOf(esm.ConfigNotFoundError);
    const fromEsm = await esm.Town.connect(await tempDir(), { create: false, redis: redisUrl() }).catch((e: unknown) => e);
    expect(fromEsm).toBeInstanceOf(cjs.ConfigNotFoundError);
    expect(fromEsm).toBeInstanceOf(cjs.TinytownError);
    expect(fromEsm).not.toBeInstanceOf(cjs.ConfigInvalidError);
    // and from a live town of the ESM copy
    const town = await esm.Town.connect(await tempDir(), { redis: redisUrl(), name: `t-${Date.now()}` });
    try {
      const notFound = await town.agent('nobody').catch((e: unknown) => e);
      expect(notFound).toBeInstanceOf(cjs.AgentNotFoundError);
      expect(notFound).toBeInstanceOf(AgentNotFoundError);
    } finally {
      await town.close();
    }
  });
});

describe('errors the library throws keep their cause', () => {
  it('invalid JSON in tinytown.json keeps the SyntaxError', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.json'), '{ nope');
    const err = (await Town.connect(dir, { redis: redisUrl() }).catch((e: unknown) => e)) as ConfigInvalidError;
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect(err.cause).toBeInstanceOf(SyntaxError);
  });

  it('an invalid task keeps the zod error', async () => {
    const town = await openTown();
    const err = (await town.backlog.add({ description: '' }).catch((e: unknown) => e)) as InvalidArgumentError;
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.cause).toBeInstanceOf(ZodError);
  });
});

describe('redact()', () => {
  it.each([
    ['redis://user:secret@host:6379', 'redis://user:***@host:6379'],
    ['redis://:secret@host:6379/2', 'redis://:***@host:6379/2'],
    ['rediss://worker:p%40ss%2Fw0rd@redis.internal:6380', 'rediss://worker:***@redis.internal:6380'],
    ['unix://u:pw@/tmp/redis.sock', 'unix://u:***@/tmp/redis.sock'],
    ['cannot reach redis://a:b@h1:1 or redis://c:d@h2:2', 'cannot reach redis://a:***@h1:1 or redis://c:***@h2:2'],
    ['REDIS://USER:SECRET@HOST', 'REDIS://USER:***@HOST'],
    ['redis://host:6379', 'redis://host:6379'],
    ['redis://user@host:6379', 'redis://user@host:6379'],
    ['no url here: just text', 'no url here: just text'],
  ])('redact(%j) is %j', (input, expected) => {
    expect(redact(input)).toBe(expected);
  });

  it('also hides the given secrets wherever they appear', () => {
    expect(redact('auth failed for hunter2 (hunter2)', ['hunter2'])).toBe('auth failed for *** (***)');
    expect(redact('nothing to hide', [''])).toBe('nothing to hide');
  });

  it('connection errors never show the password of the URL', async () => {
    const err = await Town.connect(await tempDir(), { redis: 'redis://admin:TopS3cret@127.0.0.1:1', connectTimeoutMs: 500 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(inspect(err, { depth: 10 })).not.toContain('TopS3cret');
  });
});
