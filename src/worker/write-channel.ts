/**
 * The one connection every worker of a town handle sends its state writes on (finish, retry,
 * a start after a resync). Neither the auto-pipelined command connection, which holds a write
 * until its next tick and behind the batch it has in flight, nor one connection per worker:
 * under load Redis answers many workers' writes in one socket write and Node reads them in
 * one, which per task costs both sides less than fifty sockets' worth of system calls
 * (bench/ANALYSIS.md, 50 agents: Node CPU per task −15 to −30 %, Redis −7 to −9 %, throughput
 * +6 to +17 %).
 *
 * @module
 */
import type { Redis } from 'ioredis';
import type { Connections } from '../store/connection.js';
import type { Repository } from '../store/repository.js';

/**
 * Carries writes for many workers. Like a worker's blocking connection, it neither re-sends what
 * a reconnect cut off nor rejects it, so a write in flight rejects as a connection fault when the
 * connection closes and the worker sends it again (every worker write is idempotent).
 *
 * @example
 * ```ts
 * const channel = await WriteChannel.open(repo.connections, repo, 'my-town');
 * if (channel.ready) await channel.send((via) => repo.finish(args, via));
 * ```
 */
export class WriteChannel {
  /** How to reject each write in flight: one `close` listener for all of them. */
  private readonly inFlight = new Set<(err: Error) => void>();

  /**
   * A channel over a connection the caller opened and closes: a worker's own blocking
   * connection, which carries its writes where they may not share one (`durability: 'replicated'`).
   */
  constructor(private readonly conn: Redis) {
    conn.on('close', () => {
      const rejects = [...this.inFlight];
      this.inFlight.clear();
      for (const reject of rejects) reject(new Error('Connection is closed with a write in flight'));
    });
  }

  /**
   * Opens a connection of its own for the channel, named `tinytown:writes:<town>` in `CLIENT LIST` and closed
   * with the town's connections, with the worker scripts defined on it.
   */
  static async open(connections: Connections, repo: Repository, town: string): Promise<WriteChannel> {
    const conn = await connections.openBlocking(`writes:${town}`);
    repo.prepareWorkerConnection(conn);
    return new WriteChannel(conn);
  }

  /** Whether a write sent now goes out at once (otherwise use the command connection). */
  get ready(): boolean {
    return this.conn.status === 'ready';
  }

  /** Sends one write; rejects as a connection fault if the connection closes first. */
  send<T>(write: (via: Redis) => Promise<T>): Promise<T> {
    return abandonable(write(this.conn), this.inFlight);
  }
}

/**
 * `pending`, unless one of `rejecters` is called first (then rejects with that reason): a plain
 * set, not an AbortSignal listener per write, whose bookkeeping showed in a worker's profile.
 *
 * @example
 * ```ts
 * const inFlight = new Set<(err: Error) => void>();
 * const reply = abandonable(redis.get('k'), inFlight);
 * for (const reject of inFlight) reject(new Error('giving up'));
 * ```
 */
export function abandonable<T>(pending: Promise<T>, rejecters: Set<(err: Error) => void>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    rejecters.add(reject);
    pending.then(
      (value) => {
        rejecters.delete(reject);
        resolve(value);
      },
      (err: unknown) => {
        rejecters.delete(reject);
        reject(err);
      },
    );
  });
}
