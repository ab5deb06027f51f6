/**
 * The town's one event reader hands a listener that names its event types only those, and does
 * not parse an entry no listener wants (a worker wants three of the five or so types a task
 * appends; a process that only runs workers parses little of the stream). That workers still
 * hear what they act on is covered where it is acted on (cancel, stop, removal tests).
 */
import { describe, expect, it, vi } from 'vitest';
import * as types from '../src/events/types.js';
import type { TownEvent } from '../src/index.js';
import type { EventReader } from '../src/events/reader.js';
import { eventually, prefixOf, rawRedis } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

const parsed = vi.hoisted(() => [] as string[]);
vi.mock('../src/events/types.js', async (importOriginal) => {
  const original = await importOriginal<typeof types>();
  return {
    ...original,
    parseEvent: (id: string, fields: readonly string[]) => {
      parsed.push(original.wireTypeOf(fields) ?? '?');
      return original.parseEvent(id, fields);
    },
  };
});

describe('the event reader, with listeners that name their types', () => {
  it('hands each listener its types only (Rust CLI aliases included) and parses nothing nobody wants', async () => {
    const town = await openTown();
    const reader = (town as unknown as { reader: EventReader }).reader;
    await reader.ensureStarted();
    const states: TownEvent[] = [];
    const ends: TownEvent[] = [];
    const stopStates = reader.subscribe((e) => states.push(e), undefined, ['agent.state']);
    const stopEnds = reader.subscribe((e) => ends.push(e), undefined, ['task.completed']);
    parsed.length = 0;

    const key = `${prefixOf(town)}events`;
    const redis = rawRedis();
    await redis.xadd(key, '*', 'event_type', 'task_created', 'data', '{"type":"task.created","task_id":"t1"}');
    await redis.xadd(key, '*', 'event_type', 'agent_interrupted', 'data', '{"agent_id":"a1","new_state":"Paused"}');
    await redis.xadd(key, '*', 'event_type', 'task_completed', 'data', '{"type":"task.completed","task_id":"t1"}');
    await eventually(() => (ends.length === 1 ? true : undefined), 5_000, 'the completion');

    expect(states.map((e) => [e.type, e.data.newState])).toEqual([['agent.state', 'paused']]);
    expect(ends.map((e) => e.taskId)).toEqual(['t1']);
    expect(parsed).toEqual(['agent_interrupted', 'task_completed']);

    // A listener for every type: everything is parsed again, and it gets everything.
    const all: TownEvent[] = [];
    const stopAll = reader.subscribe((e) => all.push(e));
    await redis.xadd(key, '*', 'event_type', 'task_created', 'data', '{"type":"task.created","task_id":"t2"}');
    await eventually(() => (all.length === 1 ? true : undefined), 5_000, 'the creation');
    expect(parsed.at(-1)).toBe('task_created');
    expect(states).toHaveLength(1);
    for (const stop of [stopStates, stopEnds, stopAll]) stop();
    expect(reader.listenerCount).toBe(0);
  });

});
