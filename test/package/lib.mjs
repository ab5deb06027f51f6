// Shared by the package checks (`npm run check:package`, `npm run test:package`): packing the
// package exactly as `npm publish` would, and running commands without a shell.
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Runs a command (never through a shell), streaming its output unless `quiet`; resolves with
 * its stdout, rejects with its output when it exits non-zero.
 */
export function run(command, args, { cwd = REPO_ROOT, env = process.env, quiet = false, label } = {}) {
  return new Promise((resolvePromise, reject) => {
    const started = Date.now();
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let output = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      output += d;
      if (!quiet) process.stdout.write(d);
    });
    child.stderr.on('data', (d) => {
      output += d;
      if (!quiet) process.stderr.write(d);
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const what = label ?? `${command} ${args.join(' ')}`;
      if (code === 0) {
        if (label) console.log(`  ok  ${label} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
        resolvePromise(stdout);
      } else {
        if (quiet) process.stderr.write(output);
        reject(new Error(`${what} (in ${cwd}) failed with ${signal ?? `exit code ${code}`}`));
      }
    });
  });
}

/** The `npm` executable of this Node installation. */
export const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/**
 * The package tarball: `TINYTOWN_TARBALL` when set (CI packs once and checks that), else a fresh
 * `npm pack` into `destDir` (its `prepack` script builds `dist/` first).
 */
export async function packTarball(destDir) {
  if (process.env.TINYTOWN_TARBALL) return resolve(process.env.TINYTOWN_TARBALL);
  await run(NPM, ['pack', '--silent', '--pack-destination', destDir], { quiet: true, label: 'npm pack (builds dist/ first)' });
  const tarballs = (await readdir(destDir)).filter((f) => f.endsWith('.tgz'));
  if (tarballs.length !== 1) throw new Error(`expected one tarball in ${destDir}, found ${tarballs.join(', ') || 'none'}`);
  return join(destDir, tarballs[0]);
}
