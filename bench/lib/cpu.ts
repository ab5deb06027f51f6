/** CPU spent by Redis (INFO cpu) and by this Node process (process.cpuUsage) over a phase. */
import type { Redis } from 'ioredis';

async function redisCpuUs(admin: Redis): Promise<number> {
  const text = await admin.info('cpu');
  const sys = Number(/^used_cpu_sys:([\d.]+)/m.exec(text)?.[1] ?? NaN);
  const user = Number(/^used_cpu_user:([\d.]+)/m.exec(text)?.[1] ?? NaN);
  return (sys + user) * 1e6;
}

/** Starts measuring; the returned function ends the phase and returns µs spent by each side. */
export async function cpuMeter(admin: Redis): Promise<() => Promise<{ redisUs: number; nodeUs: number }>> {
  const redis0 = await redisCpuUs(admin);
  const node0 = process.cpuUsage();
  return async () => {
    const node = process.cpuUsage(node0);
    const redisUs = (await redisCpuUs(admin)) - redis0;
    return { redisUs, nodeUs: node.user + node.system };
  };
}
