/**
 * Type-level tests of the coordination API: task groups, dependencies, budgets and worktrees.
 * Run by vitest's typecheck mode (`npm test`); nothing here executes.
 */
import { describe, expectTypeOf, test } from 'vitest';
import {
  Agent,
  Task,
  TaskGroup,
  Town,
  withBudget,
  type AgentInfo,
  type CliDefinition,
  type GroupProgress,
  type TaskRecord,
  type TaskState,
  type TownEventType,
} from '../../src/index.js';

declare const town: Town;
declare const agent: Agent;

describe('task groups', () => {
  test('town.group returns a handle whose calls are typed', () => {
    const group = town.group('release');
    expectTypeOf(group).toEqualTypeOf<TaskGroup>();
    expectTypeOf(group.name).toBeString();
    expectTypeOf(group.add('id', {} as TaskRecord)).resolves.toBeNumber();
    expectTypeOf(group.assign(agent, 'x')).resolves.toEqualTypeOf<TaskRecord>();
    expectTypeOf(group.assign('backend', { description: 'x', dependsOn: ['a'] })).resolves.toEqualTypeOf<TaskRecord>();
    expectTypeOf(group.progress()).resolves.toEqualTypeOf<GroupProgress>();
    expectTypeOf(group.tasks()).resolves.toEqualTypeOf<TaskRecord[]>();
    expectTypeOf(group.wait({ timeoutMs: 1, signal: AbortSignal.timeout(1) })).resolves.toEqualTypeOf<GroupProgress>();
    expectTypeOf<GroupProgress['counts']>().toEqualTypeOf<Record<TaskState, number>>();
    // @ts-expect-error a task id, not a number
    void group.add(42);
  });

  test('the new event types are event types', () => {
    expectTypeOf<'group.completed'>().toExtend<TownEventType>();
    expectTypeOf<'budget.exceeded'>().toExtend<TownEventType>();
  });
});

describe('dependencies and budgets on tasks', () => {
  test('TaskInput and Task take them; TaskRecord reports them', () => {
    void agent.assign({ description: 'x', dependsOn: ['a', 'b'], onDependencyFailure: 'run', group: 'g', maxCostUsd: 1, maxTokens: 1000 });
    void new Task('x', { dependsOn: ['a'], maxCostUsd: 0.5 });
    // @ts-expect-error the policy is 'cancel' or 'run'
    void agent.assign({ description: 'x', onDependencyFailure: 'skip' });
    expectTypeOf<TaskRecord['dependsOn']>().toEqualTypeOf<string[] | undefined>();
    expectTypeOf<TaskRecord['group']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<TaskRecord['maxCostUsd']>().toEqualTypeOf<number | undefined>();
  });

  test('agents and towns take budgets and worktrees', () => {
    void town.spawnAgent('a', { cli: 'claude', maxCostUsd: 5, maxTokens: 100_000, worktree: true });
    void town.spawnAgent('b', { cli: 'codex', worktree: { branch: 'feature/b' } });
    void Town.connect('.', { maxCostUsd: 20, maxTokens: 1_000_000 });
    expectTypeOf<AgentInfo['worktree']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<AgentInfo['maxCostUsd']>().toEqualTypeOf<number | undefined>();
    expectTypeOf(withBudget({ command: 'x' }, 1)).toEqualTypeOf<CliDefinition | undefined>();
    expectTypeOf<CliDefinition['budgetArgs']>().toEqualTypeOf<readonly string[] | undefined>();
  });
});
