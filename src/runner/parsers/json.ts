/**
 * Small, defensive helpers for reading the JSON that agent CLIs print: field access that never
 * throws on an unexpected shape, a reader of JSON objects spread over one or several lines, and
 * bounds on what is kept.
 *
 * @module
 */
import type { CliUsage } from './types.js';

/**
 * A parsed JSON object whose fields are not trusted yet.
 *
 * @example
 * ```ts
 * const event: JsonRecord | undefined = parseObject(line);
 * ```
 */
export type JsonRecord = Readonly<Record<string, unknown>>;

/**
 * Longest result or error text kept from one run; output beyond it stays in the log only.
 *
 * @example
 * ```ts
 * clip('x'.repeat(MAX_TEXT_CHARS + 1)).length; // MAX_TEXT_CHARS + 1 (with the leading '…')
 * ```
 */
export const MAX_TEXT_CHARS = 1024 * 1024;
/**
 * Largest JSON document (one object, possibly over many lines) that is parsed.
 *
 * @example
 * ```ts
 * // A 20 MB pretty-printed object is skipped by JsonObjectReader (it stays in the log).
 * MAX_DOCUMENT_CHARS; // 8 MiB
 * ```
 */
export const MAX_DOCUMENT_CHARS = 8 * 1024 * 1024;

/**
 * The value as an object, or `undefined` for anything else (arrays, null, primitives).
 *
 * @example
 * ```ts
 * record(JSON.parse('{"a":1}'))?.a; // 1
 * ```
 */
export function record(value: unknown): JsonRecord | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonRecord) : undefined;
}

/**
 * A string field, or `undefined`.
 *
 * @example
 * ```ts
 * str({ id: 'x' }, 'id'); // 'x'
 * ```
 */
export function str(object: JsonRecord | undefined, key: string): string | undefined {
  const value = object?.[key];
  return typeof value === 'string' ? value : undefined;
}

/**
 * A finite, non-negative number field, else 0 (token counts and costs are never negative).
 *
 * @example
 * ```ts
 * num({ input_tokens: 12 }, 'input_tokens'); // 12
 * ```
 */
export function num(object: JsonRecord | undefined, key: string): number {
  const value = object?.[key];
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0;
}

/**
 * Parses `text` as a JSON object, or returns `undefined` without throwing.
 *
 * @example
 * ```ts
 * parseObject('{"type":"result"}')?.type; // 'result'
 * parseObject('Reconnecting…'); // undefined
 * ```
 */
export function parseObject(text: string): JsonRecord | undefined {
  const trimmed = text.trim();
  // Cheap pre-check: most non-JSON lines are rejected without an exception.
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) return undefined;
  try {
    return record(JSON.parse(trimmed));
  } catch {
    return undefined;
  }
}

/**
 * Text capped at {@link MAX_TEXT_CHARS}, keeping its end (where agents put their conclusion).
 *
 * @example
 * ```ts
 * clip('short'); // 'short'
 * ```
 */
export function clip(text: string): string {
  return text.length <= MAX_TEXT_CHARS ? text : `…${text.slice(text.length - MAX_TEXT_CHARS)}`;
}

/**
 * Reads JSON objects from lines: an object on one line (JSONL), or a pretty-printed object that
 * starts with `{` and ends with `}` at the start of a line (Gemini). Anything else (warnings,
 * progress) is skipped. Keeps at most one unfinished document of {@link MAX_DOCUMENT_CHARS}.
 *
 * @example
 * ```ts
 * const reader = new JsonObjectReader();
 * reader.push('{'); reader.push('  "response": "hi"'); reader.push('}'); // { response: 'hi' }
 * ```
 */
export class JsonObjectReader {
  private lines: string[] | undefined;
  private size = 0;

  /** Feeds one line; returns the object it completes, if any. */
  push(line: string): JsonRecord | undefined {
    if (line.startsWith('{')) {
      const single = parseObject(line);
      if (single) {
        this.lines = undefined;
        return single;
      }
      this.lines = [line];
      this.size = line.length;
      return undefined;
    }
    if (this.lines === undefined) return undefined;
    this.size += line.length + 1;
    if (this.size > MAX_DOCUMENT_CHARS) {
      this.lines = undefined; // too large to be worth holding: the log keeps it
      return undefined;
    }
    this.lines.push(line);
    if (!line.startsWith('}')) return undefined;
    const document = parseObject(this.lines.join('\n'));
    if (document) this.lines = undefined;
    return document;
  }
}

/**
 * An empty usage record to add to.
 *
 * @example
 * ```ts
 * const usage = emptyUsage(); usage.outputTokens += 10;
 * ```
 */
export function emptyUsage(): CliUsage {
  return { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0 };
}

/**
 * The usage, or `undefined` when it counts nothing (a run that never reached the model).
 *
 * @example
 * ```ts
 * meaningful(emptyUsage()); // undefined
 * ```
 */
export function meaningful(usage: CliUsage | undefined): CliUsage | undefined {
  if (!usage) return undefined;
  const counted =
    usage.inputTokens + usage.outputTokens + usage.cacheReadTokens + usage.cacheWriteTokens + usage.reasoningTokens + (usage.costUsd ?? 0);
  return counted > 0 ? usage : undefined;
}

/**
 * Rounds a dollar amount summed from floats (0.1 + 0.2) to a micro-dollar.
 *
 * @example
 * ```ts
 * roundUsd(0.1 + 0.2); // 0.3
 * ```
 */
export function roundUsd(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}
