/**
 * Validation of agent and worker options, so a typo or a wrong type fails at `spawnAgent` or
 * `runWorker` with a message naming the option, never later on every task.
 *
 * @module
 */
import { z } from 'zod';
import type { AgentInfo, AgentOptions } from './agent.js';
import { cliDefinitionSchema } from './config.js';
import { InvalidArgumentError } from './errors.js';
import { TOOL_NAMES } from './mcp/tools.js';
import { formatIssues } from './task.js';

const ms = z.number().int().positive();

/** Schema of {@link AgentOptions}; unknown keys are refused. */
export const agentOptionsSchema = z.strictObject({
  cli: z.union([z.string().min(1), cliDefinitionSchema]).optional(),
  run: z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', 'must be a function').optional(),
  runner: z
    .custom<object>((v) => typeof v === 'object' && v !== null && typeof (v as { start?: unknown }).start === 'function', 'must have a start(spec) method')
    .optional(),
  instructions: z.string().optional(),
  cwd: z.string().min(1).optional(),
  env: z.record(z.string(), z.string()).optional(),
  timeoutMs: ms.optional(),
  stallMs: ms.optional(),
  continueSession: z.boolean().optional(),
  leaseMs: ms.optional(),
  retryDelayMs: z.number().int().min(0).optional(),
  role: z.string().min(1).max(64).optional(),
  nickname: z.string().min(1).max(64).optional(),
  tags: z.array(z.string().min(1).max(64)).max(32).optional(),
  maxAttempts: z.number().int().min(1).max(100).optional(),
  start: z.boolean().optional(),
  claimBacklog: z.boolean().optional(),
  maxCostUsd: z.number().positive().finite().optional(),
  maxTokens: z.number().int().positive().optional(),
  worktree: z.union([z.boolean(), z.strictObject({ branch: z.string().min(1).max(200).optional() })]).optional(),
  tools: z.union([z.boolean(), z.array(z.enum(TOOL_NAMES))]).optional(),
});

/** Checks agent options (or the subset `runWorker` takes), naming every problem at once. */
export function checkAgentOptions(options: unknown): asserts options is AgentOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError('Agent options must be an object or a CLI name.');
  }
  const parsed = agentOptionsSchema.safeParse(options);
  if (!parsed.success) throw new InvalidArgumentError(`Invalid agent options: ${formatIssues(parsed.error)}`, { cause: parsed.error });
  const { run, cli } = options as AgentOptions;
  if (run !== undefined && cli !== undefined) throw new InvalidArgumentError('Give either cli or run, not both.');
  const { tools } = options as AgentOptions;
  if (run !== undefined && (tools === true || (Array.isArray(tools) && tools.length > 0))) {
    throw new InvalidArgumentError('tools give a CLI agent town tools over MCP; an in-process run handler has ctx.town instead. Drop tools, or use a cli.');
  }
}

/** What the agent record stores as its CLI: the preset or custom name, the command, or a marker. */
export function cliLabel(options: AgentOptions): string {
  if (typeof options.cli === 'string') return options.cli;
  if (options.cli !== undefined) return options.cli.command;
  return options.run !== undefined ? 'in-process' : 'unset';
}

/** The CLI an agent was registered with, for a worker started without one. */
export function registeredCli(info: AgentInfo): string {
  // These labels name no CLI: resolving them would report an "unknown CLI" nobody typed.
  if (info.cli === 'in-process' || info.cli === 'unset') {
    throw new InvalidArgumentError(`Agent ${info.name} has no registered CLI (${info.cli}): give runWorker a { cli } or a { run } handler.`);
  }
  return info.cli;
}
