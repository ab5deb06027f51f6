/**
 * The backlog: unassigned work any agent may claim.
 *
 * @module
 */
import type { Task, TaskInput, TaskRecord } from './task.js';

/** What the backlog needs from its town. */
export interface BacklogHost {
  createBacklogTask(input: string | TaskInput | Task): Promise<TaskRecord>;
  backlogTasks(): Promise<TaskRecord[]>;
  claimBacklogTask(taskId: string, agentRef: string): Promise<TaskRecord>;
  removeBacklogTask(taskId: string, reason?: string): Promise<void>;
}

/**
 * Unassigned work. Idle agents spawned with `claimBacklog: true` take matching tasks by
 * themselves (oldest first; a task with tags goes to an agent whose role or tags include one).
 *
 * @example
 * ```ts
 * const task = await town.backlog.add({ description: 'Triage flaky tests', tags: ['qa'] });
 * await town.backlog.claim(task.id, 'tester');
 * ```
 */
export class Backlog {
  /** @internal */
  constructor(private readonly host: BacklogHost) {}

  /**
   * Adds a task to the backlog (state `pending`).
   * @example
   * ```ts
   * await town.backlog.add('Update the changelog');
   * ```
   */
  add(input: string | TaskInput | Task): Promise<TaskRecord> {
    return this.host.createBacklogTask(input);
  }

  /**
   * The backlog's tasks, oldest first.
   * @example
   * ```ts
   * for (const t of await town.backlog.list()) console.log(t.id, t.description);
   * ```
   */
  list(): Promise<TaskRecord[]> {
    return this.host.backlogTasks();
  }

  /**
   * Assigns a backlog task to an agent. If two claim the same task, exactly one wins; the other
   * gets `NotInBacklogError`.
   * @example
   * ```ts
   * await town.backlog.claim(taskId, 'backend');
   * ```
   */
  claim(taskId: string, agentRef: string): Promise<TaskRecord> {
    return this.host.claimBacklogTask(taskId, agentRef);
  }

  /**
   * Takes a task out of the backlog; it ends `cancelled` with the reason.
   * @example
   * ```ts
   * await town.backlog.remove(taskId, 'duplicate of #42');
   * ```
   */
  remove(taskId: string, reason?: string): Promise<void> {
    return this.host.removeBacklogTask(taskId, reason);
  }
}
