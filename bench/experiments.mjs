#!/usr/bin/env node
// What would the optimisations in ANALYSIS.md buy? Each experiment patches a COPY of the built
// dist/index.js (never src/) with a one-line change, installs it as `tinytown` in a temp folder
// next to a copy of bench/, and runs dispatch, e2e, throughput and scale there. Variants run
// interleaved, REPS times; medians are printed. A patch that no longer applies (src changed) fails
// loudly: update its `from` text.
//
//   npm run build && node bench/experiments.mjs [REPS]
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REPS = Number(process.argv[2] ?? 3);

/** One textual patch; `from` may be written with \n escapes as they appear in the bundle's strings. */
const PATCHES = {
  persist: [
    { from: '  persist(write) {\n    return pRetry(write, {', to: '  persist(write) {\n    return write().catch(() => pRetry(write, {' },
    { from: '      shouldRetry: () => !this.handback\n    });\n  }\n  waitForStateChange', to: '      shouldRetry: () => !this.handback\n    }));\n  }\n  waitForStateChange' },
  ],
  waits: [
    { from: 'relevant: (event) => event.taskId === id,', to: "relevant: (event) => event.taskId === id && (event.type === 'task.completed' || event.type === 'task.failed' || event.type === 'task.cancelled')," },
    { from: 'relevant: (event) => event.agentId === agentId,', to: "relevant: (event) => event.agentId === agentId && (event.type === 'agent.state' || event.type === 'agent.stopped' || event.type === 'agent.removed')," },
  ],
  noMessageCopy: [
    { from: "redis.call('HSET', tkey, 'assigned_to', aid, 'message', message)\\nset_task_state(tkey, tid, nil, 'assigned')", to: "redis.call('HSET', tkey, 'assigned_to', aid)\\nset_task_state(tkey, tid, nil, 'assigned')" },
  ],
  enqueueTail: [
    { from: "  else\\n    local to = -1\\n    repeat", to: "  else\\n    local last = redis.call('LINDEX', list, -1)\\n    if not last or rank_of(last) >= rank then redis.call('RPUSH', list, raw) return end\\n    local to = -1\\n    repeat" },
  ],
};
const VARIANTS = {
  base: [],
  'persist fast path': ['persist'],
  'waits filter events': ['waits'],
  'no message copy': ['noMessageCopy'],
  'enqueue tail check': ['enqueueTail'],
  all: ['persist', 'waits', 'noMessageCopy', 'enqueueTail'],
};

function applyPatch(code, { from, to }) {
  for (const [f, t] of [[from, to], [from.replaceAll('\\n', '\n'), to.replaceAll('\\n', '\n')]]) {
    if (code.includes(f)) return code.replace(f, t);
  }
  throw new Error(`patch no longer applies: ${from.slice(0, 70)}…`);
}

function install(name, patches, base) {
  const dir = join(tmpdir(), 'tinytown-experiments', name.replace(/\W+/g, '-'));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'node_modules', 'tinytown', 'dist'), { recursive: true });
  const code = patches.flatMap((p) => PATCHES[p]).reduce(applyPatch, base);
  writeFileSync(join(dir, 'node_modules', 'tinytown', 'dist', 'index.js'), code);
  writeFileSync(join(dir, 'node_modules', 'tinytown', 'package.json'), JSON.stringify({ name: 'tinytown', type: 'module', exports: { '.': './dist/index.js' } }));
  for (const m of readdirSync(join(ROOT, 'node_modules'))) {
    if (m !== 'tinytown' && m !== '.bin') symlinkSync(join(ROOT, 'node_modules', m), join(dir, 'node_modules', m));
  }
  cpSync(join(ROOT, 'bench'), join(dir, 'bench'), { recursive: true, filter: (src) => !/results\.json$|\.md$/.test(src) });
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  writeFileSync(join(dir, 'run.ts'), RUNNER);
  return dir;
}

const RUNNER = `
import { flush, startRedis } from './bench/lib/redis-server.js';
import * as tt from './bench/scenarios/tinytown.js';
const redis = await startRedis();
const sizes = { dispatchTasks: 300, e2eTasks: 300, warmup: 30, throughputAgents: 50, throughputTasks: 3000, scaleAgents: 1000, scaleTasks: 20000, scaleWorkers: 0, statusCalls: 10, cliTasks: 0, roundTripTasks: 0 };
const ctx = { transport: 'unix', url: redis.unixUrl, bullConnection: { path: redis.socketPath }, redis, sizes, rep: 1 };
const out = {};
for (const run of [tt.dispatch, tt.endToEnd, tt.throughput, tt.scale]) { await flush(redis.admin); Object.assign(out, (await run(ctx)).metrics); }
console.log('RESULT ' + JSON.stringify(out));
await redis.stop();
process.exit(0);
`;

const base = readFileSync(join(ROOT, 'dist', 'index.js'), 'utf8');
const dirs = Object.entries(VARIANTS).map(([name, patches]) => [name, install(name, patches, base)]);
const tsx = join(ROOT, 'node_modules', '.bin', 'tsx');
const results = {};
for (let rep = 0; rep < REPS; rep++) {
  for (const [name, dir] of dirs) {
    const out = execFileSync(tsx, ['run.ts'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const metrics = JSON.parse(out.split('\n').find((l) => l.startsWith('RESULT ')).slice(7));
    for (const [k, v] of Object.entries(metrics)) ((results[name] ??= {})[k] ??= []).push(v);
    process.stderr.write(`rep ${rep + 1}/${REPS} ${name} done\n`);
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const KEYS = ['dispatch.p50', 'e2e.p50', 'throughput.tasksPerSec', 'throughput.redisCpuUsPerTask', 'throughput.nodeCpuUsPerTask', 'scale.assignPerSec', 'scale.statusP50Ms', 'scale.bytesPerQueuedTask'];
console.log(`| variant | ${KEYS.join(' | ')} |\n| --- |${KEYS.map(() => ' ---: |').join('')}`);
for (const [name] of dirs) console.log(`| ${name} | ${KEYS.map((k) => median(results[name][k]).toFixed(k.endsWith('Ms') || k.endsWith('p50') ? 2 : 0)).join(' | ')} |`);
