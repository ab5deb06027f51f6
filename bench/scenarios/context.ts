/** What every scenario run receives, and what it returns. */
import type { BenchRedis } from '../lib/redis-server.js';

export type Transport = 'unix' | 'tcp';

/** Sizes of one bench run (`--quick` shrinks them). */
export interface Sizes {
  dispatchTasks: number;
  e2eTasks: number;
  warmup: number;
  throughputAgents: number;
  throughputTasks: number;
  scaleAgents: number;
  scaleTasks: number;
  scaleWorkers: number;
  statusCalls: number;
  cliTasks: number;
  roundTripTasks: number;
}

export interface RunContext {
  transport: Transport;
  /** The URL tinytown connects to for this transport. */
  url: string;
  /** ioredis options BullMQ connects with for this transport. */
  bullConnection: { path: string } | { host: string; port: number };
  redis: BenchRedis;
  sizes: Sizes;
  /** Repetition index (0-based); some extras are collected in the first one only. */
  rep: number;
}

/** Metric name → value of one run (ms, per second, bytes …; the name says which). */
export type Metrics = Record<string, number>;

/** Extra, non-numeric findings of a run (memory breakdowns), kept in results.json. */
export interface Extras {
  [key: string]: unknown;
}

export interface RunResult {
  metrics: Metrics;
  extras?: Extras;
}

export type SystemRun = (ctx: RunContext) => Promise<RunResult>;
