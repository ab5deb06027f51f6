/**
 * The built package (ESM and CJS), for tests that need what users load: child processes (plain
 * Node cannot import the `.lua` sources, only vitest's loader can) and the ESM/CJS dual-copy
 * checks. Built with the repo's tsup config into a private folder, not `dist/`, so tests never
 * clobber a build someone else is using; rebuilt only when `src/` is newer than the last build.
 */
import { mkdir, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const OUT_DIR = join(REPO_ROOT, 'node_modules', '.cache', 'tinytown-test-build');
const LOCK_DIR = `${OUT_DIR}.lock`;
const STAMP = join(OUT_DIR, '.built-at');

/** Where the built package lives. */
export interface BuiltPackage {
  /** Absolute path of the ESM entry. */
  esm: string;
  /** Absolute path of the CJS entry. */
  cjs: string;
}

let pending: Promise<BuiltPackage> | undefined;

/** Builds the package once per test process (and once across processes, under a lock). */
export function builtPackage(): Promise<BuiltPackage> {
  pending ??= ensureBuilt();
  return pending;
}

async function newestMtime(path: string): Promise<number> {
  const info = await stat(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const entry of await readdir(path)) newest = Math.max(newest, await newestMtime(join(path, entry)));
  return newest;
}

async function isFresh(): Promise<boolean> {
  const built = await stat(STAMP).catch(() => undefined);
  if (!built) return false;
  const sources = Math.max(
    await newestMtime(join(REPO_ROOT, 'src')),
    await newestMtime(join(REPO_ROOT, 'tsup.config.ts')),
    await newestMtime(join(REPO_ROOT, 'package.json')),
  );
  return built.mtimeMs > sources;
}

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  await mkdir(join(REPO_ROOT, 'node_modules', '.cache'), { recursive: true });
  // A build takes well under a second; a lock this old belongs to a builder that died.
  const staleMs = 15_000;
  const deadline = Date.now() + 2 * staleMs;
  for (;;) {
    try {
      await mkdir(LOCK_DIR);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - ((await stat(LOCK_DIR).catch(() => undefined))?.mtimeMs ?? Date.now());
      if (age > staleMs) await rm(LOCK_DIR, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${LOCK_DIR}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(LOCK_DIR, { recursive: true, force: true });
  }
}

async function ensureBuilt(): Promise<BuiltPackage> {
  const result = { esm: join(OUT_DIR, 'index.js'), cjs: join(OUT_DIR, 'index.cjs') };
  if (await isFresh()) return result;
  return withLock(async () => {
    if (await isFresh()) return result;
    const staging = `${OUT_DIR}.staging-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    const startedAt = Date.now();
    const { build } = await import('tsup');
    // tsup.config.ts supplies entry, formats, the .lua text loader and noExternal; only the
    // output folder and the (slow, unneeded) declarations differ.
    await build({ outDir: staging, dts: false, sourcemap: false, silent: true, clean: true });
    // Under node_modules/ the repo's "type": "module" does not apply: say it again.
    await writeFile(join(staging, 'package.json'), '{ "type": "module" }\n');
    await rm(OUT_DIR, { recursive: true, force: true });
    await rename(staging, OUT_DIR);
    // Dated when the build began: a source edited during the build still counts as newer.
    await writeFile(STAMP, String(startedAt));
    await utimes(STAMP, startedAt / 1000, startedAt / 1000);
    return result;
  });
}
