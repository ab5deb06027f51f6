/**
 * `npm run bench`: tinytown against BullMQ on the same Redis in the same run.
 *
 *   npm run bench                     full run (≈ 3 min): prints the table, writes
 *                                     bench/results.json and bench/RESULTS.md
 *   npm run bench -- --quick          smoke: 1 repetition, small sizes (results.json only)
 *   npm run bench -- --only=dispatch,e2e [--reps=3]   a subset (results.json only)
 *   npx tsx bench/run.ts --render     rewrite RESULTS.md from results.json and ANALYSIS.md
 */
import { readFile, writeFile } from 'node:fs/promises';
import { loadMeter, type LoadReport } from './lib/load.js';
import { describeMachine } from './lib/machine.js';
import { flush, startRedis, type BenchRedis } from './lib/redis-server.js';
import { buildTable, consoleTable, resultsMarkdown, type Collected } from './lib/report.js';
import type { KeyGroup } from './lib/memory.js';
import { now } from './lib/util.js';
import type { RunContext, Sizes, Transport } from './scenarios/context.js';
import { SCENARIOS, type Scenario } from './scenarios/index.js';
import { countRoundTrips, type CommandCount } from './scenarios/roundtrips.js';

const FULL: Sizes = {
  dispatchTasks: 300,
  e2eTasks: 300,
  warmup: 30,
  throughputAgents: 50,
  throughputTasks: 3000,
  scaleAgents: 1000,
  scaleTasks: 20_000,
  scaleWorkers: 1000,
  statusCalls: 20,
  cliTasks: 20,
  roundTripTasks: 200,
};

const QUICK: Sizes = {
  dispatchTasks: 50,
  e2eTasks: 50,
  warmup: 10,
  throughputAgents: 50,
  throughputTasks: 500,
  scaleAgents: 200,
  scaleTasks: 2000,
  scaleWorkers: 100,
  statusCalls: 5,
  cliTasks: 5,
  roundTripTasks: 50,
};

interface Args {
  quick: boolean;
  only: Set<string> | undefined;
  reps: number | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const value = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const only = value('only');
  const reps = value('reps');
  return {
    quick: argv.includes('--quick'),
    only: only ? new Set(only.split(',')) : undefined,
    reps: reps ? Number(reps) : undefined,
  };
}

function contextFor(redis: BenchRedis, transport: Transport, sizes: Sizes, rep: number): RunContext {
  return {
    transport,
    url: transport === 'unix' ? redis.unixUrl : redis.tcpUrl,
    bullConnection: transport === 'unix' ? { path: redis.socketPath } : { host: '127.0.0.1', port: redis.port },
    redis,
    sizes,
    rep,
  };
}

/** Systems in a rotating order, so neither side always runs first (warm caches, JIT). */
function rotated<T>(items: readonly T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

async function runScenario(scenario: Scenario, redis: BenchRedis, sizes: Sizes, reps: number, collected: Collected, memory: Record<string, KeyGroup[] | undefined>): Promise<void> {
  console.log(`\n${scenario.title}`);
  const perScenario = (collected[scenario.id] ??= {});
  for (let rep = 0; rep < reps; rep++) {
    for (const transport of scenario.transports) {
      const perTransport = (perScenario[transport] ??= {});
      for (const [system, run] of rotated(Object.entries(scenario.systems), rep)) {
        await flush(redis.admin);
        const started = now();
        let line: string;
        try {
          const result = await run(contextFor(redis, transport, sizes, rep));
          const perSystem = (perTransport[system] ??= {});
          for (const [metric, value] of Object.entries(result.metrics)) (perSystem[metric] ??= []).push(value);
          if (result.extras?.keys) memory[`${system}, ${scenario.id}`] = result.extras.keys as KeyGroup[];
          line = Object.entries(result.metrics)
            .map(([k, v]) => `${k.split('.').pop()}=${v < 10 ? v.toFixed(3) : Math.round(v)}`)
            .join(' ');
        } catch (err) {
          line = `FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`;
          const perSystem = (perTransport[system] ??= {});
          for (const values of Object.values(perSystem)) values.push(NaN);
        }
        console.log(`  rep ${rep + 1}/${reps} ${transport.padEnd(4)} ${system.padEnd(28)} ${((now() - started) / 1000).toFixed(1).padStart(5)} s  ${line}`);
      }
    }
  }
}

async function writeResultsMd(json: { date: string; load?: LoadReport; machine: Awaited<ReturnType<typeof describeMachine>>; redisCommand: string; sizes: Sizes; reps: Record<string, number>; table: ReturnType<typeof buildTable>; roundTrips: CommandCount[]; memory: Record<string, KeyGroup[] | undefined>; durationS: number }): Promise<void> {
  const analysis = await readFile(new URL('./ANALYSIS.md', import.meta.url), 'utf8').catch(() => '_bench/ANALYSIS.md is missing._');
  const md = resultsMarkdown({ ...json, sizes: { ...json.sizes }, analysis: analysis.trim() });
  await writeFile(new URL('./RESULTS.md', import.meta.url), md);
  console.log('wrote bench/RESULTS.md');
}

async function main(): Promise<void> {
  if (process.argv.includes('--render')) {
    const saved = JSON.parse(await readFile(new URL('./results.json', import.meta.url), 'utf8')) as Parameters<typeof writeResultsMd>[0] & { quick: boolean };
    if (saved.quick) throw new Error('results.json holds a --quick run; RESULTS.md is rendered from full runs only');
    await writeResultsMd(saved);
    return;
  }
  const args = parseArgs(process.argv.slice(2));
  const sizes = args.quick ? QUICK : FULL;
  const scenarios = SCENARIOS.filter((s) => !args.only || args.only.has(s.id));
  const countTrips = !args.only || args.only.has('roundtrips');
  const startedAt = now();
  const load = loadMeter();
  const redis = await startRedis();
  const stop = (): void => void redis.stop().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  console.log(`redis-server ${redis.version}: ${redis.unixUrl} and ${redis.tcpUrl} (--save "" --appendonly no)`);
  const collected: Collected = {};
  const memory: Record<string, KeyGroup[] | undefined> = {};
  const reps: Record<string, number> = {};
  let roundTrips: CommandCount[] = [];
  try {
    for (const scenario of scenarios) {
      reps[scenario.id] = args.reps ?? (args.quick ? 1 : scenario.reps);
      await runScenario(scenario, redis, sizes, reps[scenario.id]!, collected, memory);
    }
    if (countTrips) {
      console.log('\nRedis commands per task lifecycle (MONITOR + INFO commandstats)');
      roundTrips = await countRoundTrips(contextFor(redis, 'unix', sizes, 0));
      for (const c of roundTrips) {
        console.log(`  ${c.system.padEnd(9)} ${c.mode.padEnd(34)} client ${c.clientPerTask.toFixed(2)}/task  in scripts ${c.inScriptsPerTask.toFixed(2)}/task  xadd ${(c.commandstats.xadd ?? 0).toFixed(2)}/task`);
      }
    }
  } finally {
    await redis.stop();
    process.off('SIGINT', stop);
  }

  const table = buildTable(collected, sizes.throughputAgents);
  console.log(`\n${consoleTable(table)}\n`);
  const durationS = (now() - startedAt) / 1000;
  const loadReport = load();
  console.log(`other processes kept ${loadReport.otherCores.toFixed(2)} of ${loadReport.cores} cores busy during the run (load average at start ${loadReport.loadAtStart.toFixed(2)})`);
  const machine = await describeMachine(redis.version);
  const date = new Date().toISOString();
  const partial = args.quick || args.only !== undefined || args.reps !== undefined;
  const json = { date, quick: partial, machine, load: loadReport, redisCommand: redis.commandLine, sizes, reps, durationS, collected, table, roundTrips, memory };
  await writeFile(new URL('./results.json', import.meta.url), `${JSON.stringify(json, null, 2)}\n`);
  console.log('wrote bench/results.json');
  if (!partial) await writeResultsMd(json);
  console.log(`bench finished in ${durationS.toFixed(0)} s`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
