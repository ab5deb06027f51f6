/**
 * Type-level tests of the options users write: `TownOptions`, `AgentOptions` (and the handler
 * they may carry), `WaitOptions`, `SendOptions`, task input. Wrong types must not compile.
 */
import type { Cluster, Redis, RedisOptions } from 'ioredis';
import { describe, expectTypeOf, test } from 'vitest';
import {
  Agent,
  Task,
  Town,
  waitForIdle,
  type AgentOptions,
  type AgentWorkOptions,
  type CliDefinition,
  type ClusterInput,
  type KeyLayout,
  type RedisInput,
  type TaskContext,
  type TaskInput,
  type TaskRecord,
  type TownOptions,
  type WaitOptions,
} from '../../src/index.js';

declare const town: Town;
declare const agent: Agent;
/** Checks that a value is assignable to T (a literal gets excess-property checks). */
const accepts = <T>(value: T): T => value;

describe('TownOptions', () => {
  test('Town.connect(dir?, options?) returns Promise<Town>', () => {
    expectTypeOf(Town.connect).returns.toEqualTypeOf<Promise<Town>>();
    expectTypeOf(Town.connect).parameters.toEqualTypeOf<[dir?: string, options?: TownOptions]>();
    expectTypeOf(Town.connect()).resolves.toEqualTypeOf<Town>();
  });

  test('accepts every documented option', () => {
    accepts<TownOptions>({
      name: 'demo',
      create: false,
      redis: 'rediss://worker:secret@redis.internal:6380',
      keyLayout: 'tinytown',
      leaseMs: 15_000,
      connectTimeoutMs: 10_000,
      retentionMs: 86_400_000,
      maxDescriptionBytes: 1024,
      eventsMaxLen: 10_000,
      durability: 'strict',
      closeGraceMs: 30_000,
    });
    // a remote Redis: ACL user, password from the environment, TLS; Sentinel; Cluster
    accepts<TownOptions>({
      redis: 'rediss://worker@redis.internal:6380',
      username: 'worker',
      passwordEnv: 'TOWN_REDIS_PASSWORD',
      tls: { ca: '/etc/ssl/redis-ca.pem', cert: '-----BEGIN CERTIFICATE-----…', key: 'client-key.pem', servername: 'redis', rejectUnauthorized: true },
    });
    accepts<TownOptions>({ redis: { sentinels: [{ host: '10.0.0.5', port: 26379 }], name: 'mymaster' }, durability: 'replicated', replicas: 1, replicaTimeoutMs: 500 });
    accepts<TownOptions>({ redis: { cluster: [{ host: '10.0.0.11', port: 6379 }], clusterOptions: { redisOptions: { username: 'tinytown' } } } });
  });

  test('redis is a URL, ioredis options (Sentinel too), cluster settings or an ioredis client (Redis or Cluster)', () => {
    expectTypeOf<TownOptions['redis']>().toEqualTypeOf<RedisInput | undefined>();
    expectTypeOf<RedisInput>().toEqualTypeOf<string | RedisOptions | Redis | Cluster | ClusterInput>();
    expectTypeOf<KeyLayout>().toEqualTypeOf<'cluster' | 'tinytown'>();
  });

  test('wrong types are compile errors', () => {
    // @ts-expect-error leaseMs is a number of milliseconds
    accepts<TownOptions>({ leaseMs: '15s' });
    // @ts-expect-error durability is 'default', 'strict' or 'replicated'
    accepts<TownOptions>({ durability: 'paranoid' });
    // @ts-expect-error passwordEnv names a variable; the password itself has no option
    accepts<TownOptions>({ password: 'hunter2' });
    // @ts-expect-error a tls CA is a path or PEM text
    accepts<TownOptions>({ tls: { ca: 42 } });
    // @ts-expect-error keyLayout is 'cluster' or 'tinytown'
    accepts<TownOptions>({ keyLayout: 'flat' });
    // @ts-expect-error unknown option (a typo of leaseMs)
    accepts<TownOptions>({ leaseMS: 15_000 });
    // @ts-expect-error the folder comes first
    void Town.connect({ leaseMs: 1000 });
  });
});

describe('AgentOptions', () => {
  test('spawnAgent takes a CLI name or AgentOptions, and returns an Agent', () => {
    expectTypeOf(town.spawnAgent).parameters.toEqualTypeOf<[name: string, cli?: string | AgentOptions]>();
    expectTypeOf(town.spawnAgent('a', 'claude')).resolves.toEqualTypeOf<Agent>();
    expectTypeOf<AgentOptions>().toExtend<AgentWorkOptions>();
  });

  test('accepts a preset, a custom definition or an in-process handler', () => {
    accepts<AgentOptions>({ cli: 'codex', role: 'worker', nickname: 'bob', tags: ['api'], claimBacklog: true, maxAttempts: 3 });
    accepts<AgentOptions>({ cli: { command: 'my-agent', args: ['--json'], prompt: 'stdin', output: 'claude-json' } });
    accepts<AgentOptions>({ cli: 'claude', timeoutMs: 60_000, stallMs: 30_000, continueSession: true, start: false, env: { A: '1' } });
    expectTypeOf<AgentOptions['cli']>().toEqualTypeOf<string | CliDefinition | undefined>();
  });

  test('a run handler gets the task record and its context', () => {
    void town.spawnAgent('echo', {
      run: async (task, ctx) => {
        expectTypeOf(task).toEqualTypeOf<TaskRecord>();
        expectTypeOf(ctx).toEqualTypeOf<TaskContext>();
        expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
        expectTypeOf(ctx.attempt).toBeNumber();
        ctx.reportUsage({ inputTokens: 10, outputTokens: 2, costUsd: 0.01 });
        ctx.log('a line');
        return `echo: ${task.description}`;
      },
    });
  });

  test('wrong types are compile errors', () => {
    // @ts-expect-error timeoutMs is a number
    accepts<AgentOptions>({ cli: 'claude', timeoutMs: '5m' });
    // @ts-expect-error tags are a list of strings
    accepts<AgentOptions>({ cli: 'claude', tags: 'api' });
    // @ts-expect-error a custom CLI needs a command
    accepts<AgentOptions>({ cli: { args: ['--json'] } });
    // @ts-expect-error prompt is 'stdin', 'arg' or 'file'
    accepts<AgentOptions>({ cli: { command: 'x', prompt: 'pipe' } });
    // @ts-expect-error output is a known parser
    accepts<AgentOptions>({ cli: { command: 'x', output: 'xml' } });
    // @ts-expect-error unknown option
    accepts<AgentOptions>({ clii: 'claude' });
    // @ts-expect-error reportUsage takes numbers
    void town.spawnAgent('x', { run: (_task, ctx) => ctx.reportUsage({ inputTokens: '10' }) });
  });
});

describe('WaitOptions', () => {
  test('every wait takes WaitOptions', () => {
    expectTypeOf<WaitOptions>().toEqualTypeOf<{ timeoutMs?: number; signal?: AbortSignal }>();
    expectTypeOf(agent.waitForIdle).parameter(0).toEqualTypeOf<WaitOptions | undefined>();
    expectTypeOf(town.waitForTask).parameter(1).toEqualTypeOf<WaitOptions | undefined>();
    expectTypeOf(waitForIdle([agent], { timeoutMs: 1_000, signal: AbortSignal.timeout(5) })).toEqualTypeOf<Promise<void>>();
    expectTypeOf(town.waitForTask('id')).resolves.toEqualTypeOf<TaskRecord>();
  });

  test('wrong types are compile errors', () => {
    // @ts-expect-error timeoutMs is a number
    void agent.waitForIdle({ timeoutMs: '1m' });
    // @ts-expect-error the option is timeoutMs
    void town.waitForTask('id', { timeout: 1000 });
    // @ts-expect-error signal is an AbortSignal
    void waitForIdle(agent, { signal: new AbortController() });
  });
});

describe('tasks and messages', () => {
  test('assign takes a string, a TaskInput or a Task', () => {
    expectTypeOf(agent.assign).parameter(0).toEqualTypeOf<string | TaskInput | Task>();
    void agent.assign({ description: 'Ship it', priority: 'urgent', tags: ['release'], timeoutMs: 60_000, maxAttempts: 2 });
    void agent.assign(new Task('Design the schema', { priority: 'high' }));
  });

  test('wrong types are compile errors', () => {
    // @ts-expect-error priority is low, normal, high or urgent
    void agent.assign({ description: 'x', priority: 'asap' });
    // @ts-expect-error a TaskInput needs a description
    void agent.assign({ tags: ['x'] });
    // @ts-expect-error message types a caller can send: task, query, info, ack
    void town.send('backend', 'hi', { type: 'task_done' });
  });
});
