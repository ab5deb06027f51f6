/**
 * How busy the machine was with other work during the run: all CPUs' busy time (/proc/stat) minus
 * this process and its children (redis-server, the CLI fixtures: /proc/self/stat cutime+cstime,
 * counted once they have exited). On a 2-core machine a parallel test suite skews every number,
 * so RESULTS.md states it.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const [, ...values] = line.trim().split(/\s+/);
  const n = values.map(Number);
  const idle = (n[3] ?? 0) + (n[4] ?? 0);
  const total = n.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - idle) / TICKS_PER_SECOND;
}

function ownSeconds(): number {
  const { user, system } = process.cpuUsage();
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]?.split(' ') ?? [];
  const children = (Number(fields[13] ?? 0) + Number(fields[14] ?? 0)) / TICKS_PER_SECOND; // cutime, cstime
  return (user + system) / 1e6 + children;
}

export interface LoadReport {
  /** 1-minute load average when the run started. */
  loadAtStart: number;
  /** CPU cores kept busy on average by other processes during the run. */
  otherCores: number;
  cores: number;
}

export function loadMeter(): () => LoadReport {
  try {
    const start = { machine: machineBusySeconds(), own: ownSeconds(), at: Date.now(), load: loadavg()[0] ?? 0 };
    return () => {
      const wall = (Date.now() - start.at) / 1000;
      const other = machineBusySeconds() - start.machine - (ownSeconds() - start.own);
      return { loadAtStart: start.load, otherCores: Math.max(0, other / wall), cores: cpus().length };
    };
  } catch {
    return () => ({ loadAtStart: loadavg()[0] ?? 0, otherCores: NaN, cores: cpus().length });
  }
}
