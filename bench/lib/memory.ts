/**
 * Where the memory of a populated server goes: every key SCANned, grouped by its pattern (ids
 * replaced by `*`), summed with `MEMORY USAGE … SAMPLES 0`. Works the same for tinytown's and
 * BullMQ's keys, without knowing either layout.
 */
import type { Redis } from 'ioredis';

export interface KeyGroup {
  pattern: string;
  type: string;
  keys: number;
  bytes: number;
  /** bytes / the number of queued tasks or jobs */
  bytesPerTask: number;
}

const ID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<=:)\d+(?=$|:)/gi;

export async function keyMemoryBreakdown(admin: Redis, tasks: number): Promise<KeyGroup[]> {
  const groups = new Map<string, KeyGroup>();
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'COUNT', 1000);
    cursor = next;
    const pipeline = admin.pipeline();
    for (const key of keys) {
      pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
      pipeline.type(key);
    }
    const replies = (await pipeline.exec()) ?? [];
    keys.forEach((key, i) => {
      const bytes = Number(replies[2 * i]?.[1] ?? 0);
      const type = String(replies[2 * i + 1]?.[1] ?? '?');
      const pattern = key.replace(ID, '*');
      const group = groups.get(pattern) ?? { pattern, type, keys: 0, bytes: 0, bytesPerTask: 0 };
      group.keys++;
      group.bytes += bytes;
      groups.set(pattern, group);
    });
  } while (cursor !== '0');
  return [...groups.values()]
    .map((g) => ({ ...g, bytesPerTask: g.bytes / tasks }))
    .sort((a, b) => b.bytes - a.bytes);
}
