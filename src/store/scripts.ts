/**
 * The Lua scripts: every multi-key transition of a town is one of these. Each file documents
 * its KEYS, ARGV and return values; its header line (`-- <name> v<version>:`) names the command
 * it is registered as (`tt_<name>_v<version>`), so a changed script never meets an old cached
 * one under the same name.
 *
 * @module
 */
import type { ChainableCommander, Redis } from 'ioredis';
import adopt from './lua/adopt.lua';
import assign from './lua/assign.lua';
import backlogAutoClaim from './lua/backlog-auto-claim.lua';
import backlogClaim from './lua/backlog-claim.lua';
import backlogRemove from './lua/backlog-remove.lua';
import control from './lua/control.lua';
import finish from './lua/finish.lua';
import groupAdd from './lua/group-add.lua';
import groupCancel from './lua/group-cancel.lua';
import groupProgress from './lua/group-progress.lua';
import heartbeat from './lua/heartbeat.lua';
import idle from './lua/idle.lua';
import lib from './lua/lib.lua';
import progress from './lua/progress.lua';
import registerWorker from './lua/register-worker.lua';
import releaseWorker from './lua/release-worker.lua';
import removeAgent from './lua/remove-agent.lua';
import retry from './lua/retry.lua';
import send from './lua/send.lua';
import settle from './lua/settle.lua';
import settleFenced from './lua/settle-fenced.lua';
import spawn from './lua/spawn.lua';
import start from './lua/start.lua';
import status from './lua/status.lua';
import sweep from './lua/sweep.lua';

const SOURCES = {
  adopt,
  assign,
  backlogAutoClaim,
  backlogClaim,
  backlogRemove,
  control,
  finish,
  groupAdd,
  groupCancel,
  groupProgress,
  heartbeat,
  idle,
  progress,
  registerWorker,
  releaseWorker,
  removeAgent,
  retry,
  send,
  settle,
  settleFenced,
  spawn,
  start,
  status,
  sweep,
} as const;

/** Script names as used by the repository. */
export type ScriptName = keyof typeof SOURCES;

/** The scripts callers send often enough, and independently enough, to gather into one call. */
export const BATCHED_SCRIPTS = ['assign', 'finish'] as const satisfies readonly ScriptName[];

/** A script whose calls script-batch.ts gathers. */
export type BatchedScriptName = (typeof BATCHED_SCRIPTS)[number];

/** A script's header line, `-- <name> v<version>:`, read. */
function header(source: string): { base: string; version: string } {
  const match = /^-- ([a-z-]+) v(\d+)/.exec(source);
  if (!match) throw new Error(`Lua script lacks its "-- <name> v<version>:" header: ${source.slice(0, 60)}`);
  return { base: match[1]!, version: match[2]! };
}

/**
 * `<name>-many`: the script's body run once per item of one call, each item with its own
 * arguments and clock, each as if sent alone (an item that raises an error answers with it, and
 * the others still run). Items follow the common ARGV head: argument count, now (RFC 3339), now
 * (epoch ms), then that many of the script's own arguments (its ARGV[5…]). The per-state task
 * counters are summed over the items and written once at the end (`counts_due` in lib.lua).
 */
function manySource(name: BatchedScriptName): string {
  const source = SOURCES[name];
  const { base, version } = header(source);
  return `-- ${base}-many v${version}: ${base}, once per item of one call (src/store/script-batch.ts).
local function one(ARGV)
${source}
end
local all, out, i = ARGV, {}, 5
counts_due = {}
while i <= #all do
  local n = tonumber(all[i])
  local item = { all[1], all[i + 1], all[i + 2], all[4] }
  for j = 1, n do item[4 + j] = all[i + 2 + j] end
  NOW, NOW_MS = item[2], tonumber(item[3])
  local ok, reply = pcall(one, item)
  if not ok and type(reply) ~= 'table' then reply = { err = tostring(reply) } end
  out[#out + 1] = reply
  i = i + 3 + n
end
for state, delta in pairs(counts_due) do
  if delta ~= 0 then redis.call('HINCRBY', key('counts'), state, delta) end
end
return out
`;
}

const MANY_SOURCES = Object.fromEntries(BATCHED_SCRIPTS.map((name) => [name, manySource(name)])) as Record<
  BatchedScriptName,
  string
>;

/** Error statuses returned by scripts (see lib.lua). */
export const STATUS = {
  AGENT_NOT_FOUND: -2,
  WORKER_ACTIVE: -3,
  TASK_NOT_FOUND: -4,
  STALE_FENCE: -5,
  SUPERSEDED: -6,
  INVALID_TRANSITION: -7,
  NOT_IN_BACKLOG: -8,
  AGENT_EXISTS: -9,
  WORKER_LOST: -10,
  INVALID_DEPENDENCY: -11,
  GROUP_CONFLICT: -12,
} as const;

/** A script reply: status first, then script-specific values. */
export type ScriptReply = [number, ...unknown[]];

function commandName(source: string): string {
  const { base, version } = header(source);
  return `tt_${base.replace(/-/g, '_')}_v${version}`;
}

const COMMANDS = Object.fromEntries(
  (Object.keys(SOURCES) as ScriptName[]).map((name) => [name, commandName(SOURCES[name])]),
) as Record<ScriptName, string>;

const MANY_COMMANDS = Object.fromEntries(
  BATCHED_SCRIPTS.map((name) => [name, commandName(MANY_SOURCES[name])]),
) as Record<BatchedScriptName, string>;

/** Whether calls of a script are gathered by {@link batchScript} (script-batch.ts). */
export function isBatched(name: ScriptName): name is BatchedScriptName {
  return (BATCHED_SCRIPTS as readonly ScriptName[]).includes(name);
}

/**
 * Registers scripts on a client (idempotent): every one, or only `names` (a worker's own
 * connection needs three, and hashing all of them per worker would add up at 1,000 workers).
 * ioredis runs them by EVALSHA, loading on NOSCRIPT.
 */
export function defineScripts(client: Redis, names: readonly ScriptName[] = Object.keys(SOURCES) as ScriptName[]): void {
  const define = (command: string, source: string): void => {
    if (typeof (client as unknown as Record<string, unknown>)[command] === 'function') return;
    client.defineCommand(command, { numberOfKeys: 1, lua: `${lib}\n${source}` });
  };
  for (const name of names) {
    define(COMMANDS[name], SOURCES[name]);
    if (isBatched(name)) define(MANY_COMMANDS[name], MANY_SOURCES[name]);
  }
}

/** Loads every script into the server's cache now, so the first real call is a plain EVALSHA. */
export async function preloadScripts(client: Redis): Promise<void> {
  await Promise.all(
    [...Object.values(SOURCES), ...Object.values(MANY_SOURCES)].map((source) => client.script('LOAD', `${lib}\n${source}`)),
  );
}

/** Runs a script with the common ARGV head (prefix, now, now ms, events cap) already in `head`. */
export function runScript(
  client: Redis,
  name: ScriptName,
  eventsKey: string,
  head: readonly (string | number)[],
  args: readonly (string | number)[],
): Promise<ScriptReply> {
  return definedCommand(client, COMMANDS[name]).call(client, eventsKey, ...head, ...args);
}

/**
 * Runs `<name>-many` (see `manySource`): `items` as one call, one reply per item, each either
 * the script's reply or the error that item raised.
 */
export function runScriptMany(
  client: Redis,
  name: BatchedScriptName,
  eventsKey: string,
  items: readonly { head: readonly (string | number)[]; args: readonly (string | number)[] }[],
): Promise<(ScriptReply | Error)[]> {
  const argv: (string | number)[] = [...items[0]!.head];
  for (const { head, args } of items) argv.push(args.length, head[1]!, head[2]!, ...args);
  return definedCommand<(ScriptReply | Error)[]>(client, MANY_COMMANDS[name]).call(client, eventsKey, ...argv);
}

/** Queues a script on a pipeline, with the common ARGV head, as {@link runScript} sends it. */
export function pipelineScript(
  pipeline: ChainableCommander,
  name: ScriptName,
  eventsKey: string,
  head: readonly (string | number)[],
  args: readonly (string | number)[],
): void {
  void definedCommand(pipeline, COMMANDS[name]).call(pipeline, eventsKey, ...head, ...args);
}

/** The method `defineScripts` gave a client (or a pipeline of it) for `command`: a script's or its `-many` form's. */
function definedCommand<R = ScriptReply>(
  target: Redis | ChainableCommander,
  command: string,
): (eventsKey: string, ...args: (string | number)[]) => Promise<R> {
  const fn = (target as unknown as Record<string, (eventsKey: string, ...args: (string | number)[]) => Promise<R>>)[command];
  if (fn === undefined) throw new Error(`script ${command} is not defined on this client`);
  return fn;
}

/**
 * Scripts whose header says `(read-only)` (`-- <name> v<version> (read-only):`): they write
 * nothing, so `durability: 'replicated'` waits for no replica after them.
 */
export const READ_ONLY_SCRIPTS: ReadonlySet<ScriptName> = new Set(
  (Object.keys(SOURCES) as ScriptName[]).filter((name) => /^-- [a-z-]+ v\d+ \(read-only\)/.test(SOURCES[name])),
);

/** A script's reply, and whether enough replicas confirmed it. */
export interface ReplicatedReply {
  reply: ScriptReply;
  /** Replicas that confirmed the write (0 when it cannot be told: see {@link runScriptAndWait}). */
  confirmed: number;
}

/**
 * Runs a script followed by `WAIT <replicas> <timeoutMs>` in one pipeline: one round trip, and
 * the WAIT is answered once `replicas` replicas hold everything this connection wrote, the
 * script included (or at the timeout, with how many do). `CLIENT ID` before and after prove
 * that all of it ran on one connection: ioredis re-sends commands cut off by a reconnect (a
 * failover) on the new connection, where a lone WAIT would confirm nothing of the script.
 * A script error rejects as from {@link runScript}. (One gap: a script the server no longer
 * caches — SCRIPT FLUSH on a live connection — is re-sent by ioredis after the WAIT.)
 */
export async function runScriptAndWait(
  client: Redis,
  name: ScriptName,
  eventsKey: string,
  head: readonly (string | number)[],
  args: readonly (string | number)[],
  replicas: number,
  timeoutMs: number,
): Promise<ReplicatedReply> {
  const pipeline = client.pipeline();
  pipeline.client('ID');
  pipelineScript(pipeline, name, eventsKey, head, args);
  pipeline.wait(replicas, timeoutMs);
  pipeline.client('ID');
  const results = (await pipeline.exec()) ?? [];
  const [before, script, waited, after] = results;
  if (script === undefined) throw new Error(`script ${name}: no reply in its pipeline`);
  if (script[0]) throw script[0];
  const sameConnection = !before?.[0] && !after?.[0] && before?.[1] !== undefined && before[1] === after?.[1];
  const confirmed = sameConnection && !waited?.[0] ? Number(waited?.[1] ?? 0) : 0;
  return { reply: script[1] as ScriptReply, confirmed };
}
