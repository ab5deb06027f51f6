/**
 * Workers on other hosts, and a network partition (issue 9). Three "hosts" are network
 * namespaces the test makes itself: Redis on one, a worker process on each of the two others
 * (test/fixtures/child-worker.mjs on the built package, started with `ip netns exec`), each
 * reaching Redis over its own veth link. The test process talks to Redis over its unix socket.
 *
 * Host A's link is cut (`ip link set … down`) while A runs a task. A is not dead, only silent:
 * its lease lapses, the sweeper hands the task to the backlog, and host B's agent (which takes
 * backlog work) runs it — within a lease and a sweep of the cut. A's handler finishes during
 * the cut; when the link returns, its late completion reaches Redis and is rejected
 * (`task.rejected`, a stale fence): the task stays completed once, with B's result.
 *
 * Skips with the reason where namespaces cannot be made (not root, no iproute2, no permission).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Town, type TownEvent } from '../src/index.js';
import { builtPackage } from './helpers/build.js';
import { killAllWorkerProcesses, startWorkerProcess } from './helpers/faults.js';
import { Hosts, netnsUnavailable, removeStaleNamespaces } from './helpers/netns.js';
import { killAllServers, sleep, startServer, type ServerProcess } from './helpers/topology.js';
import { tempDir, track, uniqueName } from './helpers/town.js';

const unavailable = await netnsUnavailable();
if (unavailable) console.warn(`scale-partition: skipped: ${unavailable}`);

const LEASE_MS = 1500;
const hosts = new Hosts();
let redis: ServerProcess | undefined;
let redisDir = '';
let dist = '';
const links: Record<string, { ifA: string; ifB: string; addrA: string; addrB: string }> = {};

beforeAll(async () => {
  if (unavailable) return;
  await removeStaleNamespaces();
  redisDir = await mkdtemp(join(tmpdir(), 'tt-netns-'));
  try {
    for (const host of ['redis', 'a', 'b']) await hosts.add(host);
    links.a = await hosts.link('redis', 'a', 1);
    links.b = await hosts.link('redis', 'b', 2);
    [redis, { esm: dist }] = await Promise.all([
      startServer({
        port: 6379,
        dir: redisDir,
        bind: '0.0.0.0',
        args: ['--protected-mode', 'no', '--unixsocket', join(redisDir, 'redis.sock'), '--unixsocketperm', '777'],
        launcher: hosts.exec('redis'),
      }),
      builtPackage(),
    ]);
  } catch (err) {
    await hosts.removeAll();
    throw err;
  }
}, 60_000);

afterEach(() => {
  killAllWorkerProcesses();
});

afterAll(async () => {
  killAllWorkerProcesses();
  await redis?.kill();
  killAllServers();
  await hosts.removeAll();
  if (redisDir) await rm(redisDir, { recursive: true, force: true });
  if (!unavailable) expect(await hosts.remaining()).toEqual([]);
});

/** The first event matching `match`, history included. */
async function eventOf(town: Town, match: (e: TownEvent) => boolean, timeoutMs: number): Promise<TownEvent> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), timeoutMs);
  try {
    for await (const e of town.events({ since: 'start', signal: stop.signal })) if (match(e)) return e;
  } finally {
    clearTimeout(timer);
    stop.abort();
  }
  throw new Error(`no matching event within ${timeoutMs} ms`);
}

describe.skipIf(unavailable !== undefined)(`workers on two hosts, Redis on a third (network namespaces)${unavailable ? ` — skipped: ${unavailable}` : ''}`, () => {
  it("a host cut off mid-task loses it to the other host within the lease; its late completion is rejected; the task completes once", async () => {
    const root = await tempDir();
    const name = uniqueName();
    // The test's own view of the town, over the unix socket (no network involved).
    const town = track(await Town.connect(root, { redis: `unix://${join(redisDir, 'redis.sock')}`, name, leaseMs: LEASE_MS }));
    const connectedAt = Date.now();
    await town.spawnAgent('a', { start: false });
    await town.spawnAgent('b', { start: false, claimBacklog: true });
    const worker = (host: 'a' | 'b', more: Parameters<typeof startWorkerProcess>[0] extends infer O ? Partial<O> : never) =>
      startWorkerProcess({
        dist,
        redisUrl: `redis://${links[host]!.addrA}:6379`,
        root,
        town: name,
        agent: host,
        handler: 'ok',
        leaseMs: LEASE_MS,
        townLeaseMs: LEASE_MS,
        launcher: hosts.exec(host),
        ...more,
      });
    const [hostA, hostB] = await Promise.all([worker('a', { handler: 'slow', slowMs: 2500 }), worker('b', { claimBacklog: true })]);

    // Sweepers hold off for a lease and a second after they connect (leases may look expired
    // then): let that pass, so the reclaim is timed by the lease alone.
    await sleep(Math.max(0, connectedAt + LEASE_MS + 1000 - Date.now()));
    const task = await (await town.agent('a')).assign('partitioned job');
    await hostA.nth('started', 1);
    await hosts.setLink('redis', links.a!.ifA, 'down'); // unplug host A at the switch
    const cutAt = Date.now();
    try {
      const reclaimed = await eventOf(town, (e) => e.type === 'task.reclaimed' && e.taskId === task.id, 15_000);
      const reclaimMs = Date.now() - cutAt;
      expect(reclaimed.data.to).toBe('backlog');
      const done = await town.waitForTask(task.id, { timeoutMs: 15_000 });
      const completedMs = Date.now() - cutAt;
      expect(done.state).toBe('completed');
      expect(done.result).toBe('child result'); // host B's handler
      expect(hostB.all('started').map(([id]) => id)).toContain(task.id);
      // Within the lease (plus the sweep that notices it, and a second for the scheduling).
      expect(reclaimMs).toBeLessThan(LEASE_MS + LEASE_MS / 2 + 1000);
      // A's handler ends while A is still cut off: its completion waits in its socket.
      await hostA.nth('finished', 1, 10_000);
      expect((await town.task(task.id)).result).toBe('child result');

      await hosts.setLink('redis', links.a!.ifA, 'up');
      const restoredAt = Date.now();
      const rejected = await eventOf(town, (e) => e.type === 'task.rejected' && e.taskId === task.id, 20_000);
      expect(rejected.data.workerId).toBe(hostA.workerId);
      const final = await town.task(task.id);
      expect(final.state).toBe('completed');
      expect(final.result).toBe('child result');
      const completions: TownEvent[] = [];
      for await (const e of town.events({ since: 'start', signal: AbortSignal.timeout(500) })) {
        if (e.type === 'task.completed' && e.taskId === task.id) completions.push(e);
      }
      expect(completions).toHaveLength(1);
      console.log(
        `partition: reclaimed ${reclaimMs} ms after the cut (lease ${LEASE_MS} ms), completed on host B ${completedMs} ms after; ` +
          `host A's late result rejected ${Date.now() - restoredAt} ms after the link came back`,
      );
    } finally {
      await hosts.setLink('redis', links.a!.ifA, 'up').catch(() => undefined);
    }
  }, 60_000);
});
