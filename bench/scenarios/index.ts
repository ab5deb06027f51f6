/** The scenarios: which systems run, on which transports, how many times. */
import * as bull from './bullmq.js';
import type { SystemRun, Transport } from './context.js';
import * as tt from './tinytown.js';

export interface Scenario {
  id: string;
  title: string;
  transports: Transport[];
  /** Repetitions in a full run (a quick run does one). */
  reps: number;
  /** System label → its run. The first two are the headline comparison. */
  systems: Record<string, SystemRun>;
}

export const SCENARIOS: Scenario[] = [
  {
    id: 'dispatch',
    title: '1. Dispatch latency (assign → handler starts, idle agent, sequential)',
    transports: ['unix', 'tcp'],
    reps: 5,
    systems: { tinytown: tt.dispatch, bullmq: bull.dispatch },
  },
  {
    id: 'e2e',
    title: '2. End to end (assign → waitForTask resolves; add → waitUntilFinished)',
    transports: ['unix', 'tcp'],
    reps: 5,
    systems: { tinytown: tt.endToEnd, bullmq: bull.endToEnd },
  },
  {
    id: 'throughput',
    title: '3. Throughput (no-op handlers, tasks assigned concurrently, until all idle)',
    transports: ['unix', 'tcp'],
    reps: 5,
    systems: {
      tinytown: tt.throughput,
      bullmq: bull.throughput,
      'tinytown (on task.completed)': tt.throughputByEvents,
      'bullmq (N workers × 1)': bull.throughputManyWorkers,
    },
  },
  {
    id: 'scale',
    title: '4. Scale (cold agents, queued tasks)',
    transports: ['unix'],
    reps: 3,
    systems: { tinytown: tt.scale, bullmq: bull.scale },
  },
  {
    id: 'scaleWorkers',
    title: '4b. Scale with a live worker per agent',
    transports: ['unix'],
    reps: 1,
    systems: { tinytown: tt.scaleWorkers },
  },
  {
    id: 'cli',
    title: '5. CLI runner (assign → waitForTask with a node no-op CLI, each paired with a bare spawn of the same script)',
    transports: ['unix'],
    reps: 5,
    systems: { tinytown: tt.cliTask, bullmq: bull.cliTask },
  },
];
