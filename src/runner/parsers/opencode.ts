/**
 * OpenCode `run --format json`: JSONL events `{ type, timestamp, sessionID, part? , error? }`.
 * `text` (a finished text part: `part.text`), `step_start` / `step_finish` (a model step;
 * `step_finish.part` carries `cost` in US dollars and `tokens: { input, output, reasoning,
 * cache: { read, write } }`, summed over steps), `tool_use`, `reasoning`, and `error` (`error:
 * { name, data: { message } }`; OpenCode then exits 1). The answer is the text of the last step
 * that wrote any.
 *
 * @module
 */
import { clip, emptyUsage, JsonObjectReader, meaningful, num, record, roundUsd, str, type JsonRecord } from './json.js';
import type { CliErrorKind, OutputParser, ParsedOutput } from './types.js';

/**
 * A parser for OpenCode JSON events.
 *
 * @example
 * ```ts
 * const parser = opencodeParser();
 * parser.line('{"type":"text","sessionID":"ses_1","part":{"type":"text","text":"Done."}}', 'stdout');
 * parser.finish().text; // 'Done.'
 * ```
 */
export function opencodeParser(): OutputParser {
  const reader = new JsonObjectReader();
  const usage = emptyUsage();
  let cost = 0;
  let sessionId: string | undefined;
  let stepText: string[] = [];
  let lastText: string | undefined;
  let finished = false;
  let error: JsonRecord | undefined;
  const closeStep = (): void => {
    if (stepText.length > 0) lastText = clip(stepText.join('\n'));
    stepText = [];
  };
  return {
    line(line, stream) {
      if (stream !== 'stdout') return;
      const event = reader.push(line);
      if (!event) return;
      sessionId = str(event, 'sessionID') ?? sessionId;
      const part = record(event.part);
      switch (event.type) {
        case 'step_start':
          closeStep();
          break;
        case 'text': {
          const text = str(part, 'text');
          if (text?.trim()) stepText.push(text);
          break;
        }
        case 'step_finish': {
          finished = true;
          cost += num(part, 'cost');
          const tokens = record(part?.tokens);
          const cache = record(tokens?.cache);
          usage.inputTokens += num(tokens, 'input');
          usage.outputTokens += num(tokens, 'output');
          usage.reasoningTokens += num(tokens, 'reasoning');
          usage.cacheReadTokens += num(cache, 'read');
          usage.cacheWriteTokens += num(cache, 'write');
          break;
        }
        case 'error':
          error = record(event.error) ?? { name: str(event, 'message') ?? 'error' };
          break;
        default:
          break;
      }
    },
    finish(): ParsedOutput {
      closeStep();
      const parsed: ParsedOutput = { recognized: finished || error !== undefined, failed: error !== undefined };
      if (lastText !== undefined) parsed.text = lastText;
      if (sessionId) parsed.sessionId = sessionId;
      if (cost > 0) usage.costUsd = roundUsd(cost);
      const counted = meaningful(usage);
      if (counted) parsed.usage = counted;
      if (error) {
        parsed.error = clip(errorMessage(error));
        const kind = errorKind(error);
        if (kind) parsed.errorKind = kind;
      }
      return parsed;
    },
  };
}

function errorMessage(error: JsonRecord): string {
  const data = record(error.data);
  const message = str(data, 'message') ?? str(error, 'message');
  const name = str(error, 'name');
  if (message && name && !message.includes(name)) return `${name}: ${message}`;
  return message ?? name ?? 'error';
}

function errorKind(error: JsonRecord): CliErrorKind | undefined {
  const data = record(error.data);
  const status = typeof data?.statusCode === 'number' ? data.statusCode : undefined;
  if (str(error, 'name') === 'ProviderAuthError' || status === 401 || status === 403) return 'auth';
  if (status === 429) return 'rate_limit';
  if (status !== undefined && status >= 500) return 'network';
  if (data?.isRetryable === true) return 'network';
  return undefined;
}
