/**
 * A worker host: attaches workers to agents of a town whose Redis runs elsewhere, runs their
 * tasks here (with the agents' registered CLIs, which must be installed and logged in on this
 * machine), and shuts down gracefully on SIGTERM. Your orchestrator registers the agents
 * (`town.spawnAgent(name, { cli, start: false })`) and assigns their work from anywhere.
 *
 *   REDIS_URL=rediss://worker@redis.internal:6380 \
 *   TOWN_REDIS_PASSWORD=… TOWN_REDIS_CA=/etc/ssl/redis-ca.pem \
 *   TOWN_NAME=myapp-main TOWN_DIR=/srv/myapp \
 *     npx tsx worker.ts backend reviewer        # or TOWN_AGENTS=backend,reviewer
 *
 * Environment:
 *   REDIS_URL             the town's Redis (redis://, rediss:// or unix://), without a password
 *   TOWN_REDIS_PASSWORD   the password of the URL's ACL user (passwordEnv: never written anywhere)
 *   TOWN_REDIS_CA         CA of the server's certificate: a file path or the PEM text (optional)
 *   TOWN_REDIS_SENTINELS  host:port,host:port,… of Redis Sentinels, instead of REDIS_URL (optional;
 *                         TOWN_REDIS_MASTER names the primary, default "mymaster")
 *   TOWN_NAME             the town (else tinytown.json in TOWN_DIR names it)
 *   TOWN_DIR              the project checkout the agents work in (default: the current folder)
 *   TOWN_AGENTS           agents to serve when none are given as arguments
 *   TOWN_CLOSE_GRACE_MS   how long running tasks may finish on SIGTERM (default 30 000)
 *
 * Exit status: 0 after SIGTERM/SIGINT or when every served agent was stopped or removed; 1 on
 * a configuration or connection error (a process manager restarts it); 64 on bad usage.
 */
import { Town, WorkerActiveError, type TownOptions, type Worker } from 'tinytown';

const env = process.env;
const agents = process.argv.slice(2).length > 0 ? process.argv.slice(2) : (env.TOWN_AGENTS ?? '').split(/[\s,]+/).filter(Boolean);
if (agents.length === 0 || (!env.REDIS_URL && !env.TOWN_REDIS_SENTINELS)) {
  console.error('usage: REDIS_URL=… [TOWN_REDIS_PASSWORD=…] worker <agent>…   (or TOWN_AGENTS=a,b; or TOWN_REDIS_SENTINELS=h:p,…)');
  process.exit(64);
}

const redis: TownOptions['redis'] = env.TOWN_REDIS_SENTINELS
  ? {
      sentinels: env.TOWN_REDIS_SENTINELS.split(',').map((hostPort) => {
        const [host, port] = hostPort.trim().split(':');
        return { host: host!, port: Number(port ?? 26379) };
      }),
      name: env.TOWN_REDIS_MASTER ?? 'mymaster',
    }
  : env.REDIS_URL!;

const town = await Town.connect(env.TOWN_DIR ?? process.cwd(), {
  redis,
  ...(env.TOWN_NAME && { name: env.TOWN_NAME }),
  ...(env.TOWN_REDIS_PASSWORD && { passwordEnv: 'TOWN_REDIS_PASSWORD' }),
  ...(env.TOWN_REDIS_CA && { tls: { ca: env.TOWN_REDIS_CA } }),
  closeGraceMs: Number(env.TOWN_CLOSE_GRACE_MS ?? 30_000),
}).catch((err: unknown) => {
  console.error(`worker: cannot open the town: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
// Lost connections, failovers and unconfirmed replication are retried by tinytown; log them.
town.on('error', (err) => console.warn(`worker: ${err instanceof Error ? err.message : String(err)}`));

let closing = false;
const shutdown = (why: string): void => {
  if (closing) return;
  closing = true;
  console.log(`worker: ${why}; running tasks get up to the grace period, then go back to their queue`);
  void town.close().then(() => console.log('worker: closed'));
};
process.once('SIGTERM', () => shutdown('SIGTERM'));
process.once('SIGINT', () => shutdown('SIGINT'));

/** Attaches to one agent; after a crash-restart, waits out the dead predecessor's lease. */
async function attach(agent: string): Promise<Worker> {
  for (;;) {
    try {
      return await town.runWorker(agent);
    } catch (err) {
      if (!(err instanceof WorkerActiveError) || closing) throw err;
      console.log(`worker: ${agent} still has a live worker (a previous run's lease?); retrying`);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
    }
  }
}

try {
  const workers = await Promise.all(agents.map(attach));
  console.log(`worker: pid ${process.pid} serving ${agents.join(', ')} of town ${town.name}`);
  await Promise.all(workers.map((w) => w.done));
  shutdown('every agent served here was stopped or removed');
} catch (err) {
  console.error(`worker: ${err instanceof Error ? err.message : String(err)}`);
  await town.close();
  process.exitCode = 1;
}
