/** Small statistics over samples: percentiles per run, medians and spreads over runs. */

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Median over repetitions plus the range, the spread we quote. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export function summarize(runs: readonly number[]): Summary {
  const finite = runs.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return { median: NaN, min: NaN, max: NaN, runs: [...runs] };
  return { median: median(finite), min: Math.min(...finite), max: Math.max(...finite), runs: [...runs] };
}

/** Spread as ±% of the median: half the range over the median. */
export function spreadPct(s: Summary): number {
  return s.median === 0 ? 0 : ((s.max - s.min) / 2 / Math.abs(s.median)) * 100;
}

/** Latency samples (ms) → the metrics each latency scenario reports. */
export function latencyMetrics(prefix: string, samplesMs: readonly number[]): Record<string, number> {
  return {
    [`${prefix}.p50`]: percentile(samplesMs, 50),
    [`${prefix}.p99`]: percentile(samplesMs, 99),
    [`${prefix}.mean`]: samplesMs.reduce((a, b) => a + b, 0) / samplesMs.length,
  };
}
