/** The CLI fixture and the bare `child_process.spawn` baseline of scenario 5. */
import childProcess, { spawn } from 'node:child_process';
import { syncBuiltinESMExports } from 'node:module';
import { fileURLToPath } from 'node:url';
import { latencyMetrics, percentile } from '../lib/stats.js';
import { now } from '../lib/util.js';
import type { RunResult } from './context.js';

export const CLI_FIXTURE = fileURLToPath(new URL('../fixtures/noop-agent.mjs', import.meta.url));

/** What every CLI task sends on stdin. */
export const PROMPT = 'Implement the thing. (benchmark prompt)';

/** Spawns the fixture, writes the prompt to stdin, reads stdout, waits for exit and closed pipes. */
export function bareSpawn(prompt: string = PROMPT): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_FIXTURE], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`fixture exited ${code}`))));
    child.stdin.end(prompt);
  });
}

/**
 * Times every child that runs the fixture, from the `spawn()` call to its `close` (exited, pipes
 * closed), whoever spawns it (tinytown's runner, a BullMQ processor, the baseline). Patches
 * `child_process.spawn` for the duration (`syncBuiltinESMExports` reaches ESM importers too);
 * tinytown itself is not touched.
 */
export function watchFixtureChildren(): { lifetimes: number[]; stop: () => void } {
  const lifetimes: number[] = [];
  const original = childProcess.spawn;
  const patched = function (this: unknown, ...args: Parameters<typeof spawn>) {
    const started = now();
    const child = (original as (...a: unknown[]) => ReturnType<typeof spawn>).apply(this, args);
    const argv = args[1];
    if (Array.isArray(argv) && argv[0] === CLI_FIXTURE) child.once('close', () => lifetimes.push(now() - started));
    return child;
  };
  (childProcess as { spawn: unknown }).spawn = patched;
  syncBuiltinESMExports();
  return {
    lifetimes,
    stop() {
      (childProcess as { spawn: unknown }).spawn = original;
      syncBuiltinESMExports();
    },
  };
}

/**
 * Scenario 5's measurement. Process start-up on a busy 2-core machine varies by ±20 ms, far more
 * than the overhead we look for, so the overhead is measured per task as the time the task took
 * outside its own child process: end to end − (spawn() → close) of that child. Each task is also
 * paired with a bare spawn right before or after it (alternating), reported for reference.
 */
export async function pairedWithBareSpawn(tasks: number, runTask: () => Promise<void>): Promise<RunResult> {
  const system: number[] = [];
  const bare: number[] = [];
  const outside: number[] = [];
  const pairs: number[] = [];
  const watch = watchFixtureChildren();
  const timed = async (fn: () => Promise<unknown>): Promise<{ ms: number; child: number }> => {
    const before = watch.lifetimes.length;
    const t0 = now();
    await fn();
    const ms = now() - t0;
    if (watch.lifetimes.length !== before + 1) throw new Error(`expected one fixture child, saw ${watch.lifetimes.length - before}`);
    return { ms, child: watch.lifetimes[before]! };
  };
  try {
    for (let i = 0; i < 2 + tasks; i++) {
      const first = i % 2 === 0 ? bareSpawn : runTask;
      const second = i % 2 === 0 ? runTask : bareSpawn;
      const a = await timed(first);
      const b = await timed(second);
      const [s, plain] = i % 2 === 0 ? [b, a] : [a, b];
      if (i < 2) continue;
      system.push(s.ms);
      bare.push(plain.ms);
      outside.push(s.ms - s.child);
      pairs.push(s.ms - plain.ms);
    }
  } finally {
    watch.stop();
  }
  return {
    metrics: {
      ...latencyMetrics('cli', system),
      'cli.bareP50': percentile(bare, 50),
      'cli.overheadP50': percentile(outside, 50),
      'cli.overheadP99': percentile(outside, 99),
      'cli.pairDiffP50': percentile(pairs, 50),
    },
  };
}
