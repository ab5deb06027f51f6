/**
 * Claude Code's `--output-format json` (one result object) and `stream-json` (JSONL ending with
 * the same result object). Cursor Agent's `--output-format json` has the same result shape.
 *
 * The result object: `{ type: 'result', subtype, is_error, result, session_id, total_cost_usd,
 * usage: { input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens },
 * modelUsage: { [model]: { inputTokens, outputTokens, cacheReadInputTokens,
 * cacheCreationInputTokens, costUSD } }, api_error_status? }`. `modelUsage` covers every model
 * the run used, subagents included, so it is preferred over `usage` (the main loop only).
 *
 * @module
 */
import { clip, emptyUsage, JsonObjectReader, meaningful, num, record, roundUsd, str, type JsonRecord } from './json.js';
import type { CliErrorKind, CliUsage, OutputParser, ParsedOutput } from './types.js';

/** Subtypes of a failed result, in the CLI's words. */
const SUBTYPE_MEANING: Readonly<Record<string, string>> = {
  error_max_turns: 'reached the maximum number of turns (--max-turns)',
  error_max_budget_usd: 'reached the maximum budget (--max-budget-usd)',
  error_during_execution: 'failed during execution',
};

/**
 * A parser for Claude Code (and Cursor Agent) JSON results.
 *
 * @example
 * ```ts
 * const parser = claudeParser();
 * parser.line('{"type":"result","subtype":"success","is_error":true,"result":"Not logged in · Please run /login"}', 'stdout');
 * parser.finish(); // { recognized: true, failed: true, error: 'Not logged in · Please run /login', … }
 * ```
 */
export function claudeParser(): OutputParser {
  const reader = new JsonObjectReader();
  let result: JsonRecord | undefined;
  let sessionId: string | undefined;
  let model: string | undefined;
  let streamError: string | undefined;
  return {
    line(line, stream) {
      if (stream !== 'stdout') return;
      const event = reader.push(line);
      if (!event) return;
      if (event.type === 'result') result = event;
      else if (event.type === 'system' && event.subtype === 'init') {
        sessionId = str(event, 'session_id') ?? sessionId;
        model = str(event, 'model') ?? model;
      } else if (event.type === 'assistant') {
        // stream-json marks a failed API call on the assistant message ("authentication_failed").
        streamError = str(event, 'error') ?? streamError;
      }
    },
    finish(): ParsedOutput {
      if (!result) return { recognized: false, failed: false, ...(sessionId && { sessionId }) };
      return fromResult(result, sessionId, model, streamError);
    },
  };
}

function fromResult(result: JsonRecord, initSession: string | undefined, initModel: string | undefined, streamError: string | undefined): ParsedOutput {
  const subtype = str(result, 'subtype');
  const text = str(result, 'result');
  const failed = result.is_error === true || (subtype !== undefined && subtype.startsWith('error'));
  const parsed: ParsedOutput = { recognized: true, failed };
  if (text !== undefined) parsed.text = clip(text);
  const sessionId = str(result, 'session_id') ?? initSession;
  if (sessionId) parsed.sessionId = sessionId;
  const usage = meaningful(resultUsage(result, initModel));
  if (usage) parsed.usage = usage;
  if (failed) {
    parsed.error = failureText(result, subtype, text);
    const kind = errorKind(result, subtype, streamError);
    if (kind) parsed.errorKind = kind;
  }
  return parsed;
}

function failureText(result: JsonRecord, subtype: string | undefined, text: string | undefined): string {
  if (text && text.trim()) return clip(text.trim());
  const errors = Array.isArray(result.errors) ? result.errors.filter((e): e is string => typeof e === 'string') : [];
  if (errors.length > 0) return clip(errors.join('; '));
  const meaning = subtype ? SUBTYPE_MEANING[subtype] : undefined;
  return meaning ? `${subtype}: ${meaning}` : `is_error with subtype ${subtype ?? 'unknown'}`;
}

function errorKind(result: JsonRecord, subtype: string | undefined, streamError: string | undefined): CliErrorKind | undefined {
  const status = typeof result.api_error_status === 'number' ? result.api_error_status : undefined;
  if (status === 401 || status === 403 || streamError === 'authentication_failed') return 'auth';
  if (status === 429 || streamError === 'rate_limit') return 'rate_limit';
  if (status !== undefined && (status >= 500 || status === 408)) return 'network';
  if (subtype === 'error_max_turns' || subtype === 'error_max_budget_usd') return 'limit';
  return undefined;
}

/** Sums `modelUsage` (all models, subagents included), else reads the top-level `usage`. */
function resultUsage(result: JsonRecord, initModel: string | undefined): CliUsage {
  const usage = emptyUsage();
  const perModel = record(result.modelUsage);
  let topModel: string | undefined;
  let topWeight = -1;
  if (perModel && Object.keys(perModel).length > 0) {
    for (const [name, value] of Object.entries(perModel)) {
      const entry = record(value);
      usage.inputTokens += num(entry, 'inputTokens');
      usage.outputTokens += num(entry, 'outputTokens');
      usage.cacheReadTokens += num(entry, 'cacheReadInputTokens');
      usage.cacheWriteTokens += num(entry, 'cacheCreationInputTokens');
      // The model that cost the most did most of the work (ties: the one that wrote most).
      const weight = num(entry, 'costUSD') * 1e9 + num(entry, 'outputTokens');
      if (weight > topWeight) [topModel, topWeight] = [name, weight];
    }
  } else {
    const main = record(result.usage);
    usage.inputTokens = num(main, 'input_tokens');
    usage.outputTokens = num(main, 'output_tokens');
    usage.cacheReadTokens = num(main, 'cache_read_input_tokens');
    usage.cacheWriteTokens = num(main, 'cache_creation_input_tokens');
  }
  const cost = num(result, 'total_cost_usd') || sumCosts(perModel);
  if (cost > 0) usage.costUsd = roundUsd(cost);
  const model = topModel ?? initModel;
  if (model && model !== '<synthetic>') usage.model = model;
  return usage;
}

function sumCosts(perModel: JsonRecord | undefined): number {
  let total = 0;
  for (const value of Object.values(perModel ?? {})) total += num(record(value), 'costUSD');
  return total;
}
