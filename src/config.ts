/**
 * `tinytown.json` and the options of `Town.connect`, validated with zod.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { z } from 'zod';
import { ConfigInvalidError, ConfigNotFoundError, InvalidNameError, redact, ReservedNameError } from './errors.js';
import { TOOL_NAMES, type ToolName } from './mcp/tools.js';
import type { CliDefinition } from './runner/cli.js';
import { OUTPUT_FORMATS } from './runner/parsers/index.js';
import type { RedisInput, RedisTlsSettings } from './store/connection.js';
import type { KeyLayout } from './store/keys.js';
import { formatIssues } from './task.js';
import { parseToml, TomlSyntaxError, type TomlTable, type TomlValue } from './toml.js';

/** Names of towns and agents: they appear in Redis keys, logs and folder names. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Agent names the Rust Tinytown reserves for the orchestrator. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['supervisor', 'conductor']);

/** The config file's name. */
export const CONFIG_FILE = 'tinytown.json';

/** The Rust Tinytown's config file: read (never written) in a folder without `tinytown.json`. */
export const RUST_CONFIG_FILE = 'tinytown.toml';

/**
 * Options of `Town.connect`. Every one is optional.
 *
 * @example
 * ```ts
 * const town = await Town.connect('.', {
 *   redis: process.env.TOWN_REDIS,      // else REDIS_URL, tinytown.json, or a managed redis-server
 *   leaseMs: 30_000,                    // workers of long CLI runs on flaky networks
 *   retentionMs: 24 * 3600_000,         // keep finished tasks a day
 *   closeGraceMs: 60_000,               // let running tasks finish on close()
 * });
 * ```
 */
export interface TownOptions {
  /** Town name; overrides `tinytown.json`. */
  name?: string;
  /** `false`: a missing `tinytown.json` is an error instead of being created. Default `true`. */
  create?: boolean;
  /**
   * Redis to use: a `redis://`, `rediss://` or `unix://` URL, ioredis options (Sentinel ones
   * too: `{ sentinels: [{ host, port }], name: 'mymaster' }`), cluster settings
   * (`{ cluster: [{ host, port }] }`), or an ioredis client, `Redis` or `Cluster` (which stays
   * yours to close). Default: `REDIS_URL`, then `tinytown.json` `redis.url`, then a managed
   * local redis-server in `<dir>/.tt/`.
   */
  redis?: RedisInput;
  /** ACL user name for a Redis whose URL or options name none; overrides `tinytown.json` `redis.username`. */
  username?: string;
  /**
   * Name of the environment variable that holds the Redis password (e.g. `'TOWN_REDIS_PASSWORD'`),
   * used when the URL or options carry none; overrides `tinytown.json` `redis.passwordEnv`. The
   * variable is withheld from agent CLIs.
   */
  passwordEnv?: string;
  /**
   * TLS for a remote Redis: `ca` (a file path or PEM text) to trust a private CA, `cert` and `key`
   * for a client certificate. Giving it turns TLS on, as a `rediss://` URL does. Overrides
   * `tinytown.json` `redis.tls`. Not applied to a client you pass in.
   */
  tls?: RedisTlsSettings;
  /** Key layout; `'tinytown'` is readable by the Rust `tt` CLI. Default `'cluster'`. */
  keyLayout?: KeyLayout;
  /** Worker lease: how long a silent worker keeps its claimed work. Default 15 000 ms. */
  leaseMs?: number;
  /** Bound on connecting and checking the server. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /** How long finished tasks are kept. Default 7 days. */
  retentionMs?: number;
  /** Largest task description or message, in bytes. Default 1 MiB. */
  maxDescriptionBytes?: number;
  /** Approximate cap of the event stream. Default 10 000 entries. */
  eventsMaxLen?: number;
  /**
   * `'strict'` (managed Redis only) fsyncs the AOF on every write. Default `'default'` (every
   * second). `'replicated'` (a Redis with replicas: Sentinel, or your own) waits after each
   * write until `replicas` replicas hold it (`WAIT`, in the same round trip): a failover then
   * loses nothing a call acknowledged. A write not confirmed within `replicaTimeoutMs` rejects
   * with `ReplicationTimeoutError` (a worker's own writes are reported on `town.on('error')`
   * instead, and it carries on).
   */
  durability?: 'default' | 'strict' | 'replicated';
  /** `durability: 'replicated'`: replicas that must confirm each write. Default 1. */
  replicas?: number;
  /** `durability: 'replicated'`: how long a write waits for its replicas. Default 1 000 ms. */
  replicaTimeoutMs?: number;
  /** How long `close()` lets running tasks finish before handing them back. Default 10 000 ms. */
  closeGraceMs?: number;
  /**
   * Cost budget of the whole town in US dollars, over every run (`status().usage.costUsd`);
   * overrides `tinytown.json` `maxCostUsd`. Once spent, no new task starts: each agent that
   * reaches for one is paused with its task put back, and `budget.exceeded` says why. It is
   * enforced by the workers of the processes that set it, so set it in `tinytown.json`, which
   * every process of the town reads.
   */
  maxCostUsd?: number;
  /** Token budget of the whole town (input + output tokens over every run); spent, as `maxCostUsd`. */
  maxTokens?: number;
}

const name = z.string().regex(NAME_PATTERN, 'must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');

/** Schema of a custom CLI definition (`clis` in tinytown.json, or inline in agent options). */
export const cliDefinitionSchema = z.strictObject({
  command: z.string().min(1),
  args: z.array(z.string()).optional(),
  prompt: z.enum(['stdin', 'arg', 'file']).optional(),
  output: z.enum(OUTPUT_FORMATS).optional(),
  env: z.record(z.string(), z.string()).optional(),
  sessionArgs: z.array(z.string()).optional(),
  resumeArgs: z.array(z.string()).optional(),
  budgetArgs: z.array(z.string()).optional(),
  mcpArgs: z.array(z.string()).optional(),
  mcpEnv: z.record(z.string(), z.string()).optional(),
});

/** An environment variable's name (`passwordEnv`). */
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

/** TLS settings (`tls`, `redis.tls`): each of ca, cert, key a file path or PEM text. */
const tlsSchema = z.strictObject({
  ca: z.string().min(1).optional(),
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  servername: z.string().min(1).optional(),
  rejectUnauthorized: z.boolean().optional(),
});

/** Schema of `tinytown.json`. Unknown keys are refused so typos surface. */
export const configFileSchema = z.strictObject({
  $schema: z.string().optional(),
  name,
  keyLayout: z.enum(['cluster', 'tinytown']).optional(),
  redis: z
    .strictObject({
      url: z.string().min(1).optional(),
      username: z.string().min(1).optional(),
      passwordEnv: envName.optional(),
      tls: tlsSchema.optional(),
    })
    .optional(),
  leaseMs: z.number().int().min(100).optional(),
  retentionMs: z.number().int().min(1000).optional(),
  maxDescriptionBytes: z.number().int().positive().optional(),
  clis: z.record(name, cliDefinitionSchema).optional(),
  maxCostUsd: z.number().positive().finite().optional(),
  maxTokens: z.number().int().positive().optional(),
  tools: z.record(z.string().min(1).max(64), z.union([z.boolean(), z.array(z.enum(TOOL_NAMES))])).optional(),
});

/**
 * The contents of `tinytown.json` (validated; unknown keys are refused), as `town.config`.
 *
 * @example
 * ```json
 * { "name": "myapp-main", "leaseMs": 20000, "clis": { "mine": { "command": "my-agent", "prompt": "stdin" } } }
 * ```
 */
export interface TownConfig {
  /** The town's name: part of every Redis key. */
  name: string;
  /** `'cluster'` (default) or `'tinytown'` (readable by the Rust `tt` CLI). */
  keyLayout?: KeyLayout;
  /** How to reach the town's Redis, without a password (passwords come from the environment). */
  redis?: {
    /** `redis://`, `rediss://` or `unix://`; a password in it is refused. */
    url?: string;
    /** ACL user name. */
    username?: string;
    /** Name of the environment variable holding the password (e.g. `TOWN_REDIS_PASSWORD`). */
    passwordEnv?: string;
    /** TLS settings: `ca`, `cert`, `key` (file paths or PEM text), `servername`, `rejectUnauthorized`. */
    tls?: RedisTlsSettings;
  };
  /** Worker lease in ms (default 15 000). */
  leaseMs?: number;
  /** How long finished tasks are kept, in ms (default 7 days). */
  retentionMs?: number;
  /** Largest task description or message, in bytes (default 1 MiB). */
  maxDescriptionBytes?: number;
  /** Custom CLI definitions, usable by name like presets. */
  clis?: Record<string, CliDefinition>;
  /** The town's cost budget in US dollars (see {@link TownOptions.maxCostUsd}). */
  maxCostUsd?: number;
  /** The town's token budget (see {@link TownOptions.maxTokens}). */
  maxTokens?: number;
  /**
   * Town tools by agent role (`"reviewer": ["town_status", "send_message", "complete_task"]`),
   * `"*"` for every other role: what an agent gets when its own options name no `tools`. Read by
   * every process of the town, so a worker started elsewhere gives the same tools.
   */
  tools?: Record<string, boolean | ToolName[]>;
}

const optionsSchema = z.strictObject({
  name: name.optional(),
  create: z.boolean().optional(),
  // A URL, ioredis options or a client; anything else would silently mean localhost:6379.
  redis: z
    .custom<RedisInput>(
      (v) => (typeof v === 'string' ? v.length > 0 : typeof v === 'object' && v !== null && !Array.isArray(v)),
      'must be a redis://, rediss:// or unix:// URL, ioredis options or an ioredis client',
    )
    .optional(),
  keyLayout: z.enum(['cluster', 'tinytown']).optional(),
  leaseMs: z.number().int().min(100).optional(),
  connectTimeoutMs: z.number().int().positive().optional(),
  retentionMs: z.number().int().min(1000).optional(),
  maxDescriptionBytes: z.number().int().positive().optional(),
  eventsMaxLen: z.number().int().min(100).optional(),
  durability: z.enum(['default', 'strict', 'replicated']).optional(),
  replicas: z.number().int().min(1).optional(),
  replicaTimeoutMs: z.number().int().positive().optional(),
  username: z.string().min(1).optional(),
  passwordEnv: envName.optional(),
  tls: tlsSchema.optional(),
  closeGraceMs: z.number().int().min(0).optional(),
  maxCostUsd: z.number().positive().finite().optional(),
  maxTokens: z.number().int().positive().optional(),
});

/** Checks `Town.connect` options, naming every problem at once. */
export function parseTownOptions(options: TownOptions): TownOptions {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) throw new ConfigInvalidError(`Invalid Town.connect options: ${formatIssues(parsed.error)}`);
  return options;
}

/** Throws unless `value` is a valid agent name. */
export function checkAgentName(value: unknown): string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) {
    throw new InvalidNameError(
      `Invalid agent name ${JSON.stringify(value)}: use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.`,
    );
  }
  if (RESERVED_NAMES.has(value.toLowerCase())) {
    throw new ReservedNameError(`"${value}" is reserved for the orchestrator; pick another agent name.`);
  }
  return value;
}

/** A file's text, or `undefined` when it does not exist. */
async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigInvalidError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The Redis URL of configs read from a Rust `tinytown.toml`, kept out of the config itself:
 * it often holds the central Redis password, and `town.config` is public.
 */
const rustRedisUrls = new WeakMap<TownConfig, string>();

/** A loaded config's Redis URL, and where it came from (for error messages). */
export function configRedis(config: TownConfig): { url: string | undefined; source: string } {
  const rust = rustRedisUrls.get(config);
  if (rust !== undefined) return { url: rust, source: `${RUST_CONFIG_FILE} [redis]` };
  return { url: config.redis?.url, source: `${CONFIG_FILE} redis.url` };
}

/**
 * Loads `<dir>/tinytown.json`. Without one, a Rust Tinytown's `<dir>/tinytown.toml` gives the
 * name and Redis (read-only: nothing is written to that folder) and implies the `tinytown` key
 * layout. Without either, creates `tinytown.json` (name from the git repository and branch,
 * else the folder) unless `create` is false.
 */
export async function loadConfig(dir: string, options: TownOptions): Promise<TownConfig> {
  const file = join(dir, CONFIG_FILE);
  const text = await readIfExists(file);
  if (text === undefined) {
    const tomlFile = join(dir, RUST_CONFIG_FILE);
    const toml = await readIfExists(tomlFile);
    if (toml !== undefined) {
      const { redis, ...config } = configFromRustToml(dir, tomlFile, toml, options);
      if (redis?.url !== undefined) rustRedisUrls.set(config, redis.url);
      return config;
    }
    if (options.create === false) {
      throw new ConfigNotFoundError(`No ${CONFIG_FILE} in ${dir}. Create one, or call Town.connect without create: false.`);
    }
    const config: TownConfig = {
      name: options.name ?? (await deriveTownName(dir)),
      ...(options.keyLayout && { keyLayout: options.keyLayout }),
    };
    await writeFile(file, `${JSON.stringify(config, null, 2)}\n`, { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw new ConfigInvalidError(`Cannot create ${file}: ${err.message}`, { cause: err });
    });
    return loadConfig(dir, { ...options, create: false });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigInvalidError(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = configFileSchema.safeParse(json);
  if (!parsed.success) throw new ConfigInvalidError(`${file} is invalid: ${formatIssues(parsed.error)}`, { cause: parsed.error });
  const { $schema: _, ...config } = parsed.data;
  checkNoPassword(file, config.redis?.url);
  return config;
}

/**
 * `tinytown.json` is meant to be committed: a password in its `redis.url` is refused, naming the
 * way to give it instead. (A URL that does not parse is left to the connect-time check.)
 */
function checkNoPassword(file: string, url: string | undefined): void {
  if (url === undefined) return;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return;
  }
  if (!['redis:', 'rediss:', 'unix:'].includes(parsed.protocol) || parsed.password === '') return;
  throw new ConfigInvalidError(
    `${file} has a password in redis.url (${redact(url)}). tinytown.json is meant to be committed: remove the password from the URL and put it in an environment variable named by redis.passwordEnv (for example "passwordEnv": "TOWN_REDIS_PASSWORD"), or set REDIS_URL from your secret store.`,
  );
}

/**
 * A town made by the Rust `tt init`: its name and Redis from `tinytown.toml`, as the Rust
 * `Config::redis_url` builds the URL (a unix socket relative to the town folder, or TCP with
 * `TINYTOWN_REDIS_PASSWORD` before the file's password; `rediss` with `tls_enabled`), and the
 * `tinytown` key layout its `tt` CLI uses.
 */
export function configFromRustToml(dir: string, file: string, text: string, options: TownOptions = {}): TownConfig {
  let doc: TomlTable;
  try {
    doc = parseToml(text);
  } catch (err) {
    if (!(err instanceof TomlSyntaxError)) throw err;
    throw new ConfigInvalidError(`${file} is not valid TOML: ${err.message}`, { cause: err });
  }
  const wrong = (key: string, expected: string, value: TomlValue): ConfigInvalidError =>
    new ConfigInvalidError(`${file}: ${key} must be ${expected}, got ${JSON.stringify(value)}.`);
  const str = (table: TomlTable, key: string, path: string): string | undefined => {
    const value = table[key];
    if (value === undefined) return undefined;
    if (typeof value !== 'string') throw wrong(path, 'a string', value);
    return value;
  };
  const bool = (table: TomlTable, key: string, fallback: boolean): boolean => {
    const value = table[key];
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') throw wrong(`redis.${key}`, 'true or false', value);
    return value;
  };

  const name = str(doc, 'name', 'name');
  if (options.name === undefined) {
    if (name === undefined) throw new ConfigInvalidError(`${file} has no name: add name = "<town>" or pass options.name.`);
    if (!NAME_PATTERN.test(name)) {
      throw new ConfigInvalidError(
        `${file} names the town ${JSON.stringify(name)}, which tinytown cannot use: a town name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$.`,
      );
    }
  }
  const section = doc.redis ?? {};
  if (typeof section !== 'object' || Array.isArray(section)) throw wrong('redis', 'a table', section);
  const redis = section as TomlTable;

  let url: string;
  if (bool(redis, 'use_socket', true)) {
    const socket = resolve(dir, str(redis, 'socket_path', 'redis.socket_path') ?? 'redis.sock');
    url = `unix://${pathToFileURL(socket).pathname}`;
  } else {
    const host = str(redis, 'host', 'redis.host') ?? '127.0.0.1';
    const port = redis.port ?? 6379;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw wrong('redis.port', 'a port number', port);
    const password = process.env.TINYTOWN_REDIS_PASSWORD ?? str(redis, 'password', 'redis.password');
    const auth = password ? `:${encodeURIComponent(password)}@` : '';
    url = `${bool(redis, 'tls_enabled', false) ? 'rediss' : 'redis'}://${auth}${host.includes(':') ? `[${host}]` : host}:${port}`;
  }
  return { name: name ?? (options.name as string), keyLayout: 'tinytown', redis: { url } };
}

const run = promisify(execFile);

/**
 * Variables that point git at another repository. A git hook (or a tool) exports them, and they
 * would make git describe that repository instead of the town's folder.
 */
const GIT_LOCATION_ENV = ['GIT_DIR', 'GIT_WORK_TREE', 'GIT_COMMON_DIR', 'GIT_INDEX_FILE', 'GIT_PREFIX', 'GIT_NAMESPACE'];

async function git(dir: string, args: string[]): Promise<string | undefined> {
  const env = { ...process.env };
  for (const name of GIT_LOCATION_ENV) delete env[name];
  try {
    const { stdout } = await run('git', args, { cwd: dir, timeout: 5_000, env });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** `<repo>-<branch>` inside a git work tree, else the folder name; always a valid name. */
export async function deriveTownName(dir: string): Promise<string> {
  const top = await git(dir, ['rev-parse', '--show-toplevel']);
  // `symbolic-ref` also names the branch of a fresh repository with no commit yet, where
  // `rev-parse --abbrev-ref HEAD` fails; it fails on a detached HEAD, which has no branch.
  const branch = top ? await git(dir, ['symbolic-ref', '--quiet', '--short', 'HEAD']) : undefined;
  const raw = top ? (branch ? `${basename(top)}-${branch}` : basename(top)) : basename(dir);
  const cleaned = raw
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 64);
  return cleaned || 'town';
}
