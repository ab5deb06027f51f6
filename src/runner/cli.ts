/**
 * Running one task through an agent CLI: building the command line (never a shell), delivering
 * the prompt on stdin, as an argument or in a file, streaming output to the task's log, keeping
 * only bounded tails in memory, and stopping the whole process group on timeout or abort.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { mkdir, open, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { CliNotFoundError, InvalidArgumentError } from '../errors.js';
import { classifyMessage, isRetryable, type FailureClass } from './failure.js';
import { createParser, isOutputFormat, OUTPUT_FORMATS, type CliErrorKind, type CliUsage, type OutputFormat, type OutputParser, type ParsedOutput } from './parsers/index.js';
import { LineSplitter } from './parsers/lines.js';
import type { OutputChunk, ProcessExit, ProcessRunner, ProcessSpec, RunningProcess } from './process-runner.js';

/**
 * How a CLI receives its prompt: on stdin, as a command-line argument, or in a file whose path is
 * an argument.
 *
 * @example
 * ```ts
 * import type { PromptMode } from 'tinytown';
 * const mode: PromptMode = 'file';
 * ```
 */
export type PromptMode = 'stdin' | 'arg' | 'file';

/**
 * A custom or preset command line. `args` may contain the placeholders `{prompt}` (arg mode) and
 * `{promptFile}` (file mode); when absent, the prompt/path is appended as the last argument.
 * A placeholder may also sit inside an argument (`--message={prompt}`).
 *
 * @example
 * ```ts
 * import type { CliDefinition } from 'tinytown';
 * const aider: CliDefinition = { command: 'aider', args: ['--yes-always', '--message-file', '{promptFile}'], prompt: 'file' };
 * const gemini: CliDefinition = { command: 'gemini', args: ['-p'], prompt: 'arg' }; // prompt appended
 * const claude: CliDefinition = {
 *   command: 'claude',
 *   args: ['-p', '--output-format', 'json'],
 *   output: 'claude-json',
 *   resumeArgs: ['-p', '--output-format', 'json', '--resume', '{sessionId}'],
 * };
 * ```
 */
export interface CliDefinition {
  /** Executable name (looked up on PATH) or path. */
  command: string;
  /** Arguments, passed literally apart from the placeholders. */
  args?: readonly string[];
  /** How the prompt is delivered; default `'stdin'`. */
  prompt?: PromptMode;
  /**
   * How the output is read back: `'text'` (the default) takes stdout as the result; a parser name
   * from {@link OUTPUT_FORMATS} reads the CLI's structured output (result, session id, usage).
   */
  output?: OutputFormat;
  /**
   * Environment defaults for this CLI (OpenCode's `OPENCODE_PERMISSION`, say). The run's own
   * environment wins on a conflict, so an agent's `env` can still override them.
   */
  env?: Readonly<Record<string, string>>;
  /**
   * Arguments (replacing `args`) that start a new session with an id chosen by the caller, the
   * placeholder `{sessionId}` standing for it; see `withSession()`.
   */
  sessionArgs?: readonly string[];
  /** Arguments (replacing `args`) that continue the session `{sessionId}`; see `withSession()`. */
  resumeArgs?: readonly string[];
  /**
   * Arguments appended when a run has a cost budget, `{maxBudgetUsd}` standing for what is
   * left of it in US dollars (Claude Code: `['--max-budget-usd', '{maxBudgetUsd}']`); see
   * `withBudget()`.
   */
  budgetArgs?: readonly string[];
  /**
   * Arguments appended when the agent has town tools (`tools` in its options), so the CLI
   * loads tinytown's MCP server for the run; see `tinytown/mcp`. Placeholders: `{mcpConfig}`,
   * the path of a per-run JSON file `{"mcpServers": {"tinytown": {"type": "stdio", "command",
   * "args", "env"}}}` (the format Claude Code, Copilot CLI and Auggie read); `{mcpCommand}` and
   * `{mcpScript}`, the server's command (this Node) and script; `{mcpSocket}` and `{mcpToken}`,
   * the run's socket and token. Each also as `{…Json}` (`{mcpScriptJson}`), JSON-quoted. The CLI's
   * environment always holds `TINYTOWN_MCP_SOCKET` and `TINYTOWN_MCP_TOKEN` for the run.
   */
  mcpArgs?: readonly string[];
  /**
   * Environment set when the agent has town tools (same placeholders as `mcpArgs`), for CLIs
   * that read MCP servers from the environment (OpenCode's `OPENCODE_CONFIG_CONTENT`). It wins
   * over the agent's own `env`. A CLI with neither `mcpArgs` nor `mcpEnv` cannot have tools.
   */
  mcpEnv?: Readonly<Record<string, string>>;
}

/**
 * One run of a CLI for one task.
 *
 * @example
 * ```ts
 * import { defaultRunner, type CliRunRequest } from 'tinytown';
 * const request: CliRunRequest = {
 *   definition: { command: 'claude', args: ['-p', '--output-format', 'json'] },
 *   prompt: 'Design auth API schema',
 *   env: { ...process.env } as Record<string, string>,
 *   logFile: '.tt/logs/designer/1234.log',
 *   promptDir: '.tt/prompts',
 *   runner: defaultRunner,
 *   timeoutMs: 30 * 60_000,
 * };
 * ```
 */
export interface CliRunRequest {
  /** The command line to run (a preset, or your own). */
  definition: CliDefinition;
  /** The prompt, delivered as `definition.prompt` says. */
  prompt: string;
  /** Working directory of the process (default: this process's). */
  cwd?: string;
  /** The complete environment of the child. */
  env: Readonly<Record<string, string>>;
  /** stdout and stderr are appended here, raw (its folder is created). */
  logFile: string;
  /** Where file-mode prompt files go; each is deleted after its run. */
  promptDir: string;
  /** What starts the process ({@link defaultRunner}: a local child process). */
  runner: ProcessRunner;
  /** Abort → SIGTERM to the process group, then SIGKILL after `killGraceMs`. */
  signal?: AbortSignal;
  /** Same escalation as an abort once this long has passed. */
  timeoutMs?: number;
  /** Time between SIGTERM and SIGKILL; default 5 000 ms. */
  killGraceMs?: number;
  /** Bytes of each stream kept in memory (the rest is only in the log); default 64 KiB. */
  tailBytes?: number;
  /**
   * No output on stdout or stderr for this long → the group is stopped as on a timeout and the
   * run fails as `stalled`. Off by default: some CLIs think silently for minutes.
   */
  stallMs?: number;
}

/**
 * The outcome of {@link runCli}, normalized across CLIs. It never throws for the CLI's failures:
 * they are described here.
 *
 * @example
 * ```ts
 * const result = await runCli(request);
 * if (result.ok) console.log(result.text, result.sessionId, result.usage?.costUsd);
 * else if (result.retryable) console.warn(`${result.failure}: will retry`, result.error);
 * else console.error(result.failure, result.error); // not_authenticated: claude not authenticated: Not logged in · …
 * ```
 */
export interface CliRunResult {
  /** Exit code 0, no failure reported by the CLI, and a result (a clean exit with no output is a failure). */
  ok: boolean;
  /**
   * The result: for `'text'` output the stdout tail, trimmed; for a parsed format the result text
   * the CLI reported (Claude's `result`, Codex's last agent message…), or the stdout tail when its
   * output held no structured result.
   */
  text: string;
  /** The raw stdout tail, trimmed. */
  stdout: string;
  /** The stderr tail, trimmed (for parsers of CLIs that report errors there). */
  stderr: string;
  /** Why it failed, naming the cause and quoting the CLI's own last words. */
  error?: string;
  /** The failure's category; absent when `ok`. */
  failure?: FailureClass;
  /** Same as `failure` (its former name). */
  reason?: FailureClass;
  /** Whether another attempt may succeed (rate limit, timeout, stall, signal, network); false when `ok`. */
  retryable: boolean;
  /** The CLI's session id, where it reports one (also on failure: a session may be resumed). */
  sessionId?: string;
  /** Tokens and cost, where the CLI reports them (also on failure: the tokens were spent). */
  usage?: CliUsage;
  /** How the process ended. */
  exit: ProcessExit;
  /** Wall-clock time of the run. */
  durationMs: number;
}

const DEFAULT_KILL_GRACE_MS = 5_000;
const DEFAULT_TAIL_BYTES = 64 * 1024;
/** After the leader exits, how long its leftovers may keep the output pipes open. */
const LEFTOVER_SETTLE_MS = 250;
/** After SIGKILL to the group, how long the pipes may stay silent before we stop reading them. */
const ABANDON_AFTER_KILL_MS = 1_000;
/** setTimeout fires at once (with a warning) above this; longer waits are clamped to it. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Lines of the CLI's last words quoted in `error`. */
const LAST_WORDS_LINES = 12;
const LAST_WORDS_CHARS = 2_000;

/**
 * Runs `request.definition` once with `request.prompt` and resolves when the process has exited.
 *
 * The prompt is data only: the command is started without a shell, so `$(…)`, backticks, quotes
 * and newlines reach the CLI byte for byte. Output goes raw to `logFile` after a header line
 * naming the command (an argument prompt is elided); memory holds only `tailBytes` of each stream.
 * On timeout or abort the whole process group receives SIGTERM, then SIGKILL after
 * `killGraceMs`. If the CLI exits while processes it started still hold its output open, those are
 * stopped the same way. Resolves, never rejects, except for invalid options.
 *
 * @example
 * ```ts
 * import { runCli, defaultRunner } from 'tinytown';
 * const result = await runCli({
 *   definition: { command: 'codex', args: ['exec', '--json', '--skip-git-repo-check', '-'] },
 *   prompt: 'Implement auth endpoints',
 *   env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' },
 *   logFile: '.tt/logs/backend/task-1.log',
 *   promptDir: '.tt/prompts',
 *   runner: defaultRunner,
 *   timeoutMs: 20 * 60_000,
 * });
 * if (result.reason === 'not_found') console.error(result.error); // CLI_NOT_FOUND: "codex" …
 * ```
 */
export async function runCli(request: CliRunRequest): Promise<CliRunResult> {
  const options = validate(request);
  const startedAt = performance.now();
  if (request.signal?.aborted) return notStarted('aborted', `aborted before start${abortReason(request.signal)}`, startedAt);

  let invocation: Invocation;
  try {
    invocation = await prepare(request);
  } catch (err) {
    return notStarted('spawn', `could not prepare the run of ${quote(request.definition.command)}: ${message(err)}`, startedAt);
  }
  try {
    return await supervise(request, options, invocation, startedAt);
  } finally {
    await invocation.cleanup();
  }
}

interface Options {
  killGraceMs: number;
  tailBytes: number;
  timeoutMs: number | undefined;
  stallMs: number | undefined;
  output: OutputFormat;
}

function validate(request: CliRunRequest): Options {
  if (typeof request.definition?.command !== 'string' || request.definition.command.length === 0)
    throw new InvalidArgumentError('definition.command must be a non-empty string');
  const mode = request.definition.prompt ?? 'stdin';
  if (mode !== 'stdin' && mode !== 'arg' && mode !== 'file')
    throw new InvalidArgumentError(`definition.prompt must be 'stdin', 'arg' or 'file', not ${JSON.stringify(mode)}`);
  const output = request.definition.output ?? 'text';
  if (!isOutputFormat(output))
    throw new InvalidArgumentError(`definition.output must be one of ${OUTPUT_FORMATS.join(', ')}, not ${JSON.stringify(output)}`);
  return {
    killGraceMs: nonNegative('killGraceMs', request.killGraceMs ?? DEFAULT_KILL_GRACE_MS),
    tailBytes: positive('tailBytes', request.tailBytes ?? DEFAULT_TAIL_BYTES),
    timeoutMs: request.timeoutMs === undefined ? undefined : positive('timeoutMs', request.timeoutMs),
    stallMs: request.stallMs === undefined ? undefined : positive('stallMs', request.stallMs),
    output,
  };
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got ${value}`);
  return Math.min(value, MAX_TIMER_MS);
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) throw new InvalidArgumentError(`${name} must be a non-negative number, got ${value}`);
  return Math.min(value, MAX_TIMER_MS);
}

// ---------------------------------------------------------------------------------------------
// Preparing the command line, the prompt file and the log

interface Invocation {
  spec: ProcessSpec;
  log: LogWriter;
  cleanup(): Promise<void>;
}

async function prepare(request: CliRunRequest): Promise<Invocation> {
  const { definition, prompt } = request;
  const mode = definition.prompt ?? 'stdin';
  const template = definition.args ?? [];
  let promptFile: string | undefined;
  const log = await LogWriter.open(request.logFile);
  try {
    const elided = `<prompt: ${Buffer.byteLength(prompt)} bytes>`;
    let args: string[];
    let shown: string;
    if (mode === 'arg') {
      args = fill(template, '{prompt}', prompt);
      shown = commandLine(definition.command, fill(template, '{prompt}', ELIDED)).split(ELIDED).join(elided);
    } else if (mode === 'file') {
      promptFile = await writePromptFile(request.promptDir, prompt);
      args = fill(template, '{promptFile}', promptFile);
      shown = commandLine(definition.command, args);
    } else {
      args = [...template];
      shown = `${commandLine(definition.command, args)} < ${elided}`;
    }
    // The definition's env holds defaults; the run's environment (agent env included) wins.
    const env = definition.env ? { ...definition.env, ...request.env } : request.env;
    const spec: ProcessSpec = { command: definition.command, args, env };
    if (request.cwd !== undefined) spec.cwd = request.cwd;
    if (mode === 'stdin') spec.stdin = prompt;
    await log.write(Buffer.from(headerLine(shown, request.cwd)));
    const file = promptFile;
    return {
      spec,
      log,
      async cleanup() {
        await log.close();
        if (file !== undefined) await rm(file, { force: true }).catch(() => {});
      },
    };
  } catch (err) {
    await log.close();
    if (promptFile !== undefined) await rm(promptFile, { force: true }).catch(() => {});
    throw err;
  }
}

/** Substitutes `token` in every argument, or appends `value` when no argument mentions it. */
function fill(template: readonly string[], token: string, value: string): string[] {
  // split/join rather than String#replace: a replacement string would interpret `$&`, `$'`…
  // and the prompt is hostile input.
  if (!template.some((arg) => arg.includes(token))) return [...template, value];
  return template.map((arg) => arg.split(token).join(value));
}

async function writePromptFile(promptDir: string, prompt: string): Promise<string> {
  await mkdir(promptDir, { recursive: true, mode: 0o700 });
  const file = join(promptDir, `prompt-${randomUUID()}.md`);
  await writeFile(file, prompt, { mode: 0o600, flag: 'wx' });
  return file;
}

/** Stands for the prompt in the logged command line (plain word characters: never quoted). */
const ELIDED = 'TINYTOWN_ELIDED_PROMPT_7f3a';

function headerLine(commandLine: string, cwd: string | undefined): string {
  const where = cwd === undefined ? '' : ` (cwd ${quote(cwd)})`;
  return `# ${new Date().toISOString()}${where} $ ${commandLine}\n`;
}

function commandLine(command: string, args: readonly string[]): string {
  return [command, ...args].map(quote).join(' ');
}

/** Quotes for display only (one log line, control characters escaped); no shell ever parses it. */
function quote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : JSON.stringify(word);
}

/** Appends to the task log; after a write error it stops logging rather than failing the task. */
class LogWriter {
  private lastByte = 0x0a;
  private broken = false;

  private constructor(private readonly handle: FileHandle) {}

  static async open(path: string): Promise<LogWriter> {
    // The folder exists after an agent's first task: create it only when the open says so.
    const handle = await open(path, 'a').catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      await mkdir(dirname(path), { recursive: true });
      return open(path, 'a');
    });
    return new LogWriter(handle);
  }

  async write(data: Buffer): Promise<void> {
    if (this.broken || data.length === 0) return;
    try {
      await this.handle.writeFile(data); // unlike write(), loops over partial writes
      this.lastByte = data[data.length - 1] ?? this.lastByte;
    } catch {
      this.broken = true;
    }
  }

  /** A footer on its own line, so the raw output above it is never glued to it. */
  async footer(text: string): Promise<void> {
    await this.write(Buffer.from(`${this.lastByte === 0x0a ? '' : '\n'}# ${text}\n`));
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Supervising the process

async function supervise(
  request: CliRunRequest,
  options: Options,
  invocation: Invocation,
  startedAt: number,
): Promise<CliRunResult> {
  const { spec, log } = invocation;
  const proc = startSafely(request.runner, spec);
  const stop = new Stopper(proc, options.killGraceMs);
  const tails = { stdout: new Tail(options.tailBytes), stderr: new Tail(options.tailBytes) };
  const reader = new StructuredReader(options.output);

  let exit: ProcessExit | undefined;
  const exited = proc.exited.then((value) => {
    exit = value;
    stop.leaderExited();
    return value;
  });
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => exit === undefined && stop.stop('timeout'), options.timeoutMs);
  // Re-armed on every chunk with refresh(): cheaper than a new timer per chunk.
  const stallTimer =
    options.stallMs === undefined
      ? undefined
      : setTimeout(() => exit === undefined && stop.stop('stalled'), options.stallMs);
  const onAbort = (): void => {
    if (exit === undefined) stop.stop('aborted');
  };
  request.signal?.addEventListener('abort', onAbort, { once: true });
  if (request.signal?.aborted) onAbort(); // aborted while the run was being prepared

  try {
    // A custom runner's output may fail; the process still has to be waited for.
    const outputError = await pump(proc.output, stop.abandoned, async (chunk) => {
      stop.outputSeen();
      stallTimer?.refresh();
      tails[chunk.stream].push(chunk.data);
      reader.push(chunk);
      await log.write(chunk.data);
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    const finalExit = await exited;
    const durationMs = Math.round(performance.now() - startedAt);
    if (outputError !== undefined) await log.footer(`reading the output failed: ${message(outputError)}`);
    await log.footer(`exit code=${finalExit.code} signal=${finalExit.signal}${finalExit.spawnError ? ` error=${finalExit.spawnError.code}` : ''} after ${durationMs}ms`);
    return await outcome({ request, options, exit: finalExit, stop, tails, parsed: reader.finish(), durationMs });
  } finally {
    if (timer) clearTimeout(timer);
    if (stallTimer) clearTimeout(stallTimer);
    request.signal?.removeEventListener('abort', onAbort);
    stop.dispose();
  }
}

/** A custom runner that throws despite the contract still yields a result, not a rejection. */
function startSafely(runner: ProcessRunner, spec: ProcessSpec): RunningProcess {
  try {
    return runner.start(spec);
  } catch (err) {
    const spawnError = err instanceof Error ? (err as NodeJS.ErrnoException) : new Error(String(err));
    return {
      pid: undefined,
      output: (async function* () {})(),
      exited: Promise.resolve({ code: null, signal: null, spawnError }),
      kill() {},
    };
  }
}

/** Reads `output` to its end, one chunk at a time (so a slow log slows the child, not memory). */
async function pump(
  output: AsyncIterable<OutputChunk>,
  giveUp: AbortSignal,
  onChunk: (chunk: OutputChunk) => Promise<void>,
): Promise<void> {
  const iterator = output[Symbol.asyncIterator]();
  for (;;) {
    const next = giveUp.aborted ? 'abandoned' : await nextOrGiveUp(iterator, giveUp);
    if (next === 'abandoned') {
      // Something outside the process group still holds the pipes; stop waiting for it.
      void iterator.return?.()?.catch(() => {});
      return;
    }
    if (next.done) return;
    await onChunk(next.value);
  }
}

/**
 * One `next()`, cut short by `giveUp`. Not `Promise.race` with a long-lived promise: every race
 * would stay subscribed to it and keep its settled chunk reachable, i.e. the whole output.
 */
function nextOrGiveUp(
  iterator: AsyncIterator<OutputChunk>,
  giveUp: AbortSignal,
): Promise<IteratorResult<OutputChunk> | 'abandoned'> {
  return new Promise((resolve, reject) => {
    const onGiveUp = (): void => resolve('abandoned');
    giveUp.addEventListener('abort', onGiveUp, { once: true });
    iterator.next().then(
      (result) => {
        giveUp.removeEventListener('abort', onGiveUp);
        resolve(result);
      },
      (err: unknown) => {
        giveUp.removeEventListener('abort', onGiveUp);
        reject(err);
      },
    );
  });
}

type StopReason = 'timeout' | 'aborted' | 'stalled';

/** SIGTERM to the group, SIGKILL after the grace period, with the timers owned in one place. */
class Stopper {
  reason: StopReason | undefined;
  escalated = false;
  private terminating = false;
  private readonly giveUp = new AbortController();
  private readonly timers = new Set<NodeJS.Timeout>();
  private lastOutputAt = 0;

  constructor(
    private readonly proc: RunningProcess,
    private readonly graceMs: number,
  ) {}

  /** Fires when the output pipes are still open well after SIGKILL: stop reading them. */
  get abandoned(): AbortSignal {
    return this.giveUp.signal;
  }

  /** Timeout, stall or abort while the CLI runs. */
  stop(reason: StopReason): void {
    if (this.reason) return;
    this.reason = reason;
    this.terminate();
  }

  /**
   * The CLI exited. Whatever it started and left holding the output pipes (a grandchild in its
   * group) would keep the run open forever: give it a moment, then stop the group.
   */
  leaderExited(): void {
    this.after(LEFTOVER_SETTLE_MS, () => this.terminate());
  }

  /** Output is still flowing: not the moment to give up on the pipes. */
  outputSeen(): void {
    this.lastOutputAt = performance.now();
  }

  dispose(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private terminate(): void {
    if (this.terminating) return;
    this.terminating = true;
    this.proc.kill('SIGTERM');
    this.after(this.graceMs, () => {
      this.escalated = true;
      this.proc.kill('SIGKILL');
      this.giveUpWhenQuiet();
    });
  }

  /** Stop reading only after a quiet spell, so a slow log write never loses the final output. */
  private giveUpWhenQuiet(): void {
    this.after(ABANDON_AFTER_KILL_MS, () => {
      if (performance.now() - this.lastOutputAt >= ABANDON_AFTER_KILL_MS) this.giveUp.abort();
      else this.giveUpWhenQuiet();
    });
  }

  private after(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }
}

/** The last `capacity` bytes of a stream, plus whether it ever carried non-whitespace. */
class Tail {
  private parts: Buffer[] = [];
  private size = 0;
  private sawText = false;

  constructor(private readonly capacity: number) {}

  get hasText(): boolean {
    return this.sawText;
  }

  push(data: Buffer): void {
    if (!this.sawText) this.sawText = hasNonWhitespace(data);
    if (data.length >= this.capacity) {
      // Copy: a subarray would pin the whole (possibly large) chunk in memory.
      this.parts = [Buffer.from(data.subarray(data.length - this.capacity))];
      this.size = this.capacity;
      return;
    }
    this.parts.push(data);
    this.size += data.length;
    while (this.size > this.capacity) this.dropFront(this.size - this.capacity);
  }

  text(): string {
    const buffer = Buffer.concat(this.parts, this.size);
    // The cut may have split a UTF-8 character: skip its continuation bytes.
    let start = 0;
    while (start < 3 && start < buffer.length && ((buffer[start] ?? 0) & 0xc0) === 0x80) start += 1;
    return buffer.subarray(start).toString('utf8');
  }

  private dropFront(excess: number): void {
    const first = this.parts[0];
    if (!first) return;
    if (first.length <= excess) {
      this.parts.shift();
      this.size -= first.length;
    } else {
      this.parts[0] = Buffer.from(first.subarray(excess));
      this.size -= excess;
    }
  }
}

function hasNonWhitespace(data: Buffer): boolean {
  for (const byte of data) {
    if (byte !== 0x20 && (byte < 0x09 || byte > 0x0d)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Reading structured output as it streams

/**
 * Feeds both streams, line by line, to the parser the output format names, so that a result at
 * the end of many megabytes is still read while only one line at a time is held. Plain text
 * needs no parser: its result is the stdout tail.
 */
class StructuredReader {
  private parser: OutputParser | undefined;
  private readonly lines: Record<OutputChunk['stream'], LineSplitter> | undefined;

  constructor(format: OutputFormat) {
    if (format === 'text') return;
    this.parser = createParser(format);
    this.lines = {
      stdout: new LineSplitter((line) => this.feed(line, 'stdout')),
      stderr: new LineSplitter((line) => this.feed(line, 'stderr')),
    };
  }

  push(chunk: OutputChunk): void {
    if (this.parser) this.lines?.[chunk.stream].push(chunk.data);
  }

  finish(): ParsedOutput | undefined {
    this.lines?.stdout.end();
    this.lines?.stderr.end();
    try {
      return this.parser?.finish();
    } catch {
      return undefined; // a parser bug must not lose the run: judge it as plain text
    }
  }

  private feed(line: string, stream: OutputChunk['stream']): void {
    try {
      this.parser?.line(line, stream);
    } catch {
      this.parser = undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Judging the outcome

interface OutcomeInput {
  request: CliRunRequest;
  options: Options;
  exit: ProcessExit;
  stop: Stopper;
  tails: { stdout: Tail; stderr: Tail };
  /** Undefined for plain text output. */
  parsed: ParsedOutput | undefined;
  durationMs: number;
}

interface Failure {
  failure: FailureClass;
  kind?: CliErrorKind | undefined;
  error: string;
}

async function outcome(input: OutcomeInput): Promise<CliRunResult> {
  const { exit, tails, parsed, durationMs } = input;
  const stdout = tails.stdout.text().trim();
  const stderr = tails.stderr.text().trim();
  const text = resultText(parsed, stdout);
  const base = {
    text,
    stdout,
    stderr,
    exit,
    durationMs,
    ...(parsed?.sessionId !== undefined && { sessionId: parsed.sessionId }),
    ...(parsed?.usage !== undefined && { usage: parsed.usage }),
  };
  const found = await describeFailure(input, { text, stdout, stderr });
  if (!found) return { ok: true, retryable: false, ...base };
  const error = `${found.error}${hint(stderr, stdout)}`;
  return { ok: false, ...base, failure: found.failure, reason: found.failure, retryable: isRetryable(found.failure, found.kind), error };
}

/** The parsed result text; the stdout tail for plain text or output without a result record. */
function resultText(parsed: ParsedOutput | undefined, stdout: string): string {
  if (parsed === undefined) return stdout;
  if (parsed.text !== undefined) return parsed.text.trim();
  return parsed.recognized ? '' : stdout;
}

async function describeFailure(input: OutcomeInput, out: { text: string; stdout: string; stderr: string }): Promise<Failure | undefined> {
  const { request, options, exit, stop, tails, parsed } = input;
  if (exit.spawnError) {
    const spawn = await spawnFailure(request, exit.spawnError);
    // A process that never started has no last words to quote.
    return { failure: spawn.reason, error: spawn.reason === 'not_found' ? spawn.cause : `${quote(request.definition.command)} ${spawn.cause}` };
  }
  const command = quote(request.definition.command);
  const cliSaid = parsed?.error?.trim() || undefined;
  // The CLI's own last error where its output names one, else its last lines.
  const words = cliSaid !== undefined ? `; last error: ${cliSaid}` : lastWords(out.stderr, out.stdout);
  if (stop.reason === 'timeout') return { failure: 'timeout', error: `${command} timed out after ${options.timeoutMs}ms${howStopped(stop, options)}${words}` };
  if (stop.reason === 'stalled')
    return { failure: 'stalled', error: `${command} stalled: no output for ${options.stallMs}ms${howStopped(stop, options)}${words}` };
  if (stop.reason === 'aborted') return { failure: 'aborted', error: `${command} was aborted${abortReason(request.signal)}${howStopped(stop, options)}${words}` };
  if (exit.signal) return { failure: 'signal', error: `${command} was killed by ${exit.signal}${words}` };

  const reported = parsed?.failed === true;
  if (reported || exit.code !== 0) {
    const kind =
      parsed?.errorKind ?? classifyMessage(cliSaid) ?? classifyMessage(lastLines(out.stderr)) ?? (cliSaid ? undefined : classifyMessage(lastLines(out.stdout)));
    const status = exit.code !== 0 ? ` (exit code ${exit.code})` : '';
    const quoted = cliSaid ?? (lastLines(out.stderr) || lastLines(out.stdout) || 'it printed nothing');
    if (kind === 'auth') return { failure: 'not_authenticated', kind, error: `${command} not authenticated: ${quoted}${status}` };
    if (kind === 'rate_limit') return { failure: 'rate_limited', kind, error: `${command} was rate limited: ${quoted}${status}` };
    if (reported) return { failure: 'cli_error', kind, error: `${command} reported an error: ${quoted}${status}` };
    return { failure: 'exit', kind, error: `${command} exited with code ${exit.code}${words}` };
  }
  if (!tails.stdout.hasText) return { failure: 'no_output', error: `${command} exited with code 0 but printed nothing on stdout${words}` };
  if (out.text.length === 0) return { failure: 'no_output', error: `${command} exited with code 0 but reported no result text${words}` };
  return undefined;
}

async function spawnFailure(
  request: CliRunRequest,
  err: NodeJS.ErrnoException,
): Promise<{ reason: 'not_found' | 'spawn'; cause: string }> {
  if (err.code === 'ENOENT') {
    // spawn reports a missing working directory as ENOENT too; do not blame the binary for it.
    if (request.cwd !== undefined && !(await isDirectory(request.cwd)))
      return { reason: 'spawn', cause: `could not start: working directory ${quote(request.cwd)} does not exist` };
    return {
      reason: 'not_found',
      cause: `${CliNotFoundError.code}: ${JSON.stringify(request.definition.command)} was not found (not installed or not on PATH); install it or fix PATH`,
    };
  }
  if (err.code === 'EACCES') return { reason: 'spawn', cause: `could not start: permission denied (is it executable?)` };
  if (err.code === 'E2BIG') return { reason: 'spawn', cause: `could not start: the arguments are too long (E2BIG); deliver the prompt on stdin or in a file` };
  return { reason: 'spawn', cause: `could not start: ${err.code ?? ''}${err.code ? ' ' : ''}${err.message}` };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function howStopped(stop: Stopper, options: Options): string {
  return stop.escalated
    ? ` (still running ${options.killGraceMs}ms after SIGTERM; killed with SIGKILL)`
    : ' (stopped with SIGTERM)';
}

/** The CLI's last lines: stderr if it said anything, else stdout (some CLIs report errors there). */
function lastWords(stderr: string, stdout: string): string {
  const source = stderr.length > 0 ? { name: 'stderr', text: stderr } : { name: 'stdout', text: stdout };
  if (source.text.length === 0) return '; it printed nothing';
  return `; last ${source.name}:\n${lastLines(source.text)}`;
}

/** The last lines of a tail, bounded for quoting in an error. */
function lastLines(text: string): string {
  let lines = text.split(/\r?\n/).slice(-LAST_WORDS_LINES).join('\n').trim();
  if (lines.length > LAST_WORDS_CHARS) lines = `…${lines.slice(-LAST_WORDS_CHARS)}`;
  return lines;
}

/** Known messages that deserve a word on what to do. */
const HINTS: ReadonlyArray<readonly [RegExp, string]> = [
  [
    /cannot be used with root\/sudo privileges/,
    'Claude Code refuses --dangerously-skip-permissions (and --permission-mode bypassPermissions) as root: run the agent as a non-root user, set IS_SANDBOX=1 inside a sandbox, or use the claude preset (--permission-mode acceptEdits with --allowedTools)',
  ],
  [/Not inside a trusted directory and --skip-git-repo-check was not specified/, 'pass --skip-git-repo-check to codex exec (the codex presets do), or run it inside a git repository'],
];

function hint(stderr: string, stdout: string): string {
  for (const [pattern, advice] of HINTS) if (pattern.test(stderr) || pattern.test(stdout)) return `\nhint: ${advice}`;
  return '';
}

function abortReason(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  if (reason === undefined) return '';
  if (reason instanceof Error) return reason.name === 'AbortError' ? '' : `: ${reason.message}`;
  return `: ${String(reason)}`;
}

function notStarted(reason: 'aborted' | 'spawn', error: string, startedAt: number): CliRunResult {
  return {
    ok: false,
    text: '',
    stdout: '',
    stderr: '',
    error,
    failure: reason,
    reason,
    retryable: false,
    exit: { code: null, signal: null },
    durationMs: Math.round(performance.now() - startedAt),
  };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
