/**
 * Gathers calls of one script on one connection into one call of its `-many` variant: the calls
 * made while the current microtask queue drains (fifty workers finishing on one read of the write
 * connection, a thousand `assign`s under `Promise.all`) cost Redis one script call and Node one
 * command, where each call alone pays the Lua prelude, a command object and a reply of its own.
 * A call made alone goes out as before, one microtask later.
 *
 * Order is kept: items run in the order they were made, and any other script sent on the same
 * connection sends the gathered calls first (see {@link flushScriptBatches}).
 *
 * @module
 */
import type { Redis } from 'ioredis';
import { runScript, runScriptMany, type BatchedScriptName, type ScriptReply } from './scripts.js';

/** At most this many calls per script call: a long script holds up every other client of Redis. */
const MAX_ITEMS = 32;

interface Item {
  head: readonly (string | number)[];
  args: readonly (string | number)[];
  resolve: (reply: ScriptReply) => void;
  reject: (err: unknown) => void;
}

/** The gathered calls of one script for one town on one connection. */
class ScriptBatch {
  private items: Item[] = [];

  constructor(
    private readonly client: Redis,
    private readonly name: BatchedScriptName,
    private readonly eventsKey: string,
  ) {}

  add(item: Item): void {
    if (this.items.length === 0) queueMicrotask(() => this.flush());
    this.items.push(item);
    // A full batch goes now: Redis starts on it while Node still runs the callers of the next.
    if (this.items.length >= MAX_ITEMS) this.flush();
  }

  /** Sends what is gathered. */
  flush(): void {
    const items = this.items;
    if (items.length === 0) return;
    this.items = [];
    this.send(items);
  }

  private send(items: Item[]): void {
    let sent: Promise<(ScriptReply | Error)[]>;
    try {
      if (items.length === 1) {
        const [item] = items as [Item];
        runScript(this.client, this.name, this.eventsKey, item.head, item.args).then(item.resolve, item.reject);
        return;
      }
      sent = runScriptMany(this.client, this.name, this.eventsKey, items);
    } catch (err) {
      // (a script not defined on the client throws at once: its callers get it, not the microtask queue)
      for (const item of items) item.reject(err);
      return;
    }
    sent.then(
      (replies) =>
        items.forEach((item, i) => {
          const reply = replies[i];
          if (reply instanceof Error) item.reject(reply);
          else if (reply === undefined) item.reject(new Error(`script ${this.name}-many: no reply for item ${i}`));
          else item.resolve(reply);
        }),
      (err: unknown) => {
        for (const item of items) item.reject(err);
      },
    );
  }
}

const batches = new WeakMap<Redis, Map<string, ScriptBatch>>();

/**
 * Runs a script as {@link runScript} does, gathered with the other calls of it on `client` made
 * in the same turn of the microtask queue.
 *
 * @example
 * ```ts
 * const replies = await Promise.all(ids.map((id) => batchScript(redis, 'assign', eventsKey, head, argsFor(id))));
 * ```
 */
export function batchScript(
  client: Redis,
  name: BatchedScriptName,
  eventsKey: string,
  head: readonly (string | number)[],
  args: readonly (string | number)[],
): Promise<ScriptReply> {
  let byScript = batches.get(client);
  if (byScript === undefined) batches.set(client, (byScript = new Map()));
  const id = `${name}\0${eventsKey}`;
  let batch = byScript.get(id);
  if (batch === undefined) byScript.set(id, (batch = new ScriptBatch(client, name, eventsKey)));
  // calls of the other gathered script on this connection were made first: they go first
  for (const other of byScript.values()) if (other !== batch) other.flush();
  const target = batch;
  return new Promise((resolve, reject) => target.add({ head, args, resolve, reject }));
}

/**
 * Sends the calls gathered on `client` now: called before any other script goes out on it, so
 * a write made after an `assign` never reaches Redis before it.
 *
 * @example
 * ```ts
 * flushScriptBatches(redis);
 * await runScript(redis, 'control', eventsKey, head, args);
 * ```
 */
export function flushScriptBatches(client: Redis): void {
  const byScript = batches.get(client);
  if (byScript === undefined) return;
  for (const batch of byScript.values()) batch.flush();
}
