/**
 * Small tools for the worker, lifecycle, event, wait and reclaim tests: a raw Redis client,
 * deferred promises (gates a handler waits on), waiting for a town event, polling an outside
 * observable (a log file, /proc) with a deadline, and process-state probes.
 */
import { readFile } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { afterEach } from 'vitest';
import { parseEvent } from '../../src/events/types.js';
import type { Town, TownEvent } from '../../src/index.js';
import { redisUrl } from './town.js';

const clients: Redis[] = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

/** A plain ioredis client on the test Redis (closed after the test), for raw checks. */
export function rawRedis(): Redis {
  const client = new Redis(redisUrl(), { maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  clients.push(client);
  return client;
}

/** A command Redis ran, as MONITOR reports it: its arguments and who sent it (`lua` inside scripts). */
export type MonitorLine = (time: string, args: string[], source: string) => void;

/**
 * Watches every command on `client`'s server through MONITOR on a connection of its own until
 * `stop()`. Lines still in the socket when it disconnects reach ioredis after it left monitoring
 * mode, which then finds no command for them and emits "Command queue state error": expected
 * there, so an observer's error never fails the test (an unhandled 'error' event would).
 */
export async function watchCommands(client: Redis, onLine: MonitorLine): Promise<{ stop(): void }> {
  const monitor = await client.monitor();
  monitor.on('error', () => undefined);
  monitor.on('monitor', onLine);
  return { stop: () => monitor.disconnect() };
}

/** The key prefix of a town in the default layout. */
export function prefixOf(town: Town): string {
  return `tt:{${town.name}}:`;
}

/** Every event in the town's stream so far, read raw. */
export async function collectHistory(town: Town): Promise<TownEvent[]> {
  const entries = await rawRedis().xrange(`${prefixOf(town)}events`, '-', '+');
  return entries.map(([id, fields]) => parseEvent(id, fields)).filter((e): e is TownEvent => e !== undefined);
}

/** A promise with its resolve function exposed: a gate a handler waits on. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: unknown) => void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The first event of the town (history included, then live) that matches `match`. Rejects
 * after `timeoutMs`, so a missing event fails the test instead of hanging it.
 */
export async function waitForEvent(
  town: Town,
  match: (event: TownEvent) => boolean,
  timeoutMs = 10_000,
): Promise<TownEvent> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), timeoutMs);
  try {
    for await (const event of town.events({ since: 'start', signal: stop.signal })) if (match(event)) return event;
  } finally {
    clearTimeout(timer);
    stop.abort();
  }
  throw new Error(`no matching event within ${timeoutMs} ms`);
}

/** Every event of the town from the start up to and including the first that matches `last`. */
export async function eventsUntil(town: Town, last: (event: TownEvent) => boolean, timeoutMs = 10_000): Promise<TownEvent[]> {
  const out: TownEvent[] = [];
  await waitForEvent(
    town,
    (event) => {
      out.push(event);
      return last(event);
    },
    timeoutMs,
  );
  return out;
}

/**
 * Polls something outside Redis (a log file, /proc) until `probe` returns a value other than
 * `undefined`. Only for observables that have no event.
 */
export async function eventually<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 5_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** The state letter of a process from /proc/<pid>/stat (`R`, `S`, `Z`, …), or `undefined` if it is gone. */
export async function procState(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Resolves once the process is gone or a zombie (dead, not yet reaped); rejects if it lives on. */
export async function waitDead(pid: number, timeoutMs = 5_000): Promise<void> {
  await eventually(
    async () => {
      const state = await procState(pid);
      return state === undefined || state === 'Z' || state === 'X' ? true : undefined;
    },
    timeoutMs,
    `process ${pid} to die`,
  );
}

/** The pid a `[fake:grandchild]` run printed into its task log. */
export async function grandchildPid(logFile: string, timeoutMs = 5_000): Promise<number> {
  return eventually(
    async () => {
      const text = await readFile(logFile, 'utf8').catch(() => '');
      const match = /grandchild=(\d+)/.exec(text);
      return match ? Number(match[1]) : undefined;
    },
    timeoutMs,
    `grandchild pid in ${logFile}`,
  );
}

/** Kills (server-side, CLIENT KILL) every connection whose name is exactly `name`; returns how many. */
export async function killConnectionsNamed(name: string): Promise<number> {
  const redis = rawRedis();
  const list = (await redis.client('LIST')) as string;
  const ids = list
    .split('\n')
    .filter((line) => line.split(' ').includes(`name=${name}`))
    .map((line) => /(?:^| )id=(\d+)/.exec(line)?.[1])
    .filter((id): id is string => id !== undefined);
  for (const id of ids) await redis.client('KILL', 'ID', id);
  return ids.length;
}

/**
 * Kills (server-side) the blocking connection of the town's event reader. Reads a private
 * field to find its local port: every town's reader connection has the same client name.
 */
export async function killReaderConnection(town: Town): Promise<void> {
  const conn = (town as unknown as { reader: { conn?: { stream?: { localPort?: number } } } }).reader.conn;
  const port = conn?.stream?.localPort;
  if (port === undefined) throw new Error('the town has no reader connection yet');
  const redis = rawRedis();
  const list = (await redis.client('LIST')) as string;
  const line = list.split('\n').find((l) => l.includes(`addr=127.0.0.1:${port} `) || l.includes(`addr=[::1]:${port} `));
  const id = line && /(?:^| )id=(\d+)/.exec(line)?.[1];
  if (!id) throw new Error(`no Redis client on local port ${port}`);
  await redis.client('KILL', 'ID', id);
}

/**
 * How many listeners the town's event reader has. Reads a private field: the reader offers no
 * accessor, and a leaked wait listener has no other observable effect than memory.
 */
export function readerListenerCount(town: Town): number {
  return (town as unknown as { reader: { listenerCount: number } }).reader.listenerCount;
}
