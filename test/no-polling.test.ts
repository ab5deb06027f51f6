/**
 * Push, not poll (SPEC §3, §4): no KEYS anywhere; timers only renew leases and sweep orphans;
 * no sleep loops in workers, waits or the event reader. Checked twice: in the source, and by
 * watching what an idle town sends to Redis (MONITOR).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { rawRedis, sleep, watchCommands } from './helpers/kit.js';
import { openTown } from './helpers/town.js';

const SRC = fileURLToPath(new URL('../src', import.meta.url));

function files(dir: string, ext: RegExp): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return files(path, ext);
    return ext.test(entry.name) ? [path] : [];
  });
}

/** Source without comments; string and template contents blanked (keeping their quotes). */
function code(source: string, lua = false): string {
  let out = '';
  for (let i = 0; i < source.length; ) {
    const two = source.slice(i, i + 2);
    if (!lua && two === '//') {
      while (i < source.length && source[i] !== '\n') i++;
    } else if (!lua && two === '/*') {
      const end = source.indexOf('*/', i + 2);
      i = end === -1 ? source.length : end + 2;
    } else if (lua && two === '--') {
      while (i < source.length && source[i] !== '\n') i++;
    } else if (source[i] === "'" || source[i] === '"' || (!lua && source[i] === '`')) {
      const quote = source[i]!;
      out += quote;
      i++;
      let text = '';
      while (i < source.length && source[i] !== quote) {
        if (source[i] === '\\') {
          text += source.slice(i, i + 2);
          i += 2;
        } else text += source[i++];
      }
      // Keep command-like words visible; blank the rest so braces in strings do not count.
      out += /^[A-Za-z]+$/.test(text) ? text : text.replace(/[^\n]/g, ' ');
      out += quote;
      i++;
    } else out += source[i++];
  }
  return out;
}

/** The `{ … }` block starting at or after `from` (brace-matched), as [start, end). */
function blockAfter(text: string, from: number): [number, number] {
  const open = text.indexOf('{', from);
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return [open, i + 1];
  }
  return [open, text.length];
}

/** The body of the loop whose keyword starts at `at`: its `{ … }` block, or its single statement. */
function loopBody(text: string, at: number): string {
  const open = text.indexOf('(', at);
  let depth = 0;
  let close = open;
  for (; close < text.length; close++) {
    if (text[close] === '(') depth++;
    else if (text[close] === ')' && --depth === 0) break;
  }
  const rest = text.slice(close + 1);
  if (/^\s*\{/.test(rest)) {
    const [start, end] = blockAfter(text, close + 1);
    return text.slice(start, end);
  }
  const semi = rest.indexOf(';');
  return rest.slice(0, semi === -1 ? undefined : semi + 1);
}

/** The text right before the innermost block enclosing `at`. */
function enclosingBlockHead(text: string, at: number): string {
  let depth = 0;
  for (let i = at; i >= 0; i--) {
    if (text[i] === '}') depth++;
    else if (text[i] === '{' && depth-- === 0) return text.slice(Math.max(0, i - 60), i);
  }
  return '';
}

const tsFiles = files(SRC, /\.ts$/);
const luaFiles = files(SRC, /\.lua$/);
const rel = (path: string): string => relative(SRC, path);
const stripped = new Map([...tsFiles.map((f) => [f, code(readFileSync(f, 'utf8'))] as const), ...luaFiles.map((f) => [f, code(readFileSync(f, 'utf8'), true)] as const)]);

describe('source', () => {
  it('has the files this test knows about', () => {
    expect(tsFiles.map(rel)).toEqual(expect.arrayContaining(['worker/worker.ts', 'wait.ts', 'events/reader.ts', 'town.ts']));
    expect(luaFiles.length).toBeGreaterThan(10);
  });

  it('never uses KEYS', () => {
    const offenders: string[] = [];
    for (const [file, text] of stripped) {
      if (/['"]KEYS['"]/i.test(text)) offenders.push(`${rel(file)}: 'KEYS' command`);
      // A client's keys() (ioredis has one per command); Object.keys() is not a Redis call.
      for (const m of text.matchAll(/([\w$\])]+)\s*\.\s*keys\s*\(/g)) if (m[1] !== 'Object') offenders.push(`${rel(file)}: ${m[0]}`);
      if (/redis\.call\(\s*['"](keys|scan)['"]/i.test(text)) offenders.push(`${rel(file)}: KEYS/SCAN in Lua`);
    }
    expect(offenders).toEqual([]);
  });

  it('uses setInterval only for the lease heartbeat and the sweeper', () => {
    const found: string[] = [];
    for (const [file, text] of stripped) {
      for (const m of text.matchAll(/\bsetInterval\s*\(/g)) {
        const line = text.slice(m.index, text.indexOf('\n', m.index));
        found.push(`${rel(file)}: ${line.trim()}`);
      }
    }
    expect(found).toHaveLength(2);
    expect(found[0]).toMatch(/^town\.ts: setInterval\(\(\) => void this\.sweep\(\)/);
    expect(found[1]).toMatch(/^worker\/worker\.ts: setInterval\(\(\) => void this\.heartbeat\(\)/);
  });

  it('has no sleep or poll loop in workers, waits and the event reader', () => {
    const scope = tsFiles.filter((f) => /^(worker\/|events\/|wait\.ts$)/.test(rel(f)));
    expect(scope.length).toBeGreaterThanOrEqual(5);
    const problems: string[] = [];
    for (const file of scope) {
      const text = stripped.get(file)!;
      if (/timers\/promises/.test(readFileSync(file, 'utf8'))) problems.push(`${rel(file)} imports timers/promises`);
      if (/\bsetImmediate\s*\(|\bsetInterval\s*\(/.test(text) && !rel(file).startsWith('worker/worker.ts')) problems.push(`${rel(file)} uses setImmediate/setInterval`);
      // Inside every loop: no timer and no sleep.
      for (const m of text.matchAll(/\b(while\s*\(|for\s*\()/g)) {
        const body = loopBody(text, m.index);
        const timer = /\b(setTimeout|setInterval|setImmediate|delay|sleep|poll)\s*\(/.exec(body);
        if (timer) problems.push(`${rel(file)}: ${timer[0]} inside a loop at offset ${m.index}`);
      }
      // The only pause (waitForReady: wait for a reconnect) happens after a failed command.
      for (const m of text.matchAll(/\bwaitForReady\s*\(/g)) {
        if (/export async function\s*$/.test(text.slice(Math.max(0, m.index - 30), m.index))) continue; // its definition
        const head = enclosingBlockHead(text, m.index);
        if (!/catch\s*(\([^)]*\))?\s*$/.test(head)) problems.push(`${rel(file)}: waitForReady outside a catch block at offset ${m.index}`);
      }
    }
    expect(problems).toEqual([]);
    // The short pause inside waitForReady is for a failure on a healthy connection only.
    const reader = stripped.get(join(SRC, 'events', 'reader.ts'))!;
    const [s, e] = blockAfter(reader, reader.indexOf('export async function waitForReady'));
    expect(reader.slice(s, e)).toMatch(/if \(conn\.status === 'ready'\) return delay\(100\)/);
  });

  it('blocks with bounded timeouts: BLMOVE and XREAD, each guarded by a watchdog', () => {
    const worker = stripped.get(join(SRC, 'worker', 'worker.ts'))!;
    const reader = stripped.get(join(SRC, 'events', 'reader.ts'))!;
    expect(worker).toMatch(/withWatchdog\(\s*conn,\s*conn\.blmove\(/);
    expect(reader).toMatch(/withWatchdog\(\s*conn,\s*conn\.xread\(/);
    expect(reader).toMatch(/'BLOCK', BLOCK_MS/);
  });
});

describe('an idle town, watched with MONITOR', () => {
  it('sends only blocking renewals, lease heartbeats and sweeps', async () => {
    const leaseMs = 3_000; // heartbeat every 1 s, sweep every 1.5 s
    const town = await openTown({ leaseMs });
    const agent = await town.spawnAgent('idler', { run: async () => 'ok' });
    const task = await agent.assign('warm up');
    await town.waitForTask(task.id, { timeoutMs: 5_000 });
    await agent.waitForIdle({ timeoutMs: 5_000 });
    const workerId = (await agent.info()).workerId!;

    const lua = (name: string): string => readFileSync(join(SRC, 'store', 'lua', `${name}.lua`), 'utf8');
    const sha = (name: string): string => createHash('sha1').update(`${lua('lib')}\n${lua(name)}`).digest('hex');
    const scripts = new Map([
      [sha('heartbeat'), 'heartbeat'],
      [sha('sweep'), 'sweep'],
      [sha('start'), 'start'],
    ]);

    const commands: string[] = [];
    const monitor = await watchCommands(rawRedis(), (_time, args, source) => {
      if (source.includes('lua')) return; // commands run inside scripts
      if (!args.some((a) => a.includes(town.name))) return; // other towns, other test files
      const name = args[0]!.toLowerCase();
      // ioredis sends a script's first call on a connection as EVAL (its source, whose header
      // names it), then EVALSHA.
      if (name === 'evalsha') commands.push(`script:${scripts.get(args[1]!) ?? args[1]}`);
      else if (name === 'eval') commands.push(`script:${/-- ([a-z-]+) v\d+:/.exec(args[1]!)?.[1] ?? '?'}`);
      else commands.push(name);
    });
    await sleep(100); // monitor attached
    commands.length = 0;
    await sleep(2_000);
    monitor.stop();

    const counts: Record<string, number> = {};
    for (const c of commands) counts[c] = (counts[c] ?? 0) + 1;
    // Each BLMOVE carries its start right behind it (Redis runs it when the BLMOVE returns, a
    // heartbeat interval later; on a timeout it finds nothing and returns at once): part of the
    // blocking renewal, never alone.
    const allowed = new Set(['blmove', 'xread', 'script:heartbeat', 'script:sweep', 'script:start', 'set']);
    expect(Object.keys(counts).filter((c) => !allowed.has(c)), JSON.stringify(counts)).toEqual([]);
    expect(counts['script:heartbeat'] ?? 0).toBeGreaterThanOrEqual(1); // the lease is renewed
    expect(counts['script:heartbeat'] ?? 0).toBeLessThanOrEqual(3);
    // A BLMOVE blocks for a heartbeat interval (leaseMs / 3, at most 5 s): here 1 s, so 2.
    expect(counts.blmove ?? 0).toBeLessThanOrEqual(Math.ceil(2_000 / Math.min(5_000, leaseMs / 3)));
    // The window may open between a BLMOVE and the start queued behind it: one start more.
    expect(counts['script:start'] ?? 0).toBeLessThanOrEqual((counts.blmove ?? 0) + 1);
    expect(counts.xread ?? 0).toBeLessThanOrEqual(1);
    expect((counts.set ?? 0) + (counts['script:sweep'] ?? 0)).toBeLessThanOrEqual(4);
    expect(commands.length).toBeLessThanOrEqual(12);
    // And the agent is still served right away: blocking, not sleeping.
    const t0 = performance.now();
    const next = await agent.assign('after the quiet');
    await town.waitForTask(next.id, { timeoutMs: 5_000 });
    expect(performance.now() - t0).toBeLessThan(500);
    expect((await agent.info()).workerId).toBe(workerId);
  });
});
