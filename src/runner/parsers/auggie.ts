/**
 * Auggie `--print --output-format json`: one object `{ type: 'result', result, is_error, subtype,
 * session_id, num_turns, billing?: { usage_unit: 'usd' | 'credits', total_cost } }` (`billing`
 * with `--show-cost`). Auggie reports no token counts; a cost counts only when it is in dollars.
 * Failures before the run (not logged in) print no JSON, only a message on stderr.
 *
 * @module
 */
import { clip, JsonObjectReader, num, record, roundUsd, str, type JsonRecord } from './json.js';
import type { OutputParser, ParsedOutput } from './types.js';

/**
 * A parser for Auggie JSON results.
 *
 * @example
 * ```ts
 * const parser = auggieParser();
 * parser.line('{"type":"result","result":"Done","is_error":false,"subtype":"success","session_id":"a1"}', 'stdout');
 * parser.finish(); // { recognized: true, failed: false, text: 'Done', sessionId: 'a1' }
 * ```
 */
export function auggieParser(): OutputParser {
  const reader = new JsonObjectReader();
  let result: JsonRecord | undefined;
  return {
    line(line, stream) {
      if (stream !== 'stdout') return;
      const object = reader.push(line);
      if (object?.type === 'result') result = object;
    },
    finish(): ParsedOutput {
      if (!result) return { recognized: false, failed: false };
      const subtype = str(result, 'subtype');
      const failed = result.is_error === true;
      const parsed: ParsedOutput = { recognized: true, failed };
      const text = str(result, 'result');
      if (text !== undefined) parsed.text = clip(text);
      const sessionId = str(result, 'session_id');
      if (sessionId) parsed.sessionId = sessionId;
      const billing = record(result.billing);
      const cost = num(billing, 'total_cost');
      if (str(billing, 'usage_unit') === 'usd' && cost > 0) {
        parsed.usage = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, costUsd: roundUsd(cost) };
      }
      if (failed) {
        const said = text?.trim();
        const named = subtype && subtype !== 'success' ? subtype : undefined;
        parsed.error = clip(named && said ? `${named}: ${said}` : (named ?? said ?? 'is_error without a message'));
        if (subtype === 'error_max_turns') parsed.errorKind = 'limit';
      }
      return parsed;
    },
  };
}
