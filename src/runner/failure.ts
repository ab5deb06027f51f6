/**
 * The ways a CLI run can fail, and which of them are worth another attempt.
 *
 * @module
 */
import type { CliErrorKind } from './parsers/types.js';

/**
 * Why a run failed:
 * - `not_found`: the binary is not installed or not on PATH;
 * - `not_authenticated`: the CLI is not logged in or its key is refused;
 * - `rate_limited`: the provider refused for rate or quota (HTTP 429, "usage limit");
 * - `timeout`: `timeoutMs` passed; `stalled`: no output for `stallMs`;
 * - `signal`: killed by a signal we did not send (the OOM killer, a user);
 * - `exit`: non-zero exit status; `cli_error`: the CLI reported a failure in its structured
 *   output (`is_error`, `turn.failed`: max turns, budget, execution error);
 * - `no_output`: exit 0 without a result (a failure, not a success);
 * - `aborted`: cancelled by the caller; `spawn`: could not be started (bad cwd, permissions).
 *
 * @example
 * ```ts
 * import type { FailureClass } from 'tinytown';
 * const failure: FailureClass = 'not_authenticated';
 * ```
 */
export type FailureClass =
  | 'not_found'
  | 'not_authenticated'
  | 'rate_limited'
  | 'timeout'
  | 'stalled'
  | 'signal'
  | 'exit'
  | 'no_output'
  | 'cli_error'
  | 'aborted'
  | 'spawn';

// Checked first: a message that mentions authentication but is about the network
// (Copilot: "Authentication token found but could not be validated … network fetch failed").
const TRANSIENT_AUTH = /could not be validated|check your network connection/i;
const AUTH =
  /not logged in|please run \/login|\blog ?in\b.*\b(required|first)\b|please log ?in|not authenticated|no auth(entication)? (provided|information|credentials)|authentication (failed|required|error)|unauthori[sz]ed|invalid (x-)?api[ _-]?key|api key (is )?(missing|not (set|found|valid)|invalid)|missing (bearer|api key|credentials)|set an auth method|token (has )?expired|\b401\b/i;
const RATE_LIMIT = /rate[ _-]?limit|too many requests|\b429\b|quota|usage limit|resource[ _]exhausted|insufficient[ _]quota/i;
const NETWORK =
  /ECONNRESET|ECONNREFUSED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH|socket hang up|fetch failed|network|stream disconnected|connection (failed|reset|refused|closed|error)|name does not resolve|failed to lookup address|temporarily unavailable|service unavailable|bad gateway|gateway time-?out|overloaded|\b(500|502|503|504|529)\b|reconnecting/i;

/**
 * What a CLI's message says the failure was, from its wording: `auth`, `rate_limit`, `network`,
 * or `undefined` when it says nothing recognizable.
 *
 * @example
 * ```ts
 * classifyMessage('Not logged in · Please run /login'); // 'auth'
 * classifyMessage('exceeded retry limit, last status: 429 Too Many Requests'); // 'rate_limit'
 * classifyMessage('stream disconnected before completion'); // 'network'
 * ```
 */
export function classifyMessage(message: string | undefined): CliErrorKind | undefined {
  if (!message) return undefined;
  if (TRANSIENT_AUTH.test(message)) return 'network';
  if (AUTH.test(message)) return 'auth';
  if (RATE_LIMIT.test(message)) return 'rate_limit';
  if (NETWORK.test(message)) return 'network';
  return undefined;
}

/**
 * Whether another attempt may succeed: yes for rate limits, timeouts, stalls, deaths by signal
 * (the OOM killer) and network errors; no for a missing binary, missing login, the CLI's own
 * errors (max turns, budget), a run without output, or a cancellation.
 *
 * @example
 * ```ts
 * isRetryable('rate_limited'); // true
 * isRetryable('exit', 'network'); // true: "stream disconnected"
 * isRetryable('not_authenticated'); // false
 * ```
 */
export function isRetryable(failure: FailureClass, kind?: CliErrorKind): boolean {
  switch (failure) {
    case 'rate_limited':
    case 'timeout':
    case 'stalled':
    case 'signal':
      return true;
    case 'exit':
    case 'cli_error':
      return kind === 'network';
    default:
      return false;
  }
}
