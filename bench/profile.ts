/**
 * Where the Node.js CPU time of one scenario goes: runs it under the V8 sampling profiler
 * (inspector, 100 µs interval, measured phase only), then prints self time by package and the
 * heaviest functions, mapped back to `src/` through dist/index.js.map.
 *
 *   npm run build && npx tsx bench/profile.ts [--scenario=throughput|dispatch|e2e] [--system=tinytown|bullmq]
 *
 * Also writes the raw profile to $TMPDIR/tinytown-<scenario>-<system>.cpuprofile (open it in
 * Chrome DevTools or speedscope).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { SourceMap } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flush, startRedis } from './lib/redis-server.js';
import * as bull from './scenarios/bullmq.js';
import type { RunContext, Sizes, SystemRun } from './scenarios/context.js';
import * as tt from './scenarios/tinytown.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const SIZES: Sizes = {
  dispatchTasks: 2000,
  e2eTasks: 2000,
  warmup: 50,
  throughputAgents: 50,
  throughputTasks: 10_000,
  scaleAgents: 1000,
  scaleTasks: 20_000,
  scaleWorkers: 1000,
  statusCalls: 20,
  cliTasks: 20,
  roundTripTasks: 200,
};

const RUNS: Record<string, Record<string, SystemRun>> = {
  throughput: { tinytown: tt.throughput, bullmq: bull.throughput },
  dispatch: { tinytown: tt.dispatch, bullmq: bull.dispatch },
  e2e: { tinytown: tt.endToEnd, bullmq: bull.endToEnd },
  scale: { tinytown: tt.scale, bullmq: bull.scale },
};

function arg(name: string, fallback: string): string {
  return process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

function category(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)') return 'idle';
  if (fn === '(program)') return 'program (native, unattributed)';
  if (url.includes('/dist/index.js')) return 'tinytown';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.includes('/bench/')) return 'bench harness';
  if (url.startsWith('node:') || url === '') return 'node core / native';
  return url;
}

async function loadSourceMap(): Promise<SourceMap | undefined> {
  try {
    const path = fileURLToPath(new URL('../dist/index.js.map', import.meta.url));
    return new SourceMap(JSON.parse(await readFile(path, 'utf8')));
  } catch {
    return undefined;
  }
}

function location(frame: CallFrame, map: SourceMap | undefined): string {
  const file = frame.url.replace(/^file:\/\//, '').replace(/.*\/(node_modules\/)/, '$1').replace(/.*\/work\/main\//, '');
  if (map && frame.url.includes('/dist/index.js')) {
    const entry = map.findEntry(frame.lineNumber, frame.columnNumber) as { originalSource?: string; originalLine?: number };
    if (entry.originalSource) return `${entry.originalSource.replace(/.*\/src\//, 'src/')}:${(entry.originalLine ?? 0) + 1}`;
  }
  return `${file}:${frame.lineNumber + 1}`;
}

function summarize(profile: Profile, map: SourceMap | undefined): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const busy = total - [...selfUs].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((a, [, v]) => a + v, 0);

  const cats = new Map<string, number>();
  const fns = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const { callFrame } = byId.get(id)!;
    const cat = category(callFrame.url, callFrame.functionName);
    cats.set(cat, (cats.get(cat) ?? 0) + us);
    if (cat === 'idle') continue;
    const key = `${callFrame.functionName || '(anonymous)'}  ${location(callFrame, map)}  [${cat}]`;
    fns.set(key, (fns.get(key) ?? 0) + us);
  }

  // inclusive time of tinytown functions (a function's subtree, counted once per stack)
  const inclusive = new Map<string, number>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  for (const [id, us] of selfUs) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const { callFrame } = byId.get(cur)!;
      if (!callFrame.url.includes('/dist/index.js')) continue;
      const key = `${callFrame.functionName || '(anonymous)'}  ${location(callFrame, map)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }

  const pct = (us: number): string => `${((us / busy) * 100).toFixed(1).padStart(5)}%`;
  const ms = (us: number): string => `${(us / 1000).toFixed(0).padStart(6)} ms`;
  console.log(`\nsampled ${(total / 1000).toFixed(0)} ms, busy (not idle) ${(busy / 1000).toFixed(0)} ms; shares are of busy time\n`);
  console.log('self time by package:');
  for (const [cat, us] of [...cats].sort((a, b) => b[1] - a[1]).filter(([c]) => c !== 'idle')) console.log(`  ${ms(us)} ${pct(us)}  ${cat}`);
  console.log('\nheaviest functions (self time):');
  for (const [key, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`  ${ms(us)} ${pct(us)}  ${key}`);
  console.log('\ntinytown functions (inclusive time):');
  for (const [key, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`  ${ms(us)} ${pct(us)}  ${key}`);
}

async function main(): Promise<void> {
  const scenario = arg('scenario', 'throughput');
  const system = arg('system', 'tinytown');
  const run = RUNS[scenario]?.[system];
  if (!run) throw new Error(`unknown --scenario=${scenario} / --system=${system}`);
  const redis = await startRedis();
  const session = new Session();
  session.connect();
  try {
    const ctx: RunContext = { transport: 'unix', url: redis.unixUrl, bullConnection: { path: redis.socketPath }, redis, sizes: SIZES, rep: 1 };
    await flush(redis.admin);
    await run(ctx); // warm-up pass, not profiled
    await flush(redis.admin);
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    await session.post('Profiler.start');
    const result = await run(ctx);
    const { profile } = (await session.post('Profiler.stop')) as { profile: Profile };
    console.log(`${scenario} / ${system}:`, result.metrics);
    const file = join(tmpdir(), `tinytown-${scenario}-${system}.cpuprofile`);
    await writeFile(file, JSON.stringify(profile));
    console.log(`raw profile: ${file}`);
    summarize(profile, await loadSourceMap());
  } finally {
    session.disconnect();
    await redis.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
