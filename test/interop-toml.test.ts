/**
 * `Town.connect(dir)` on a folder the Rust `tt init` made: `tinytown.toml` (and no
 * `tinytown.json`) gives the town's name and Redis, read-only, and implies the tinytown key
 * layout. The small TOML reader is tested on the shapes `toml::to_string_pretty` writes and on
 * hand-edited files.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { configFromRustToml } from '../src/config.js';
import { ConfigInvalidError, Town } from '../src/index.js';
import { parseToml, TomlSyntaxError } from '../src/toml.js';
import { rawRedis, sleep } from './helpers/kit.js';
import * as tt from './helpers/rust-tt.js';
import { redisUrl, tempDir, track, uniqueName } from './helpers/town.js';
import { withRedisUrlEnv } from './helpers/util.js';

/** What `tt init` writes (`toml::to_string_pretty(&Config)`, src/config.rs), for a central TCP Redis. */
function rustToml(name: string, redis: { host: string; port: number; password?: string }): string {
  return `name = "${name}"
default_cli = "claude"
max_agents = 10

[redis]
use_socket = false
socket_path = "redis.sock"
host = "${redis.host}"
port = ${redis.port}
persist = false
aof_path = "redis.aof"
${redis.password === undefined ? '' : `password = "${redis.password}"\n`}tls_enabled = false
bind = "127.0.0.1"

[agent_clis.aider]
name = "aider"
command = "aider --yes --no-auto-commits --message"

[agent_clis.aider.env]

[agent_clis.claude]
name = "claude"
command = "claude --print --dangerously-skip-permissions"
env = {}
`;
}

describe('the TOML reader', () => {
  it('reads what toml::to_string_pretty writes for a Rust Config', () => {
    const doc = parseToml(rustToml('my-town', { host: '127.0.0.1', port: 16379, password: 'p@ss "q"'.replace(/"/g, '\\"') }));
    expect(doc).toEqual({
      name: 'my-town',
      default_cli: 'claude',
      max_agents: 10,
      redis: {
        use_socket: false,
        socket_path: 'redis.sock',
        host: '127.0.0.1',
        port: 16379,
        persist: false,
        aof_path: 'redis.aof',
        password: 'p@ss "q"',
        tls_enabled: false,
        bind: '127.0.0.1',
      },
      agent_clis: {
        aider: { name: 'aider', command: 'aider --yes --no-auto-commits --message', env: {} },
        claude: { name: 'claude', command: 'claude --print --dangerously-skip-permissions', env: {} },
      },
    });
  });

  it('reads the rest of the TOML a person may write', () => {
    const doc = parseToml(
      [
        '# a comment',
        "title = 'literal \\n stays'   # trailing comment",
        'esc = "tab\\there \\"quoted\\" \\u00e9 \\U0001F600 back\\\\slash"',
        'ml = """',
        'first \\',
        '   second"""',
        "raw = '''",
        'C:\\path\\n',
        "'''",
        'ints = [1_000, -7, +3, 0xff, 0o17, 0b101]',
        'floats = [3.5, -0.25, 1e3, 6.02E-2]',
        'specials = [inf, -inf]',
        'when = 1979-05-27T07:32:00Z',
        'local = 1979-05-27 07:32:00',
        'day = 1979-05-27',
        'nested = [ [1, 2], ["a", \'b\'], ] # trailing comma',
        'multi = [',
        '  "x",  # between items',
        '  "y",',
        ']',
        'inline = { a = 1, b.c = "d", "quoted key" = true }',
        'dotted.key.here = "v"',
        '"quoted.table".k = 1',
        '',
        '[server]',
        'port = 8080',
        '[server.tls]',
        'enabled = false',
        '',
        '[[roles]]',
        'id = "reviewer"',
        '[roles.policy]',
        'strict = true',
        '[[roles]]',
        'id = "worker"',
        '',
      ].join('\r\n'),
    );
    expect(doc).toMatchObject({
      title: 'literal \\n stays',
      esc: 'tab\there "quoted" é 😀 back\\slash',
      ml: 'first second',
      raw: 'C:\\path\\n\r\n',
      ints: [1000, -7, 3, 255, 15, 5],
      floats: [3.5, -0.25, 1000, 0.0602],
      specials: [Infinity, -Infinity],
      when: '1979-05-27T07:32:00Z',
      local: '1979-05-27 07:32:00',
      day: '1979-05-27',
      nested: [
        [1, 2],
        ['a', 'b'],
      ],
      multi: ['x', 'y'],
      inline: { a: 1, b: { c: 'd' }, 'quoted key': true },
      dotted: { key: { here: 'v' } },
      'quoted.table': { k: 1 },
      server: { port: 8080, tls: { enabled: false } },
      roles: [{ id: 'reviewer', policy: { strict: true } }, { id: 'worker' }],
    });
  });

  it.each([
    ['a = 1\na = 2', /defined twice \(line 2\)/],
    ['[t]\nx = 1\n[t]\ny = 2', /table \[t\] defined twice \(line 3\)/],
    ['a = "open\nb = 1', /unterminated string \(line 1\)/],
    ['\n\nname "x"', /expected =.*\(line 3\)/],
    ['a = 1 2', /end of the line/],
    ['a = nope', /expected a value/],
    ['a = "\\q"', /unknown escape/],
    ['a = [1, 2', /expected , or \]/],
    ['a = """never closed', /unterminated multi-line string/],
  ])('refuses %j with a line number', (text, message) => {
    expect(() => parseToml(text)).toThrow(TomlSyntaxError);
    expect(() => parseToml(text)).toThrow(message);
  });
});

describe('a Rust tinytown.toml as town config', () => {
  const password = process.env.TINYTOWN_REDIS_PASSWORD;
  afterEach(() => {
    if (password === undefined) delete process.env.TINYTOWN_REDIS_PASSWORD;
    else process.env.TINYTOWN_REDIS_PASSWORD = password;
  });

  it('builds the Redis URL as the Rust Config::redis_url does', () => {
    const dir = '/srv/my town';
    const url = (toml: string) => configFromRustToml(dir, 'tinytown.toml', `name = "t"\n${toml}`).redis?.url;
    delete process.env.TINYTOWN_REDIS_PASSWORD;
    expect(configFromRustToml(dir, 'tinytown.toml', 'name = "t"')).toEqual({ name: 't', keyLayout: 'tinytown', redis: { url: 'unix:///srv/my%20town/redis.sock' } });
    expect(url('[redis]\nsocket_path = ".tt/r.sock"')).toBe('unix:///srv/my%20town/.tt/r.sock');
    expect(url('[redis]\nsocket_path = "/run/redis.sock"')).toBe('unix:///run/redis.sock');
    expect(url('[redis]\nuse_socket = false')).toBe('redis://127.0.0.1:6379');
    expect(url('[redis]\nuse_socket = false\nhost = "redis.internal"\nport = 16379\npassword = "p@ss:w/rd"')).toBe('redis://:p%40ss%3Aw%2Frd@redis.internal:16379');
    expect(url('[redis]\nuse_socket = false\nhost = "::1"\ntls_enabled = true')).toBe('rediss://[::1]:6379');
    process.env.TINYTOWN_REDIS_PASSWORD = 'from-env';
    expect(url('[redis]\nuse_socket = false\npassword = "from-file"')).toBe('redis://:from-env@127.0.0.1:6379');
  });

  it.each([
    ['name = 5', /name must be a string/],
    ['default_cli = "claude"', /has no name/],
    ['name = "my/town"', /cannot use/],
    ['name = "t"\n[redis]\nuse_socket = false\nport = 70000', /redis.port must be a port number/],
    ['name = "t"\n[redis]\nuse_socket = "no"', /redis.use_socket must be true or false/],
    ['name = "t"\nredis = 1', /redis must be a table/],
    ['name = "t"\n[redis\n', /not valid TOML: expected \]/],
  ])('refuses %j with ConfigInvalidError', (toml, message) => {
    const err = (() => {
      try {
        configFromRustToml('/x', '/x/tinytown.toml', toml);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toContain('/x/tinytown.toml');
  });

  it('Town.connect uses its name and Redis, the tinytown layout, and writes nothing to the folder', async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const target = new URL(redisUrl());
    const file = join(dir, 'tinytown.toml');
    const text = rustToml(name, { host: target.hostname, port: Number(target.port || 6379), ...(target.password && { password: decodeURIComponent(target.password) }) });
    await writeFile(file, text);
    const before = await stat(file);
    await sleep(20);

    const town = track(await withRedisUrlEnv(undefined, () => Town.connect(dir)));
    expect(town.name).toBe(name);
    expect(town.config).toEqual({ name, keyLayout: 'tinytown' }); // no Redis URL (nor password) in the public config
    const agent = await town.spawnAgent('backend', { start: false });
    const task = await agent.assign('from tinytown');
    const redis = rawRedis();
    expect(await redis.exists(`tt:${name}:agent:${agent.id}`)).toBe(1);
    // what `tt` in this folder would see
    expect(await tt.getAgentState(redis, `tt:${name}:`, agent.id)).toMatchObject({ name: 'backend', state: 'cold' });
    expect(await tt.getTask(redis, `tt:${name}:`, task.id)).toMatchObject({ state: 'assigned', assigned_to: agent.id });

    // read-only: the TOML untouched, no tinytown.json beside it
    expect(await readFile(file, 'utf8')).toBe(text);
    expect((await stat(file)).mtimeMs).toBe(before.mtimeMs);
    expect(existsSync(join(dir, 'tinytown.json'))).toBe(false);
    const again = track(await withRedisUrlEnv(undefined, () => Town.connect(dir, { create: false })));
    expect((await again.agents()).map((a) => a.id)).toEqual([agent.id]);
    expect(existsSync(join(dir, 'tinytown.json'))).toBe(false);
  });

  it('tinytown.json wins when both files are there', async () => {
    const dir = await tempDir();
    const jsonName = uniqueName();
    await writeFile(join(dir, 'tinytown.toml'), rustToml(uniqueName(), { host: '127.0.0.1', port: 1 }));
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: jsonName }));
    const town = track(await Town.connect(dir, { redis: redisUrl() }));
    expect(town.name).toBe(jsonName);
    expect(town.config.keyLayout).toBeUndefined();
    const agent = await town.spawnAgent('a', { start: false });
    expect(await rawRedis().exists(`tt:{${jsonName}}:agent:${agent.id}`)).toBe(1);
  });

  it('names the TOML when its Redis URL is refused', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'tinytown.toml'), `name = "${uniqueName()}"\n[redis]\nuse_socket = false\nhost = "bad host"\n`);
    const err = await withRedisUrlEnv(undefined, () => Town.connect(dir)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigInvalidError);
    expect((err as Error).message).toContain('tinytown.toml [redis]');
  });

  const server = process.env.TINYTOWN_REDIS_SERVER ?? 'redis-server';
  const haveServer = spawnSync(server, ['--version']).status === 0;
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
  });

  it.skipIf(!haveServer)("a per-town Redis on the TOML's unix socket (the Rust default)", async () => {
    const dir = await tempDir();
    const name = uniqueName();
    const socket = join(dir, 'redis.sock');
    child = spawn(server, ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    const probe = new Redis({ path: socket, lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null });
    probe.on('error', () => undefined);
    await probe.connect().catch(() => undefined);
    await probe.ping();
    await writeFile(join(dir, 'tinytown.toml'), `name = "${name}"\ndefault_cli = "claude"\nmax_agents = 10\n\n[redis]\nuse_socket = true\nsocket_path = "redis.sock"\n`);
    const town = track(await withRedisUrlEnv(undefined, () => Town.connect(dir)));
    const agent = await town.spawnAgent('local', { start: false });
    expect(await probe.exists(`tt:${name}:agent:${agent.id}`)).toBe(1);
    probe.disconnect();
    await town.close();
    await rm(socket, { force: true });
  });
});
