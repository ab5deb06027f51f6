import { readFileSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { defaultRunner } from '../src/runner/child-process-runner.js';
import { runCli, type CliDefinition, type CliRunRequest, type CliRunResult } from '../src/runner/cli.js';
import { classifyMessage, isRetryable, type FailureClass } from '../src/runner/failure.js';
import { createParser, isOutputFormat, OUTPUT_FORMATS, parseOutput, type OutputFormat } from '../src/runner/parsers/index.js';
import { JsonObjectReader } from '../src/runner/parsers/json.js';
import { LineSplitter } from '../src/runner/parsers/lines.js';

const SAMPLES = fileURLToPath(new URL('./fixtures/cli-samples/', import.meta.url));
const REPLAY = fileURLToPath(new URL('./fixtures/replay-cli.mjs', import.meta.url));
const PATH = process.env.PATH ?? '';

function sample(name: string): string {
  return readFileSync(join(SAMPLES, name), 'utf8');
}

describe('parsers on recorded samples', () => {
  it('Claude: a success with modelUsage summed over models (subagents included)', () => {
    const parsed = parseOutput('claude-json', sample('claude/success.json'));
    expect(parsed).toMatchObject({
      recognized: true,
      failed: false,
      text: expect.stringContaining('POST /auth/login'),
      sessionId: '3b7e9c2a-5f1d-4e8b-9a6c-2d4f8e1b7c30',
    });
    expect(parsed.usage).toEqual({
      inputTokens: 1812 + 3400,
      outputTokens: 2210 + 610,
      cacheReadTokens: 40960 + 12000,
      cacheWriteTokens: 5120,
      reasoningTokens: 0,
      costUsd: 0.07335,
      model: 'claude-sonnet-4-5-20250929',
    });
  });

  it('Claude: not logged in (recorded), in json and stream-json', () => {
    for (const file of ['claude/not-logged-in.json', 'claude/not-logged-in.stream.jsonl']) {
      const parsed = parseOutput('claude-json', sample(file));
      expect(parsed).toMatchObject({ recognized: true, failed: true, error: 'Not logged in · Please run /login' });
      expect(parsed.sessionId).toMatch(/^[0-9a-f-]{36}$/);
      expect(parsed.usage).toBeUndefined(); // nothing was spent
    }
    expect(parseOutput('claude-json', sample('claude/not-logged-in.stream.jsonl')).errorKind).toBe('auth');
  });

  it('Claude: max turns and rate limit', () => {
    const maxTurns = parseOutput('claude-json', sample('claude/max-turns.json'));
    expect(maxTurns).toMatchObject({ failed: true, errorKind: 'limit', error: expect.stringContaining('error_max_turns') });
    expect(maxTurns.usage?.costUsd).toBe(0.0412);
    const limited = parseOutput('claude-json', sample('claude/rate-limited.json'));
    expect(limited).toMatchObject({ failed: true, errorKind: 'rate_limit', error: expect.stringContaining('rate_limit_error') });
  });

  it('Codex: session, last agent message, usage with cached tokens split out', () => {
    const parsed = parseOutput('codex-jsonl', sample('codex/success.jsonl'));
    expect(parsed).toMatchObject({
      recognized: true,
      failed: false,
      text: 'Implemented the auth endpoints; all 12 auth tests pass.',
      sessionId: '0199a7c2-4e1b-7d30-9f55-6b2e8a1c4d90',
    });
    expect(parsed.usage).toEqual({ inputTokens: 24530 - 19200, cacheReadTokens: 19200, outputTokens: 1840, reasoningTokens: 960, cacheWriteTokens: 0 });
  });

  it('Codex: the last error line of a run without network (recorded)', () => {
    const parsed = parseOutput('codex-jsonl', sample('codex/no-network.jsonl'));
    expect(parsed).toMatchObject({ recognized: false, failed: false, error: 'Reconnecting... waiting for network (Connection failed: error sending request)' });
    expect(parsed.sessionId).toBe('01a214a4-e801-7750-88cc-3e235f8781f0');
  });

  it('Codex: turn.failed', () => {
    expect(parseOutput('codex-jsonl', sample('codex/turn-failed.jsonl'))).toMatchObject({ failed: true, error: expect.stringMatching(/^stream disconnected/) });
    expect(parseOutput('codex-jsonl', sample('codex/rate-limited.jsonl'))).toMatchObject({ failed: true, error: expect.stringContaining('429') });
  });

  it('Gemini: pretty-printed result with per-model tokens', () => {
    const parsed = parseOutput('gemini-json', sample('gemini/success.json'));
    expect(parsed).toMatchObject({ recognized: true, failed: false, text: expect.stringContaining('parseConfig'), sessionId: 'c41d2e7f-8a9b-4c0d-9e1f-2a3b4c5d6e7f' });
    expect(parsed.usage).toEqual({
      inputTokens: 21400 - 12280 + 840,
      cacheReadTokens: 12280,
      outputTokens: 1630 + 42,
      reasoningTokens: 1180 + 48,
      cacheWriteTokens: 0,
      model: 'gemini-2.5-pro',
    });
  });

  it('Gemini: errors arrive as JSON on stderr (recorded: code 41, not authenticated)', () => {
    const parsed = parseOutput('gemini-json', '', sample('gemini/not-logged-in.stderr.txt'));
    expect(parsed).toMatchObject({ recognized: true, failed: true, errorKind: 'auth', error: expect.stringContaining('Please set an Auth method') });
    expect(parseOutput('gemini-json', '', sample('gemini/max-turns.stderr.txt'))).toMatchObject({ failed: true, errorKind: 'limit' });
  });

  it('Auggie: result with a cost in dollars; max turns', () => {
    expect(parseOutput('auggie-json', sample('auggie/success.json'))).toMatchObject({
      recognized: true,
      failed: false,
      text: expect.stringContaining('flaky retry test'),
      sessionId: '7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
      usage: { costUsd: 0.0384, inputTokens: 0 },
    });
    expect(parseOutput('auggie-json', sample('auggie/max-turns.json'))).toMatchObject({
      failed: true,
      errorKind: 'limit',
      error: expect.stringMatching(/^error_max_turns: I updated two/),
    });
  });

  it('Copilot: last non-empty assistant message, session id, usage events; a session error', () => {
    const parsed = parseOutput('copilot-jsonl', sample('copilot/success.jsonl'));
    expect(parsed).toMatchObject({
      recognized: true,
      failed: false,
      text: 'Added `--verbose` to src/cli.ts and documented it in the README.',
      sessionId: '2f9e8d7c-6b5a-4c3d-9e1f-0a1b2c3d4e5f',
      usage: { inputTokens: 8120, outputTokens: 412, cacheReadTokens: 6400, model: 'claude-sonnet-4.5' },
    });
    expect(parsed.usage?.costUsd).toBeUndefined(); // Copilot counts premium requests, not dollars
    expect(parseOutput('copilot-jsonl', sample('copilot/error.jsonl'))).toMatchObject({ failed: true, error: expect.stringContaining('rate limit') });
  });

  it('OpenCode: text of the last step, cost and tokens summed over steps; errors', () => {
    const parsed = parseOutput('opencode-json', sample('opencode/success.jsonl'));
    expect(parsed).toMatchObject({ recognized: true, failed: false, text: 'Added the `/health` route in src/router.ts and a test for it.', sessionId: 'ses_5c1f0e9a3ffeA7b2Qx4LmN8pRt' });
    expect(parsed.usage).toEqual({ inputTokens: 6630, outputTokens: 544, reasoningTokens: 64, cacheReadTokens: 6100, cacheWriteTokens: 6100, costUsd: 0.0208 });
    expect(parseOutput('opencode-json', sample('opencode/rate-limited.jsonl'))).toMatchObject({ failed: true, errorKind: 'rate_limit' });
    expect(parseOutput('opencode-json', sample('opencode/not-logged-in.jsonl'))).toMatchObject({ failed: true, errorKind: 'auth', error: expect.stringContaining('No API key') });
  });

  it('Cursor: the result object', () => {
    expect(parseOutput('cursor-json', sample('cursor/success.json'))).toMatchObject({ recognized: true, failed: false, text: 'Renamed `getUser` to `fetchUser` across 6 files.' });
  });

  it('recognizes nothing in output of another shape', () => {
    for (const format of OUTPUT_FORMATS) {
      expect(parseOutput(format, 'Warning: something\n{"unrelated": true}\nplain text')).toMatchObject({ recognized: false, failed: false });
    }
  });

  it('names the formats and refuses unknown ones', () => {
    expect(OUTPUT_FORMATS).toContain('codex-jsonl');
    expect(isOutputFormat('gemini-json')).toBe(true);
    expect(isOutputFormat('xml')).toBe(false);
    expect(() => createParser('xml' as OutputFormat)).toThrow(InvalidArgumentError);
  });
});

describe('line and document readers', () => {
  it('splits lines across chunks, with CRLF and multi-byte characters cut in two', () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((line) => lines.push(line));
    const bytes = Buffer.from('first 🚀\r\nsecond ça\nlast');
    for (let i = 0; i < bytes.length; i += 3) splitter.push(bytes.subarray(i, i + 3));
    splitter.end();
    expect(lines).toEqual(['first 🚀', 'second ça', 'last']);
  });

  it('drops a line longer than its limit instead of holding it', () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((line) => lines.push(line), 16);
    splitter.push(Buffer.from('short\n'));
    splitter.push(Buffer.from('x'.repeat(10)));
    splitter.push(Buffer.from(`${'x'.repeat(10)}\nafter\n`));
    splitter.end();
    expect(lines).toEqual(['short', 'after']);
  });

  it('reads one-line and pretty-printed objects among other lines', () => {
    const reader = new JsonObjectReader();
    const found = ['noise', '{"a":1}', '{', '  "b": {', '    "c": 2', '  }', '}', 'more noise', '{ broken'].map((l) => reader.push(l)).filter(Boolean);
    expect(found).toEqual([{ a: 1 }, { b: { c: 2 } }]);
  });
});

describe('failure classes', () => {
  it('classifies the CLIs’ own words', () => {
    expect(classifyMessage('Not logged in · Please run /login')).toBe('auth');
    expect(classifyMessage('❌ No auth provided. Please log in with `auggie login`')).toBe('auth');
    expect(classifyMessage('Error: No authentication information found.')).toBe('auth');
    expect(classifyMessage('unexpected status 401 Unauthorized: Missing bearer')).toBe('auth');
    expect(classifyMessage('Authentication token found but could not be validated. network fetch failed')).toBe('network');
    expect(classifyMessage('exceeded retry limit, last status: 429 Too Many Requests')).toBe('rate_limit');
    expect(classifyMessage("You've hit your usage limit")).toBe('rate_limit');
    expect(classifyMessage('stream disconnected before completion')).toBe('network');
    expect(classifyMessage('API Error: 529 Overloaded')).toBe('network');
    expect(classifyMessage('TypeError: x is not a function')).toBeUndefined();
  });

  it('retries what may pass, not what will not', () => {
    const retryable: FailureClass[] = ['rate_limited', 'timeout', 'stalled', 'signal'];
    const final: FailureClass[] = ['not_found', 'not_authenticated', 'no_output', 'aborted', 'spawn', 'cli_error', 'exit'];
    for (const failure of retryable) expect(isRetryable(failure)).toBe(true);
    for (const failure of final) expect(isRetryable(failure)).toBe(false);
    expect(isRetryable('exit', 'network')).toBe(true);
    expect(isRetryable('cli_error', 'network')).toBe(true);
    expect(isRetryable('cli_error', 'limit')).toBe(false);
  });
});

describe('runCli with parsers (recorded outputs replayed)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tt-parsers-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function replay(output: OutputFormat, options: { stdout?: string; stderr?: string; exit?: number; extra?: string[] }): CliDefinition {
    const args = [REPLAY];
    if (options.stdout) args.push('--stdout', join(SAMPLES, options.stdout));
    if (options.stderr) args.push('--stderr', join(SAMPLES, options.stderr));
    args.push('--exit', String(options.exit ?? 0), ...(options.extra ?? []));
    return { command: process.execPath, args, prompt: 'stdin', output };
  }

  function run(definition: CliDefinition, overrides: Partial<CliRunRequest> = {}): Promise<CliRunResult> {
    return runCli({
      definition,
      prompt: 'Implement the auth endpoints',
      env: { PATH },
      logFile: join(dir, 'logs', 'task.log'),
      promptDir: join(dir, 'prompts'),
      runner: defaultRunner,
      ...overrides,
    });
  }

  it('a Claude success: result text, session, usage; not retryable because not failed', async () => {
    const result = await run(replay('claude-json', { stdout: 'claude/success.json' }));
    expect(result).toMatchObject({ ok: true, retryable: false, sessionId: '3b7e9c2a-5f1d-4e8b-9a6c-2d4f8e1b7c30', usage: { costUsd: 0.07335 } });
    expect(result.text).toMatch(/^Added `POST \/auth\/login`/);
    expect(result.stdout).toMatch(/^\{"type":"result"/); // the raw output stays available
    expect(result.failure).toBeUndefined();
  });

  it('Claude not logged in: not_authenticated, not retryable, quoting the CLI', async () => {
    const result = await run(replay('claude-json', { stdout: 'claude/not-logged-in.json', exit: 1 }));
    expect(result).toMatchObject({ ok: false, failure: 'not_authenticated', reason: 'not_authenticated', retryable: false });
    expect(result.error).toBe(`${process.execPath} not authenticated: Not logged in · Please run /login (exit code 1)`);
    expect(result.sessionId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it.each<[string, CliDefinition, FailureClass, boolean, RegExp]>([
    ['Claude max turns (exit 1)', replay('claude-json', { stdout: 'claude/max-turns.json', exit: 1 }), 'cli_error', false, /reported an error: error_max_turns/],
    ['Claude 429', replay('claude-json', { stdout: 'claude/rate-limited.json', exit: 1 }), 'rate_limited', true, /rate limited: API Error: 429/],
    ['Codex turn.failed (network)', replay('codex-jsonl', { stdout: 'codex/turn-failed.jsonl', exit: 1 }), 'cli_error', true, /reported an error: stream disconnected/],
    ['Codex 429', replay('codex-jsonl', { stdout: 'codex/rate-limited.jsonl', exit: 1 }), 'rate_limited', true, /429 Too Many Requests/],
    ['Codex 401', replay('codex-jsonl', { stdout: 'codex/not-logged-in.jsonl', exit: 1 }), 'not_authenticated', false, /not authenticated: unexpected status 401/],
    ['Codex outside git', replay('codex-jsonl', { stderr: 'codex/untrusted-dir.stderr.txt', exit: 1 }), 'exit', false, /exited with code 1; last stderr:\nNot inside a trusted directory[^]*hint: pass --skip-git-repo-check/],
    ['Gemini exit 41', replay('gemini-json', { stderr: 'gemini/not-logged-in.stderr.txt', exit: 41 }), 'not_authenticated', false, /not authenticated: Please set an Auth method.*\(exit code 41\)$/],
    ['Gemini quota', replay('gemini-json', { stderr: 'gemini/rate-limited.stderr.txt', exit: 1 }), 'rate_limited', true, /exhausted your capacity/],
    ['Gemini turn limit', replay('gemini-json', { stderr: 'gemini/max-turns.stderr.txt', exit: 53 }), 'cli_error', false, /Reached max session turns/],
    ['Auggie not logged in', replay('auggie-json', { stderr: 'auggie/not-logged-in.stderr.txt', exit: 1 }), 'not_authenticated', false, /not authenticated: ❌ No auth provided/],
    ['Auggie max turns', replay('auggie-json', { stdout: 'auggie/max-turns.json', exit: 0 }), 'cli_error', false, /error_max_turns/],
    ['Copilot not logged in', replay('copilot-jsonl', { stderr: 'copilot/not-logged-in.stderr.txt', exit: 1 }), 'not_authenticated', false, /No authentication information found/],
    ['Copilot rate limit', replay('copilot-jsonl', { stdout: 'copilot/error.jsonl', exit: 1 }), 'rate_limited', true, /hit a rate limit/],
    ['OpenCode auth', replay('opencode-json', { stdout: 'opencode/not-logged-in.jsonl', exit: 1 }), 'not_authenticated', false, /No API key found/],
    ['Claude root refusal', { command: process.execPath, args: ['-e', 'console.error("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"); process.exit(1)'], output: 'claude-json' }, 'exit', false, /hint: Claude Code refuses/],
  ])('%s → %s', async (_name, definition, failure, retryable, error) => {
    const result = await run(definition);
    expect(result).toMatchObject({ ok: false, failure, retryable });
    expect(result.error).toMatch(error);
  });

  it('a clean exit with a result object but no result text is no_output', async () => {
    const definition: CliDefinition = {
      command: process.execPath,
      args: ['-e', 'console.log(JSON.stringify({ type: "result", subtype: "success", is_error: false, result: "", session_id: "s-1" }))'],
      output: 'claude-json',
    };
    const result = await run(definition);
    expect(result).toMatchObject({ ok: false, failure: 'no_output', retryable: false, sessionId: 's-1' });
    expect(result.error).toContain('reported no result text');
  });

  it('falls back to the stdout text when a structured CLI printed no structured result', async () => {
    const definition: CliDefinition = { command: process.execPath, args: ['-e', 'console.log("plain answer")'], output: 'codex-jsonl' };
    expect(await run(definition)).toMatchObject({ ok: true, text: 'plain answer' });
  });

  it('a Codex run without network ends by timeout with its last error line (recorded)', async () => {
    const definition = replay('codex-jsonl', {
      stdout: 'codex/no-network.jsonl',
      stderr: 'codex/no-network.stderr.txt',
      extra: ['--tick', '100', '--tick-line', '{"type":"error","message":"Reconnecting... waiting for network (Connection failed: error sending request)"}'],
    });
    const result = await run(definition, { timeoutMs: 600, killGraceMs: 1_000 });
    expect(result).toMatchObject({ ok: false, failure: 'timeout', retryable: true, sessionId: '01a214a4-e801-7750-88cc-3e235f8781f0' });
    expect(result.error).toMatch(/timed out after 600ms \(stopped with SIGTERM\); last error: Reconnecting\.\.\. waiting for network \(Connection failed: error sending request\)$/);
  });

  it('reads the structured result after many megabytes of other events, in bounded memory', async () => {
    const filler = JSON.stringify({ type: 'item.completed', item: { id: 'item_x', type: 'command_execution', aggregated_output: 'y'.repeat(4000), exit_code: 0 } });
    const definition = replay('codex-jsonl', { stdout: 'codex/success.jsonl', extra: ['--filler-bytes', String(30 * 1024 * 1024), '--filler-line', filler] });
    const gc = exposeGc();
    gc();
    const before = memory();
    let peak = before;
    const sampler = setInterval(() => {
      gc();
      peak = Math.max(peak, memory());
    }, 20);
    let result: CliRunResult;
    try {
      result = await run(definition);
    } finally {
      clearInterval(sampler);
    }
    expect(result).toMatchObject({ ok: true, text: 'Implemented the auth endpoints; all 12 auth tests pass.', sessionId: '0199a7c2-4e1b-7d30-9f55-6b2e8a1c4d90' });
    expect(result.usage?.outputTokens).toBe(1840);
    expect(result.stdout.length).toBeLessThanOrEqual(64 * 1024);
    expect((await stat(join(dir, 'logs', 'task.log'))).size).toBeGreaterThan(30 * 1024 * 1024);
    expect(peak - before).toBeLessThan(12 * 1024 * 1024);
  }, 60_000);

  it('refuses an unknown output format', async () => {
    await expect(run({ command: process.execPath, output: 'xml' as OutputFormat })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

/** Heap plus Buffer memory: output chunks live outside the JS heap, in ArrayBuffers. */
function memory(): number {
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** A `gc()` that frees dead Buffers before returning (see cli.test.ts). */
function exposeGc(): () => void {
  v8.setFlagsFromString('--expose-gc');
  v8.setFlagsFromString('--no-concurrent-array-buffer-sweeping');
  return vm.runInNewContext('gc') as () => void;
}
