/**
 * Labels for EVALSHA digests seen by MONITOR: the SHA1 of every tinytown script (as the SDK
 * registers it: lib.lua + "\n" + script), read from the built bundle that actually runs (falling
 * back to src/store/lua), and of every BullMQ script. Read-only, for labelling the round-trip
 * report only; an unknown digest is shown by its prefix.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runInNewContext } from 'node:vm';

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex');

export async function scriptNames(): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  await Promise.all([
    bundledScripts(names).catch(() => tinytownScripts(names)).catch(() => undefined),
    bullmqScripts(names).catch(() => undefined),
  ]);
  return names;
}

/** The Lua sources as tsup inlined them into dist/index.js (`var <name>_default = "…";`). */
async function bundledScripts(names: Map<string, string>): Promise<void> {
  const bundle = await readFile(fileURLToPath(new URL('../../dist/index.js', import.meta.url)), 'utf8');
  const sources = new Map<string, string>();
  const literal = /^var (\w+)_default = ("(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\[\s\S])*`);$/gm;
  for (const m of bundle.matchAll(literal)) {
    const value: unknown = runInNewContext(`(${m[2]!})`);
    if (typeof value === 'string' && value.startsWith('-- ')) sources.set(m[1]!, value);
  }
  const lib = sources.get('lib');
  if (lib === undefined) throw new Error('no lib.lua in the bundle');
  for (const [name, source] of sources) {
    const header = /^-- ([a-z-]+) v(\d+)/.exec(source);
    if (name !== 'lib' && header) names.set(sha1(`${lib}\n${source}`), `tt:${header[1]}`);
  }
}

async function tinytownScripts(names: Map<string, string>): Promise<void> {
  const dir = fileURLToPath(new URL('../../src/store/lua/', import.meta.url));
  const lib = await readFile(join(dir, 'lib.lua'), 'utf8');
  for (const file of await readdir(dir)) {
    if (!file.endsWith('.lua') || file === 'lib.lua') continue;
    const source = await readFile(join(dir, file), 'utf8');
    const header = /^-- ([a-z-]+) v(\d+)/.exec(source);
    names.set(sha1(`${lib}\n${source}`), `tt:${header ? header[1] : file.replace('.lua', '')}`);
  }
}

async function bullmqScripts(names: Map<string, string>): Promise<void> {
  const require = createRequire(import.meta.url);
  const main = require.resolve('bullmq'); // …/dist/cjs/index.js
  const dir = join(dirname(main), 'scripts');
  for (const file of await readdir(dir)) {
    if (!file.endsWith('.js') || file === 'index.js') continue;
    const mod = (await import(pathToFileURL(join(dir, file)).href)) as Record<string, { name?: string; content?: string }>;
    for (const value of Object.values(mod)) {
      if (value && typeof value.content === 'string' && typeof value.name === 'string') names.set(sha1(value.content), `bull:${value.name}`);
    }
  }
}
