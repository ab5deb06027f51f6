/**
 * An in-process task handler the test steers: each task (by description) reports when it
 * starts and finishes only when the test opens its gate. Tasks whose description is listed in
 * `instant` finish at once.
 */
import type { TaskContext, TaskHandler, TaskRecord } from '../../src/index.js';
import { deferred, type Deferred } from './kit.js';

export interface GatedHandler {
  run: TaskHandler;
  /** Resolves with the context when the task named `description` starts (its `n`-th start). */
  started(description: string, n?: number): Promise<TaskContext>;
  /** Lets the running task named `description` finish with `result` (default `done <description>`). */
  release(description: string, result?: string): void;
  /** Descriptions with their attempt, in start order. */
  readonly log: string[];
}

export function gatedHandler(options: { instant?: readonly string[] } = {}): GatedHandler {
  const starts = new Map<string, Deferred<TaskContext>[]>();
  const gates = new Map<string, Deferred<string>>();
  const log: string[] = [];
  const startSlot = (description: string, n: number): Deferred<TaskContext> => {
    const list = starts.get(description) ?? [];
    starts.set(description, list);
    while (list.length < n) list.push(deferred<TaskContext>());
    return list[n - 1]!;
  };
  const gate = (description: string): Deferred<string> => {
    let g = gates.get(description);
    if (!g) {
      g = deferred<string>();
      gates.set(description, g);
    }
    return g;
  };
  const run: TaskHandler = async (task: TaskRecord, ctx: TaskContext) => {
    log.push(`${task.description}#${ctx.attempt}`);
    const count = log.filter((l) => l.startsWith(`${task.description}#`)).length;
    startSlot(task.description, count).resolve(ctx);
    if (options.instant?.includes(task.description)) return `done ${task.description}`;
    const g = gate(task.description);
    const result = await g.promise;
    gates.delete(task.description); // a later run of the same task waits for a new release
    return result;
  };
  return {
    run,
    log,
    started: (description, n = 1) => startSlot(description, n).promise,
    release: (description, result = `done ${description}`) => gate(description).resolve(result),
  };
}
