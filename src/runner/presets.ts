/**
 * Built-in CLI presets: the command lines that make each agent CLI run unattended, and the
 * lookup of custom definitions from `tinytown.json`.
 *
 * @module
 */
import { UnknownCliError } from '../errors.js';
import type { CliDefinition } from './cli.js';

/** Names of the built-in presets. */
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
 * Headless command lines per CLI (see `reference/agent-clis.md`). The prompt never passes a
 * shell; it goes on stdin where the CLI reads it, else as one argument or a file.
 */
export const PRESETS: Readonly<Record<PresetName, CliDefinition>> = Object.freeze({
  claude: { command: 'claude', args: ['-p', '--permission-mode', 'acceptEdits'], prompt: 'stdin' },
  codex: { command: 'codex', args: ['exec', '--full-auto', '--skip-git-repo-check', '-'], prompt: 'stdin' },
  'codex-mini': {
    command: 'codex',
    args: ['exec', '--full-auto', '--skip-git-repo-check', '-m', 'codex-mini-latest', '-'],
    prompt: 'stdin',
  },
  gemini: { command: 'gemini', args: ['--approval-mode', 'yolo', '-p', '{prompt}'], prompt: 'arg' },
  auggie: { command: 'auggie', args: ['--print', '--instruction-file', '{promptFile}'], prompt: 'file' },
  aider: { command: 'aider', args: ['--yes-always', '--no-auto-commits', '--message-file', '{promptFile}'], prompt: 'file' },
  copilot: { command: 'copilot', args: ['-s', '--allow-all-tools', '-p', '{prompt}'], prompt: 'arg' },
  cursor: { command: 'cursor-agent', args: ['--force', '-p', '{prompt}'], prompt: 'arg' },
  opencode: { command: 'opencode', args: ['run', '{prompt}'], prompt: 'arg' },
  goose: { command: 'goose', args: ['run', '-i', '{promptFile}'], prompt: 'file' },
});

/**
 * Resolves a CLI reference: an inline definition as is, else a name from `custom` (the town's
 * `clis`), else a preset.
 *
 * @example
 * ```ts
 * resolveCli('codex'); // { command: 'codex', args: ['exec', …, '-'], prompt: 'stdin' }
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
