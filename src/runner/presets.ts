/**
 * Built-in CLI presets: the command lines that make each agent CLI run unattended with structured
 * output, how each continues a session, and the lookup of custom definitions from
 * `tinytown.json`.
 *
 * The flags were checked against the real CLIs (`npm run test:clis` installs them and runs every
 * preset): Claude Code 2.1, Codex 0.169, Gemini CLI 0.61, Auggie 0.36, OpenCode 1.18, Copilot
 * CLI 1.0. Aider, Cursor Agent and Goose are not on npm; their flags follow their documentation.
 *
 * @module
 */
import { InvalidArgumentError, UnknownCliError } from '../errors.js';
import type { CliDefinition } from './cli.js';

/**
 * Names of the built-in presets.
 *
 * @example
 * ```ts
 * import type { PresetName } from 'tinytown';
 * const cli: PresetName = 'codex-mini';
 * ```
 */
export type PresetName =
  | 'claude'
  | 'codex'
  | 'codex-mini'
  | 'gemini'
  | 'auggie'
  | 'aider'
  | 'copilot'
  | 'cursor'
  | 'opencode'
  | 'goose';

/**
 * Claude Code. `--dangerously-skip-permissions` (and `--permission-mode bypassPermissions`)
 * refuse to run as root, so the preset accepts edits and pre-approves the tools an unattended
 * coding agent needs instead: the same flags work for root and other users. In `-p` mode a tool
 * that is not approved is denied (and listed in `permission_denials`), never waited for.
 */
const CLAUDE = ['-p', '--output-format', 'json', '--permission-mode', 'acceptEdits', '--allowedTools', 'Bash,Edit,Write,NotebookEdit,WebFetch,WebSearch'];
/**
 * Codex. `--full-auto` is gone (0.169 rejects it); `--sandbox workspace-write` is what it meant.
 * Without `--skip-git-repo-check` Codex refuses to run outside a git repository.
 */
const CODEX = ['exec', '--json', '--skip-git-repo-check', '--sandbox', 'workspace-write'];
/** Gemini CLI. Without `--skip-trust` an untrusted folder silently turns yolo back into "default". */
const GEMINI = ['--approval-mode', 'yolo', '--skip-trust', '--output-format', 'json'];
/** Auggie. Print mode allows every tool unless a permission rule says otherwise. */
const AUGGIE = ['--print', '--output-format', 'json', '--show-cost'];
/** Copilot CLI. `--allow-all-tools` is required in `-p` mode; `--no-ask-user` keeps it from asking. */
const COPILOT = ['--allow-all-tools', '--no-ask-user', '--no-auto-update', '--output-format', 'json'];
const CURSOR = ['--print', '--force', '--output-format', 'json'];
const OPENCODE = ['run', '--format', 'json'];

/**
 * Town tools (`tools` in the agent's options): how each CLI loads tinytown's MCP server for one
 * run, checked against the real CLIs by `npm run test:clis`. Claude Code needs the server's
 * tools allowed too (`mcp__tinytown`: all of them; `--allowedTools` accumulates). Codex takes the
 * server as config overrides and forwards the socket and token from its own environment
 * (`env_vars`), so the token never sits in its arguments. Gemini CLI 0.61 has no flag or
 * variable that adds a server for one run (its settings files are the user's and the
 * project's; a system settings file must be root-owned), nor has Cursor Agent; aider has no MCP.
 */
const CLAUDE_MCP = ['--mcp-config', '{mcpConfig}', '--allowedTools', 'mcp__tinytown'];
const CODEX_MCP = [
  '-c',
  'mcp_servers.tinytown.command={mcpCommandJson}',
  '-c',
  'mcp_servers.tinytown.args=[{mcpScriptJson}]',
  '-c',
  'mcp_servers.tinytown.env_vars=["TINYTOWN_MCP_SOCKET","TINYTOWN_MCP_TOKEN"]',
];

/**
 * Headless command lines per CLI (see `reference/agent-clis.md`). The prompt never passes a
 * shell; it goes on stdin where the CLI reads it, else as one argument or a file.
 *
 * @example
 * ```ts
 * import { PRESETS } from 'tinytown';
 * PRESETS.claude.args; // ['-p', '--output-format', 'json', '--permission-mode', 'acceptEdits', …]
 * PRESETS.codex.output; // 'codex-jsonl'
 * ```
 */
export const PRESETS: Readonly<Record<PresetName, CliDefinition>> = Object.freeze({
  claude: {
    command: 'claude',
    args: CLAUDE,
    prompt: 'stdin',
    output: 'claude-json',
    sessionArgs: [...CLAUDE, '--session-id', '{sessionId}'],
    resumeArgs: [...CLAUDE, '--resume', '{sessionId}'],
    budgetArgs: ['--max-budget-usd', '{maxBudgetUsd}'],
    mcpArgs: CLAUDE_MCP,
  },
  codex: {
    command: 'codex',
    args: [...CODEX, '-'],
    prompt: 'stdin',
    output: 'codex-jsonl',
    resumeArgs: [...CODEX, 'resume', '{sessionId}', '-'],
    mcpArgs: CODEX_MCP,
  },
  'codex-mini': {
    command: 'codex',
    args: [...CODEX, '-m', 'gpt-5.1-codex-mini', '-'],
    prompt: 'stdin',
    output: 'codex-jsonl',
    resumeArgs: [...CODEX, '-m', 'gpt-5.1-codex-mini', 'resume', '{sessionId}', '-'],
    mcpArgs: CODEX_MCP,
  },
  gemini: {
    command: 'gemini',
    args: GEMINI,
    prompt: 'stdin', // piped stdin alone runs Gemini headless; -p would put the prompt in argv
    output: 'gemini-json',
    sessionArgs: [...GEMINI, '--session-id', '{sessionId}'],
    resumeArgs: [...GEMINI, '--resume', '{sessionId}'],
  },
  auggie: {
    command: 'auggie',
    args: [...AUGGIE, '--instruction-file', '{promptFile}'],
    prompt: 'file',
    output: 'auggie-json',
    resumeArgs: [...AUGGIE, '--resume', '{sessionId}', '--instruction-file', '{promptFile}'],
    mcpArgs: ['--mcp-config', '{mcpConfig}'],
  },
  aider: {
    command: 'aider',
    args: ['--yes-always', '--no-auto-commits', '--no-pretty', '--no-check-update', '--message-file', '{promptFile}'],
    prompt: 'file',
    output: 'text',
  },
  copilot: {
    command: 'copilot',
    args: [...COPILOT, '-p', '{prompt}'],
    prompt: 'arg',
    output: 'copilot-jsonl',
    sessionArgs: [...COPILOT, '--session-id', '{sessionId}', '-p', '{prompt}'],
    resumeArgs: [...COPILOT, '--resume', '{sessionId}', '-p', '{prompt}'],
    mcpArgs: ['--additional-mcp-config', '@{mcpConfig}'],
  },
  cursor: {
    command: 'cursor-agent',
    args: [...CURSOR, '{prompt}'],
    prompt: 'arg',
    output: 'cursor-json',
    resumeArgs: [...CURSOR, '--resume', '{sessionId}', '{prompt}'],
  },
  opencode: {
    command: 'opencode',
    args: OPENCODE,
    prompt: 'stdin', // `opencode run` reads the message from stdin when it is not a terminal
    output: 'opencode-json',
    // Without it `run` auto-rejects every permission request.
    env: { OPENCODE_PERMISSION: '{"*":"allow"}' },
    resumeArgs: [...OPENCODE, '--session', '{sessionId}'],
    // Merged over its other configuration, for this run only.
    mcpEnv: {
      OPENCODE_CONFIG_CONTENT:
        '{"mcp":{"tinytown":{"type":"local","command":[{mcpCommandJson},{mcpScriptJson}],"environment":{"TINYTOWN_MCP_SOCKET":{mcpSocketJson},"TINYTOWN_MCP_TOKEN":{mcpTokenJson}},"enabled":true}}}',
    },
  },
  goose: {
    command: 'goose',
    args: ['run', '--quiet', '-i', '{promptFile}'],
    prompt: 'file',
    output: 'text',
    // Goose asks before acting in its default modes.
    env: { GOOSE_MODE: 'auto' },
    sessionArgs: ['run', '--quiet', '--name', '{sessionId}', '-i', '{promptFile}'],
    resumeArgs: ['run', '--quiet', '--name', '{sessionId}', '--resume', '-i', '{promptFile}'],
    // Not verified: goose is not on npm. Its extension string is split like a shell's words.
    mcpArgs: ['--with-extension', 'TINYTOWN_MCP_SOCKET={mcpSocketJson} TINYTOWN_MCP_TOKEN={mcpToken} {mcpCommandJson} {mcpScriptJson}'],
  },
});

/**
 * Resolves a CLI reference: an inline definition as is, else a name from `custom` (the town's
 * `clis`), else a preset.
 *
 * @example
 * ```ts
 * resolveCli('codex'); // { command: 'codex', args: ['exec', '--json', …, '-'], prompt: 'stdin', output: 'codex-jsonl', … }
 * ```
 */
export function resolveCli(cli: string | CliDefinition, custom: Readonly<Record<string, CliDefinition>> = {}): CliDefinition {
  if (typeof cli !== 'string') return cli;
  const found = Object.hasOwn(custom, cli) ? custom[cli] : Object.hasOwn(PRESETS, cli) ? PRESETS[cli as PresetName] : undefined;
  if (found === undefined) {
    const known = [...Object.keys(PRESETS), ...Object.keys(custom)].join(', ');
    throw new UnknownCliError(`Unknown CLI "${cli}". Use a preset (${known}), define it under "clis" in tinytown.json, or pass { command, args }.`);
  }
  return found;
}

/** Session ids are passed as arguments: one that starts with `-` would read as a flag. */
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/;

/**
 * The definition that starts (`'new'`) or continues (`'resume'`) the session `sessionId`: its
 * `sessionArgs` / `resumeArgs` with `{sessionId}` filled in, in place of `args`. `undefined` when
 * the CLI cannot do that (Codex mints its own ids: capture `result.sessionId` from a first run,
 * then resume it).
 *
 * @example
 * ```ts
 * import { randomUUID } from 'node:crypto';
 * const first = withSession(PRESETS.claude, randomUUID(), 'new'); // claude … --session-id <uuid>
 * const result = await runCli({ ...request, definition: PRESETS.codex });
 * const next = result.sessionId ? withSession(PRESETS.codex, result.sessionId, 'resume') : undefined;
 * ```
 */
export function withSession(definition: CliDefinition, sessionId: string, mode: 'new' | 'resume'): CliDefinition | undefined {
  if (!SESSION_ID.test(sessionId)) throw new InvalidArgumentError(`Invalid session id ${JSON.stringify(sessionId)}: letters, digits, '.', '_', ':' and '-', not starting with '-'.`);
  const template = mode === 'new' ? definition.sessionArgs : definition.resumeArgs;
  if (template === undefined) return undefined;
  // split/join: a replacement string would interpret `$&` and friends.
  return { ...definition, args: template.map((arg) => arg.split('{sessionId}').join(sessionId)) };
}

/**
 * The definition whose run stops itself at `maxBudgetUsd` US dollars: its `budgetArgs` with
 * `{maxBudgetUsd}` filled in, appended to its arguments. `undefined` when the CLI takes no
 * budget (only Claude Code's preset has `budgetArgs`: `--max-budget-usd`). Workers apply it to
 * every run that has a cost budget (the task's, its agent's or the town's: what is left of the
 * smallest).
 *
 * @example
 * ```ts
 * const capped = withBudget(PRESETS.claude, 0.5); // claude -p … --max-budget-usd 0.5
 * const run = await runCli({ ...request, definition: capped ?? PRESETS.claude });
 * ```
 */
export function withBudget(definition: CliDefinition, maxBudgetUsd: number): CliDefinition | undefined {
  if (!Number.isFinite(maxBudgetUsd) || maxBudgetUsd <= 0) throw new InvalidArgumentError(`maxBudgetUsd must be a positive number, got ${String(maxBudgetUsd)}.`);
  if (definition.budgetArgs === undefined) return undefined;
  // At most six decimals, no trailing zeros, never below a millionth (String(1e-7) is '1e-7').
  const value = String(Math.max(Number(maxBudgetUsd.toFixed(6)), 0.000001));
  return { ...definition, args: [...(definition.args ?? []), ...definition.budgetArgs.map((arg) => arg.split('{maxBudgetUsd}').join(value))] };
}
