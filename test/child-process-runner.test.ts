import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChildProcessRunner, defaultRunner } from '../src/runner/child-process-runner.js';
import type { OutputChunk, ProcessSpec, RunningProcess } from '../src/runner/process-runner.js';

const FAKE = fileURLToPath(new URL('./fixtures/fake-agent.mjs', import.meta.url));
const env = { PATH: process.env.PATH ?? '' };
const runner = new ChildProcessRunner();

function nodeScript(source: string, extra: Partial<ProcessSpec> = {}): ProcessSpec {
  return { command: process.execPath, args: ['-e', source], env, ...extra };
}

async function collect(proc: RunningProcess): Promise<OutputChunk[]> {
  const chunks: OutputChunk[] = [];
  for await (const chunk of proc.output) chunks.push(chunk);
  return chunks;
}

function joined(chunks: readonly OutputChunk[], stream?: OutputChunk['stream']): string {
  return Buffer.concat(chunks.filter((c) => !stream || c.stream === stream).map((c) => c.data)).toString();
}

/** Reads output until `pattern` matches, returning the match (the rest stays unread). */
async function readUntil(proc: RunningProcess, pattern: RegExp): Promise<RegExpMatchArray> {
  let seen = '';
  const iterator = proc.output[Symbol.asyncIterator]();
  for (;;) {
    const next = await iterator.next();
    if (next.done) throw new Error(`output ended before ${pattern}: ${seen}`);
    seen += next.value.data.toString();
    const match = seen.match(pattern);
    if (match) return match;
  }
}

/**
 * True once `pid` is gone. An orphaned grandchild is reparented to PID 1, which in some
 * containers never reaps it: a zombie is dead too, even though `kill(pid, 0)` still succeeds.
 */
async function isGone(pid: number, withinMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
      throw err;
    }
    if (isZombie(pid)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function isZombie(pid: number): boolean {
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may contain spaces, so split after ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

function processGroupOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

describe('ChildProcessRunner', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tt-runner-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is the default runner', () => {
    expect(defaultRunner).toBeInstanceOf(ChildProcessRunner);
  });

  it('delivers both streams in arrival order and reports the exit', async () => {
    const proc = runner.start(
      nodeScript(`
        process.stdout.write('one');
        setTimeout(() => process.stderr.write('two'), 50);
        setTimeout(() => { process.stdout.write('three'); process.exitCode = 4; }, 100);
      `),
    );
    expect(typeof proc.pid).toBe('number');
    const chunks = await collect(proc);
    expect(chunks.map((c) => [c.stream, c.data.toString()])).toEqual([
      ['stdout', 'one'],
      ['stderr', 'two'],
      ['stdout', 'three'],
    ]);
    expect(await proc.exited).toEqual({ code: 4, signal: null });
  });

  it('writes stdin and then closes it', async () => {
    const input = 'line one\n$(touch /tmp/nope) `x` \'q\' "dq"\nüñí 🚀';
    const proc = runner.start(nodeScript('process.stdin.pipe(process.stdout)', { stdin: input }));
    expect(joined(await collect(proc), 'stdout')).toBe(input);
    expect((await proc.exited).code).toBe(0);
  });

  it('gives an empty, closed stdin when there is no input', async () => {
    const proc = runner.start(
      nodeScript("let n = 0; process.stdin.on('data', (d) => (n += d.length)).on('end', () => console.log('eof', n))"),
    );
    expect(joined(await collect(proc))).toBe('eof 0\n');
  });

  it('ignores EPIPE when the child exits without reading its stdin', async () => {
    const proc = runner.start(nodeScript('process.exit(0)', { stdin: 'x'.repeat(8 * 1024 * 1024) }));
    await collect(proc);
    expect(await proc.exited).toEqual({ code: 0, signal: null });
  });

  it('passes exactly the given environment and honours cwd', async () => {
    const proc = runner.start(
      nodeScript('console.log(JSON.stringify({ keys: Object.keys(process.env).sort(), cwd: process.cwd() }))', {
        env: { PATH: env.PATH, ONLY_THIS: 'a "b" $(c)' },
        cwd: dir,
      }),
    );
    const out = JSON.parse(joined(await collect(proc))) as { keys: string[]; cwd: string };
    expect(out.keys).toEqual(['ONLY_THIS', 'PATH']);
    expect(out.cwd).toBe(dir);
  });

  it('starts the child as the leader of its own process group', async () => {
    const proc = runner.start(nodeScript('setInterval(() => {}, 1000)'));
    const pid = proc.pid!;
    expect(processGroupOf(pid)).toBe(pid);
    expect(processGroupOf(pid)).not.toBe(processGroupOf(process.pid));
    proc.kill();
    expect(await proc.exited).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('kills the whole process group, grandchildren included', async () => {
    const proc = runner.start({ command: process.execPath, args: [FAKE], env, stdin: '[fake:grandchild]' });
    const grandchild = Number((await readUntil(proc, /grandchild=(\d+)/))[1]);
    expect(await isGone(grandchild, 0)).toBe(false);
    proc.kill();
    await collect(proc); // ends only once the grandchild, which shares the pipes, is gone too
    expect(await proc.exited).toEqual({ code: null, signal: 'SIGTERM' });
    expect(await isGone(grandchild)).toBe(true);
  });

  it('sends the requested signal (SIGKILL for a child that ignores SIGTERM)', async () => {
    const proc = runner.start({ command: process.execPath, args: [FAKE], env, stdin: '[fake:hang][fake:ignore-term][fake:stderr=ready]' });
    await readUntil(proc, /ready/);
    proc.kill('SIGTERM');
    const stillRunning = await Promise.race([proc.exited.then(() => false), sleep(300).then(() => true)]);
    expect(stillRunning).toBe(true);
    proc.kill('SIGKILL');
    expect(await proc.exited).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('reports a missing binary in exited instead of throwing', async () => {
    const proc = runner.start({ command: 'tinytown-no-such-binary-4f2c', args: [], env, stdin: 'hello' });
    expect(proc.pid).toBeUndefined();
    expect(() => proc.kill()).not.toThrow();
    expect(await collect(proc)).toEqual([]);
    const exit = await proc.exited;
    expect(exit).toMatchObject({ code: null, signal: null });
    expect(exit.spawnError?.code).toBe('ENOENT');
  });

  it('reports a file that is not executable as EACCES', async () => {
    const file = join(dir, 'not-executable');
    await writeFile(file, '#!/bin/sh\necho hi\n');
    await chmod(file, 0o644);
    const proc = runner.start({ command: file, args: [], env });
    await collect(proc);
    expect((await proc.exited).spawnError?.code).toBe('EACCES');
  });

  it('reports arguments that cannot be passed (a NUL byte) instead of throwing', async () => {
    const proc = runner.start({ command: process.execPath, args: ['-e', 'a\0b'], env });
    expect(await collect(proc)).toEqual([]);
    const exit = await proc.exited;
    expect(exit).toMatchObject({ code: null, signal: null });
    expect(exit.spawnError).toBeInstanceOf(Error);
    expect(() => proc.kill()).not.toThrow();
  });

  it('is safe to kill after the process has exited', async () => {
    const proc = runner.start(nodeScript('console.log(1)'));
    await collect(proc);
    await proc.exited;
    expect(() => proc.kill('SIGKILL')).not.toThrow();
  });

  it('pauses the child while the consumer lags, instead of buffering without bound', async () => {
    const total = 16 * 1024 * 1024;
    const proc = runner.start({ command: process.execPath, args: [FAKE], env, stdin: `[fake:bytes=${total}]` });
    let exited = false;
    void proc.exited.then(() => (exited = true));
    const iterator = proc.output[Symbol.asyncIterator]();
    const first = await iterator.next();
    let received = first.done ? 0 : first.value.data.length;
    await sleep(500); // writing 16 MiB unhindered takes a few tens of ms
    expect(exited).toBe(false);
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) received += next.value.data.length;
    expect(received).toBe(total);
    expect(await proc.exited).toEqual({ code: 0, signal: null });
  });

  it('discards the rest when the consumer stops early, so the child can finish', async () => {
    const proc = runner.start({ command: process.execPath, args: [FAKE], env, stdin: '[fake:bytes=8388608]' });
    for await (const chunk of proc.output) {
      expect(chunk.stream).toBe('stdout');
      break;
    }
    expect(await proc.exited).toEqual({ code: 0, signal: null });
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
