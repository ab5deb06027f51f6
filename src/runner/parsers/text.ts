/**
 * The `text` output: stdout is the result. Nothing is parsed (runCli uses its stdout tail).
 *
 * @module
 */
import type { OutputParser, ParsedOutput } from './types.js';

/**
 * A parser that recognizes nothing: the caller takes the stdout tail as the result.
 *
 * @example
 * ```ts
 * textParser().finish(); // { recognized: false, failed: false }
 * ```
 */
export function textParser(): OutputParser {
  return {
    line() {},
    finish(): ParsedOutput {
      return { recognized: false, failed: false };
    },
  };
}
