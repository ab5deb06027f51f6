/**
 * Connection roles. Per town: one command connection (auto-pipelined; never blocks) and one
 * dedicated connection per blocking loop (a worker's BLMOVE, the event reader's XREAD), each
 * with `maxRetriesPerRequest: null` and no silent re-send of an interrupted blocking command:
 * the loop that owns it must learn about the interruption and resynchronise.
 *
 * @module
 */
import { Redis, type RedisOptions } from 'ioredis';
import {
  RedisAuthError,
  RedisConnectionError,
  RedisVersionError,
  redact,
  TinytownError,
} from '../errors.js';

/**
 * What `TownOptions.redis` accepts: a URL, ioredis options, or a client you own.
 *
 * @example
 * ```ts
 * await Town.connect('.', { redis: 'unix:///run/redis/redis.sock' });
 * await Town.connect('.', { redis: { host: 'redis.internal', port: 6380, username: 'worker', password: process.env.REDIS_PASSWORD } });
 * ```
 */
export type RedisInput = string | RedisOptions | Redis;

/** The oldest server we support: BLMOVE and `XADD … LIMIT`-era stream commands need 6.2. */
export const MIN_REDIS_VERSION = '6.2.0';

/** Reconnect quickly: work must resume within a second of Redis coming back. */
const retryStrategy = (attempt: number): number => Math.min(50 * attempt, 500);

/** Options of every connection tinytown opens itself. */
const BASE_OPTIONS: RedisOptions = {
  lazyConnect: true,
  retryStrategy,
  connectionName: 'tinytown',
};

function isRedis(value: unknown): value is Redis {
  return value instanceof Redis || (typeof value === 'object' && value !== null && 'duplicate' in value && 'defineCommand' in value);
}

/** Turns a `redis://`, `rediss://` or `unix://` URL into ioredis options. */
export function optionsFromUrl(url: string): RedisOptions {
  const parsed = new URL(url);
  const auth: RedisOptions = {
    ...(parsed.username && { username: decodeURIComponent(parsed.username) }),
    ...(parsed.password && { password: decodeURIComponent(parsed.password) }),
  };
  switch (parsed.protocol) {
    case 'unix:':
      return { ...auth, path: decodeURIComponent(parsed.pathname) };
    case 'redis:':
    case 'rediss:': {
      const db = parsed.pathname.replace(/^\//, '');
      return {
        ...auth,
        host: parsed.hostname || '127.0.0.1',
        port: parsed.port ? Number(parsed.port) : 6379,
        ...(db && { db: Number(db) }),
        ...(parsed.protocol === 'rediss:' && { tls: { servername: parsed.hostname } }),
      };
    }
    default:
      throw new RedisConnectionError(
        `Unsupported Redis URL scheme "${parsed.protocol}" in ${redact(url)}: use redis://, rediss:// or unix://.`,
      );
  }
}

/** The command connection plus the means to open blocking ones. */
export class Connections {
  private readonly blocking = new Set<Redis>();
  private closed = false;

  private constructor(
    /** Auto-pipelined connection for every non-blocking command. */
    readonly command: Redis,
    private readonly owned: boolean,
  ) {}

  /**
   * Connects and checks the server, never waiting longer than `timeoutMs`.
   * A client passed in stays yours: `close()` leaves it open.
   */
  static async open(input: RedisInput, timeoutMs: number): Promise<Connections> {
    const owned = !isRedis(input);
    const command = owned
      ? new Redis({
          ...BASE_OPTIONS,
          connectTimeout: timeoutMs,
          enableAutoPipelining: true,
          ...(typeof input === 'string' ? optionsFromUrl(input) : input),
        })
      : input;
    const connections = new Connections(command, owned);
    try {
      if (command.status === 'wait') await connectWithin(command, timeoutMs);
      else if (command.status !== 'ready') await waitReady(command, timeoutMs);
      await checkVersion(command);
    } catch (err) {
      connections.closeAll();
      throw err;
    }
    // Keep errors from crashing the process; ioredis reconnects by itself.
    command.on('error', () => undefined);
    return connections;
  }

  /** A new connection for one blocking loop. */
  async openBlocking(name: string): Promise<Redis> {
    const conn = this.command.duplicate({
      ...BASE_OPTIONS,
      connectionName: `tinytown:${name}`,
      enableAutoPipelining: false,
      maxRetriesPerRequest: null,
      autoResendUnfulfilledCommands: false,
    });
    conn.on('error', () => undefined);
    this.blocking.add(conn);
    // A first attempt that fails (Redis restarting, say) is no failure of the loop: ioredis
    // keeps reconnecting, and the loop's commands wait in its offline queue meanwhile.
    await conn.connect().catch(() => undefined);
    return conn;
  }

  /** Closes one blocking connection now (pending commands reject). */
  dropBlocking(conn: Redis): void {
    // A second disconnect of a closed connection arms an ioredis timer that keeps the process alive.
    if (!this.blocking.delete(conn)) return;
    conn.disconnect();
  }

  /** Closes everything tinytown opened. Idempotent. */
  closeAll(): void {
    if (this.closed) return;
    this.closed = true;
    for (const conn of this.blocking) conn.disconnect();
    this.blocking.clear();
    if (this.owned) this.command.disconnect();
  }
}

function connectWithin(client: Redis, timeoutMs: number): Promise<void> {
  let lastError: Error | undefined;
  const onError = (err: Error): void => {
    lastError = err;
  };
  client.on('error', onError);
  return new Promise<void>((resolve, reject) => {
    const fail = (cause: unknown): void => {
      clearTimeout(timer);
      client.off('error', onError);
      reject(connectionError(client, lastError ?? cause, timeoutMs));
    };
    const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    client.connect().then(() => {
      clearTimeout(timer);
      client.off('error', onError);
      resolve();
    }, fail);
  });
}

function waitReady(client: Redis, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(connectionError(client, new Error(`not ready within ${timeoutMs} ms`), timeoutMs));
    }, timeoutMs);
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

function describe(client: Redis): string {
  const o = client.options;
  return o.path ? `unix://${o.path}` : `${o.tls ? 'rediss' : 'redis'}://${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`;
}

function connectionError(client: Redis, cause: unknown, timeoutMs: number): TinytownError {
  const secrets = [client.options.password ?? ''];
  const text = redact(cause instanceof Error ? cause.message : String(cause), secrets);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(text)) {
    return new RedisAuthError(
      `Redis at ${describe(client)} refused the credentials (${text.split('.')[0]}). Check the ACL username and password (REDIS_URL or options.redis).`,
    );
  }
  return new RedisConnectionError(
    `Cannot reach Redis at ${describe(client)} within ${timeoutMs} ms: ${text}. Is the server running? Set REDIS_URL or options.redis, or leave both unset to use the managed local redis-server.`,
  );
}

/**
 * Whether an error means Redis could not be reached (a closed or refused connection, ioredis
 * giving up on a command after `maxRetriesPerRequest` reconnects, a server still loading its
 * data) rather than a refusal of the command itself: the former is outlived by trying again.
 */
export function isConnectionFault(err: unknown): boolean {
  if (!(err instanceof Error) || err instanceof TinytownError) return false;
  if (err.name === 'MaxRetriesPerRequestError') return true;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && /^E(CONNRESET|CONNREFUSED|CONNABORTED|PIPE|TIMEDOUT|HOSTUNREACH|NETUNREACH|NOTFOUND)$/.test(code)) return true;
  return /^(Connection is closed|Stream isn't writeable|LOADING|connect ETIMEDOUT)/.test(err.message);
}

/** Fails with {@link RedisVersionError} below {@link MIN_REDIS_VERSION}. */
async function checkVersion(client: Redis): Promise<void> {
  const info = await client.info('server');
  const version = /(?:valkey|redis)_version:(\d+)\.(\d+)\.(\d+)/.exec(info);
  const found = version ? [Number(version[1]), Number(version[2]), Number(version[3])] : undefined;
  if (found === undefined) return; // not a Redis we can read the version of: let commands decide
  const [major, minor] = found as [number, number, number];
  if (major < 6 || (major === 6 && minor < 2)) {
    throw new RedisVersionError(
      `Redis ${found.join('.')} at ${describe(client)} is too old: tinytown needs Redis >= ${MIN_REDIS_VERSION} (or Valkey). Upgrade the server.`,
    );
  }
}
