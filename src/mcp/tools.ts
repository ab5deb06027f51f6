/**
 * The town tools an agent can be given over MCP: their names, descriptions and argument schemas.
 * Shared by the worker's side (which checks every call against them) and the MCP server (which
 * lists them); no dependency on the MCP SDK here, so the main entry can import it.
 *
 * @module
 */
import { z } from 'zod';

/**
 * Names of the town tools an agent can be given (`tools` in {@link AgentOptions}).
 *
 * @example
 * ```ts
 * import { TOOL_NAMES } from 'tinytown';
 * // a reviewer: everything but delegation
 * await town.spawnAgent('reviewer', { cli: 'claude', tools: TOOL_NAMES.filter((t) => t !== 'assign_task') });
 * ```
 */
export const TOOL_NAMES = [
  'town_status',
  'send_message',
  'read_inbox',
  'backlog_list',
  'backlog_claim',
  'assign_task',
  'report_progress',
  'complete_task',
  'fail_task',
] as const;

/**
 * One town tool's name.
 *
 * @example
 * ```ts
 * import type { ToolName } from 'tinytown';
 * const reviewerTools: ToolName[] = ['town_status', 'send_message', 'read_inbox', 'report_progress', 'complete_task', 'fail_task'];
 * ```
 */
export type ToolName = (typeof TOOL_NAMES)[number];

const text = (what: string) => z.string().min(1).describe(what);

/** Each tool's description (what the model reads) and argument shape. */
export const TOOL_SPECS = {
  town_status: {
    title: 'Town status',
    description:
      'The town at a glance: every agent (name, role, state, current task, queued work), task counts by state and the backlog size. Also says who you are and which task you are running.',
    shape: {},
  },
  send_message: {
    title: 'Send a message',
    description:
      "Send a message to another agent (by name) or to the supervisor (the orchestrator, 'supervisor'). type: 'info' (default; waits in the recipient's notes and rides along with its next prompt), 'query' (the recipient runs it as a task and its answer comes back to your inbox), 'task' (the recipient runs it as a task), 'ack'. urgent: delivered before everything else queued.",
    shape: {
      to: text("The recipient: an agent's name, id or nickname, or 'supervisor'."),
      text: text('The message.'),
      type: z.enum(['info', 'query', 'task', 'ack']).optional().describe("Default 'info'."),
      urgent: z.boolean().optional().describe('Deliver before everything else queued for the recipient.'),
    },
  },
  read_inbox: {
    title: 'Read your inbox',
    description:
      'Messages waiting for you: answers to your queries, notes from other agents or the supervisor, and tasks queued for you after the current one. Reading does not remove them; notes not in your current prompt ride along with your next one.',
    shape: {},
  },
  backlog_list: {
    title: 'List the backlog',
    description: 'Unassigned tasks waiting in the town backlog, oldest first, with their ids, tags and priority.',
    shape: {},
  },
  backlog_claim: {
    title: 'Claim a backlog task',
    description:
      'Take a task from the backlog: it is queued for you and runs after your current task. Fails if another agent claimed it first.',
    shape: { taskId: text('The id of a task from backlog_list.') },
  },
  assign_task: {
    title: 'Delegate a task',
    description:
      "Hand a new task to another agent (by name). It is queued in that agent's inbox, linked to your current task as its parent.",
    shape: {
      to: text("The agent that will run it: its name, id or nickname."),
      description: text('What to do: a complete, self-contained instruction.'),
      priority: z.enum(['low', 'normal', 'high', 'urgent']).optional().describe("Default 'normal'."),
      tags: z.array(z.string().min(1).max(64)).max(32).optional().describe('Labels for the task.'),
    },
  },
  report_progress: {
    title: 'Report progress',
    description:
      'Tell the orchestrator how your current task is going: a short line, and optionally a percentage. Appears on the town event stream as task.progress.',
    shape: {
      message: text('What you did or are doing, in one line.'),
      percent: z.number().min(0).max(100).optional().describe('How far along the task is, 0-100.'),
    },
  },
  complete_task: {
    title: 'Complete your current task',
    description:
      'Record your current task as completed with this result, now. Only your current task can be completed, and only while it is still yours; whatever your process prints afterwards no longer changes the outcome.',
    shape: { result: text('The result: what was done, where it is, anything the orchestrator needs.') },
  },
  fail_task: {
    title: 'Fail your current task',
    description:
      'Record your current task as failed with this error, now (it is not retried). Only your current task, and only while it is still yours.',
    shape: { error: text('Why the task cannot be done.') },
  },
} as const satisfies Record<ToolName, { title: string; description: string; shape: z.ZodRawShape }>;

/** Checks a tool call's arguments; unknown arguments are refused. */
export function parseToolArgs(tool: ToolName, args: unknown): Record<string, unknown> {
  const parsed = z.strictObject(TOOL_SPECS[tool].shape).safeParse(args ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'arguments'}: ${i.message}`).join('; ');
    throw Object.assign(new Error(`Invalid arguments for ${tool}: ${problems}`), { code: 'INVALID_ARGUMENT' });
  }
  return parsed.data as Record<string, unknown>;
}

/** Whether `name` is a town tool. */
export function isToolName(name: unknown): name is ToolName {
  return typeof name === 'string' && (TOOL_NAMES as readonly string[]).includes(name);
}

/** The tools an agent's `tools` option grants, in catalogue order. */
export function grantedTools(tools: boolean | readonly string[] | undefined): ToolName[] {
  if (tools === true) return [...TOOL_NAMES];
  if (!tools) return [];
  return TOOL_NAMES.filter((name) => tools.includes(name));
}
