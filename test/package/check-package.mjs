#!/usr/bin/env node
// `npm run check:package`: packs the package as `npm publish` would and checks the tarball:
//   1. its file list (dist in both formats with their types, README, LICENSE and the licenses
//      of the bundled packages; no sources, no tests);
//   2. every module the built code loads is a Node built-in or a declared dependency, so an
//      ESM-only package (p-retry) can only be there bundled: `require('tinytown')` must work on
//      every Node 20, including those without require(esm);
//   3. publint (strict: warnings fail);
//   4. are-the-types-wrong, with no rule ignored: ESM and CJS consumers, under node10, node16 and
//      bundler resolution, each get types of the format they load (dist/index.d.cts for require).
import { builtinModules } from 'node:module';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packTarball, REPO_ROOT, run } from './lib.mjs';

const started = Date.now();
const work = await mkdtemp(join(tmpdir(), 'tinytown-check-package-'));
try {
  const tarball = await packTarball(work);
  console.log(`tarball: ${tarball}`);

  // 1. contents
  const files = (await run('tar', ['-tzf', tarball], { quiet: true }))
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));
  const required = [
    'package.json',
    'README.md',
    'LICENSE',
    'dist/THIRD-PARTY-LICENSES.txt',
    ...['index', 'mcp'].flatMap((entry) => [`dist/${entry}.js`, `dist/${entry}.cjs`, `dist/${entry}.d.ts`, `dist/${entry}.d.cts`]),
    'dist/mcp-server.js', // tinytown/mcp's server, which workers hand to agents' CLIs by path
  ];
  const missing = required.filter((f) => !files.includes(f));
  // Source maps; the server script's CommonJS twin and empty declarations (tsup builds every
  // entry in both formats); declaration chunks shared by the entries.
  const extra = /^dist\/((index|mcp|mcp-server)\.c?js\.map|mcp-server\.(cjs|d\.c?ts)|[\w-]+-[\w-]{8}\.d\.c?ts)$/;
  const unexpected = files.filter((f) => !required.includes(f) && !extra.test(f));
  if (missing.length > 0 || unexpected.length > 0) {
    throw new Error(`tarball contents: missing [${missing.join(', ')}], unexpected [${unexpected.join(', ')}]`);
  }
  console.log(`  ok  tarball holds ${files.length} files: ${files.join(', ')}`);

  // 2. what the built code loads
  await run('tar', ['-xzf', tarball, '-C', work], { quiet: true });
  const manifest = JSON.parse(await readFile(join(work, 'package', 'package.json'), 'utf8'));
  const allowed = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]);
  const builtins = new Set(builtinModules);
  const requirePattern = /\brequire\(\s*["']([^"'./][^"']*)["']\s*\)/g;
  // static imports (esbuild writes them at the start of a line), dynamic imports, and the
  // require shim esbuild emits for CommonJS code bundled into ESM
  const importPattern = /^import\s[^;]*?["']([^"'./][^"']*)["'];|\bimport\(\s*["']([^"'./][^"']*)["']\s*\)|\b__require\(\s*["']([^"'./][^"']*)["']\s*\)/gm;
  for (const [file, pattern] of [
    ['dist/index.cjs', requirePattern],
    ['dist/index.js', importPattern],
    ['dist/mcp.cjs', requirePattern],
    ['dist/mcp.js', importPattern],
    ['dist/mcp-server.js', importPattern],
  ]) {
    // Comment lines are left out: esbuild keeps TSDoc, whose examples mention require('tinytown').
    const code = (await readFile(join(work, 'package', file), 'utf8'))
      .split('\n')
      .filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))
      .join('\n');
    const loaded = new Set([...code.matchAll(pattern)].map((m) => m.slice(1).find(Boolean)));
    const packages = [...loaded].map((s) => (s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]));
    const stray = packages.filter((p) => !p.startsWith('node:') && !builtins.has(p) && !allowed.has(p));
    if (stray.length > 0) throw new Error(`${file} loads ${stray.join(', ')}, which is not a dependency (bundle it, or declare it)`);
    console.log(`  ok  ${file} loads only built-ins and dependencies (${[...new Set(packages.filter((p) => allowed.has(p)))].sort().join(', ')})`);
    // The main entry must work without the optional peer (@modelcontextprotocol/sdk).
    const optional = Object.keys(manifest.peerDependenciesMeta ?? {}).filter((p) => manifest.peerDependenciesMeta[p].optional);
    if (file.startsWith('dist/index.') && packages.some((p) => optional.includes(p))) throw new Error(`${file} loads an optional peer dependency`);
  }

  // 3, 4. the linters, on the tarball itself
  const bin = (name) => join(REPO_ROOT, 'node_modules', '.bin', name);
  await run(bin('publint'), ['run', tarball, '--strict'], { label: 'publint --strict' });
  await run(bin('attw'), [tarball, '--format', 'table-flipped', '--no-emoji', '--no-color'], { label: 'are-the-types-wrong (no rule ignored)' });
  console.log(`check:package passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await rm(work, { recursive: true, force: true });
}
