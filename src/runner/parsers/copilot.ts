/**
 * GitHub Copilot CLI `-p … --output-format json`: JSONL session events. `assistant.message`
 * (`data.content`: the answer; the last non-empty one wins), `session.error` (`data.message`),
 * `assistant.usage` (`data.inputTokens`, `outputTokens`, `cacheReadTokens`, `cacheWriteTokens`,
 * `model`, where the CLI emits it) and a final `result` event `{ sessionId, exitCode, usage: {
 * premiumRequests, … } }`. Failures before the session (not logged in) print only text on stderr.
 *
 * @module
 */
import { clip, emptyUsage, JsonObjectReader, meaningful, num, record, str } from './json.js';
import type { OutputParser, ParsedOutput } from './types.js';

/**
 * A parser for Copilot CLI JSONL events.
 *
 * @example
 * ```ts
 * const parser = copilotParser();
 * parser.line('{"type":"assistant.message","data":{"content":"Done."}}', 'stdout');
 * parser.line('{"type":"result","sessionId":"c-1","exitCode":0}', 'stdout');
 * parser.finish(); // { recognized: true, failed: false, text: 'Done.', sessionId: 'c-1' }
 * ```
 */
export function copilotParser(): OutputParser {
  const reader = new JsonObjectReader();
  const usage = emptyUsage();
  let text: string | undefined;
  let sessionId: string | undefined;
  let exitCode: number | undefined;
  let done = false;
  let error: string | undefined;
  return {
    line(line, stream) {
      if (stream !== 'stdout') return;
      const event = reader.push(line);
      if (!event) return;
      const data = record(event.data);
      sessionId = str(event, 'sessionId') ?? str(data, 'sessionId') ?? sessionId;
      switch (event.type) {
        case 'assistant.message': {
          const content = str(data, 'content');
          if (content?.trim()) text = content;
          break;
        }
        case 'assistant.usage':
          usage.inputTokens += num(data, 'inputTokens');
          usage.outputTokens += num(data, 'outputTokens');
          usage.cacheReadTokens += num(data, 'cacheReadTokens');
          usage.cacheWriteTokens += num(data, 'cacheWriteTokens');
          usage.model = str(data, 'model') ?? usage.model;
          break;
        case 'session.error':
        case 'error':
          error = str(data, 'message') ?? str(event, 'message') ?? error;
          break;
        case 'result':
          done = true;
          exitCode = typeof event.exitCode === 'number' ? event.exitCode : exitCode;
          break;
        default:
          break;
      }
    },
    finish(): ParsedOutput {
      const failed = (exitCode !== undefined && exitCode !== 0) || (!done && error !== undefined);
      const parsed: ParsedOutput = { recognized: done, failed };
      if (text !== undefined) parsed.text = clip(text);
      if (sessionId) parsed.sessionId = sessionId;
      const counted = meaningful(usage);
      if (counted) parsed.usage = counted;
      if (error !== undefined) parsed.error = clip(error);
      else if (failed) parsed.error = `result exitCode ${exitCode}`;
      return parsed;
    },
  };
}
