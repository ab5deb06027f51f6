/** Turns collected runs into the comparison table, the target checks and RESULTS.md. */
import type { CommandCount } from '../scenarios/roundtrips.js';
import type { Transport } from '../scenarios/context.js';
import type { KeyGroup } from './memory.js';
import type { Machine } from './machine.js';
import { spreadPct, summarize, type Summary } from './stats.js';

/** scenario → transport → system → metric → one value per repetition */
export type Collected = Record<string, Partial<Record<Transport, Record<string, Record<string, number[]>>>>>;

type Unit = 'ms' | '/s' | 'B' | 'µs';

interface Target {
  text: string;
  /** `abs`: the subject's median against `value`; `ratio`: subject ÷ reference against `value`. */
  kind: 'abs' | 'ratio';
  op: '<=' | '>=';
  value: number;
}

interface Row {
  scenario: string;
  transport: Transport;
  label: string;
  metric: string;
  unit: Unit;
  subject: string;
  reference?: string;
  target?: Target;
}

export interface TableRow {
  scenario: string;
  transport: Transport;
  label: string;
  unit: Unit;
  subjectName: string;
  referenceName?: string;
  subject: Summary;
  reference?: Summary;
  ratio?: number;
  target?: Target;
  verdict?: { met: boolean; text: string };
}

const REF = 'bullmq';

function rowsFor(transport: Transport, throughputAgents: number): Row[] {
  const unix = transport === 'unix';
  return [
    { scenario: 'dispatch', transport, label: 'dispatch p50', metric: 'dispatch.p50', unit: 'ms', subject: 'tinytown', reference: REF, ...(unix && { target: { text: '≤ 0.5 ms', kind: 'abs', op: '<=', value: 0.5 } }) },
    { scenario: 'dispatch', transport, label: 'dispatch p99', metric: 'dispatch.p99', unit: 'ms', subject: 'tinytown', reference: REF, ...(unix && { target: { text: '≤ 2 ms', kind: 'abs', op: '<=', value: 2 } }) },
    { scenario: 'e2e', transport, label: 'end-to-end p50', metric: 'e2e.p50', unit: 'ms', subject: 'tinytown', reference: REF, target: { text: '≤ BullMQ', kind: 'ratio', op: '<=', value: 1 } },
    { scenario: 'e2e', transport, label: 'end-to-end p99', metric: 'e2e.p99', unit: 'ms', subject: 'tinytown', reference: REF },
    { scenario: 'throughput', transport, label: `throughput, waitForIdle vs 1 worker × ${throughputAgents}`, metric: 'throughput.tasksPerSec', unit: '/s', subject: 'tinytown', reference: REF, target: { text: '≥ BullMQ (aim 1.5×)', kind: 'ratio', op: '>=', value: 1 } },
    { scenario: 'throughput', transport, label: `throughput, on(task.completed) vs 1 worker × ${throughputAgents}`, metric: 'throughput.tasksPerSec', unit: '/s', subject: 'tinytown (on task.completed)', reference: REF },
    { scenario: 'throughput', transport, label: `throughput, waitForIdle vs ${throughputAgents} workers × 1`, metric: 'throughput.tasksPerSec', unit: '/s', subject: 'tinytown', reference: 'bullmq (N workers × 1)' },
    { scenario: 'throughput', transport, label: 'throughput: assign phase', metric: 'throughput.assignPhaseMs', unit: 'ms', subject: 'tinytown', reference: REF },
    { scenario: 'throughput', transport, label: 'throughput: Redis CPU per task', metric: 'throughput.redisCpuUsPerTask', unit: 'µs', subject: 'tinytown', reference: REF },
    { scenario: 'throughput', transport, label: 'throughput: Node CPU per task', metric: 'throughput.nodeCpuUsPerTask', unit: 'µs', subject: 'tinytown', reference: REF },
  ];
}

function scaleRows(): Row[] {
  const t: Transport = 'unix';
  return [
    { scenario: 'scale', transport: t, label: 'spawn rate (cold agents)', metric: 'scale.spawnPerSec', unit: '/s', subject: 'tinytown' },
    { scenario: 'scale', transport: t, label: 'assign rate (queued)', metric: 'scale.assignPerSec', unit: '/s', subject: 'tinytown', reference: REF },
    { scenario: 'scale', transport: t, label: 'status() p50 (BullMQ: getJobCounts)', metric: 'scale.statusP50Ms', unit: 'ms', subject: 'tinytown', reference: REF, target: { text: '≤ 50 ms', kind: 'abs', op: '<=', value: 50 } },
    { scenario: 'scale', transport: t, label: 'status() max', metric: 'scale.statusMaxMs', unit: 'ms', subject: 'tinytown', reference: REF },
    { scenario: 'scale', transport: t, label: 'Redis memory per queued task', metric: 'scale.bytesPerQueuedTask', unit: 'B', subject: 'tinytown', reference: REF, target: { text: '≤ 1024 B', kind: 'abs', op: '<=', value: 1024 } },
    { scenario: 'scaleWorkers', transport: t, label: 'spawn rate (live workers)', metric: 'workers.spawnPerSec', unit: '/s', subject: 'tinytown' },
    { scenario: 'scaleWorkers', transport: t, label: 'status() p50, live workers', metric: 'workers.statusP50Ms', unit: 'ms', subject: 'tinytown', target: { text: '≤ 50 ms', kind: 'abs', op: '<=', value: 50 } },
    { scenario: 'scaleWorkers', transport: t, label: 'end-to-end p50 among live workers', metric: 'workers.e2eP50Ms', unit: 'ms', subject: 'tinytown' },
    { scenario: 'cli', transport: t, label: 'CLI task end-to-end p50 (BullMQ: processor spawns)', metric: 'cli.p50', unit: 'ms', subject: 'tinytown', reference: REF },
    { scenario: 'cli', transport: t, label: 'bare spawn of the same script p50 (paired runs)', metric: 'cli.bareP50', unit: 'ms', subject: 'tinytown', reference: REF },
    { scenario: 'cli', transport: t, label: 'CLI overhead p50: end to end − the child’s own spawn→close', metric: 'cli.overheadP50', unit: 'ms', subject: 'tinytown', reference: REF, target: { text: '≤ 5 ms', kind: 'abs', op: '<=', value: 5 } },
    { scenario: 'cli', transport: t, label: 'CLI overhead p99 (same)', metric: 'cli.overheadP99', unit: 'ms', subject: 'tinytown', reference: REF },
    { scenario: 'cli', transport: t, label: 'end to end − paired bare spawn (median; noisy)', metric: 'cli.pairDiffP50', unit: 'ms', subject: 'tinytown', reference: REF },
  ];
}

export function buildTable(collected: Collected, throughputAgents: number): TableRow[] {
  const rows = [...rowsFor('unix', throughputAgents), ...rowsFor('tcp', throughputAgents), ...scaleRows()];
  const out: TableRow[] = [];
  for (const row of rows) {
    const systems = collected[row.scenario]?.[row.transport];
    const subjectRuns = systems?.[row.subject]?.[row.metric];
    if (!subjectRuns) continue;
    const subject = summarize(subjectRuns);
    const refRuns = row.reference ? systems?.[row.reference]?.[row.metric] : undefined;
    const reference = refRuns ? summarize(refRuns) : undefined;
    const ratio = reference ? subject.median / reference.median : undefined;
    const entry: TableRow = {
      scenario: row.scenario,
      transport: row.transport,
      label: row.label,
      unit: row.unit,
      subjectName: row.subject,
      subject,
      ...(row.reference && reference && { referenceName: row.reference, reference }),
      ...(ratio !== undefined && { ratio }),
      ...(row.target && { target: row.target }),
    };
    if (row.target) entry.verdict = judge(row.target, subject, ratio, row.unit);
    out.push(entry);
  }
  return out;
}

function judge(target: Target, subject: Summary, ratio: number | undefined, unit: Unit): { met: boolean; text: string } {
  const value = target.kind === 'abs' ? subject.median : ratio;
  if (value === undefined || !Number.isFinite(value)) return { met: false, text: 'no data' };
  const met = target.op === '<=' ? value <= target.value : value >= target.value;
  if (target.kind === 'ratio') {
    const text = `${fmtRatio(value)} BullMQ's`;
    if (met) return { met, text: `met (${text})` };
    const gap = target.op === '<=' ? `${((value - 1) * 100).toFixed(0)}% slower` : `needs ${fmtRatio(target.value / value)} to reach it`;
    return { met, text: `missed: ${text} (${gap})` };
  }
  if (met) return { met, text: `met (${fmt(value, unit)} ${unit})` };
  return { met, text: `missed by ${fmt(Math.abs(value - target.value), unit)} ${unit} (${fmtRatio(value / target.value)} the target)` };
}

// ── formatting ────────────────────────────────────────────────────────────────────────────────

export function fmt(value: number, unit: Unit): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (unit === '/s' || unit === 'B' || unit === 'µs') return Math.round(value).toLocaleString('en-US');
  const abs = Math.abs(value);
  if (abs < 1) return value.toFixed(3);
  if (abs < 10) return value.toFixed(2);
  if (abs < 1000) return value.toFixed(1);
  return Math.round(value).toLocaleString('en-US');
}

const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : 'n/a');

function cellConsole(s: Summary | undefined, unit: Unit): string {
  if (!s) return '—';
  return s.runs.length > 1 ? `${fmt(s.median, unit)} ±${spreadPct(s).toFixed(0)}%` : fmt(s.median, unit);
}

function cellMarkdown(s: Summary | undefined, unit: Unit): string {
  if (!s) return '—';
  return s.runs.length > 1 ? `${fmt(s.median, unit)} (${fmt(s.min, unit)}–${fmt(s.max, unit)})` : fmt(s.median, unit);
}

const mark = (row: TableRow): string => (row.verdict ? (row.verdict.met ? '✅ ' : '❌ ') + row.verdict.text : '');

export function consoleTable(rows: readonly TableRow[]): string {
  const header = ['scenario', 'via', 'metric', 'unit', 'tinytown', 'BullMQ / reference', 'ratio', 'target'];
  const body = rows.map((r) => [
    r.scenario,
    r.transport,
    r.subjectName === 'tinytown' ? r.label : `${r.label} [${r.subjectName}]`,
    r.unit,
    cellConsole(r.subject, r.unit),
    r.reference ? `${cellConsole(r.reference, r.unit)}${r.referenceName === REF ? '' : ` [${r.referenceName}]`}` : '—',
    r.ratio !== undefined ? fmtRatio(r.ratio) : '—',
    r.target ? `${r.target.text}: ${mark(r)}` : '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export function markdownTable(rows: readonly TableRow[]): string {
  const out = [
    '| scenario | via | metric | unit | tinytown | BullMQ (or reference) | tinytown ÷ BullMQ | target |',
    '| --- | --- | --- | --- | ---: | ---: | ---: | --- |',
  ];
  for (const r of rows) {
    const label = r.subjectName === 'tinytown' ? r.label : `${r.label} *(${r.subjectName})*`;
    const ref = r.reference ? `${cellMarkdown(r.reference, r.unit)}${r.referenceName === REF ? '' : ` *(${r.referenceName})*`}` : '—';
    out.push(
      `| ${r.scenario} | ${r.transport} | ${label} | ${r.unit} | ${cellMarkdown(r.subject, r.unit)} | ${ref} | ${r.ratio !== undefined ? fmtRatio(r.ratio) : '—'} | ${r.target ? `${r.target.text}: ${mark(r)}` : ''} |`,
    );
  }
  return out.join('\n');
}

export function roundTripMarkdown(counts: readonly CommandCount[]): string {
  const fmtN = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(2));
  const list = (m: Record<string, number>, min = 0.05): string =>
    Object.entries(m)
      .filter(([, v]) => v >= min)
      .map(([k, v]) => `${k} ${fmtN(v)}`)
      .join(', ');
  const out = [
    '| system | completion awaited by | client commands / task | of which | commands inside scripts / task | INFO commandstats calls / task (all) | XADD / task |',
    '| --- | --- | ---: | --- | ---: | ---: | ---: |',
  ];
  for (const c of counts) {
    out.push(
      `| ${c.system} | ${c.mode} | ${fmtN(c.clientPerTask)} | ${list(c.client)} | ${fmtN(c.inScriptsPerTask)} | ${fmtN(c.commandstatsPerTask)} | ${fmtN(c.commandstats.xadd ?? 0)} |`,
    );
  }
  out.push('', 'Commands inside scripts, per task:', '');
  for (const c of counts) out.push(`- ${c.system} (${c.mode}): ${list(c.inScripts)}`);
  return out.join('\n');
}

export function memoryMarkdown(system: string, groups: readonly KeyGroup[] | undefined): string {
  if (!groups) return '';
  const out = [`**${system}** (keys grouped by pattern, \`MEMORY USAGE … SAMPLES 0\`):`, '', '| key pattern | type | keys | bytes | bytes / queued task |', '| --- | --- | ---: | ---: | ---: |'];
  for (const g of groups.slice(0, 10)) {
    out.push(`| \`${g.pattern}\` | ${g.type} | ${g.keys.toLocaleString('en-US')} | ${g.bytes.toLocaleString('en-US')} | ${g.bytesPerTask.toFixed(1)} |`);
  }
  return out.join('\n');
}

export interface ResultsDoc {
  date: string;
  load?: { loadAtStart: number; otherCores: number; cores: number };
  machine: Machine;
  redisCommand: string;
  sizes: Record<string, number>;
  reps: Record<string, number>;
  table: TableRow[];
  roundTrips: CommandCount[];
  memory: Record<string, KeyGroup[] | undefined>;
  durationS: number;
  analysis: string;
}

export function resultsMarkdown(doc: ResultsDoc): string {
  const m = doc.machine;
  const unmet = doc.table.filter((r) => r.verdict && !r.verdict.met);
  return `# tinytown benchmark results

Generated by \`npm run bench\` on ${doc.date} (whole run: ${doc.durationS.toFixed(0)} s). Do not edit by hand: the
numbers above "Analysis" are rewritten by every full run; the analysis comes from \`bench/ANALYSIS.md\`.

## Machine

| | |
| --- | --- |
| CPU | ${m.cpu}, ${m.cores} cores |
| memory | ${m.memoryGiB} GiB |
| kernel | Linux ${m.kernel} |
| Node.js | ${m.node} |
| Redis | ${m.redis} (Debian \`redis-server\`) |
| tinytown | ${m.tinytown} (built \`dist/\`, imported as \`tinytown\`) |
| BullMQ | ${m.bullmq} |
| ioredis | ${m.ioredis} (shared by both) |
| other load during the run | ${doc.load ? `${doc.load.otherCores.toFixed(2)} of ${doc.load.cores} cores busy with other processes on average; 1-min load average ${doc.load.loadAtStart.toFixed(2)} at start` : 'not recorded'} |

## How it was run

\`\`\`sh
npm run bench            # npm run build, then tsx bench/run.ts (this file)
npm run bench -- --quick # smoke: 1 repetition, small sizes; writes results.json only
\`\`\`

One \`redis-server\` serves both transports (unix socket and TCP loopback), persistence off:

\`\`\`sh
${doc.redisCommand}
\`\`\`

Every run of every system starts on an empty server (\`FLUSHALL SYNC\`); tinytown and BullMQ alternate
which goes first from one repetition to the next. Repetitions: ${Object.entries(doc.reps).map(([k, v]) => `${k} ${v}`).join(', ')}.
Sizes: ${Object.entries(doc.sizes).map(([k, v]) => `${k} ${v.toLocaleString('en-US')}`).join(', ')}.
Cells show the median over repetitions and, in brackets, the lowest and highest repetition. Latency
percentiles are taken within a repetition (after ${doc.sizes.warmup} warm-up tasks), then their median across repetitions.
Ratios are tinytown ÷ BullMQ medians: below 1 is better for times, above 1 for rates.

## Results

${markdownTable(doc.table)}

Targets missed in this run: ${unmet.length === 0 ? 'none' : unmet.map((r) => `${r.label} (${r.transport}): ${r.verdict!.text}`).join('; ')}.

## Redis commands per task lifecycle

Counted over ${doc.roundTrips[0]?.tasks ?? 0} sequential tasks on an idle agent (unix socket), by \`MONITOR\` (who sent
each command) and \`INFO commandstats\` deltas (everything executed, including inside Lua). Heartbeats,
the sweeper and the event reader's \`XREAD\` are included as they happened. The budget is 4 client
round trips per task (assign → BLMOVE → start → finish).

${roundTripMarkdown(doc.roundTrips)}

## Memory per queued task

${Object.entries(doc.memory).map(([system, groups]) => memoryMarkdown(system, groups)).join('\n\n')}

## Analysis

${doc.analysis}
`;
}
