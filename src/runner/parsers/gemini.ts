/**
 * Gemini CLI `--output-format json`: one (pretty-printed) object `{ session_id, response, stats:
 * { models: { [model]: { tokens: { prompt, candidates, cached, thoughts, total } } } },
 * error?: { type, message, code } }`. On failure the object goes to stderr, not stdout, so both
 * streams are read. Exit codes: 41 authentication, 42 input, 53 turn limit.
 *
 * @module
 */
import { clip, emptyUsage, JsonObjectReader, meaningful, num, record, str, type JsonRecord } from './json.js';
import type { CliErrorKind, CliUsage, OutputParser, ParsedOutput } from './types.js';

/**
 * A parser for Gemini CLI JSON output.
 *
 * @example
 * ```ts
 * const parser = geminiParser();
 * for (const line of JSON.stringify({ session_id: 's', response: 'hi' }, null, 2).split('\n')) parser.line(line, 'stdout');
 * parser.finish().text; // 'hi'
 * ```
 */
export function geminiParser(): OutputParser {
  const readers = { stdout: new JsonObjectReader(), stderr: new JsonObjectReader() };
  let document: JsonRecord | undefined;
  return {
    line(line, stream) {
      const object = readers[stream].push(line);
      // Only Gemini's own documents: tool output may print other JSON.
      if (object && ('response' in object || 'session_id' in object || 'error' in object)) document = object;
    },
    finish(): ParsedOutput {
      if (!document) return { recognized: false, failed: false };
      const error = record(document.error);
      const parsed: ParsedOutput = { recognized: true, failed: error !== undefined };
      const response = str(document, 'response');
      if (response !== undefined) parsed.text = clip(response);
      const sessionId = str(document, 'session_id');
      if (sessionId) parsed.sessionId = sessionId;
      const usage = meaningful(statsUsage(record(document.stats)));
      if (usage) parsed.usage = usage;
      if (error) {
        parsed.error = clip(str(error, 'message') ?? str(error, 'type') ?? 'error');
        const kind = errorKind(error);
        if (kind) parsed.errorKind = kind;
      }
      return parsed;
    },
  };
}

function errorKind(error: JsonRecord): CliErrorKind | undefined {
  const code = error.code;
  if (code === 41 || code === 401 || code === 403) return 'auth';
  if (code === 429) return 'rate_limit';
  if (code === 53) return 'limit';
  return undefined;
}

function statsUsage(stats: JsonRecord | undefined): CliUsage {
  const usage = emptyUsage();
  let topModel: string | undefined;
  let topTotal = -1;
  for (const [name, value] of Object.entries(record(stats?.models) ?? {})) {
    const tokens = record(record(value)?.tokens);
    const cached = num(tokens, 'cached');
    // Gemini's prompt count includes the cached part; keep them apart (see CliUsage).
    usage.inputTokens += Math.max(0, num(tokens, 'prompt') - cached);
    usage.cacheReadTokens += cached;
    usage.outputTokens += num(tokens, 'candidates');
    usage.reasoningTokens += num(tokens, 'thoughts');
    const total = num(tokens, 'total');
    if (total > topTotal) [topModel, topTotal] = [name, total];
  }
  if (topModel) usage.model = topModel;
  return usage;
}
