/** Timing and orchestration helpers shared by the scenarios. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

export const now = (): number => performance.now();

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise plus its resolver, for "the handler started" signals. */
export function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A fresh folder for one town's tinytown.json and .tt/ (logs of CLI tasks). */
export function townDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'tt-bench-town-'));
}

/** Runs `fn` over `items` with at most `width` calls in flight (assign/add storms). */
export async function inWaves<T>(items: readonly T[], width: number, fn: (item: T, index: number) => Promise<unknown>): Promise<void> {
  for (let start = 0; start < items.length; start += width) {
    await Promise.all(items.slice(start, start + width).map((item, i) => fn(item, start + i)));
  }
}

/** Resolves once `count()` reaches `target`; `bump` must be called on every increment. */
export function counter(target: number): { bump: () => void; done: Promise<void>; readonly value: number } {
  let value = 0;
  const { promise, resolve } = deferred<void>();
  if (target <= 0) resolve();
  return {
    bump() {
      value++;
      if (value === target) resolve();
    },
    done: promise,
    get value() {
      return value;
    },
  };
}

/** Rejects after `ms` so a stuck scenario fails the bench instead of hanging it. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
