/**
 * The Lua scripts: every multi-key transition of a town is one of these. Each file documents
 * its KEYS, ARGV and return values; its header line (`-- <name> v<version>:`) names the command
 * it is registered as (`tt_<name>_v<version>`), so a changed script never meets an old cached
 * one under the same name.
 *
 * @module
 */
import type { Redis } from 'ioredis';
import adopt from './lua/adopt.lua';
import assign from './lua/assign.lua';
import backlogAutoClaim from './lua/backlog-auto-claim.lua';
import backlogClaim from './lua/backlog-claim.lua';
import backlogRemove from './lua/backlog-remove.lua';
import control from './lua/control.lua';
import finish from './lua/finish.lua';
import heartbeat from './lua/heartbeat.lua';
import idle from './lua/idle.lua';
import lib from './lua/lib.lua';
import registerWorker from './lua/register-worker.lua';
import releaseWorker from './lua/release-worker.lua';
import removeAgent from './lua/remove-agent.lua';
import retry from './lua/retry.lua';
import send from './lua/send.lua';
import settle from './lua/settle.lua';
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
  heartbeat,
  idle,
  registerWorker,
  releaseWorker,
  removeAgent,
  retry,
  send,
  settle,
  spawn,
  start,
  status,
  sweep,
} as const;

/** Script names as used by the repository. */
export type ScriptName = keyof typeof SOURCES;

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
} as const;

/** A script reply: status first, then script-specific values. */
export type ScriptReply = [number, ...unknown[]];

function commandName(name: ScriptName, source: string): string {
  const header = /^-- ([a-z-]+) v(\d+)/.exec(source);
  if (!header) throw new Error(`Lua script ${name} lacks its "-- <name> v<version>:" header`);
  return `tt_${header[1]!.replace(/-/g, '_')}_v${header[2]}`;
}

const COMMANDS = Object.fromEntries(
  (Object.keys(SOURCES) as ScriptName[]).map((name) => [name, commandName(name, SOURCES[name])]),
) as Record<ScriptName, string>;

type ScriptFn = (eventsKey: string, ...args: (string | number)[]) => Promise<ScriptReply>;

/** Registers every script on a client (idempotent); ioredis runs them by EVALSHA, loading on NOSCRIPT. */
export function defineScripts(client: Redis): void {
  for (const name of Object.keys(SOURCES) as ScriptName[]) {
    const command = COMMANDS[name];
    if (typeof (client as unknown as Record<string, unknown>)[command] === 'function') continue;
    client.defineCommand(command, { numberOfKeys: 1, lua: `${lib}\n${SOURCES[name]}` });
  }
}

/** Loads every script into the server's cache now, so the first real call is a plain EVALSHA. */
export async function preloadScripts(client: Redis): Promise<void> {
  await Promise.all(
    (Object.keys(SOURCES) as ScriptName[]).map((name) => client.script('LOAD', `${lib}\n${SOURCES[name]}`)),
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
  const fn = (client as unknown as Record<string, ScriptFn>)[COMMANDS[name]];
  if (fn === undefined) throw new Error(`script ${name} is not defined on this client`);
  return fn.call(client, eventsKey, ...head, ...args);
}
