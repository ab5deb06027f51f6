/**
 * The default {@link ProcessRunner}: `child_process.spawn` without a shell, each process leading
 * its own process group so that it can be killed together with everything it started.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import type {
  OutputChunk,
  ProcessExit,
  ProcessRunner,
  ProcessSpec,
  RunningProcess,
} from './process-runner.js';

/** Unread output above which the child's pipes are paused (the child then blocks on write). */
const HIGH_WATER_BYTES = 1024 * 1024;
/** Unread output below which paused pipes are resumed. */
const LOW_WATER_BYTES = 256 * 1024;

/**
 * Starts each process with `spawn(command, args, { detached: true, shell: false })`: the child
 * leads a new process group (and session), and {@link RunningProcess.kill} signals the whole
 * group. Agent CLIs are often a node wrapper around a native binary; signalling only the wrapper
 * would leave the binary running.
 *
 * Output is delivered through a small queue: when more than about 1 MiB is unread, the child's
 * pipes are paused until the consumer catches up, so a slow consumer slows the child down instead
 * of growing memory. Consume `output` (or stop iterating it, which discards the rest).
 *
 * @example
 * ```ts
 * import { ChildProcessRunner } from 'tinytown';
 * const proc = new ChildProcessRunner().start({ command: 'git', args: ['status'], env: { PATH: process.env.PATH ?? '' } });
 * for await (const chunk of proc.output) process.stdout.write(chunk.data);
 * console.log(await proc.exited); // { code: 0, signal: null }
 * ```
 */
export class ChildProcessRunner implements ProcessRunner {
  /**
   * Starts `spec`. Never throws: a missing binary, a non-executable file or invalid arguments are
   * reported as `exited` → `{ code: null, signal: null, spawnError }`.
   *
   * @example
   * ```ts
   * const proc = new ChildProcessRunner().start({ command: 'no-such-cli', args: [], env: {} });
   * (await proc.exited).spawnError?.code; // 'ENOENT'
   * ```
   */
  start(spec: ProcessSpec): RunningProcess {
    return new ChildRunningProcess(spec);
  }
}

/**
 * The shared {@link ChildProcessRunner} used when an agent names no runner.
 *
 * @example
 * ```ts
 * import { defaultRunner } from 'tinytown';
 * const proc = defaultRunner.start({ command: 'node', args: ['--version'], env: {} });
 * for await (const { data } of proc.output) console.log(data.toString());
 * ```
 */
export const defaultRunner: ProcessRunner = new ChildProcessRunner();

class ChildRunningProcess implements RunningProcess {
  readonly output: OutputQueue;
  readonly exited: Promise<ProcessExit>;
  private readonly child: ChildProcess | undefined;
  private exit: ProcessExit | undefined;

  constructor(spec: ProcessSpec) {
    let settle!: (exit: ProcessExit) => void;
    this.exited = new Promise((resolve) => (settle = resolve));
    const finish = (exit: ProcessExit): void => {
      if (this.exit) return;
      this.exit = exit;
      this.output.processEnded();
      settle(exit);
    };

    let child: ChildProcess | undefined;
    try {
      child = spawn(spec.command, [...spec.args], {
        cwd: spec.cwd,
        env: { ...spec.env },
        detached: true,
        shell: false,
        stdio: ['pipe', 'pipe', 'pipe'],
        windowsHide: true,
      });
    } catch (err) {
      // Invalid arguments (a NUL byte in an argument, say) throw synchronously; the contract is
      // that start() reports rather than throws.
      this.output = new OutputQueue([]);
      finish({ code: null, signal: null, spawnError: asErrno(err) });
      return;
    }
    this.child = child;
    const streams = [child.stdout, child.stderr].filter((s): s is Readable => s !== null);
    this.output = new OutputQueue(streams);
    this.output.attach(child.stdout, 'stdout');
    this.output.attach(child.stderr, 'stderr');

    let spawned = false;
    child.once('spawn', () => (spawned = true));
    child.on('error', (err: NodeJS.ErrnoException) => {
      // Errors after a successful spawn (a failed kill or write) do not end the process.
      if (spawned) return;
      this.output.abandonStreams();
      finish({ code: null, signal: null, spawnError: err });
    });
    child.once('exit', (code, signal) => finish({ code, signal }));

    writeStdin(child, spec.stdin);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    const child = this.child;
    const pid = child?.pid;
    if (child === undefined || pid === undefined) return; // never started
    // Once the leader has exited and nobody holds its pipes any more, the group is most likely
    // gone and its id may be reused: signalling it then could hit an unrelated process.
    if (this.exit && this.output.streamsClosed) return;
    if (process.platform === 'win32') {
      child.kill(signal);
      return;
    }
    try {
      process.kill(-pid, signal);
    } catch (err) {
      if (asErrno(err).code === 'ESRCH') return;
      child.kill(signal); // cannot signal the group (EPERM): at least stop the leader
    }
  }
}

function writeStdin(child: ChildProcess, input: string | undefined): void {
  const stdin = child.stdin;
  if (!stdin) return;
  // EPIPE / ECONNRESET when the child exits without reading its input: not our failure.
  stdin.on('error', () => {});
  stdin.end(input ?? '');
}

function asErrno(err: unknown): NodeJS.ErrnoException {
  return err instanceof Error ? (err as NodeJS.ErrnoException) : new Error(String(err));
}

/**
 * The `output` iterable: chunks from both streams in arrival order, with backpressure on the
 * child's pipes. One consumer; a second iteration shares (and competes for) the same chunks.
 */
class OutputQueue implements AsyncIterableIterator<OutputChunk> {
  private readonly chunks: OutputChunk[] = [];
  private queuedBytes = 0;
  private openStreams: number;
  private exited = false;
  private paused = false;
  private abandoned = false;
  private wake: (() => void) | undefined;

  constructor(private readonly streams: readonly Readable[]) {
    this.openStreams = streams.length;
  }

  /** True once every output stream has closed. */
  get streamsClosed(): boolean {
    return this.openStreams === 0;
  }

  attach(stream: Readable | null, name: OutputChunk['stream']): void {
    if (!stream) return;
    stream.on('data', (data: Buffer) => this.push({ stream: name, data }));
    stream.on('error', () => {}); // 'close' follows and ends the stream for us
    stream.once('close', () => {
      this.openStreams -= 1;
      this.notify();
    });
  }

  /** The process exited or never started. */
  processEnded(): void {
    this.exited = true;
    this.notify();
  }

  /** Spawn failed: nothing will ever arrive on these streams. */
  abandonStreams(): void {
    for (const stream of this.streams) stream.destroy();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<OutputChunk>> {
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk) {
        this.queuedBytes -= chunk.data.length;
        if (this.paused && this.queuedBytes <= LOW_WATER_BYTES) this.setPaused(false);
        return { value: chunk, done: false };
      }
      if (this.abandoned || (this.exited && this.openStreams === 0)) return { value: undefined, done: true };
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** The consumer stopped early: drop what is queued and whatever still comes. */
  async return(): Promise<IteratorResult<OutputChunk>> {
    this.abandoned = true;
    this.chunks.length = 0;
    this.queuedBytes = 0;
    this.setPaused(false);
    this.notify();
    return { value: undefined, done: true };
  }

  private push(chunk: OutputChunk): void {
    if (this.abandoned) return;
    this.chunks.push(chunk);
    this.queuedBytes += chunk.data.length;
    if (!this.paused && this.queuedBytes > HIGH_WATER_BYTES) this.setPaused(true);
    this.notify();
  }

  private setPaused(paused: boolean): void {
    this.paused = paused;
    for (const stream of this.streams) {
      if (paused) stream.pause();
      else stream.resume();
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
