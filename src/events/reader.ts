/**
 * The one stream reader of a town handle. It blocks on `XREAD` on its own connection and fans
 * events out to in-process listeners (waits, workers, `town.on`). It remembers the last id it
 * delivered, so after a reconnect it continues from there and no wake-up is lost.
 *
 * @module
 */
import type { Redis } from 'ioredis';
import type { Connections } from '../store/connection.js';
import { parseEvent, wireTypeOf, wireTypesOf, type TownEvent, type TownEventType } from './types.js';

/** How long one XREAD blocks; the watchdog allows this plus a grace period. */
const BLOCK_MS = 5_000;
const WATCHDOG_GRACE_MS = 3_000;

type Listener = (event: TownEvent) => void;

/** A listener and, when it named them, the only event types it is handed. */
interface Subscription {
  listener: Listener;
  types: ReadonlySet<TownEventType> | undefined;
}

export class EventReader {
  private readonly listeners = new Set<Subscription>();
  /** Listeners for one agent's events only: a town with many workers hands each event to one. */
  private readonly byAgent = new Map<string, Set<Subscription>>();
  /**
   * Listeners that want every type, and how many want each `event_type` otherwise: an entry no
   * listener wants is not parsed at all (a worker wants three types of the five or so a task
   * appends).
   */
  private allTypes = 0;
  private readonly wanted = new Map<string, number>();
  private position: string | undefined;
  private starting: Promise<string> | undefined;
  private conn: Redis | undefined;
  private stopped = false;

  constructor(
    private readonly connections: Connections,
    private readonly streamKey: string,
    private readonly onError: (err: unknown) => void,
  ) {}

  /**
   * Starts the loop if needed and resolves with the id of the last event already delivered
   * (now, not when the loop started: events delivered since then are history). Anything
   * appended after that id reaches listeners registered from now on: subscribe, then read
   * state, and no change in between is missed.
   */
  async ensureStarted(): Promise<string> {
    // A start that failed (Redis unreachable) is tried again by the next caller, not cached.
    this.starting ??= this.start().catch((err: unknown) => {
      this.starting = undefined;
      throw err;
    });
    const initial = await this.starting;
    return this.position ?? initial;
  }

  /**
   * Registers a listener synchronously; returns its removal. With `agentId`, it is handed only
   * events naming that agent; with `types`, only events of those types.
   */
  subscribe(listener: Listener, agentId?: string, types?: Iterable<TownEventType>): () => void {
    const typeSet = types && new Set(types);
    const subscription: Subscription = { listener, types: typeSet };
    const wires = typeSet && wireTypesOf(typeSet);
    if (wires === undefined) this.allTypes++;
    else for (const wire of wires) this.wanted.set(wire, (this.wanted.get(wire) ?? 0) + 1);
    let set = this.listeners;
    if (agentId !== undefined) {
      set = this.byAgent.get(agentId) ?? new Set();
      this.byAgent.set(agentId, set);
    }
    set.add(subscription);
    return () => {
      if (!set.delete(subscription)) return;
      if (agentId !== undefined && set.size === 0 && this.byAgent.get(agentId) === set) this.byAgent.delete(agentId);
      if (wires === undefined) this.allTypes--;
      else for (const wire of wires) {
        const left = this.wanted.get(wire)! - 1;
        if (left === 0) this.wanted.delete(wire);
        else this.wanted.set(wire, left);
      }
    };
  }

  /** How many listeners are registered (for leak checks). */
  get listenerCount(): number {
    let n = this.listeners.size;
    for (const set of this.byAgent.values()) n += set.size;
    return n;
  }

  /** The id of the last event delivered (after `ensureStarted`). */
  get lastId(): string | undefined {
    return this.position;
  }

  /** Stops the loop and closes its connection. */
  stop(): void {
    this.stopped = true;
    this.listeners.clear();
    this.byAgent.clear();
    this.allTypes = 0;
    this.wanted.clear();
    if (this.conn) this.connections.dropBlocking(this.conn);
  }

  private async start(): Promise<string> {
    const last = await this.connections.command.xrevrange(this.streamKey, '+', '-', 'COUNT', 1);
    this.position = last[0]?.[0] ?? '0-0';
    this.conn = await this.connections.openBlocking('events');
    void this.loop(this.conn);
    return this.position;
  }

  private async loop(conn: Redis): Promise<void> {
    while (!this.stopped) {
      try {
        const reply = await withWatchdog(
          conn,
          conn.xread('COUNT', 1000, 'BLOCK', BLOCK_MS, 'STREAMS', this.streamKey, this.position ?? '$'),
          BLOCK_MS + WATCHDOG_GRACE_MS,
        );
        for (const [, entries] of reply ?? []) for (const [id, fields] of entries) this.deliver(id, fields);
      } catch (err) {
        if (this.stopped) return;
        this.onError(err);
        await waitForReady(conn);
      }
    }
  }

  private deliver(id: string, fields: string[]): void {
    this.position = id;
    if (this.allTypes === 0) {
      const wire = wireTypeOf(fields);
      if (wire !== undefined && !this.wanted.has(wire)) return;
    }
    const event = parseEvent(id, fields);
    if (event === undefined) return;
    this.notify(this.listeners, event);
    const own = event.agentId === undefined ? undefined : this.byAgent.get(event.agentId);
    if (own !== undefined) this.notify(own, event);
  }

  private notify(subscriptions: Set<Subscription>, event: TownEvent): void {
    for (const { listener, types } of subscriptions) {
      if (types !== undefined && !types.has(event.type)) continue;
      try {
        listener(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

}

/**
 * Rejects and reconnects when a blocking command outlives its own timeout: a connection that
 * died without a close (a cut network) would otherwise block the loop forever. Rejects at once
 * when the connection closes under the command: ioredis neither re-sends nor rejects a command
 * cut that way (`autoResendUnfulfilledCommands: false`), so without this the loop would sit
 * until the timeout although Redis is back within milliseconds.
 */
export function withWatchdog<T>(conn: Redis, pending: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onClose: (() => void) | undefined;
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`blocking command got no answer within ${ms} ms; reconnecting`));
      conn.disconnect(true);
    }, ms);
    onClose = () => reject(new Error('connection closed during a blocking command; reconnecting'));
    conn.once('close', onClose);
  });
  return Promise.race([pending, watchdog]).finally(() => {
    clearTimeout(timer);
    if (onClose) conn.off('close', onClose);
  });
}

/**
 * Resolves once the connection is ready again (ioredis reconnects by itself), so a loop whose
 * command failed neither spins nor gives up. Bounded, so the caller re-evaluates regularly.
 */
export async function waitForReady(conn: Redis): Promise<void> {
  if (conn.status === 'end') conn.connect().catch(() => undefined);
  // a failure on a healthy connection (a server-side error): pause briefly instead of spinning
  if (conn.status === 'ready') return delay(100);
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      conn.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, 1_000);
    conn.once('ready', done);
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
