/**
 * Waiting on town state without polling: subscribe to the event stream first, then check the
 * state, then re-check on each relevant event. Timeouts and signals clean up after themselves.
 *
 * @module
 */
import { AbortedError, InvalidArgumentError, TimeoutError } from './errors.js';
import type { EventReader } from './events/reader.js';
import { isConnectionFault } from './store/connection.js';
import type { TownEvent, TownEventType } from './events/types.js';

/**
 * Options of every wait (`waitForIdle`, `agent.waitForIdle`, `town.waitForTask`).
 *
 * @example
 * ```ts
 * import type { WaitOptions } from 'tinytown';
 * const ac = new AbortController();
 * process.once('SIGINT', () => ac.abort());
 * const options: WaitOptions = { timeoutMs: 30 * 60_000, signal: ac.signal };
 * await waitForIdle([backend, frontend], options);
 * ```
 */
export interface WaitOptions {
  /** Reject with {@link TimeoutError} after this many milliseconds. Default: wait forever. */
  timeoutMs?: number;
  /** Reject with {@link AbortedError} when aborted. */
  signal?: AbortSignal;
}

/** What a wait is made of. */
export interface WaitSpec<T> {
  reader: EventReader;
  /** Resolves with a value when the wait is over, `undefined` to keep waiting; throws to fail. */
  check: () => Promise<T | undefined>;
  /** Which events may change the answer. */
  relevant: (event: TownEvent) => boolean;
  /**
   * Events after which the answer is "keep waiting" until a later relevant event (an agent's
   * `task.started` for an idle wait): a relevant event followed by one of these in the same
   * batch from the reader needs no check. Without it, every relevant event checks.
   */
  busy?: (event: TownEvent) => boolean;
  /**
   * When only events naming this agent are relevant: the reader then hands the wait that
   * agent's events alone (with many waits, each event reaches one instead of all).
   */
  agentId?: string;
  /** Every event type `relevant` and `busy` accept: the reader need not parse the others for it. */
  types?: Iterable<TownEventType>;
  /** For messages: "agent backend to be idle". */
  what: string;
  /** Aborted when the town closes. */
  closing: AbortSignal;
}

/** Validates wait options; shared by every public wait. */
export function checkWaitOptions(options: WaitOptions | undefined): void {
  const timeout = options?.timeoutMs;
  if (timeout !== undefined && (!Number.isFinite(timeout) || timeout < 0)) {
    throw new InvalidArgumentError(`timeoutMs must be a non-negative number of milliseconds, got ${String(timeout)}.`);
  }
}

/** Runs one wait. */
export async function waitUntil<T>(spec: WaitSpec<T>, options: WaitOptions = {}): Promise<T> {
  checkWaitOptions(options);
  const { signal, timeoutMs } = options;
  if (signal?.aborted) throw new AbortedError(`Stopped waiting for ${spec.what}: aborted.`, { cause: signal.reason });
  if (spec.closing.aborted) throw spec.closing.reason;

  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let checking = false;
    let again = false;
    let retry: NodeJS.Timeout | undefined;
    let faults = 0;

    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      unsubscribe?.();
      clearTimeout(timer);
      clearTimeout(retry);
      signal?.removeEventListener('abort', onAbort);
      spec.closing.removeEventListener('abort', onClose);
      fn();
    };
    const onAbort = (): void =>
      finish(() => reject(new AbortedError(`Stopped waiting for ${spec.what}: aborted.`, { cause: signal?.reason })));
    const onClose = (): void => finish(() => reject(spec.closing.reason));

    // A relevant event not yet checked, with `busy`: see the subscription below.
    let due = false;
    const checkIfDue = (): void => {
      if (!due) return;
      due = false;
      if (!settled) void recheck();
    };

    // Serialised re-checks: an event arriving mid-check schedules exactly one more.
    const recheck = async (): Promise<void> => {
      if (checking) {
        again = true;
        return;
      }
      checking = true;
      do {
        again = false;
        try {
          const value = await spec.check();
          faults = 0;
          if (value !== undefined) finish(() => resolve(value));
        } catch (err) {
          if (!isConnectionFault(err)) {
            finish(() => reject(err));
          } else if (!settled) {
            // Redis went away mid-check: the answer is unknown, which is no reason to give up.
            // Check again once it may be back (any event re-checks sooner).
            clearTimeout(retry);
            retry = setTimeout(() => void recheck(), Math.min(1_000, 100 * 2 ** faults++));
          }
        }
      } while (again && !settled);
      checking = false;
    };

    // The reader first (its position is where this wait starts listening), then the listener,
    // then the first check: an event between the check and the listener cannot be missed.
    // Starting the reader may meet Redis away, as a check may: try again, within the timeout.
    let unsubscribe: (() => void) | undefined;
    const begin = async (): Promise<void> => {
      try {
        await spec.reader.ensureStarted();
      } catch (err) {
        if (settled) return;
        if (!isConnectionFault(err)) return finish(() => reject(err));
        retry = setTimeout(() => void begin(), Math.min(1_000, 100 * 2 ** faults++));
        return;
      }
      if (settled) return;
      faults = 0;
      const { busy } = spec;
      unsubscribe = spec.reader.subscribe(
        busy === undefined
          ? (event) => {
              if (!settled && spec.relevant(event)) void recheck();
            }
          : (event) => {
              if (settled) return;
              if (spec.relevant(event)) {
                // The reader hands over a batch synchronously: check once it is all in.
                if (!due) queueMicrotask(checkIfDue);
                due = true;
              } else if (due && busy(event)) {
                due = false;
              }
            },
        spec.agentId,
        spec.types,
      );
      void recheck();
    };
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => finish(() => reject(new TimeoutError(`Timed out after ${timeoutMs} ms waiting for ${spec.what}.`))),
            timeoutMs,
          );
    signal?.addEventListener('abort', onAbort, { once: true });
    spec.closing.addEventListener('abort', onClose, { once: true });
    // Aborted or closed between the checks above and these listeners.
    if (signal?.aborted) return onAbort();
    if (spec.closing.aborted) return onClose();
    void begin();
  });
}
