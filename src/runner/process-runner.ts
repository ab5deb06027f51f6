/**
 * The pluggable interface that starts and supervises one agent process per task.
 *
 * The default {@link ChildProcessRunner} uses `child_process.spawn` without a shell, in a new
 * process group. Write your own to run agents in containers, over ssh or on remote hosts: the
 * worker only needs `start()` and the {@link RunningProcess} it returns.
 *
 * @module
 */

/** What to run. Never interpreted by a shell: `command` and `args` reach `execve` as they are. */
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

/** One chunk of output, in the order the runner received it. */
export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

/** How a process ended. */
export interface ProcessExit {
  /** Exit code, or `null` when the process was ended by a signal or never started. */
  code: number | null;
  /** Terminating signal name (`'SIGKILL'`), or `null`. */
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started; `code` is then `null`. */
  spawnError?: NodeJS.ErrnoException;
}

/** A started process. */
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
