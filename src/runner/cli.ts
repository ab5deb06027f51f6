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
 * ```
 */
export interface CliDefinition {
  /** Executable name (looked up on PATH) or path. */
  command: string;
  /** Arguments, passed literally apart from the placeholders. */
  args?: readonly string[];
  /** How the prompt is delivered; default `'stdin'`. */
  prompt?: PromptMode;
  /** How stdout is interpreted; `'text'` (the default) takes it as the result. */
  output?: 'text';
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
  definition: CliDefinition;
  prompt: string;
  cwd?: string;
  /** The complete environment of the child. */
  env: Readonly<Record<string, string>>;
  /** stdout and stderr are appended here, raw (its folder is created). */
  logFile: string;
  /** Where file-mode prompt files go; each is deleted after its run. */
  promptDir: string;
  runner: ProcessRunner;
  /** Abort → SIGTERM to the process group, then SIGKILL after `killGraceMs`. */
  signal?: AbortSignal;
  /** Same escalation as an abort once this long has passed. */
  timeoutMs?: number;
  /** Time between SIGTERM and SIGKILL; default 5 000 ms. */
  killGraceMs?: number;
  /** Bytes of each stream kept in memory (the rest is only in the log); default 64 KiB. */
  tailBytes?: number;
}

/**
 * The outcome of {@link runCli}. It never throws for the CLI's failures: they are described here.
 *
 * @example
 * ```ts
 * const result = await runCli(request);
 * if (!result.ok) console.error(result.reason, result.error);
 * else console.log(result.text);
 * ```
 */
export interface CliRunResult {
  /** Exit code 0 and some stdout (a clean exit with no output is a failure). */
  ok: boolean;
  /** The stdout tail, trimmed. */
  text: string;
  /** The stderr tail, trimmed (for parsers of CLIs that report errors there). */
  stderr: string;
  /** Why it failed, naming the cause and the CLI's last words. */
  error?: string;
  /** The failure's category; absent when `ok`. */
  reason?: 'not_found' | 'exit' | 'signal' | 'timeout' | 'aborted' | 'no_output' | 'spawn';
  exit: ProcessExit;
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
}

function validate(request: CliRunRequest): Options {
  if (typeof request.definition?.command !== 'string' || request.definition.command.length === 0)
    throw new InvalidArgumentError('definition.command must be a non-empty string');
  const mode = request.definition.prompt ?? 'stdin';
  if (mode !== 'stdin' && mode !== 'arg' && mode !== 'file')
    throw new InvalidArgumentError(`definition.prompt must be 'stdin', 'arg' or 'file', not ${JSON.stringify(mode)}`);
  return {
    killGraceMs: nonNegative('killGraceMs', request.killGraceMs ?? DEFAULT_KILL_GRACE_MS),
    tailBytes: positive('tailBytes', request.tailBytes ?? DEFAULT_TAIL_BYTES),
    timeoutMs: request.timeoutMs === undefined ? undefined : positive('timeoutMs', request.timeoutMs),
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
    const spec: ProcessSpec = { command: definition.command, args, env: request.env };
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
    await mkdir(dirname(path), { recursive: true });
    return new LogWriter(await open(path, 'a'));
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
  const onAbort = (): void => {
    if (exit === undefined) stop.stop('aborted');
  };
  request.signal?.addEventListener('abort', onAbort, { once: true });
  if (request.signal?.aborted) onAbort(); // aborted while the run was being prepared

  try {
    // A custom runner's output may fail; the process still has to be waited for.
    const outputError = await pump(proc.output, stop.abandoned, async (chunk) => {
      stop.outputSeen();
      tails[chunk.stream].push(chunk.data);
      await log.write(chunk.data);
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    const finalExit = await exited;
    const durationMs = Math.round(performance.now() - startedAt);
    if (outputError !== undefined) await log.footer(`reading the output failed: ${message(outputError)}`);
    await log.footer(`exit code=${finalExit.code} signal=${finalExit.signal}${finalExit.spawnError ? ` error=${finalExit.spawnError.code}` : ''} after ${durationMs}ms`);
    return await outcome({ request, options, exit: finalExit, stop, tails, durationMs });
  } finally {
    if (timer) clearTimeout(timer);
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

type StopReason = 'timeout' | 'aborted';

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

  /** Timeout or abort while the CLI runs. */
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
// Judging the outcome

interface OutcomeInput {
  request: CliRunRequest;
  options: Options;
  exit: ProcessExit;
  stop: Stopper;
  tails: { stdout: Tail; stderr: Tail };
  durationMs: number;
}

async function outcome(input: OutcomeInput): Promise<CliRunResult> {
  const { request, exit, tails, durationMs } = input;
  const text = tails.stdout.text().trim();
  const stderr = tails.stderr.text().trim();
  const base = { text, stderr, exit, durationMs };
  const failure = await describeFailure(input);
  if (!failure) return { ok: true, ...base };
  const command = quote(request.definition.command);
  // A process that never started has no last words to quote.
  const said = exit.spawnError ? '' : lastWords(stderr, text);
  const error = failure.reason === 'not_found' ? failure.cause : `${command} ${failure.cause}${said}`;
  return { ok: false, ...base, reason: failure.reason, error };
}

async function describeFailure({
  request,
  options,
  exit,
  stop,
  tails,
}: OutcomeInput): Promise<{ reason: NonNullable<CliRunResult['reason']>; cause: string } | undefined> {
  if (exit.spawnError) return spawnFailure(request, exit.spawnError);
  if (stop.reason === 'timeout') return { reason: 'timeout', cause: `timed out after ${options.timeoutMs}ms${howStopped(stop, options)}` };
  if (stop.reason === 'aborted') return { reason: 'aborted', cause: `was aborted${abortReason(request.signal)}${howStopped(stop, options)}` };
  if (exit.signal) return { reason: 'signal', cause: `was killed by ${exit.signal}` };
  if (exit.code !== 0) return { reason: 'exit', cause: `exited with code ${exit.code}` };
  if (!tails.stdout.hasText) return { reason: 'no_output', cause: 'exited with code 0 but printed nothing on stdout' };
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
  let lines = source.text.split(/\r?\n/).slice(-LAST_WORDS_LINES).join('\n');
  if (lines.length > LAST_WORDS_CHARS) lines = `…${lines.slice(-LAST_WORDS_CHARS)}`;
  return `; last ${source.name}:\n${lines}`;
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
    stderr: '',
    error,
    reason,
    exit: { code: null, signal: null },
    durationMs: Math.round(performance.now() - startedAt),
  };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
