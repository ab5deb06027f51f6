/**
 * Codex `exec --json`: JSONL events. `thread.started{thread_id}` (the session), `item.completed`
 * with an `agent_message` item (the answer; the last one wins), `turn.completed{usage:
 * {input_tokens, cached_input_tokens, output_tokens, reasoning_output_tokens?}}` (summed over
 * turns), `turn.failed{error:{message}}` (the run failed) and `error{message}` (retries such as
 * "Reconnecting... 2/5": not fatal by themselves, but the last one explains a timeout).
 *
 * @module
 */
import { clip, emptyUsage, JsonObjectReader, meaningful, num, record, str } from './json.js';
import type { OutputParser, ParsedOutput } from './types.js';

/**
 * A parser for Codex JSONL events.
 *
 * @example
 * ```ts
 * const parser = codexParser();
 * parser.line('{"type":"error","message":"Reconnecting... waiting for network"}', 'stdout');
 * parser.finish().error; // 'Reconnecting... waiting for network'
 * ```
 */
export function codexParser(): OutputParser {
  const reader = new JsonObjectReader();
  const usage = emptyUsage();
  let sessionId: string | undefined;
  let text: string | undefined;
  let completed = false;
  let failure: string | undefined;
  let lastError: string | undefined;
  return {
    line(line, stream) {
      if (stream !== 'stdout') return;
      const event = reader.push(line);
      switch (event?.type) {
        case 'thread.started':
          sessionId = str(event, 'thread_id') ?? sessionId;
          break;
        case 'item.completed': {
          const item = record(event.item);
          if (item?.type === 'agent_message') text = str(item, 'text') ?? text;
          else if (item?.type === 'error') lastError = str(item, 'message') ?? lastError;
          break;
        }
        case 'turn.completed': {
          completed = true;
          const turn = record(event.usage);
          const cached = num(turn, 'cached_input_tokens');
          // OpenAI counts cached tokens inside input_tokens; keep them apart (see CliUsage).
          usage.inputTokens += Math.max(0, num(turn, 'input_tokens') - cached);
          usage.cacheReadTokens += cached;
          usage.outputTokens += num(turn, 'output_tokens');
          usage.reasoningTokens += num(turn, 'reasoning_output_tokens');
          break;
        }
        case 'turn.failed':
          failure = str(record(event.error), 'message') ?? str(event, 'message') ?? 'turn failed';
          break;
        case 'error':
          lastError = str(event, 'message') ?? lastError;
          break;
        default:
          break;
      }
    },
    finish(): ParsedOutput {
      const parsed: ParsedOutput = { recognized: completed || failure !== undefined, failed: failure !== undefined };
      if (text !== undefined) parsed.text = clip(text);
      if (sessionId) parsed.sessionId = sessionId;
      const counted = meaningful(usage);
      if (counted) parsed.usage = counted;
      const error = failure ?? lastError;
      if (error !== undefined) parsed.error = clip(error);
      return parsed;
    },
  };
}
