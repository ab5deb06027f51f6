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

/** Parses an RFC 3339 timestamp; `undefined` when it is not one. */
export function parseIso(value: string): Date | undefined {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value)) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}
