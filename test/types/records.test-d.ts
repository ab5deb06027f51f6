/**
 * Type-level tests of what the API hands back: `TaskRecord`, `AgentInfo`, `TownStatus`,
 * `Message`, and the runner's exported values and parsers.
 */
import { describe, expectTypeOf, test } from 'vitest';
import {
  Agent,
  Backlog,
  OUTPUT_FORMATS,
  PRESETS,
  TERMINAL_STATES,
  Town,
  createParser,
  parseOutput,
  type AgentInfo,
  type AgentState,
  type AgentStatus,
  type CliDefinition,
  type Message,
  type OutputFormat,
  type OutputParser,
  type ParsedOutput,
  type PresetName,
  type Priority,
  type RecoverResult,
  type TaskRecord,
  type TaskState,
  type TaskUsage,
  type TownStatus,
  type Worker,
} from '../../src/index.js';

declare const town: Town;
declare const agent: Agent;

describe('TaskRecord', () => {
  test('has typed state, dates and optional outcome fields', () => {
    expectTypeOf<TaskRecord['state']>().toEqualTypeOf<TaskState>();
    expectTypeOf<TaskState>().toEqualTypeOf<'pending' | 'assigned' | 'running' | 'completed' | 'failed' | 'cancelled'>();
    expectTypeOf<TaskRecord['createdAt']>().toEqualTypeOf<Date>();
    expectTypeOf<TaskRecord['completedAt']>().toEqualTypeOf<Date | undefined>();
    expectTypeOf<TaskRecord['result']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<TaskRecord['error']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<TaskRecord['priority']>().toEqualTypeOf<Priority>();
    expectTypeOf<TaskRecord['tags']>().toEqualTypeOf<string[]>();
    expectTypeOf<TaskRecord['usage']>().toEqualTypeOf<TaskUsage | undefined>();
    expectTypeOf<TaskRecord>().toExtend<{ id: string; description: string; attempts: number; maxAttempts: number }>();
  });

  test('is what task reads and writes return', () => {
    expectTypeOf(town.task('id')).resolves.toEqualTypeOf<TaskRecord>();
    expectTypeOf(town.tasks({ state: ['failed', 'cancelled'], limit: 5 })).resolves.toEqualTypeOf<TaskRecord[]>();
    expectTypeOf(town.cancelTask('id')).resolves.toEqualTypeOf<TaskRecord>();
    expectTypeOf(agent.assign('x')).resolves.toEqualTypeOf<TaskRecord>();
    expectTypeOf(town.backlog).toEqualTypeOf<Backlog>();
    expectTypeOf(town.backlog.list()).resolves.toEqualTypeOf<TaskRecord[]>();
    // @ts-expect-error 'complete' is not a task state
    void town.tasks({ state: 'complete' });
  });

  test('TERMINAL_STATES is a read-only set of task states', () => {
    expectTypeOf(TERMINAL_STATES).toEqualTypeOf<ReadonlySet<TaskState>>();
  });
});

describe('AgentInfo and TownStatus', () => {
  test('AgentInfo has a typed state and counters', () => {
    expectTypeOf<AgentInfo['state']>().toEqualTypeOf<AgentState>();
    expectTypeOf<AgentState>().toEqualTypeOf<'cold' | 'starting' | 'idle' | 'working' | 'paused' | 'draining' | 'stopped' | 'error'>();
    expectTypeOf<AgentInfo['type']>().toEqualTypeOf<'worker' | 'supervisor'>();
    expectTypeOf<AgentInfo>().toExtend<{ id: string; name: string; shortId: string; tasksCompleted: number; createdAt: Date }>();
    expectTypeOf(agent.info()).resolves.toEqualTypeOf<AgentInfo>();
    expectTypeOf(town.agents()).resolves.toEqualTypeOf<AgentInfo[]>();
  });

  test('TownStatus counts tasks per state and lists agents with their queue depth', () => {
    expectTypeOf(town.status()).resolves.toEqualTypeOf<TownStatus>();
    expectTypeOf<TownStatus['tasks']>().toEqualTypeOf<Record<TaskState, number>>();
    expectTypeOf<TownStatus['agents']>().toEqualTypeOf<AgentStatus[]>();
    expectTypeOf<AgentStatus>().toExtend<AgentInfo>();
    expectTypeOf<AgentStatus['queued']>().toBeNumber();
    expectTypeOf<TownStatus['backlog']>().toBeNumber();
    expectTypeOf<TownStatus['usage']>().toEqualTypeOf<TaskUsage>();
    expectTypeOf(town.recover()).resolves.toEqualTypeOf<RecoverResult>();
  });

  test('messages and workers', () => {
    expectTypeOf(town.inbox()).resolves.toEqualTypeOf<Message[]>();
    expectTypeOf<Message['createdAt']>().toEqualTypeOf<Date>();
    expectTypeOf(town.send('backend', 'hi')).resolves.toBeString();
    expectTypeOf(town.runWorker('backend')).resolves.toEqualTypeOf<Worker>();
  });
});

describe('runner exports', () => {
  test('presets are CLI definitions keyed by preset name', () => {
    expectTypeOf(PRESETS).toEqualTypeOf<Readonly<Record<PresetName, CliDefinition>>>();
    expectTypeOf<'claude'>().toExtend<PresetName>();
    // @ts-expect-error not a preset
    void PRESETS.chatgpt;
  });

  test('parsers are chosen by output format', () => {
    expectTypeOf<OutputFormat>().toEqualTypeOf<(typeof OUTPUT_FORMATS)[number]>();
    expectTypeOf<'codex-jsonl'>().toExtend<OutputFormat>();
    expectTypeOf(createParser('claude-json')).toEqualTypeOf<OutputParser>();
    expectTypeOf(parseOutput('gemini-json', '{}')).toEqualTypeOf<ParsedOutput>();
    // @ts-expect-error not an output format
    createParser('xml');
  });
});
