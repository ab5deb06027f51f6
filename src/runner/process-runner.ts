/**
 * The pluggable interface that starts and supervises one agent process per task.
 *
 * The default {@link ChildProcessRunner} uses `child_process.spawn` without a shell, in a new
 * process group. Write your own to run agents in containers, over ssh or on remote hosts: the
 * worker only needs `start()` and the {@link RunningProcess} it returns.
 *
 * @module
 */

/**
 * What to run. Never interpreted by a shell: `command` and `args` reach `execve` as they are.
 *
 * @example
 * ```ts
 * import { defaultRunner, type ProcessSpec } from 'tinytown';
 * const spec: ProcessSpec = { command: 'claude', args: ['-p', '--output-format', 'json'], env: { PATH: process.env.PATH ?? '' }, stdin: 'Say hi' };
 * const child = defaultRunner.start(spec);
 * console.log(await child.exited);
 * ```
 */
export interface ProcessSpec {
  /** Executable name (looked up on PATH) or path. */
  command: string;
  /** Arguments, passed literally. */
  args: readonly string[];
  /** Working directory. */
  cwd?: string;
  /** The complete environment of the process (the runner adds nothing). */
  env: Readonly<Record<string, string>>;
  /** Written to the process's stdin, which is then closed. Without it stdin is empty. */
  stdin?: string;
}

/**
 * One chunk of output, in the order the runner received it.
 *
 * @example
 * ```ts
 * import type { OutputChunk } from 'tinytown';
 * const child = defaultRunner.start({ command: 'ls', args: ['-l'], env: { PATH: process.env.PATH ?? '' } });
 * const print = (chunk: OutputChunk) => process[chunk.stream].write(chunk.data);
 * for await (const chunk of child.output) print(chunk);
 * ```
 */
export interface OutputChunk {
  /** Which stream it came from. */
  stream: 'stdout' | 'stderr';
  /** The bytes, as received (not split into lines). */
  data: Buffer;
}

/**
 * How a process ended.
 *
 * @example
 * ```ts
 * import type { ProcessExit } from 'tinytown';
 * const exit: ProcessExit = await defaultRunner.start({ command: 'git', args: ['status'], env: { PATH: process.env.PATH ?? '' } }).exited;
 * if (exit.spawnError?.code === 'ENOENT') console.error('not installed');
 * else console.log(exit.code ?? exit.signal);
 * ```
 */
export interface ProcessExit {
  /** Exit code, or `null` when the process was ended by a signal or never started. */
  code: number | null;
  /** Terminating signal name (`'SIGKILL'`), or `null`. */
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started; `code` is then `null`. */
  spawnError?: NodeJS.ErrnoException;
}

/**
 * A started process.
 *
 * @example
 * ```ts
 * import type { RunningProcess } from 'tinytown';
 * const child: RunningProcess = defaultRunner.start({ command: 'sleep', args: ['60'], env: { PATH: process.env.PATH ?? '' } });
 * setTimeout(() => child.kill('SIGTERM'), 1_000);
 * for await (const _ of child.output); // drain it
 * console.log(child.pid, await child.exited); // { code: null, signal: 'SIGTERM' }
 * ```
 */
export interface RunningProcess {
  /** OS process id, when the runner has one. */
  readonly pid: number | undefined;
  /** Output as it arrives; ends when both streams close. Consume it, or output is buffered. */
  readonly output: AsyncIterable<OutputChunk>;
  /** Settles once the process has exited (never rejects). */
  readonly exited: Promise<ProcessExit>;
  /** Sends `signal` (default `SIGTERM`) to the whole process group. Safe after exit. */
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Starts processes for agents.
 *
 * @example
 * ```ts
 * import type { ProcessRunner } from 'tinytown';
 * const sshRunner: ProcessRunner = {
 *   start: (spec) => defaultRunner.start({ ...spec, command: 'ssh', args: ['build-host', spec.command, ...spec.args] }),
 * };
 * await town.spawnAgent('remote', { cli: 'claude', runner: sshRunner });
 * ```
 */
export interface ProcessRunner {
  /** Starts the process. Must not throw for a missing binary: report it in `exited.spawnError`. */
  start(spec: ProcessSpec): RunningProcess;
}
