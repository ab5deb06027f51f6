/**
 * Type-level tests of the event API: `town.on`, `town.off`, `town.events()` and the event types.
 * Run by vitest's typecheck mode (`npm test`); nothing here executes.
 */
import { describe, expectTypeOf, test } from 'vitest';
import { Town, type EventsOptions, type TownEvent, type TownEventMap, type TownEventType } from '../../src/index.js';

declare const town: Town;

describe('town.on / town.off', () => {
  test('a listener of any event type gets a TownEvent', () => {
    town.on('task.completed', (event) => expectTypeOf(event).toEqualTypeOf<TownEvent>());
    town.on('agent.state', (event) => expectTypeOf(event).toEqualTypeOf<TownEvent>());
    town.on('backlog.claimed', (event) => expectTypeOf(event).toEqualTypeOf<TownEvent>());
    town.on('*', (event) => expectTypeOf(event).toEqualTypeOf<TownEvent>());
  });

  test("'error' listeners get the background fault as unknown", () => {
    town.on('error', (err) => expectTypeOf(err).toBeUnknown());
  });

  test('return the town, for chaining', () => {
    expectTypeOf(town.on('task.failed', () => undefined)).toEqualTypeOf<Town>();
    expectTypeOf(town.off('task.failed', () => undefined)).toEqualTypeOf<Town>();
  });

  test('unknown event names are compile errors', () => {
    // @ts-expect-error not an event type
    town.on('task.done', () => undefined);
    // @ts-expect-error event types are dotted: task.completed
    town.on('task_completed', () => undefined);
    // @ts-expect-error not an event type
    town.off('agent.created', () => undefined);
  });

  test('a listener must accept a TownEvent', () => {
    // @ts-expect-error the listener receives a TownEvent, not a string
    town.on('task.completed', (event: string) => event);
    // @ts-expect-error an 'error' listener cannot demand an Error: background faults are unknown
    town.on('error', (err: Error) => err);
  });
});

describe('event types', () => {
  test('TownEventType is the union of the event names', () => {
    expectTypeOf<'task.completed'>().toExtend<TownEventType>();
    expectTypeOf<'message.discarded'>().toExtend<TownEventType>();
    expectTypeOf<'task.done'>().not.toExtend<TownEventType>();
    expectTypeOf<'*'>().not.toExtend<TownEventType>();
  });

  test('TownEventMap has one listener per event type, plus *', () => {
    expectTypeOf<keyof TownEventMap>().toEqualTypeOf<TownEventType | '*'>();
    expectTypeOf<TownEventMap['task.failed']>().toEqualTypeOf<(event: TownEvent) => void>();
  });

  test('TownEvent carries an id, a type, a date, optional ids and data', () => {
    expectTypeOf<TownEvent>().toEqualTypeOf<{
      id: string;
      type: TownEventType;
      at: Date;
      agentId?: string;
      taskId?: string;
      data: Record<string, unknown>;
    }>();
  });
});

describe('town.events()', () => {
  test('is an async iterable of TownEvent', () => {
    expectTypeOf(town.events()).toEqualTypeOf<AsyncIterable<TownEvent>>();
    expectTypeOf(town.events).parameter(0).toEqualTypeOf<EventsOptions | undefined>();
  });

  test('filters by known event types only', () => {
    town.events({ since: 'start', types: ['task.completed', 'task.failed'], agent: 'backend', signal: AbortSignal.timeout(1) });
    // @ts-expect-error not an event type
    town.events({ types: ['task.done'] });
    // @ts-expect-error types is a list
    town.events({ types: 'task.completed' });
  });
});
