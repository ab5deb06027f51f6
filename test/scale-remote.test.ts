/**
 * Workers on other machines reach the town's Redis as operators set it up (issue 9): TLS
 * (`rediss://`) with a private CA, an ACL user with only tinytown's permissions (the ones the
 * README documents), and the password in an environment variable named by `passwordEnv` —
 * never in `tinytown.json`, whose `redis.url` refuses one. The server here is a redis-server of
 * the test's own with TLS only and the `default` user off; the certificates are made with
 * openssl for the test.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect, promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigInvalidError, RedisAuthError, RedisConnectionError, Town } from '../src/index.js';
import { builtPackage } from './helpers/build.js';
import { killAllWorkerProcesses, startWorkerProcess } from './helpers/faults.js';
import { freePort } from './helpers/redis-server.js';
import { killAllServers, startServer, type ServerProcess } from './helpers/topology.js';
import { tempDir, track, uniqueName } from './helpers/town.js';

const run = promisify(execFile);
const PASSWORD = 'tls-acl-S3cret:pw';
const ENV = 'TT_TEST_TOWN_REDIS_PASSWORD';
let dir = '';
let ca = '';
let server: ServerProcess;
let url = '';
let dist = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tt-tls-'));
  const ssl = (...args: string[]): Promise<unknown> => run('openssl', args, { cwd: dir, timeout: 20_000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=tinytown test CA');
  await ssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  await writeFile(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext');
  ca = join(dir, 'ca.pem');
  const port = await freePort();
  [server, { esm: dist }] = await Promise.all([
    startServer({
      port: 0,
      dir: join(dir, 'data'),
      args: [
        '--tls-port', String(port),
        '--tls-cert-file', join(dir, 'server.pem'),
        '--tls-key-file', join(dir, 'server.key'),
        '--tls-ca-cert-file', ca,
        '--tls-auth-clients', 'no',
        // README, "ACL users": tinytown's keys and channels, and nothing more.
        '--user', 'worker', 'on', `>${PASSWORD}`, 'resetkeys', '~tt:*', 'resetchannels', '&tt:*', 'nocommands',
        '+@read', '+@write', '+@scripting', '+@connection', '-@dangerous', '+info', '+publish',
        '--user', 'default', 'off',
      ],
    }),
    builtPackage(),
  ]);
  url = `rediss://worker@127.0.0.1:${port}`;
}, 60_000);

afterEach(() => {
  killAllWorkerProcesses();
  delete process.env[ENV];
});

afterAll(async () => {
  await server?.kill();
  killAllServers();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a remote Redis over TLS, with an ACL user and the password from the environment', () => {
  it('a town (CA as PEM text) and a worker process on another "machine" (settings in tinytown.json, CA file) run tasks', async () => {
    process.env[ENV] = PASSWORD;
    const root = await tempDir();
    const name = uniqueName();
    // What a deployment commits: where Redis is and how to trust it; the password stays outside.
    await writeFile(join(root, 'tinytown.json'), JSON.stringify({ name, redis: { username: 'worker', passwordEnv: ENV, tls: { ca } } }, null, 2));
    const town = track(await Town.connect(root, { redis: url, tls: { ca: await readFile(ca, 'utf8') }, passwordEnv: ENV }));
    expect(JSON.stringify(town.config)).not.toContain(PASSWORD);
    await town.spawnAgent('remote', { start: false });
    // The worker process gets REDIS_URL without a password, and the password in ENV.
    const worker = await startWorkerProcess({ dist, redisUrl: url, root, town: name, agent: 'remote', handler: 'ok' });
    const task = await (await town.agent('remote')).assign('over TLS');
    const done = await town.waitForTask(task.id, { timeoutMs: 15_000 });
    expect(done.state).toBe('completed');
    expect(done.result).toBe('child result');
    expect(worker.all('started').map(([id]) => id)).toEqual([task.id]);

    // The variable passwordEnv names never reaches an agent CLI.
    const printer = await town.spawnAgent('printer', {
      cli: { command: process.execPath, args: ['-e', 'process.stdout.write(JSON.stringify(process.env))'] },
    });
    const env = await town.waitForTask((await printer.assign('print the environment')).id, { timeoutMs: 15_000 });
    expect(env.state).toBe('completed');
    expect(JSON.parse(env.result!)[ENV]).toBeUndefined();
    expect(env.result).not.toContain(PASSWORD);
  }, 30_000);

  it('examples/deploy/worker.ts serves the agents named on its command line (TLS, ACL user, password and CA from its environment) and exits 0 on SIGTERM', async () => {
    // The deployment as its README describes it: worker.ts in a folder of its own, next to tinytown and tsx.
    const deploy = await tempDir('tt-deploy-');
    const repo = fileURLToPath(new URL('..', import.meta.url));
    await copyFile(join(repo, 'examples', 'deploy', 'worker.ts'), join(deploy, 'worker.ts'));
    await writeFile(join(deploy, 'package.json'), '{ "type": "module" }\n');
    await mkdir(join(deploy, 'node_modules'));
    await symlink(dirname(dist), join(deploy, 'node_modules', 'tinytown'));
    await symlink(join(repo, 'node_modules', 'tsx'), join(deploy, 'node_modules', 'tsx'));
    // The project: its tinytown.json names the agents' CLI (a worker host resolves it by name).
    const root = await tempDir();
    const name = uniqueName();
    const say = { command: process.execPath, args: ['-e', "process.stdout.write('built on the worker host')"] };
    await writeFile(join(root, 'tinytown.json'), JSON.stringify({ name, clis: { say } }));
    process.env[ENV] = PASSWORD;
    const town = track(await Town.connect(root, { redis: url, tls: { ca }, passwordEnv: ENV }));
    await town.spawnAgent('builder', { cli: 'say', start: false });

    const child = spawn(process.execPath, ['--import', 'tsx', 'worker.ts', 'builder'], {
      cwd: deploy,
      env: {
        ...process.env,
        [ENV]: '',
        REDIS_URL: url,
        TOWN_REDIS_PASSWORD: PASSWORD,
        TOWN_REDIS_CA: ca,
        TOWN_NAME: name,
        TOWN_DIR: root,
        TOWN_CLOSE_GRACE_MS: '2000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = once(child, 'exit');
    try {
      for (let waited = 0; !out.includes('serving builder'); waited += 50) {
        if (waited > 20_000 || child.exitCode !== null) throw new Error(`the deploy worker did not start:\n${out}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const task = await (await town.agent('builder')).assign('build it');
      const done = await town.waitForTask(task.id, { timeoutMs: 15_000 });
      expect(done.state).toBe('completed');
      expect(done.result).toBe('built on the worker host');
      child.kill('SIGTERM');
      const [code] = await exited;
      expect(code, out).toBe(0);
      expect(out).toContain('worker: closed');
      expect((await town.agent('builder').then((a) => a.info())).state).toBe('stopped');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 40_000);

  it('without the CA the certificate is refused: RedisConnectionError naming the TLS problem', async () => {
    process.env[ENV] = PASSWORD;
    const err = await Town.connect(await tempDir(), { redis: url, passwordEnv: ENV, name: uniqueName(), connectTimeoutMs: 3000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect((err as Error).message).toMatch(/certificate/i);
  });

  it('a wrong password from the environment is RedisAuthError, never showing it', async () => {
    process.env[ENV] = 'not-the-password';
    const err = await Town.connect(await tempDir(), { redis: url, tls: { ca }, passwordEnv: ENV, name: uniqueName(), connectTimeoutMs: 3000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisAuthError);
    expect(inspect(err, { depth: 5 })).not.toContain('not-the-password');
  });

  it('passwordEnv naming an unset variable is ConfigInvalidError naming the variable', async () => {
    const err = await Town.connect(await tempDir(), { redis: url, tls: { ca }, passwordEnv: ENV, name: uniqueName() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toContain(ENV);
  });

  it('a password in tinytown.json redis.url is refused, pointing at passwordEnv, without echoing it', async () => {
    const root = await tempDir();
    await writeFile(join(root, 'tinytown.json'), JSON.stringify({ name: uniqueName(), redis: { url: `rediss://worker:${encodeURIComponent(PASSWORD)}@127.0.0.1:6380` } }));
    const err = await Town.connect(root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(/passwordEnv/);
    expect(inspect(err, { depth: 5 })).not.toContain('S3cret');
  });

  it('a tls file that cannot be read, and remote settings with a client of your own, are ConfigInvalidError', async () => {
    process.env[ENV] = PASSWORD;
    const missing = await Town.connect(await tempDir(), { redis: url, tls: { ca: join(dir, 'nope.pem') }, passwordEnv: ENV, name: uniqueName() }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ConfigInvalidError);
    expect((missing as Error).message).toMatch(/tls\.ca.*nope\.pem/);
    const client = new Redis({ lazyConnect: true });
    try {
      const err = await Town.connect(await tempDir(), { redis: client, tls: { ca }, name: uniqueName() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigInvalidError);
    } finally {
      client.disconnect();
    }
  });
});
