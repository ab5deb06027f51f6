/**
 * The registry of output parsers: one per CLI output format, chosen by a CLI definition's
 * `output`. Parsers are pure and incremental; {@link parseOutput} runs one over a whole output.
 *
 * @module
 */
import { InvalidArgumentError } from '../../errors.js';
import { auggieParser } from './auggie.js';
import { claudeParser } from './claude.js';
import { codexParser } from './codex.js';
import { copilotParser } from './copilot.js';
import { geminiParser } from './gemini.js';
import { opencodeParser } from './opencode.js';
import { textParser } from './text.js';
import { OUTPUT_FORMATS, type OutputFormat, type OutputParser, type ParsedOutput } from './types.js';

export { OUTPUT_FORMATS } from './types.js';
export type { CliErrorKind, CliUsage, OutputFormat, OutputParser, ParsedOutput } from './types.js';

const FACTORIES: Readonly<Record<OutputFormat, () => OutputParser>> = {
  text: textParser,
  'claude-json': claudeParser,
  'codex-jsonl': codexParser,
  'gemini-json': geminiParser,
  'auggie-json': auggieParser,
  'copilot-jsonl': copilotParser,
  'opencode-json': opencodeParser,
  // Cursor Agent's result object has Claude Code's shape (type, subtype, is_error, result, session_id).
  'cursor-json': claudeParser,
};

/**
 * Whether `value` names a built-in output parser.
 *
 * @example
 * ```ts
 * isOutputFormat('codex-jsonl'); // true
 * isOutputFormat('xml'); // false
 * ```
 */
export function isOutputFormat(value: unknown): value is OutputFormat {
  return typeof value === 'string' && (OUTPUT_FORMATS as readonly string[]).includes(value);
}

/**
 * A fresh parser for `format`.
 *
 * @example
 * ```ts
 * const parser = createParser('claude-json');
 * parser.line(stdoutLine, 'stdout');
 * const { text, usage } = parser.finish();
 * ```
 */
export function createParser(format: OutputFormat): OutputParser {
  const factory = Object.hasOwn(FACTORIES, format) ? FACTORIES[format] : undefined;
  if (!factory) throw new InvalidArgumentError(`Unknown output format ${JSON.stringify(format)}; use one of ${OUTPUT_FORMATS.join(', ')}.`);
  return factory();
}

/**
 * Parses a complete recorded output (for tests, or output read back from a log).
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const parsed = parseOutput('codex-jsonl', readFileSync('run.jsonl', 'utf8'));
 * console.log(parsed.sessionId, parsed.usage);
 * ```
 */
export function parseOutput(format: OutputFormat, stdout: string, stderr = ''): ParsedOutput {
  const parser = createParser(format);
  for (const line of stdout.split(/\r?\n/)) parser.line(line, 'stdout');
  for (const line of stderr.split(/\r?\n/)) parser.line(line, 'stderr');
  return parser.finish();
}
