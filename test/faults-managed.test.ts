/**
 * SPEC §4–5: the managed redis-server (no REDIS_URL: a server of the town's own on a unix socket
 * in `.tt/`, with AOF) killed with SIGKILL. The next `Town.connect` on that folder — from any
 * process — starts it again from its AOF on the same socket; Town instances that were live all
 * along reconnect by themselves and carry on: their workers, waits and writes.
 */
import { readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Town } from '../src/index.js';
import { stopManagedRedis } from '../src/redis-server/managed.js';
import { deferred, waitDead } from './helpers/kit.js';
import { tempDir, uniqueName } from './helpers/town.js';
import { lastJson, runNodeScript, withRedisUrlEnv } from './helpers/util.js';

const towns: Town[] = [];
const roots: string[] = [];

afterEach(async () => {
  await Promise.all(towns.splice(0).map((t) => t.close()));
  for (const root of roots.splice(0)) await stopManagedRedis(root);
});

async function pidOf(root: string): Promise<number> {
  return Number((await readFile(join(await realpath(root), '.tt', 'redis.pid'), 'utf8')).trim());
}

/** A child process that opens the town (no REDIS_URL), uses the agent, and reports. */
const CHILD = `
const { Town } = await import(process.env.TT_PKG);
const [dir, name, agentName] = process.argv.slice(2);
const town = await Town.connect(dir, { name, durability: 'strict' });
town.on('error', () => {});
const agent = await town.agent(agentName);
const task = await agent.assign('from a process that came after the crash');
const record = await town.waitForTask(task.id, { timeoutMs: 15000 });
console.log(JSON.stringify({ state: record.state, result: record.result }));
await town.close();
`;

describe('the managed redis-server killed with SIGKILL', () => {
  it('is restarted from its AOF by the next Town.connect in another process; a live Town reconnects and carries on', async () => {
    const root = await tempDir('tt-managed-crash-');
    roots.push(root);
    const name = uniqueName();
    const town = await withRedisUrlEnv(undefined, () => Town.connect(root, { name, durability: 'strict', leaseMs: 2_000 }));
    towns.push(town);
    town.on('error', () => undefined);
    const agent = await town.spawnAgent('keeper', { run: async (t) => `kept: ${t.description}` });
    const before = await agent.assign('before the crash');
    expect(await town.waitForTask(before.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed' });

    const firstPid = await pidOf(root);
    process.kill(firstPid, 'SIGKILL');
    await waitDead(firstPid);

    // Written to the live Town while no server runs: it waits for the server to come back.
    const during = agent.assign('during the outage');
    during.catch(() => undefined); // awaited below

    const child = await runNodeScript(CHILD, [root, name, 'keeper'], {
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'REDIS_URL')),
      timeoutMs: 30_000,
    });
    expect(child.code, child.stderr).toBe(0);
    // The child's task was run by the live Town's worker, which reconnected to the new server.
    expect(lastJson(child)).toEqual({ state: 'completed', result: 'kept: from a process that came after the crash' });

    const secondPid = await pidOf(root);
    expect(secondPid).not.toBe(firstPid);
    const duringTask = await during;
    expect(await town.waitForTask(duringTask.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed', result: 'kept: during the outage' });
    // What was written before the crash came back from the AOF.
    expect(await town.task(before.id)).toMatchObject({ state: 'completed', result: 'kept: before the crash' });
    expect((await town.status()).tasks.completed).toBe(3);
  }, 60_000);

  it('is restarted by a Town.connect in the same process too, and the live Town keeps waiting and working', async () => {
    const root = await tempDir('tt-managed-crash-');
    roots.push(root);
    const name = uniqueName();
    const town = await withRedisUrlEnv(undefined, () => Town.connect(root, { name, durability: 'strict', leaseMs: 2_000 }));
    towns.push(town);
    town.on('error', () => undefined);
    const gate = deferred();
    const started = deferred();
    const agent = await town.spawnAgent('steady', {
      run: async () => {
        started.resolve();
        await gate.promise;
        return 'finished across the crash';
      },
    });
    const task = await agent.assign('runs across the crash');
    await started.promise;
    const waiting = town.waitForTask(task.id, { timeoutMs: 20_000 });
    const idle = agent.waitForIdle({ timeoutMs: 20_000 });
    for (const p of [waiting, idle]) p.catch(() => undefined);
    const firstPid = await pidOf(root);
    process.kill(firstPid, 'SIGKILL');
    await waitDead(firstPid);
    gate.resolve(); // the handler finishes while no server runs: its result waits

    const second = await withRedisUrlEnv(undefined, () => Town.connect(root, { name, durability: 'strict' }));
    towns.push(second);
    expect(await pidOf(root)).not.toBe(firstPid);
    expect(await waiting).toMatchObject({ state: 'completed', result: 'finished across the crash', attempts: 1 });
    await idle;
    expect(await second.task(task.id)).toMatchObject({ state: 'completed' });
  }, 60_000);
});
