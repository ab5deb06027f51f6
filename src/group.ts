/**
 * Task groups (Gastown's convoys): a named set of tasks, across any agents and the backlog,
 * whose progress is counted in one round trip and whose landing (every task over) is one
 * event, `group.completed`.
 *
 * @module
 */
import type { Agent } from './agent.js';
import { InvalidArgumentError } from './errors.js';
import { parseTaskInput, type Task, type TaskInput, type TaskRecord, type TaskState } from './task.js';
import type { Town } from './town.js';
import type { WaitOptions } from './wait.js';

/**
 * Where a task group stands: its tasks counted by state, read in one round trip.
 *
 * @example
 * ```ts
 * import type { GroupProgress } from 'tinytown';
 * const p: GroupProgress = await town.group('release-1.4').progress();
 * console.log(`${p.done}/${p.total} done (${p.counts.failed} failed), complete: ${p.complete}`);
 * ```
 */
export interface GroupProgress {
  /** The group's name. */
  name: string;
  /** Its tasks (those removed after the retention period no longer count). */
  total: number;
  /** Its tasks per state. */
  counts: Record<TaskState, number>;
  /** Its tasks that are over: completed, failed or cancelled. */
  done: number;
  /** Every task is over (also true for a group with no task). */
  complete: boolean;
}

/**
 * A handle on a task group, from `town.group(name)`: cheap, holds no state, and the group
 * itself comes into being with its first task. A task belongs to one group at most; tasks join
 * when they are created (`assign`, or `group` in any {@link TaskInput}) or later (`add`).
 *
 * The group is over when every task is completed, failed or cancelled: the script that ends its
 * last task also appends `group.completed` (with the counts), in the same atomic step. A task
 * that joins afterwards opens it again, and its end announces it once more.
 *
 * @example
 * ```ts
 * const release = town.group('release-1.4');
 * const schema = await release.assign(designer, 'Design the schema');
 * await release.assign(backend, { description: 'Build the API', dependsOn: [schema.id] });
 * await release.assign(frontend, { description: 'Build the UI', dependsOn: [schema.id] });
 * const { counts } = await release.wait({ timeoutMs: 60 * 60_000 });
 * console.log(`${counts.completed} completed, ${counts.failed} failed`);
 * ```
 */
export class TaskGroup {
  /** @internal */
  constructor(
    /** The town the group lives in. */
    readonly town: Town,
    /** The group's name. */
    readonly name: string,
  ) {}

  /**
   * Adds existing tasks (by id or record) to the group; returns how many joined (those already
   * in it are left as they are). All or nothing: an unknown id is `TaskNotFoundError`, a task of
   * another group `InvalidArgumentError`, and then none joins.
   *
   * @example
   * ```ts
   * const a = await backend.assign('Fix the login bug');
   * const b = await town.backlog.add('Update the changelog');
   * await town.group('sprint-12').add(a, b.id);
   * ```
   */
  add(...tasks: (string | TaskRecord)[]): Promise<number> {
    return this.town.addToGroup(
      this.name,
      tasks.map((t) => (typeof t === 'string' ? t : t?.id)),
    );
  }

  /**
   * Assigns a task to an agent (a handle or any reference), in this group from the start.
   *
   * @example
   * ```ts
   * const group = town.group('auth');
   * await group.assign('backend', 'Implement auth endpoints');
   * await group.assign(frontend, { description: 'Login page', priority: 'high' });
   * ```
   */
  async assign(agent: Agent | string, input: string | TaskInput | Task): Promise<TaskRecord> {
    const task = parseTaskInput(input);
    if (task.group !== undefined && task.group !== this.name) {
      throw new InvalidArgumentError(`The task names group ${JSON.stringify(task.group)}, not ${JSON.stringify(this.name)}.`);
    }
    const handle = typeof agent === 'string' ? await this.town.agent(agent) : agent;
    return handle.assign({ ...task, group: this.name });
  }

  /**
   * Cancels every task of the group that is not over yet, in one step (none of them starts
   * meanwhile): queued tasks leave their queue, running ones have their process stopped (as
   * `town.cancelTask` does), and tasks waiting on them are cancelled in turn unless they run
   * anyway (`onDependencyFailure: 'run'`). The group then lands: `wait()` resolves and
   * `group.completed` is appended. Resolves with how many tasks it ended (0 when all were over).
   *
   * @example
   * ```ts
   * const group = town.group('release-2.3');
   * await group.assign('backend', 'Tag the release');
   * const ended = await group.cancel('release postponed');
   * console.log(`${ended} tasks cancelled`);
   * ```
   */
  cancel(reason = 'group cancelled'): Promise<number> {
    if (typeof reason !== 'string') throw new InvalidArgumentError(`The reason must be a string, got ${typeof reason}.`);
    return this.town.cancelGroup(this.name, reason);
  }

  /**
   * Its tasks counted by state, in one round trip.
   *
   * @example
   * ```ts
   * const { done, total } = await town.group('auth').progress();
   * console.log(`${done}/${total}`);
   * ```
   */
  progress(): Promise<GroupProgress> {
    return this.town.groupProgress(this.name);
  }

  /**
   * Its tasks, in the order they joined.
   *
   * @example
   * ```ts
   * for (const t of await town.group('auth').tasks()) console.log(t.state, t.description);
   * ```
   */
  tasks(): Promise<TaskRecord[]> {
    return this.town.groupTasks(this.name);
  }

  /**
   * Resolves with the group's progress once every task of it is over (completed, failed or
   * cancelled; at once for a group with no task). Event-driven: it wakes on `group.completed`,
   * never by polling. Rejects with `TimeoutError` or `AbortedError`; the tasks go on.
   *
   * @example
   * ```ts
   * const ac = new AbortController();
   * const progress = await town.group('auth').wait({ timeoutMs: 30 * 60_000, signal: ac.signal });
   * if (progress.counts.failed > 0) console.warn('some tasks failed');
   * ```
   */
  wait(options?: WaitOptions): Promise<GroupProgress> {
    return this.town.waitForGroup(this.name, options);
  }
}
