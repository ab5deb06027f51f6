/**
 * The shapes shared by the output parsers: what a parser reads (lines), what it reports (a
 * {@link ParsedOutput}) and the normalized token/cost record ({@link CliUsage}).
 *
 * @module
 */

/**
 * Names of the built-in output parsers, usable as `output` in a CLI definition.
 *
 * @example
 * ```ts
 * import { OUTPUT_FORMATS } from 'tinytown';
 * const schema = z.enum(OUTPUT_FORMATS); // 'text' | 'claude-json' | …
 * ```
 */
export const OUTPUT_FORMATS = [
  'text',
  'claude-json',
  'codex-jsonl',
  'gemini-json',
  'auggie-json',
  'copilot-jsonl',
  'opencode-json',
  'cursor-json',
] as const;

/**
 * How a CLI's output is read back: `'text'` takes stdout as the result; the others parse the
 * CLI's structured output (see {@link OUTPUT_FORMATS}).
 *
 * @example
 * ```ts
 * import type { OutputFormat } from 'tinytown';
 * const format: OutputFormat = 'codex-jsonl';
 * ```
 */
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/**
 * Tokens and cost of one run, normalized across CLIs. `inputTokens` counts prompt tokens that
 * were *not* read from a cache, so `inputTokens + cacheReadTokens + cacheWriteTokens` is the whole
 * prompt for every CLI (Codex and Gemini report cached tokens inside their input count; they are
 * moved to `cacheReadTokens`). `costUsd` is present only when the CLI reports US dollars.
 *
 * @example
 * ```ts
 * import type { CliUsage } from 'tinytown';
 * const usage: CliUsage = { inputTokens: 1200, outputTokens: 456, cacheReadTokens: 4000, cacheWriteTokens: 300, reasoningTokens: 0, costUsd: 0.0123, model: 'claude-sonnet-4-5' };
 * ```
 */
export interface CliUsage {
  /** Prompt tokens not read from a cache. */
  inputTokens: number;
  /** Generated tokens. */
  outputTokens: number;
  /** Prompt tokens read from the provider's cache. */
  cacheReadTokens: number;
  /** Prompt tokens written to the provider's cache. */
  cacheWriteTokens: number;
  /** Reasoning ("thinking") tokens, where the CLI counts them apart (0 otherwise). */
  reasoningTokens: number;
  /** Only when the CLI reports a cost in US dollars. */
  costUsd?: number;
  /** The model that did most of the work, when the CLI names it. */
  model?: string;
}

/**
 * What a CLI said its failure was, where its structured output says so (an HTTP status, an
 * error code, a result subtype): `auth` (not logged in), `rate_limit`, `network` (transient:
 * connection, overload, 5xx), `limit` (its own turn or budget limit), `other`.
 *
 * @example
 * ```ts
 * import type { CliErrorKind } from 'tinytown';
 * const kind: CliErrorKind = 'rate_limit';
 * ```
 */
export type CliErrorKind = 'auth' | 'rate_limit' | 'network' | 'limit' | 'other';

/**
 * What a parser made of a run's output.
 *
 * @example
 * ```ts
 * import { parseOutput } from 'tinytown';
 * const parsed: ParsedOutput = parseOutput('claude-json', stdout);
 * if (parsed.failed) console.error(parsed.error);
 * ```
 */
export interface ParsedOutput {
  /** A result record of the format was seen (Claude's result object, Codex's turn.completed…). */
  recognized: boolean;
  /** The result text the CLI reported, if any. */
  text?: string;
  /** The CLI's session id, when it reports one (to resume the session later). */
  sessionId?: string;
  /** Tokens and cost, when the CLI reports them. */
  usage?: CliUsage;
  /** The CLI reported a failure in its output (`is_error`, `turn.failed`, an `error` object…). */
  failed: boolean;
  /** The CLI's own words about its last error (even when it did not fail: a retry warning). */
  error?: string;
  /** What the CLI's output says the failure was, where it says so. */
  errorKind?: CliErrorKind;
}

/**
 * An incremental parser of one run's output. It is fed complete lines as they stream (without
 * their line break), from stdout and stderr, and keeps only the bounded state it needs: a run may
 * print gigabytes.
 *
 * @example
 * ```ts
 * import { createParser } from 'tinytown';
 * const parser = createParser('codex-jsonl');
 * parser.line('{"type":"thread.started","thread_id":"t-1"}', 'stdout');
 * parser.finish().sessionId; // 't-1'
 * ```
 */
export interface OutputParser {
  /** One complete line of output, without its line break. */
  line(line: string, stream: 'stdout' | 'stderr'): void;
  /** The outcome so far; called once the output has ended. */
  finish(): ParsedOutput;
}
