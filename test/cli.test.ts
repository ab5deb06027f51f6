import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { defaultRunner } from '../src/runner/child-process-runner.js';
import { runCli, type CliDefinition, type CliRunRequest } from '../src/runner/cli.js';
import type { ProcessRunner, ProcessSpec } from '../src/runner/process-runner.js';

const FAKE = fileURLToPath(new URL('./fixtures/fake-agent.mjs', import.meta.url));
const PATH = process.env.PATH ?? '';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tt-cli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function fake(args: readonly string[] = [], prompt: CliDefinition['prompt'] = 'stdin'): CliDefinition {
  return { command: process.execPath, args: [FAKE, ...args], prompt };
}

function request(prompt: string, overrides: Partial<CliRunRequest> = {}): CliRunRequest {
  return {
    definition: fake(),
    prompt,
    env: { PATH },
    logFile: join(dir, 'logs', 'agent', 'task.log'),
    promptDir: join(dir, 'prompts'),
    runner: defaultRunner,
    ...overrides,
  };
}

/** The raw output in a log: between the header line and the `# exit …` footer line. */
function logBody(log: Buffer): Buffer {
  const start = log.indexOf(0x0a) + 1;
  const end = log.lastIndexOf('# exit ');
  return log.subarray(start, end);
}

/** See child-process-runner.test.ts: an unreaped zombie counts as gone. */
async function isGone(pid: number, withinMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
      throw err;
    }
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return true;
    } catch {
      return true; // vanished between the two checks
    }
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function grandchildPid(text: string): number {
  const match = text.match(/grandchild=(\d+)/);
  if (!match) throw new Error(`no grandchild pid in ${JSON.stringify(text)}`);
  return Number(match[1]);
}

describe('runCli: outcomes', () => {
  it('succeeds with the trimmed stdout as text and logs the run', async () => {
    const result = await runCli(request('  \nDesign auth API schema\nwith details'));
    expect(result).toMatchObject({ ok: true, text: 'done: Design auth API schema', stderr: '' });
    expect(result.exit).toEqual({ code: 0, signal: null });
    expect(result.reason).toBeUndefined();
    expect(result.error).toBeUndefined();
    expect(result.durationMs).toBeGreaterThan(0);

    const log = await readFile(join(dir, 'logs', 'agent', 'task.log'), 'utf8');
    const [header, ...rest] = log.split('\n');
    expect(header).toMatch(/^# \d{4}-\d\d-\d\dT.* \$ .*fake-agent\.mjs < <prompt: \d+ bytes>$/);
    expect(rest.join('\n')).toMatch(/^done: Design auth API schema\n# exit code=0 signal=null after \d+ms\n$/);
  });

  it('appends to the log across runs', async () => {
    await runCli(request('first'));
    await runCli(request('second'));
    const log = await readFile(join(dir, 'logs', 'agent', 'task.log'), 'utf8');
    expect(log.match(/^# \d{4}-/gm)).toHaveLength(2);
    expect(log).toContain('done: first\n');
    expect(log).toContain('done: second\n');
  });

  it('fails on a non-zero exit, quoting the stderr tail', async () => {
    const result = await runCli(request('[fake:fail]'));
    expect(result).toMatchObject({ ok: false, reason: 'exit', stderr: 'something broke' });
    expect(result.exit).toEqual({ code: 3, signal: null });
    expect(result.error).toContain('exited with code 3');
    expect(result.error).toContain('something broke');
  });

  it('quotes the stdout tail when stderr is empty', async () => {
    const result = await runCli(request('[fake:exit=7]'));
    expect(result).toMatchObject({ ok: false, reason: 'exit', text: 'exiting 7' });
    expect(result.error).toMatch(/exited with code 7; last stdout:\nexiting 7$/);
  });

  it('fails when the CLI dies by a signal', async () => {
    const result = await runCli(request('[fake:crash]'));
    expect(result).toMatchObject({ ok: false, reason: 'signal' });
    expect(result.exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(result.error).toContain('killed by SIGKILL');
  });

  it('treats a clean exit with no output as a failure', async () => {
    const result = await runCli(request('[fake:silent][fake:stderr=warming up]'));
    expect(result).toMatchObject({ ok: false, reason: 'no_output', text: '' });
    expect(result.exit.code).toBe(0);
    expect(result.error).toContain('printed nothing on stdout');
    expect(result.error).toContain('warming up');
  });

  it('keeps stderr separately on success', async () => {
    const result = await runCli(request('[fake:json=claude][fake:stderr=note: cached]'));
    expect(result.ok).toBe(true);
    expect(result.stderr).toBe('note: cached');
    expect(JSON.parse(result.text)).toMatchObject({ type: 'result', is_error: false, total_cost_usd: 0.0123 });
  });

  it('reports a missing binary as not_found with a CLI_NOT_FOUND error', async () => {
    const command = `tinytown-no-such-cli-${randomUUID().slice(0, 8)}`;
    const result = await runCli(request('hello', { definition: { command } }));
    expect(result).toMatchObject({ ok: false, reason: 'not_found', text: '' });
    expect(result.error).toMatch(/^CLI_NOT_FOUND: /);
    expect(result.error).toContain(command);
    expect(result.error).toMatch(/install it or fix PATH/);
    expect(result.exit.spawnError?.code).toBe('ENOENT');
  });

  it('blames a missing working directory, not the binary', async () => {
    const result = await runCli(request('hello', { cwd: join(dir, 'nope') }));
    expect(result).toMatchObject({ ok: false, reason: 'spawn' });
    expect(result.error).toContain('working directory');
  });

  it('reports a prompt that cannot be an argument (NUL byte) as a spawn failure', async () => {
    const result = await runCli(request('a\0b', { definition: fake(['--prompt'], 'arg') }));
    expect(result).toMatchObject({ ok: false, reason: 'spawn' });
  });

  it('runs an executable script through its shebang', async () => {
    const result = await runCli(request('via shebang', { definition: { command: FAKE } }));
    expect(result).toMatchObject({ ok: true, text: 'done: via shebang' });
  });

  it('hands the runner the prompt as data: stdin, or a file in promptDir', async () => {
    const specs: ProcessSpec[] = [];
    const recording: ProcessRunner = {
      start(spec) {
        specs.push(spec);
        if (spec.args.at(-1)?.startsWith(join(dir, 'prompts'))) expect(readFileSync(spec.args.at(-1)!, 'utf8')).toBe('hi $(x)');
        return defaultRunner.start(spec);
      },
    };
    await runCli(request('hi $(x)', { runner: recording }));
    await runCli(request('hi $(x)', { runner: recording, definition: fake(['--prompt-file'], 'file'), cwd: dir }));
    expect(specs[0]).toMatchObject({ command: process.execPath, args: [FAKE], stdin: 'hi $(x)', env: { PATH } });
    expect(specs[1]?.stdin).toBeUndefined();
    expect(specs[1]?.cwd).toBe(dir);
    expect(specs[1]?.args.slice(0, 2)).toEqual([FAKE, '--prompt-file']);
    expect(specs[1]?.args[2]).toMatch(/prompts\/prompt-[0-9a-f-]+\.md$/);
  });

  it('turns a runner that throws into a spawn failure', async () => {
    const broken: ProcessRunner = {
      start() {
        throw new Error('no container runtime');
      },
    };
    const result = await runCli(request('hello', { runner: broken }));
    expect(result).toMatchObject({ ok: false, reason: 'spawn' });
    expect(result.error).toContain('no container runtime');
  });

  it('rejects invalid options', async () => {
    await expect(runCli(request('x', { timeoutMs: -1 }))).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(runCli(request('x', { definition: { command: '' } }))).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('runCli: stopping', () => {
  it('kills the whole group on timeout', async () => {
    const result = await runCli(request('[fake:grandchild]', { timeoutMs: 500, killGraceMs: 3_000 }));
    expect(result).toMatchObject({ ok: false, reason: 'timeout' });
    expect(result.error).toContain('timed out after 500ms');
    expect(result.exit).toEqual({ code: null, signal: 'SIGTERM' });
    expect(result.durationMs).toBeLessThan(3_000); // SIGTERM sufficed: no wait for the grace period
    expect(await isGone(grandchildPid(result.text))).toBe(true);
  });

  it('escalates to SIGKILL after the grace period when SIGTERM is ignored', async () => {
    const prompt = '[fake:grandchild][fake:ignore-term]';
    const result = await runCli(request(prompt, { timeoutMs: 300, killGraceMs: 300 }));
    expect(result).toMatchObject({ ok: false, reason: 'timeout' });
    expect(result.exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(result.error).toContain('timed out after 300ms');
    expect(result.error).toContain('SIGKILL');
    expect(result.durationMs).toBeGreaterThanOrEqual(550);
    expect(await isGone(grandchildPid(result.text))).toBe(true);
  });

  it('stops the group when aborted', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('user cancelled')), 300);
    const result = await runCli(request('[fake:grandchild]', { signal: controller.signal, killGraceMs: 1_000 }));
    expect(result).toMatchObject({ ok: false, reason: 'aborted' });
    expect(result.error).toContain('aborted: user cancelled');
    expect(result.exit.signal).toBe('SIGTERM');
    expect(await isGone(grandchildPid(result.text))).toBe(true);
  });

  it('starts nothing when already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    const result = await runCli(request('hello', { signal: controller.signal }));
    expect(result).toMatchObject({ ok: false, reason: 'aborted', exit: { code: null, signal: null } });
    expect(existsSync(join(dir, 'logs', 'agent', 'task.log'))).toBe(false);
  });

  it('does not hang when the CLI exits leaving a grandchild on its output pipes', async () => {
    const result = await runCli(request('[fake:grandchild][fake:exit=0]', { killGraceMs: 500 }));
    expect(result).toMatchObject({ ok: true, exit: { code: 0, signal: null } });
    expect(result.text).toContain('exiting 0');
    expect(await isGone(grandchildPid(result.text))).toBe(true);
  });
});

describe('runCli: stall detection', () => {
  const REPLAY = fileURLToPath(new URL('./fixtures/replay-cli.mjs', import.meta.url));

  it('stops a CLI that goes silent, with its whole group, as stalled (retryable)', async () => {
    const result = await runCli(request('[fake:grandchild]', { stallMs: 400, timeoutMs: 10_000, killGraceMs: 1_000 }));
    expect(result).toMatchObject({ ok: false, failure: 'stalled', reason: 'stalled', retryable: true });
    expect(result.error).toMatch(/stalled: no output for 400ms \(stopped with SIGTERM\); last stdout:\ngrandchild=\d+$/);
    expect(result.durationMs).toBeLessThan(3_000);
    expect(await isGone(grandchildPid(result.text))).toBe(true);
  });

  it('does not count a CLI that keeps printing as stalled', async () => {
    const definition: CliDefinition = { command: process.execPath, args: [REPLAY, '--tick', '50', '--tick-line', 'working'] };
    const result = await runCli(request('x', { definition, stallMs: 300, timeoutMs: 1_000, killGraceMs: 500 }));
    expect(result).toMatchObject({ ok: false, failure: 'timeout', retryable: true });
    expect(result.error).toContain('timed out after 1000ms');
  });

  it('rejects an invalid stallMs', async () => {
    await expect(runCli(request('x', { stallMs: 0 }))).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('runCli: normalized result', () => {
  it('marks failures retryable or not, and successes as not retryable', async () => {
    expect(await runCli(request('hello'))).toMatchObject({ ok: true, retryable: false, stdout: 'done: hello' });
    expect(await runCli(request('[fake:crash]'))).toMatchObject({ failure: 'signal', retryable: true });
    expect(await runCli(request('[fake:fail]'))).toMatchObject({ failure: 'exit', retryable: false });
    expect(await runCli(request('[fake:silent]'))).toMatchObject({ failure: 'no_output', retryable: false });
    expect(await runCli(request('x', { definition: { command: `tinytown-missing-${randomUUID()}` } }))).toMatchObject({ failure: 'not_found', retryable: false });
  });

  it('parses the fake Claude result when the definition names the parser', async () => {
    const result = await runCli(request('Ship it [fake:json=claude]', { definition: { ...fake(), output: 'claude-json' } }));
    expect(result).toMatchObject({ ok: true, text: 'done: Ship it [fake:json=claude]', usage: { costUsd: 0.0123, inputTokens: 1200, model: 'claude-sonnet-4-5' } });
    expect(result.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    const failed = await runCli(request('[fake:json=claude][fake:exit=1]', { definition: { ...fake(), output: 'claude-json' } }));
    expect(failed).toMatchObject({ ok: false, failure: 'not_authenticated', retryable: false });
    expect(failed.error).toContain('not authenticated: Not logged in · Please run /login');
  });

  it('parses the fake Codex events', async () => {
    const result = await runCli(request('Go [fake:json=codex]', { definition: { ...fake(), output: 'codex-jsonl' } }));
    expect(result).toMatchObject({ ok: true, text: 'done: Go [fake:json=codex]', usage: { inputTokens: 5400 - 2048, cacheReadTokens: 2048, outputTokens: 321 } });
    const failed = await runCli(request('[fake:json=codex][fake:exit=1]', { definition: { ...fake(), output: 'codex-jsonl' } }));
    expect(failed).toMatchObject({ ok: false, failure: 'cli_error', retryable: false });
    expect(failed.error).toContain('reported an error: stream error: something broke (exit code 1)');
  });
});

describe('runCli: the prompt is data, never shell', () => {
  const modes: Array<[string, CliDefinition, boolean]> = [
    ['stdin', fake([], 'stdin'), false],
    ['arg, appended', fake(['--prompt'], 'arg'), true],
    ['arg, {prompt}', fake(['--prompt', '{prompt}'], 'arg'), true],
    ['file, {promptFile}', fake(['--prompt-file', '{promptFile}'], 'file'), false],
    ['file, appended', fake(['--prompt-file'], 'file'), false],
  ];

  it.each(modes)('delivers a hostile prompt byte for byte (%s)', async (_name, definition, elided) => {
    const marker = join(tmpdir(), `pwned-${randomUUID()}`);
    const prompt = [
      `[fake:echo] $(touch ${marker}) \`touch ${marker}\``,
      `'single' "double" \\"escaped\\" ; touch ${marker} && echo $HOME | cat > ${marker}`,
      "$& $' $` $$ {prompt} {promptFile} %s %0 \\n \\\\",
      '\ttabs, émoji 🚀, 中文, zero-width\u200b, CR\r',
      '-- --prompt last',
    ].join('\n');

    const result = await runCli(request(prompt, { definition }));

    expect(result.ok).toBe(true);
    expect(result.text).toBe(prompt);
    expect(existsSync(marker)).toBe(false);
    const header = (await readFile(join(dir, 'logs', 'agent', 'task.log'), 'utf8')).split('\n')[0];
    expect(header).not.toContain('touch');
    if (elided) expect(header).toContain(`<prompt: ${Buffer.byteLength(prompt)} bytes>`);
    const left = existsSync(join(dir, 'prompts')) ? await readdir(join(dir, 'prompts')) : [];
    expect(left).toEqual([]); // prompt files are removed after the run
  });

  it('substitutes a placeholder inside an argument without interpreting $ patterns', async () => {
    const definition: CliDefinition = {
      command: process.execPath,
      args: ['-e', 'process.stdout.write(process.argv[1])', '--', 'before:{prompt}:after'],
      prompt: 'arg',
    };
    const result = await runCli(request("$& $' $1 `x`", { definition }));
    expect(result.text).toBe("before:$& $' $1 `x`:after");
  });
});

describe('runCli: environment, cwd and volume', () => {
  it('passes the environment exactly', async () => {
    const env = {
      PATH,
      TINYTOWN_AGENT: 'backend',
      TINYTOWN_TASK_ID: '0b7e6a2c',
      TINYTOWN_ODD: `a "b" 'c' $(d) \`e\`\nnext line`,
    };
    process.env.TINYTOWN_MUST_NOT_LEAK = '1';
    try {
      const result = await runCli(request('[fake:env]', { env }));
      const { PATH: _path, ...expected } = env;
      expect(JSON.parse(result.text)).toEqual(expected);
    } finally {
      delete process.env.TINYTOWN_MUST_NOT_LEAK;
    }
  });

  it('runs in the given working directory', async () => {
    const result = await runCli(request('[fake:cwd]', { cwd: dir }));
    expect(result.text).toBe(`cwd=${realpathSync(dir)}`);
    expect((await readFile(join(dir, 'logs', 'agent', 'task.log'), 'utf8')).split('\n')[0]).toContain(`(cwd ${dir})`);
  });

  it('streams 50 MB to the log while memory holds only the tails', async () => {
    const total = 50 * 1024 * 1024;
    const tailBytes = 64 * 1024;
    const gc = exposeGc();
    gc();
    const before = memory();
    let peak = before;
    // Collect before each sample: the question is what the run retains, not how much garbage
    // the pipe reads leave behind before the next GC.
    const sampler = setInterval(() => {
      gc();
      peak = Math.max(peak, memory());
    }, 20);
    let result;
    try {
      result = await runCli(request(`[fake:bytes=${total}]`, { tailBytes }));
    } finally {
      clearInterval(sampler);
    }

    expect(result.ok).toBe(true);
    expect(result.text.length).toBeLessThanOrEqual(tailBytes);
    expect(result.text.length).toBeGreaterThan(tailBytes - 100);
    const body = logBody(await readFile(join(dir, 'logs', 'agent', 'task.log')));
    expect(body.length).toBe(total);
    expect(body.subarray(0, 64).toString()).toMatch(/^abcdefghijklmnopqrstuvwxyz0123456789abc.*\n$/);
    expect(peak - before).toBeLessThan(8 * 1024 * 1024); // measured: about 1.5 MiB
  }, 60_000);
});

/** Heap plus Buffer memory: output chunks live outside the JS heap, in ArrayBuffers. */
function memory(): number {
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** A `gc()` that frees dead Buffers before returning (no background sweeping to race with). */
function exposeGc(): () => void {
  v8.setFlagsFromString('--expose-gc');
  v8.setFlagsFromString('--no-concurrent-array-buffer-sweeping');
  return vm.runInNewContext('gc') as () => void;
}
