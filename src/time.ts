/**
 * Timestamps in the Rust Tinytown's encoding: RFC 3339, UTC, microseconds
 * (`2026-03-09T20:03:14.667655Z`).
 *
 * @module
 */

/** The millisecond part of the last timestamp: every script call takes one, many per millisecond under load. */
let lastMs = NaN;
let lastPrefix = '';

/** Now, as an RFC 3339 UTC string with microsecond precision. */
export function nowIso(date = new Date()): string {
  // The wall clock has milliseconds; the monotonic clock's fraction supplies the microseconds.
  const micros = Math.floor((performance.now() * 1000) % 1000);
  const ms = date.getTime();
  if (ms !== lastMs) {
    lastMs = ms;
    lastPrefix = date.toISOString().slice(0, 23);
  }
  return `${lastPrefix}${micros < 10 ? '00' : micros < 100 ? '0' : ''}${micros}Z`;
}

/**
 * The millisecond prefix (`2026-03-09T20:03:14.667`) of the last UTC timestamp parsed, and its
 * time: a task's fields and the events of one script share a timestamp or its millisecond, and
 * the date parser ignores digits past the millisecond.
 */
let parsedPrefix = '\0';
let parsedMs = NaN;

/** Parses an RFC 3339 timestamp; `undefined` when it is not one. */
export function parseIso(value: string): Date | undefined {
  if (value.startsWith(parsedPrefix) && isFractionTail(value)) return new Date(parsedMs);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value)) return undefined;
  const date = new Date(value);
  const ms = date.getTime();
  if (Number.isNaN(ms)) return undefined;
  if (value.charCodeAt(19) === 46 /* . */ && value.length >= 24 && isFractionTail(value)) {
    parsedPrefix = value.slice(0, 23);
    parsedMs = ms;
  }
  return date;
}

/** Whether `value` goes on after its millisecond with digits only, then `Z`. */
function isFractionTail(value: string): boolean {
  const last = value.length - 1;
  if (last < 23 || value.charCodeAt(last) !== 90 /* Z */) return false;
  for (let i = 23; i < last; i++) {
    const c = value.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}
