/**
 * Redis Cluster (issue 9): a three-primary cluster on loopback. The default key layout puts
 * each town in one hash slot (`tt:{<town>}:…`), so every script runs on the node serving it;
 * towns whose slots belong to different primaries spread the load over the cluster. Each town
 * runs agents end to end (workers block on the cluster through duplicated Cluster clients, waits
 * wake on the event stream) and keeps all its keys on its own node.
 */
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigInvalidError, ReplicationTimeoutError, Town } from '../src/index.js';
import { tempDir, track } from './helpers/town.js';
import { ask, killAllServers, startCluster, type TestCluster } from './helpers/topology.js';

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster(3);
}, 40_000);

afterAll(async () => {
  await cluster?.stop();
  killAllServers();
});

/** Town names whose hash slots are served by each primary in turn: one name per node. */
async function townsOnEveryNode(): Promise<{ name: string; slot: number; port: number }[]> {
  const found = new Map<number, { name: string; slot: number; port: number }>();
  const anyPort = cluster.nodes[0]!.port;
  while (found.size < cluster.nodes.length) {
    const name = `c-${randomUUID().slice(0, 8)}`;
    const slot = Number(await ask(anyPort, (c) => c.call('CLUSTER', 'KEYSLOT', `tt:{${name}}:events`)));
    const port = await cluster.ownerOf(slot);
    if (!found.has(port)) found.set(port, { name, slot, port });
  }
  return [...found.values()];
}

/** Keys of a town on one node (SCAN on that node alone). */
async function keysOn(port: number, town: string): Promise<string[]> {
  return ask(port, async (c) => {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await c.scan(cursor, 'MATCH', `tt:{${town}}:*`, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    return keys;
  });
}

describe('Redis Cluster', () => {
  it('three towns on three different primaries each run their tasks end to end, keys in their own slot', async () => {
    const placements = await townsOnEveryNode();
    expect(new Set(placements.map((p) => p.port)).size).toBe(3);
    const own = new Cluster(cluster.addresses, { lazyConnect: true });
    try {
      const towns = await Promise.all(
        placements.map(async ({ name }, i) =>
          track(
            await Town.connect(await tempDir(), {
              name,
              // cluster settings (tinytown makes the client), or a Cluster client of the caller's
              redis: i === 1 ? own : { cluster: cluster.addresses },
              leaseMs: 3000,
            }),
          ),
        ),
      );
      await Promise.all(
        towns.map(async (town) => {
          const a = await town.spawnAgent('builder', { run: async (task) => `built ${task.description}` });
          const b = await town.spawnAgent('checker', { run: async (task) => `checked ${task.description}` });
          const tasks = [];
          for (let i = 0; i < 5; i++) tasks.push(await (i % 2 ? b : a).assign(`${town.name} job ${i}`));
          const backlogTask = await town.backlog.add('unassigned');
          await town.backlog.claim(backlogTask.id, 'checker');
          tasks.push(backlogTask);
          for (const t of tasks) expect((await town.waitForTask(t.id, { timeoutMs: 15_000 })).state).toBe('completed');
          await Promise.all([a.waitForIdle({ timeoutMs: 10_000 }), b.waitForIdle({ timeoutMs: 10_000 })]);
          const status = await town.status();
          expect(status.tasks.completed).toBe(6);
          expect(status.agents.map((x) => x.name).sort()).toEqual(['builder', 'checker']);
          expect(await town.broadcast('all done')).toBe(2);
          expect(await town.recover()).toEqual({ reclaimed: 0, expired: 0 });
        }),
      );
      // Each town's keys live on the primary serving its slot, and nowhere else.
      for (const { name, port } of placements) {
        for (const node of cluster.nodes) {
          const keys = await keysOn(node.port, name);
          if (node.port === port) expect(keys.length, `${name} on its node`).toBeGreaterThan(5);
          else expect(keys, `${name} on another node`).toEqual([]);
        }
      }
      await Promise.all(towns.map((t) => t.close()));
      expect(own.status).toBe('ready'); // a client passed in stays the caller's
    } finally {
      own.disconnect();
    }
  }, 45_000);

  it("durability: 'replicated' sends each write's WAIT to its town's node: with no replica there, callers get ReplicationTimeoutError", async () => {
    const town = track(
      await Town.connect(await tempDir(), { name: `r-${randomUUID().slice(0, 8)}`, redis: { cluster: cluster.addresses }, durability: 'replicated', replicaTimeoutMs: 100 }),
    );
    const err = await town.spawnAgent('lonely', { start: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplicationTimeoutError);
    expect((err as Error).message).toMatch(/0 of 1 replica/);
    expect((await town.agents()).map((a) => a.name)).toEqual(['lonely']); // applied on the primary all the same
  });

  it("keyLayout 'tinytown' is refused for cluster settings too, before any connection", async () => {
    const err = await Town.connect(await tempDir(), { name: 'flat', keyLayout: 'tinytown', redis: { cluster: cluster.addresses } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(/Cluster/);
  });

  it('a plain URL to a cluster node is refused with a clear error naming the cluster options', async () => {
    const err = await Town.connect(await tempDir(), { name: 'by-url', redis: `redis://127.0.0.1:${cluster.nodes[0]!.port}` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(/Cluster node.*\{ cluster:/);
  });
});
