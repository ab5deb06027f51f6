/**
 * Workers in child processes (test/fixtures/child-worker.mjs) that a test can kill -9 or
 * freeze: the only honest way to lose a worker without losing the test process.
 *
 * The child needs a build of the library; `buildLibrary()` bundles src/ with tsup into a
 * private folder under node_modules/.cache (not dist/, which other tasks build and clean), so
 * the build always matches the source under test.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach } from 'vitest';
import type { Town } from '../../src/index.js';
import { redisUrl } from './town.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/child-worker.mjs', import.meta.url));
const children = new Set<ChildProcess>();

afterEach(() => {
  for (const child of children) {
    try {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    } catch {
      // gone already
    }
  }
  children.clear();
});

/** Bundles the library for child processes; returns the path of its index.js and a cleanup. */
export async function buildLibrary(): Promise<{ entry: string; remove: () => Promise<void> }> {
  const outDir = `node_modules/.cache/tinytown-test-build-${process.pid}`;
  await promisify(execFile)(
    process.execPath,
    [
      'node_modules/tsup/dist/cli-default.js',
      '--no-config',
      'src/index.ts',
      '--format',
      'esm',
      '--platform',
      'node',
      '--target',
      'node20',
      '--loader',
      '.lua=text',
      '--out-dir',
      outDir,
      '--silent',
    ],
    { cwd: ROOT, timeout: 60_000 },
  );
  return {
    entry: `${ROOT}${outDir}/index.js`,
    remove: () => rm(`${ROOT}${outDir}`, { recursive: true, force: true }),
  };
}

export interface ChildWorker {
  child: ChildProcess;
  pid: number;
  workerId: string;
  /** Resolves with the words after `<prefix> ` of the first line starting so (past lines included). */
  line(prefix: string, timeoutMs?: number): Promise<string[]>;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
}

/** Starts a child worker for `agent` of `town` and waits until it is attached. */
export async function startChildWorker(
  town: Town,
  agent: string,
  options: { dist: string; handler: 'hang' | 'stop-self' | 'ok'; leaseMs?: number },
): Promise<ChildWorker> {
  const child = spawn(process.execPath, [FIXTURE], {
    env: {
      ...process.env,
      TT_DIST: options.dist,
      REDIS_URL: redisUrl(),
      TT_ROOT: town.root,
      TT_TOWN: town.name,
      TT_AGENT: agent,
      TT_HANDLER: options.handler,
      TT_LEASE_MS: String(options.leaseMs ?? 600),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters) w();
  });
  const line = (prefix: string, timeoutMs = 10_000): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const found = lines.find((l) => l.startsWith(`${prefix} `));
        if (!found) return false;
        cleanup();
        resolve(found.slice(prefix.length + 1).split(' '));
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`child worker printed no "${prefix}" line within ${timeoutMs} ms; stderr:\n${stderr}`));
      }, timeoutMs);
      const onExit = (): void => {
        if (check()) return;
        cleanup();
        reject(new Error(`child worker exited before printing "${prefix}"; stderr:\n${stderr}`));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        waiters.delete(checker);
        child.off('exit', onExit);
      };
      const checker = (): void => void check();
      if (check()) return;
      waiters.add(checker);
      child.once('exit', onExit);
    });
  const [workerId] = await line('ready');
  return { child, pid: child.pid!, workerId: workerId!, line, exited };
}
