/**
 * tinytown: orchestrate AI coding agents (Claude Code, Codex, Gemini, …) from TypeScript, with
 * Redis as the coordination substrate.
 *
 * @example
 * ```ts
 * import { Town, Task, waitForIdle } from 'tinytown';
 *
 * await using town = await Town.connect('.');
 * const designer = await town.spawnAgent('designer', 'claude');
 * await designer.assign(new Task('Design auth API schema'));
 * await waitForIdle(designer);
 * console.log(await town.status());
 * ```
 *
 * @packageDocumentation
 */
export { Town, type AgentStatus, type EventsOptions, type RecoverResult, type TownStatus } from './town.js';
export {
  Agent,
  waitForIdle,
  type AgentInfo,
  type AgentOptions,
  type AgentState,
  type AgentWorkOptions,
  type StopOptions,
  type TaskContext,
  type TaskHandler,
} from './agent.js';
export { Backlog } from './backlog.js';
export { TaskGroup, type GroupProgress } from './group.js';
export {
  Task,
  TERMINAL_STATES,
  type Priority,
  type TaskFilter,
  type TaskInput,
  type TaskOptions,
  type TaskRecord,
  type TaskState,
  type TaskUsage,
} from './task.js';
export type { Message, MessageType, SendOptions } from './message.js';
export type { TownEvent, TownEventMap, TownEventType } from './events/types.js';
export type { TownConfig, TownOptions } from './config.js';
export type { WaitOptions } from './wait.js';
export type { KeyLayout } from './store/keys.js';
export type { ClusterInput, RedisInput, RedisTlsSettings, RemoteRedisSettings } from './store/connection.js';
export { Worker } from './worker/worker.js';
export { TOOL_NAMES, type ToolName } from './mcp/tools.js';
export type { OutputChunk, ProcessExit, ProcessRunner, ProcessSpec, RunningProcess } from './runner/process-runner.js';
export { ChildProcessRunner, defaultRunner } from './runner/child-process-runner.js';
export { runCli, type CliDefinition, type CliRunRequest, type CliRunResult, type PromptMode } from './runner/cli.js';
export { PRESETS, resolveCli, withBudget, withSession, type PresetName } from './runner/presets.js';
export {
  createParser,
  isOutputFormat,
  OUTPUT_FORMATS,
  parseOutput,
  type CliErrorKind,
  type CliUsage,
  type OutputFormat,
  type OutputParser,
  type ParsedOutput,
} from './runner/parsers/index.js';
export { classifyMessage, isRetryable, type FailureClass } from './runner/failure.js';
export { ensureManagedRedis, stopManagedRedis, type ManagedRedis, type ManagedRedisOptions } from './redis-server/managed.js';
export * from './errors.js';
