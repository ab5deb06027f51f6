/**
 * Type-level tests of the error classes: each has its code as a literal type, narrows by
 * `instanceof`, and every `ErrorCode` has exactly one class.
 */
import { describe, expectTypeOf, test } from 'vitest';
import * as api from '../../src/index.js';
import {
  AgentNotFoundError,
  CorruptRecordError,
  RedisAuthError,
  TimeoutError,
  TinytownError,
  type ErrorCode,
  type TinytownErrorOptions,
} from '../../src/index.js';

/** Names of the exported error subclasses (every class extending TinytownError, but itself). */
type ErrorClassName = {
  [K in keyof typeof api]: (typeof api)[K] extends abstract new (...args: never[]) => TinytownError ? K : never;
}[keyof typeof api];
type SubclassName = Exclude<ErrorClassName, 'TinytownError'>;

describe('error classes', () => {
  test('every subclass has its code as a literal type, and every code has a subclass', () => {
    type CodeOf<K extends SubclassName> = InstanceType<(typeof api)[K]>['code'];
    expectTypeOf<CodeOf<SubclassName>>().toEqualTypeOf<ErrorCode>();
    expectTypeOf<CodeOf<'AgentNotFoundError'>>().toEqualTypeOf<'AGENT_NOT_FOUND'>();
    expectTypeOf<CodeOf<'AgentExistsError'>>().toEqualTypeOf<'AGENT_EXISTS'>();
    expectTypeOf<CodeOf<'WorkerActiveError'>>().toEqualTypeOf<'WORKER_ACTIVE'>();
    expectTypeOf<CodeOf<'CliNotFoundError'>>().toEqualTypeOf<'CLI_NOT_FOUND'>();
    expectTypeOf<CodeOf<'CorruptRecordError'>>().toEqualTypeOf<'CORRUPT_RECORD'>();
    expectTypeOf<CodeOf<'RedisServerNotFoundError'>>().toEqualTypeOf<'REDIS_SERVER_NOT_FOUND'>();
    expectTypeOf<CodeOf<'RedisConnectionError'>>().toEqualTypeOf<'REDIS_CONNECTION'>();
    expectTypeOf<CodeOf<'RedisAuthError'>>().toEqualTypeOf<'REDIS_AUTH'>();
    expectTypeOf<CodeOf<'RedisVersionError'>>().toEqualTypeOf<'REDIS_VERSION'>();
    expectTypeOf<CodeOf<'SocketPathTooLongError'>>().toEqualTypeOf<'SOCKET_PATH_TOO_LONG'>();
    expectTypeOf<CodeOf<'TimeoutError'>>().toEqualTypeOf<'TIMEOUT'>();
    expectTypeOf<CodeOf<'AgentErrorStateError'>>().toEqualTypeOf<'AGENT_ERROR'>();
    expectTypeOf(AgentNotFoundError.code).toEqualTypeOf<'AGENT_NOT_FOUND'>();
  });

  test('the base class carries any ErrorCode', () => {
    expectTypeOf<TinytownError['code']>().toEqualTypeOf<ErrorCode>();
    expectTypeOf(TinytownError.code).toEqualTypeOf<ErrorCode | undefined>();
    expectTypeOf<TimeoutError>().toExtend<TinytownError>();
    expectTypeOf<TinytownError>().toExtend<Error>();
    expectTypeOf<CorruptRecordError['key']>().toEqualTypeOf<string | undefined>();
  });

  test('instanceof narrows an unknown error, and its code', () => {
    const err: unknown = new RedisAuthError('refused');
    if (err instanceof TinytownError) {
      expectTypeOf(err.code).toEqualTypeOf<ErrorCode>();
      if (err.code === 'TIMEOUT') expectTypeOf(err.code).toEqualTypeOf<'TIMEOUT'>();
    }
    if (err instanceof TimeoutError) expectTypeOf(err.code).toEqualTypeOf<'TIMEOUT'>();
  });

  test('constructors take a message and options; subclasses fix the code', () => {
    expectTypeOf(TimeoutError).constructorParameters.toEqualTypeOf<[message: string, options?: TinytownErrorOptions]>();
    expectTypeOf(TinytownError).constructorParameters.toEqualTypeOf<[code: ErrorCode, message: string, options?: TinytownErrorOptions]>();
    // @ts-expect-error not an error code
    void new TinytownError('NOPE', 'x');
    // @ts-expect-error a subclass's code is fixed
    const code: 'TIMEOUT' = new AgentNotFoundError('x').code;
    void code;
  });
});
