/**
 * Connection roles. Per town: one command connection (auto-pipelined; never blocks) and one
 * dedicated connection per blocking loop (a worker's BLMOVE, the event reader's XREAD), each
 * with `maxRetriesPerRequest: null` and no silent re-send of an interrupted blocking command:
 * the loop that owns it must learn about the interruption and resynchronise.
 *
 * The "connection" may be a standalone Redis, a Sentinel-backed one (ioredis asks the
 * sentinels for the current primary on every reconnect) or a Redis Cluster (ioredis routes each
 * command to its slot's node; a town's keys share one slot, see `keys.ts`).
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis';
import {
  ConfigInvalidError,
  RedisAuthError,
  RedisConnectionError,
  RedisVersionError,
  redact,
  TinytownError,
} from '../errors.js';

/**
 * A Redis Cluster for `TownOptions.redis`: some of its nodes (the others are discovered) and
 * ioredis Cluster options. Per-node settings (`username`, `password`, `tls`) go in
 * `clusterOptions.redisOptions`, or come from `TownOptions.username`, `passwordEnv` and `tls`.
 *
 * @example
 * ```ts
 * import { Town, type ClusterInput } from 'tinytown';
 * const redis: ClusterInput = {
 *   cluster: [{ host: '10.0.0.11', port: 6379 }, { host: '10.0.0.12', port: 6379 }],
 *   clusterOptions: { redisOptions: { username: 'tinytown' } },
 * };
 * const town = await Town.connect('.', { redis, passwordEnv: 'TOWN_REDIS_PASSWORD' });
 * ```
 */
export interface ClusterInput {
  /** Startup nodes: `{ host, port }`, a port, or `'host:port'`. */
  cluster: ClusterNode[];
  /** ioredis Cluster options; `redisOptions` applies to every node connection. */
  clusterOptions?: ClusterOptions;
}

/**
 * What `TownOptions.redis` accepts: a URL, ioredis options (Sentinel ones included: `sentinels`
 * and `name`), cluster settings, or a client you own (a `Redis`, Sentinel-backed or not, or a
 * `Cluster`).
 *
 * @example
 * ```ts
 * import { Cluster } from 'ioredis';
 * import type { RedisInput } from 'tinytown';
 * const url: RedisInput = 'rediss://tinytown@redis.internal:6380';
 * const sentinel: RedisInput = { sentinels: [{ host: '10.0.0.5', port: 26379 }], name: 'mymaster' };
 * const cluster: RedisInput = new Cluster([{ host: '10.0.0.11', port: 6379 }]);
 * ```
 */
export type RedisInput = string | RedisOptions | Redis | Cluster | ClusterInput;

/** A client tinytown sends commands through: a Redis (standalone or Sentinel-backed) or a Cluster. */
export type RedisClient = Redis | Cluster;

/**
 * TLS settings for the connections tinytown opens. `ca`, `cert` and `key` are each a file path
 * or the PEM text itself; the files are read at connect.
 *
 * @example
 * ```ts
 * import { Town, type RedisTlsSettings } from 'tinytown';
 * const tls: RedisTlsSettings = { ca: '/etc/ssl/redis-ca.pem' };
 * const town = await Town.connect('.', { redis: 'rediss://tinytown@redis.internal:6380', tls, passwordEnv: 'TOWN_REDIS_PASSWORD' });
 * ```
 */
export interface RedisTlsSettings {
  /** The certificate authority (or authorities) that signed the server's certificate. */
  ca?: string;
  /** A client certificate, for servers that require one (`tls-auth-clients yes`). */
  cert?: string;
  /** The client certificate's private key. */
  key?: string;
  /** The name the server's certificate must carry, when it differs from the host you connect to. */
  servername?: string;
  /** `false` accepts any certificate: for tests only. Default `true`. */
  rejectUnauthorized?: boolean;
}

/**
 * How to reach a remote Redis besides its address: applied to the connections tinytown opens
 * from a URL, ioredis options or cluster settings (never to a client you pass in).
 *
 * @example
 * ```ts
 * import type { RemoteRedisSettings } from 'tinytown';
 * const remote: RemoteRedisSettings = { username: 'worker', passwordEnv: 'TOWN_REDIS_PASSWORD', tls: { ca: '/etc/ssl/redis-ca.pem' } };
 * ```
 */
export interface RemoteRedisSettings {
  /** ACL user name, unless the URL or options name one. */
  username?: string;
  /**
   * Name of the environment variable holding the password, used unless the URL or options carry
   * one. Never stored: keep passwords out of `tinytown.json`. The variable is withheld from agent CLIs.
   */
  passwordEnv?: string;
  /** TLS settings; giving any turns TLS on (as a `rediss://` URL does). */
  tls?: RedisTlsSettings;
}

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

/** Per-connection options of a blocking loop's connection. */
const BLOCKING_OPTIONS: RedisOptions = {
  enableAutoPipelining: false,
  maxRetriesPerRequest: null,
  autoResendUnfulfilledCommands: false,
};

/**
 * A primary demoted by a failover answers writes with READONLY until we reconnect: through the
 * sentinels, which name the new primary (ioredis checks the role it finds). `2` re-sends the
 * refused command there (it wrote nothing: Redis refused it before it ran).
 */
const reconnectOnReadonly = (err: Error): 2 | false => (/\bREADONLY\b/.test(err.message) ? 2 : false);

/** Environment variables named by `passwordEnv` in this process: withheld from agent CLIs. */
const secretEnvNames = new Set<string>();

/** Whether an environment variable holds a Redis password tinytown was told about (`passwordEnv`). */
export function isSecretEnv(name: string): boolean {
  return secretEnvNames.has(name);
}

/** Whether `value` is a client (a `Redis` or a `Cluster`) rather than settings to make one. */
export function isClient(value: unknown): value is RedisClient {
  return isRedis(value);
}

function isRedis(value: unknown): value is RedisClient {
  return value instanceof Redis || value instanceof Cluster || (typeof value === 'object' && value !== null && 'duplicate' in value && 'defineCommand' in value);
}

/** Whether `value` is an ioredis Cluster client. */
export function isClusterClient(value: unknown): value is Cluster {
  return value instanceof Cluster || (typeof value === 'object' && value !== null && (value as { isCluster?: unknown }).isCluster === true);
}

/** Whether `value` is cluster settings (`{ cluster: [...] }`). */
export function isClusterInput(value: unknown): value is ClusterInput {
  return typeof value === 'object' && value !== null && !isRedis(value) && Array.isArray((value as { cluster?: unknown }).cluster);
}

/** Whether a `TownOptions.redis` value means a Redis Cluster (a client or settings). */
export function meansCluster(value: unknown): boolean {
  return isClusterClient(value) || isClusterInput(value);
}

/** Whether a client or options go through Sentinel. */
function isSentinel(options: RedisOptions): boolean {
  return Array.isArray(options.sentinels) && options.sentinels.length > 0;
}

/**
 * Applies {@link RemoteRedisSettings} to what tinytown will connect with. A URL becomes ioredis
 * options first. A client passed in is returned as is: `settings` must then be empty.
 * `source` names where the settings came from, for errors.
 */
export async function withRemoteSettings(input: RedisInput, settings: RemoteRedisSettings, source: string): Promise<RedisInput> {
  const given = settings.username !== undefined || settings.passwordEnv !== undefined || settings.tls !== undefined;
  if (isRedis(input)) {
    if (given) {
      throw new ConfigInvalidError(
        `${source} (username, passwordEnv, tls) apply to connections tinytown opens; options.redis is a client you made, so configure it there instead.`,
      );
    }
    return input;
  }
  if (!given) return typeof input === 'string' ? optionsFromUrl(input) : input;
  if (isClusterInput(input)) {
    const clusterOptions = input.clusterOptions ?? {};
    const redisOptions = await applySettings(clusterOptions.redisOptions ?? {}, settings, source);
    return { ...input, clusterOptions: { ...clusterOptions, redisOptions } };
  }
  const options = typeof input === 'string' ? optionsFromUrl(input) : input;
  const applied = await applySettings(options, settings, source);
  // Sentinel: the primary is reached over TLS only when asked for explicitly.
  return isSentinel(applied) && settings.tls !== undefined ? { enableTLSForSentinelMode: true, ...applied } : applied;
}

async function applySettings(options: RedisOptions, settings: RemoteRedisSettings, source: string): Promise<RedisOptions> {
  const out: RedisOptions = { ...options };
  if (settings.username !== undefined && !out.username) out.username = settings.username;
  if (settings.passwordEnv !== undefined) {
    secretEnvNames.add(settings.passwordEnv);
    if (!out.password) {
      const password = process.env[settings.passwordEnv];
      if (!password) {
        throw new ConfigInvalidError(
          `${source} passwordEnv names the environment variable ${settings.passwordEnv}, which is not set (or empty) in this process. Set it from your secret store, or drop passwordEnv for a Redis without a password.`,
        );
      }
      out.password = password;
    }
  }
  if (settings.tls !== undefined) {
    const { ca, cert, key, servername, rejectUnauthorized } = settings.tls;
    const existing = typeof out.tls === 'object' && out.tls !== null ? out.tls : {};
    out.tls = {
      ...existing,
      ...(ca !== undefined && { ca: await pem(ca, `${source} tls.ca`) }),
      ...(cert !== undefined && { cert: await pem(cert, `${source} tls.cert`) }),
      ...(key !== undefined && { key: await pem(key, `${source} tls.key`) }),
      ...(servername !== undefined && { servername }),
      ...(rejectUnauthorized !== undefined && { rejectUnauthorized }),
    };
  }
  return out;
}

/** PEM text as is, else the contents of the file it names. */
async function pem(value: string, what: string): Promise<string> {
  if (value.includes('-----BEGIN ')) return value;
  try {
    return await readFile(value, 'utf8');
  } catch (err) {
    throw new ConfigInvalidError(`${what}: cannot read ${value} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}). Give a readable file path or the PEM text.`, {
      cause: err,
    });
  }
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

/** What the server told at connect (INFO), for the checks `Town.connect` makes. */
export interface ServerFacts {
  /** `cluster_enabled:1`: the server is a Cluster node. */
  clusterEnabled: boolean;
}

/** The command connection plus the means to open blocking ones. */
export class Connections {
  private readonly blocking = new Set<RedisClient>();
  private closed = false;

  private constructor(
    /**
     * Auto-pipelined connection for every non-blocking command. Typed as a `Redis`: a `Cluster`
     * offers the same command methods and connection events (`status`, `ready`, `close`); where
     * the two differ (duplicating, SCAN, options) the code asks {@link Connections.cluster}.
     */
    readonly command: Redis,
    private readonly owned: boolean,
    /** What the server reported at connect. */
    readonly server: ServerFacts,
  ) {}

  /** Whether the command connection is a Redis Cluster client. */
  get cluster(): boolean {
    return isClusterClient(this.command);
  }

  /**
   * Connects and checks the server, never waiting longer than `timeoutMs`.
   * A client passed in stays yours: `close()` leaves it open.
   */
  static async open(input: RedisInput, timeoutMs: number): Promise<Connections> {
    const owned = !isRedis(input);
    const command = owned ? createClient(input as string | RedisOptions | ClusterInput, timeoutMs) : (input as RedisClient);
    let server: ServerFacts = { clusterEnabled: false };
    try {
      if (command.status === 'wait') await connectWithin(command, timeoutMs);
      else if (command.status !== 'ready') await waitReady(command, timeoutMs);
      server = await checkServer(command);
    } catch (err) {
      if (owned) command.disconnect();
      throw err;
    }
    // Keep errors from crashing the process; ioredis reconnects by itself.
    command.on('error', () => undefined);
    return new Connections(command as Redis, owned, server);
  }

  /**
   * A new connection for one blocking loop: a duplicate of the command connection, so it
   * follows the same Sentinel (a failover's new primary) or Cluster (the slot's node). Typed as
   * a `Redis` for the loops (see {@link Connections.command}).
   */
  async openBlocking(name: string): Promise<Redis> {
    const client = this.command as RedisClient;
    const conn: RedisClient = isClusterClient(client)
      ? client.duplicate([], {
          lazyConnect: true,
          enableAutoPipelining: false,
          redisOptions: { ...client.options.redisOptions, ...BLOCKING_OPTIONS, connectionName: `tinytown:${name}` },
        })
      : client.duplicate({ ...BASE_OPTIONS, ...BLOCKING_OPTIONS, connectionName: `tinytown:${name}` });
    conn.on('error', () => undefined);
    this.blocking.add(conn);
    // A first attempt that fails (Redis restarting, say) is no failure of the loop: ioredis
    // keeps reconnecting, and the loop's commands wait in its offline queue meanwhile.
    await conn.connect().catch(() => undefined);
    return conn as Redis;
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

/** The command client for a URL, ioredis options or cluster settings. */
function createClient(input: string | RedisOptions | ClusterInput, timeoutMs: number): RedisClient {
  if (isClusterInput(input)) {
    const { clusterOptions = {} } = input;
    return new Cluster(input.cluster, {
      clusterRetryStrategy: retryStrategy,
      ...clusterOptions,
      lazyConnect: true,
      enableAutoPipelining: true,
      redisOptions: { connectionName: 'tinytown', connectTimeout: timeoutMs, ...clusterOptions.redisOptions },
    });
  }
  const options = typeof input === 'string' ? optionsFromUrl(input) : input;
  return new Redis({
    ...BASE_OPTIONS,
    connectTimeout: timeoutMs,
    enableAutoPipelining: true,
    // Through Sentinel: hear of a failover from the sentinels at once, and leave a demoted
    // primary on its first refused write.
    ...(isSentinel(options) && { failoverDetector: true, reconnectOnError: reconnectOnReadonly }),
    ...options,
  });
}

function connectWithin(client: RedisClient, timeoutMs: number): Promise<void> {
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

function waitReady(client: RedisClient, timeoutMs: number): Promise<void> {
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

/** Where a client connects, for messages (never with credentials). */
export function describeClient(client: RedisClient): string {
  if (isClusterClient(client)) {
    const nodes = (client as unknown as { startupNodes?: ClusterNode[] }).startupNodes ?? [];
    const label = (n: ClusterNode): string => (typeof n === 'object' ? `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}` : String(n));
    return `the Redis Cluster at ${nodes.map(label).join(', ') || '(no startup nodes)'}`;
  }
  const o = client.options;
  if (isSentinel(o)) {
    const sentinels = (o.sentinels ?? []).map((s) => `${s.host ?? '127.0.0.1'}:${s.port ?? 26379}`).join(', ');
    return `the primary "${o.name ?? ''}" of the sentinels ${sentinels}`;
  }
  return o.path ? `unix://${o.path}` : `${o.tls ? 'rediss' : 'redis'}://${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`;
}

function connectionError(client: RedisClient, cause: unknown, timeoutMs: number): TinytownError {
  const options: RedisOptions = isClusterClient(client) ? (client.options.redisOptions ?? {}) : client.options;
  const secrets = [options.password ?? '', isClusterClient(client) ? '' : (client.options.sentinelPassword ?? '')];
  const text = redact(cause instanceof Error ? cause.message : String(cause), secrets);
  const where = describeClient(client);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(text)) {
    return new RedisAuthError(
      `Redis at ${where} refused the credentials (${text.split('.')[0]}). Check the ACL username and password (REDIS_URL, options.redis, or the variable passwordEnv names).`,
    );
  }
  return new RedisConnectionError(
    `Cannot reach Redis at ${where} within ${timeoutMs} ms: ${text}. Is the server running? Set REDIS_URL or options.redis, or leave both unset to use the managed local redis-server.`,
  );
}

/**
 * Whether an error means Redis could not be reached (a closed or refused connection, ioredis
 * giving up on a command after `maxRetriesPerRequest` reconnects, a server still loading its
 * data, a primary demoted by a failover or a Cluster between owners of a slot) rather than a
 * refusal of the command itself: the former is outlived by trying again.
 */
export function isConnectionFault(err: unknown): boolean {
  if (!(err instanceof Error) || err instanceof TinytownError) return false;
  if (err.name === 'MaxRetriesPerRequestError') return true;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && /^E(CONNRESET|CONNREFUSED|CONNABORTED|PIPE|TIMEDOUT|HOSTUNREACH|NETUNREACH|NOTFOUND)$/.test(code)) return true;
  return /^(Connection is closed|Stream isn't writeable|LOADING|connect ETIMEDOUT|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|UNBLOCKED)/.test(err.message);
}

/**
 * Reads INFO once: fails with {@link RedisVersionError} below {@link MIN_REDIS_VERSION}, and
 * reports whether the server is a Cluster node. On a Cluster, the node asked is any one of them.
 */
async function checkServer(client: RedisClient): Promise<ServerFacts> {
  const info = await client.info();
  const facts: ServerFacts = { clusterEnabled: /^cluster_enabled:1\b/m.test(info) };
  const version = /(?:valkey|redis)_version:(\d+)\.(\d+)\.(\d+)/.exec(info);
  const found = version ? [Number(version[1]), Number(version[2]), Number(version[3])] : undefined;
  if (found === undefined) return facts; // not a Redis we can read the version of: let commands decide
  const [major, minor] = found as [number, number, number];
  if (major < 6 || (major === 6 && minor < 2)) {
    throw new RedisVersionError(
      `Redis ${found.join('.')} at ${describeClient(client)} is too old: tinytown needs Redis >= ${MIN_REDIS_VERSION} (or Valkey). Upgrade the server.`,
    );
  }
  return facts;
}
