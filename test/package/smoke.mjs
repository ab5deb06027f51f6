#!/usr/bin/env node
// `npm run test:package`: the package as users get it. Packs it (or takes TINYTOWN_TARBALL),
// installs the tarball into two fresh projects in a temporary folder, and in each
//   - runs a smoke script that connects (REDIS_URL when set, else a managed redis-server in the
//     project's folder, stopped at the end), spawns an in-process agent, assigns a task, waits
//     for it and checks `instanceof` on an error:
//       esm/  "type": "module", `import` (dist/index.js);
//       cjs/  "type": "commonjs", `require` (dist/index.cjs), with require(esm) turned off where
//             Node has it, as on Node 20 before 20.19; also checks `instanceof` across the
//             CJS and ESM copies of the package;
//   - tinytown/mcp: loads it (ESM import, CJS require); in the ESM project, an agent with town
//     tools whose CLI (a small script) connects to the server the worker hands it — the
//     installed dist/mcp-server.js, run by path — with the MCP SDK's client, and calls a tool;
//   - type-checks a TypeScript consumer with `tsc --noEmit` (skipLibCheck off, so the shipped
//     declarations are checked too), and asserts which declaration file it resolved:
//       esm/  module/moduleResolution nodenext                     → dist/index.d.ts
//       cjs/  module/moduleResolution node16 ("type": "commonjs")  → dist/index.d.cts
//       cjs/  module commonjs, moduleResolution node10 (legacy)     → dist/index.d.ts ("types")
//     (TypeScript >= 5.2 refuses `module: commonjs` with node16/nodenext resolution, TS5110: a
//     CommonJS project that honours `exports` is `module: node16` + "type": "commonjs".)
// `--keep` leaves the temporary folder (projects, towns) for a look afterwards.
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NPM, packTarball, REPO_ROOT, run } from './lib.mjs';

const started = Date.now();
const keep = process.argv.includes('--keep');
const work = await mkdtemp(join(tmpdir(), 'tinytown-smoke-'));
const version = (pkg) => JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', pkg, 'package.json'), 'utf8')).version;
const townPrefix = `tinytown-smoke-${process.pid}`;

// ── the consumer projects ──────────────────────────────────────────────────────────────────

/** Shared by both smoke scripts: everything after the import. */
const SMOKE_BODY = (flavour) => `
  const assert = ${flavour === 'esm' ? 'assert_' : "require('node:assert/strict')"};
  const dir = process.argv[2];
  const town = await Town.connect(dir, { name: '${townPrefix}-${flavour}' });
  try {
    const agent = await town.spawnAgent('echo', { run: async (task) => 'echo: ' + task.description });
    const task = await agent.assign(new Task('hello from ${flavour}'));
    const record = await town.waitForTask(task.id, { timeoutMs: 15000 });
    assert.equal(record.state, 'completed');
    assert.equal(record.result, 'echo: hello from ${flavour}');
    await waitForIdle(agent, { timeoutMs: 15000 });
    let caught;
    try {
      await town.agent('nobody');
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof AgentNotFoundError, 'instanceof AgentNotFoundError');
    assert.ok(caught instanceof TinytownError, 'instanceof TinytownError');
    assert.ok(!(caught instanceof TimeoutError), 'not instanceof TimeoutError');
    assert.equal(caught.code, 'AGENT_NOT_FOUND');
    return caught;
  } finally {
    await town.close();
    if (!process.env.REDIS_URL) await stopManagedRedis(dir);
  }
`;

const ESM_SMOKE = `import assert_ from 'node:assert/strict';
import { AgentNotFoundError, stopManagedRedis, Task, TimeoutError, TinytownError, Town, waitForIdle } from 'tinytown';

async function main() {${SMOKE_BODY('esm')}}

await main();
console.log('esm: connected, ran a task on an in-process agent, instanceof holds');
`;

/** ESM only: an agent's CLI that talks back through tinytown/mcp's server, as installed. */
const MCP_SMOKE = `import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stopManagedRedis, Town } from 'tinytown';
import { TOOL_NAMES } from 'tinytown/mcp';

const dir = process.argv[2];
const agentCli = join(dir, '..', 'agent-cli.mjs');
writeFileSync(agentCli, \`
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
for await (const _ of process.stdin);
const server = JSON.parse(readFileSync(process.argv[process.argv.indexOf('--mcp-config') + 1], 'utf8')).mcpServers.tinytown;
const client = new Client({ name: 'smoke-agent', version: '1' });
await client.connect(new StdioClientTransport(server));
const { tools } = await client.listTools();
const status = await client.callTool({ name: 'town_status', arguments: {} });
await client.close();
console.log(JSON.stringify({ script: server.args[0], tools: tools.map((t) => t.name), status: JSON.parse(status.content[0].text) }));
\`);
assert.equal(TOOL_NAMES.length, 9);
const town = await Town.connect(dir, { name: '${townPrefix}-mcp' });
try {
  const agent = await town.spawnAgent('talker', {
    cli: { command: process.execPath, args: [agentCli], prompt: 'stdin', mcpArgs: ['--mcp-config', '{mcpConfig}'] },
    tools: ['town_status', 'report_progress'],
  });
  const task = await agent.assign('say hello to the town');
  const record = await town.waitForTask(task.id, { timeoutMs: 30000 });
  assert.equal(record.state, 'completed', record.error);
  const seen = JSON.parse(record.result);
  assert.match(seen.script, /node_modules\\/tinytown\\/dist\\/mcp-server\\.js$/);
  assert.deepEqual(seen.tools, ['town_status', 'report_progress']);
  assert.equal(seen.status.you.agent, 'talker');
} finally {
  await town.close();
  if (!process.env.REDIS_URL) await stopManagedRedis(dir);
}
console.log('esm: an agent CLI reached its town tools through the installed dist/mcp-server.js');
`;

const CJS_SMOKE = `'use strict';
const { AgentNotFoundError, stopManagedRedis, Task, TimeoutError, TinytownError, Town, waitForIdle } = require('tinytown');

async function main() {${SMOKE_BODY('cjs')}}

main().then(
  async (caught) => {
    // The dual-package hazard: an application can load both copies. Errors must still match.
    const esm = await import('tinytown');
    const assert = require('node:assert/strict');
    const mcp = require('tinytown/mcp');
    assert.equal(typeof mcp.createTownMcpServer, 'function', 'tinytown/mcp loads with require()');
    assert.deepEqual(mcp.TOOL_NAMES, esm.TOOL_NAMES);
    assert.notEqual(esm.Town, Town, 'import() loads the ESM copy');
    assert.ok(caught instanceof esm.AgentNotFoundError, 'a CJS error is instanceof the ESM class');
    console.log('cjs: connected, ran a task on an in-process agent, instanceof holds (also across the ESM copy); require(esm) ' +
      (process.features.require_module ? 'on' : 'off'));
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
`;

/** Type-checked in both projects: compile errors here are what users would see. */
const CONSUMER_TS = `import {
  AgentNotFoundError,
  Task,
  Town,
  waitForIdle,
  type AgentOptions,
  type TaskRecord,
  type TownEvent,
  type TownStatus,
} from 'tinytown';

export async function main(): Promise<TownStatus> {
  const connecting: Promise<Town> = Town.connect('.', { leaseMs: 15_000, durability: 'strict' });
  const town = await connecting;
  const options: AgentOptions = { run: async (task: TaskRecord) => \`echo: \${task.description}\`, maxAttempts: 2 };
  const agent = await town.spawnAgent('echo', options);
  const record: TaskRecord = await agent.assign(new Task('hello', { priority: 'high' }));
  town.on('task.completed', (event: TownEvent) => console.log(event.taskId, record.id));
  // @ts-expect-error unknown event names do not compile
  town.on('task.done', () => undefined);
  // @ts-expect-error leaseMs is a number
  await Town.connect('.', { leaseMs: '15s' });
  try {
    await town.agent('nobody');
  } catch (err) {
    if (err instanceof AgentNotFoundError) {
      const code: 'AGENT_NOT_FOUND' = err.code;
      console.log(code);
    }
  }
  await waitForIdle([agent], { timeoutMs: 1_000 });
  const status = await town.status();
  await town.close();
  return status;
}
`;

/** tinytown/mcp's types (node16/nodenext resolution: the MCP SDK itself has no node10 types). */
const CONSUMER_MCP_TS = `import { createTownMcpServer, TOOL_NAMES, type TownMcpServer, type TownMcpServerOptions } from 'tinytown/mcp';
import type { AgentOptions, ToolName } from 'tinytown';

export async function serve(options: TownMcpServerOptions): Promise<TownMcpServer> {
  const reviewer: ToolName[] = TOOL_NAMES.filter((t) => t !== 'assign_task');
  const agent: AgentOptions = { cli: 'claude', tools: reviewer };
  // @ts-expect-error unknown tool names do not compile
  const wrong: AgentOptions = { cli: 'claude', tools: ['send_mail'] };
  console.log(agent, wrong);
  const town = await createTownMcpServer(options);
  console.log(town.scope.agent.name, town.scope.tools);
  return town;
}
`;

/** CommonJS-only syntax: \`import = require\` resolves through the "require" condition. */
const CONSUMER_REQUIRE_TS = `import tinytown = require('tinytown');

export const connect: (dir?: string) => Promise<tinytown.Town> = (dir) => tinytown.Town.connect(dir);
export const code: 'TIMEOUT' = new tinytown.TimeoutError('late').code;
`;

const TSCONFIG = (compilerOptions, files) =>
  JSON.stringify(
    {
      compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, target: 'ES2022', types: ['node'], ...compilerOptions },
      files,
    },
    null,
    2,
  );

const projects = [
  {
    name: 'esm',
    type: 'module',
    files: {
      'smoke.js': ESM_SMOKE,
      'mcp-smoke.js': MCP_SMOKE,
      'consumer.ts': CONSUMER_TS,
      'consumer-mcp.ts': CONSUMER_MCP_TS,
      'tsconfig.json': TSCONFIG({ module: 'nodenext', moduleResolution: 'nodenext' }, ['consumer.ts', 'consumer-mcp.ts']),
    },
    typecheck: [{ config: 'tsconfig.json', expect: 'dist/index.d.ts' }],
  },
  {
    name: 'cjs',
    type: 'commonjs',
    files: {
      'smoke.js': CJS_SMOKE,
      'consumer.ts': CONSUMER_TS,
      'consumer-require.ts': CONSUMER_REQUIRE_TS,
      'consumer-mcp.ts': CONSUMER_MCP_TS,
      'tsconfig.json': TSCONFIG({ module: 'node16', moduleResolution: 'node16' }, ['consumer.ts', 'consumer-require.ts']),
      // skipLibCheck on: the MCP SDK's own CommonJS declarations do not check under node16
      // (TS1541 in its validation/types.d.ts); the consumer is still checked against our types.
      'tsconfig.mcp.json': TSCONFIG({ module: 'node16', moduleResolution: 'node16', skipLibCheck: true }, ['consumer-mcp.ts']),
      'tsconfig.legacy.json': TSCONFIG({ module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true }, [
        'consumer.ts',
        'consumer-require.ts',
      ]),
    },
    typecheck: [
      { config: 'tsconfig.json', expect: 'dist/index.d.cts' },
      { config: 'tsconfig.mcp.json', expect: 'dist/index.d.cts' },
      { config: 'tsconfig.legacy.json', expect: 'dist/index.d.ts' },
    ],
  },
];

// ── run ────────────────────────────────────────────────────────────────────────────────────

let failed = false;
try {
  const tarball = await packTarball(work);
  console.log(`tarball: ${tarball}`);
  // The MCP SDK is tinytown's optional peer: an application that uses tinytown/mcp installs it.
  const devTools = [`typescript@${version('typescript')}`, `@types/node@${version('@types/node')}`, `@modelcontextprotocol/sdk@${version('@modelcontextprotocol/sdk')}`];

  await Promise.all(
    projects.map(async (project) => {
      const dir = join(work, project.name);
      await mkdir(join(dir, 'town'), { recursive: true });
      await writeFile(join(dir, 'package.json'), JSON.stringify({ name: `smoke-${project.name}`, private: true, type: project.type }, null, 2));
      for (const [file, text] of Object.entries(project.files)) await writeFile(join(dir, file), text);
      await run(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball, ...devTools], {
        cwd: dir,
        quiet: true,
        label: `${project.name}: npm install <tarball> ${devTools.join(' ')}`,
      });
    }),
  );

  // The smoke runs, one after the other: with no REDIS_URL each starts and stops its own server.
  for (const project of projects) {
    const dir = join(work, project.name);
    // Node >= 20.19 can require() ES modules; turn that off to prove the CJS build needs none.
    const noRequireEsm = project.type === 'commonjs' && typeof process.features.require_module === 'boolean';
    const args = [...(noRequireEsm ? ['--no-experimental-require-module'] : []), 'smoke.js', join(dir, 'town')];
    await run(process.execPath, args, { cwd: dir, label: `${project.name}: node ${args.slice(0, -1).join(' ')} (Redis: ${process.env.REDIS_URL ? 'REDIS_URL' : 'managed'})` });
    if (project.files['mcp-smoke.js']) {
      await mkdir(join(dir, 'town-mcp'), { recursive: true });
      await run(process.execPath, ['mcp-smoke.js', join(dir, 'town-mcp')], { cwd: dir, label: `${project.name}: node mcp-smoke.js (town tools through the installed server)` });
    }
  }

  await Promise.all(
    projects.flatMap((project) =>
      project.typecheck.map(async ({ config, expect }) => {
        const dir = join(work, project.name);
        const tsc = join(dir, 'node_modules', 'typescript', 'bin', 'tsc');
        const listed = await run(process.execPath, [tsc, '-p', config, '--listFilesOnly'], { cwd: dir, quiet: true });
        // The main entry's declarations (tinytown/mcp's and the chunks both share come along).
        const resolved = listed.split('\n').filter((f) => /node_modules\/tinytown\/dist\/index\.d\.c?ts$/.test(f));
        if (resolved.length !== 1 || !resolved[0].endsWith(expect)) {
          throw new Error(`${project.name}/${config}: expected tinytown's types from ${expect}, got ${resolved.join(', ') || 'none'}`);
        }
        await run(process.execPath, [tsc, '-p', config], { cwd: dir, quiet: true, label: `${project.name}: tsc -p ${config} (types from ${expect})` });
      }),
    ),
  );
  console.log(`test:package passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (err) {
  failed = true;
  console.error(err instanceof Error ? err.message : err);
} finally {
  // A shared Redis keeps no trace of the smoke towns.
  if (process.env.REDIS_URL) await removeSmokeKeys().catch((err) => console.warn(`could not remove the smoke towns' keys: ${err}`));
  if (keep) console.log(`kept ${work}`);
  else await rm(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

async function removeSmokeKeys() {
  const { Redis } = await import('ioredis');
  const redis = new Redis(process.env.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `tt:{${townPrefix}-*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
