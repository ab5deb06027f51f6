/** Small shared pieces for the facade tests: deferreds, env juggling, child Node scripts, raw Redis. */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { afterEach } from 'vitest';
import { builtPackage } from './build.js';
import { redisUrl, tempDir } from './town.js';

export { deferred, type Deferred } from './kit.js';

/** Resolves after `ms`; only for asserting that something does NOT happen meanwhile. */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `fn` with REDIS_URL set to `value` (or unset), restoring it afterwards. */
export async function withRedisUrlEnv<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.REDIS_URL;
  if (value === undefined) delete process.env.REDIS_URL;
  else process.env.REDIS_URL = value;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.REDIS_URL;
    else process.env.REDIS_URL = saved;
  }
}

const clients: Redis[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

/** A plain ioredis client on the test Redis, disconnected after the test. */
export function rawRedis(): Redis {
  const client = new Redis(redisUrl());
  clients.push(client);
  return client;
}

/** The default (cluster) key prefix of a town. */
export const prefixOf = (townName: string): string => `tt:{${townName}}:`;

/** What a child Node process did. */
export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** `Date.now()` when each stdout line arrived, by line. */
  lineTimes: Map<string, number>;
  exitedAt: number;
}

/**
 * Runs an ES module script in a fresh `node` process. The script reads the built tinytown
 * package from `process.env.TT_PKG` (a file URL) with `await import(process.env.TT_PKG)`.
 * It is killed after `timeoutMs`.
 */
export async function runNodeScript(
  source: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ChildResult> {
  const { esm } = await builtPackage();
  const dir = await tempDir('tinytown-child-');
  const file = join(dir, 'child.mjs');
  await writeFile(file, source);
  const child = spawn(process.execPath, [file, ...args], {
    env: { ...(options.env ?? process.env), TT_PKG: pathToFileURL(esm).href },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let partial = '';
  const lineTimes = new Map<string, number>();
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) lineTimes.set(line, Date.now());
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
  let exitedAt = 0;
  child.once('exit', () => (exitedAt = Date.now()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    // 'close' comes after 'exit' once the output streams have ended: nothing printed is missed.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, lineTimes, exitedAt });
    });
  });
}

/** The last stdout line of a child that printed JSON, parsed. */
export function lastJson<T>(result: ChildResult): T {
  const lines = result.stdout.trim().split('\n').filter((l) => l.startsWith('{'));
  if (lines.length === 0) throw new Error(`child printed no JSON (code ${result.code}):\n${result.stdout}\n${result.stderr}`);
  return JSON.parse(lines[lines.length - 1]!) as T;
}
