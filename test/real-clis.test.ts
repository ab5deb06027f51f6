/**
 * The presets against the real agent CLIs, installed from npm (`npm run test:clis`; skipped in
 * the ordinary suite). This machine has the npm registry but no network to the model providers
 * and no credentials, which is exactly what the checks rely on: every CLI must get past its
 * argument parser and stop at authentication or at the network.
 *
 * Versions are pinned to the ones the presets were checked against; set
 * `TINYTOWN_REAL_CLIS_TAG=latest` to try the newest releases instead.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { TOOL_NAMES } from '../src/mcp/tools.js';
import { defaultRunner } from '../src/runner/child-process-runner.js';
import { runCli, type CliDefinition, type CliRunResult } from '../src/runner/cli.js';
import type { FailureClass } from '../src/runner/failure.js';
import { PRESETS, withSession, type PresetName } from '../src/runner/presets.js';
import type { ProcessRunner } from '../src/runner/process-runner.js';
import { builtPackage } from './helpers/build.js';
import { openTown } from './helpers/town.js';

const run = promisify(execFile);
const ENABLED = process.env.TINYTOWN_REAL_CLIS === '1';
const CACHE = resolve('node_modules/.cache/real-clis');
const BIN = join(CACHE, 'node_modules', '.bin');
const TAG = process.env.TINYTOWN_REAL_CLIS_TAG;

/** The npm packages and the versions the presets were checked against. */
const PACKAGES: Readonly<Record<string, { pkg: string; version: string }>> = {
  claude: { pkg: '@anthropic-ai/claude-code', version: '2.1.197' }, // newer ones want Node 22
  codex: { pkg: '@openai/codex', version: '0.169.0' },
  gemini: { pkg: '@google/gemini-cli', version: '0.61.0' },
  auggie: { pkg: '@augmentcode/auggie', version: '0.36.0' },
  opencode: { pkg: 'opencode-ai', version: '1.18.33' },
  copilot: { pkg: '@github/copilot', version: '1.0.102' },
};

/** Presets whose CLI is not on npm: checked only when already on PATH. */
const NOT_ON_NPM: Readonly<Partial<Record<PresetName, string>>> = {
  aider: 'aider is a Python package (PyPI), not reachable from here',
  cursor: 'cursor-agent ships only through its own installer script',
  goose: 'goose ships only as a binary release or Homebrew formula',
};

/** What an argument parser says when it refuses the command line. */
const PARSER_COMPLAINT =
  /unknown option|unknown argument|unexpected argument|unrecognized (option|argument)|invalid (value|choice)|^Usage:|opencode run \[message\.\.\]|missing required argument/im;

/**
 * The help screen that documents each argument: the (sub)command's `--help`. A subcommand word
 * in the arguments (`codex exec … resume …`) switches to that subcommand's help for what follows.
 */
const HELP: Readonly<Record<string, { help: string[]; subcommands?: Readonly<Record<string, string[]>> }>> = {
  claude: { help: ['--help'] },
  codex: { help: ['exec', '--help'], subcommands: { resume: ['exec', 'resume', '--help'] } },
  gemini: { help: ['--help'] },
  auggie: { help: ['--help'] },
  opencode: { help: ['run', '--help'] },
  copilot: { help: ['--help'] },
};

type Variant = 'args' | 'new' | 'resume';

const installed = new Map<string, string>(); // command → version
const unavailable = new Map<string, string>(); // command → why
let home: string;
let work: string;
const suiteStart = performance.now();

describe.skipIf(!ENABLED)('real agent CLIs (npm run test:clis)', () => {
  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'tt-real-home-'));
    work = await mkdtemp(join(tmpdir(), 'tt-real-work-')); // not a git repository, on purpose
    await install();
  });

  afterAll(async () => {
    const seconds = ((performance.now() - suiteStart) / 1000).toFixed(1);
    const versions = [...installed].map(([cli, version]) => `${cli} ${version}`).join(', ');
    console.info(`[real-clis] ${versions || 'no CLI installed'}; suite took ${seconds}s`);
    for (const [cli, why] of unavailable) console.info(`[real-clis] skipped ${cli}: ${why}`);
    await rm(home, { recursive: true, force: true }).catch(() => {});
    await rm(work, { recursive: true, force: true }).catch(() => {});
  });

  describe('every preset is accepted by the real CLI', () => {
    const presets = Object.entries(PRESETS) as Array<[PresetName, CliDefinition]>;
    const cases = presets.flatMap(([name, preset]) =>
      (['args', 'new', 'resume'] as const)
        .filter((variant) => variant === 'args' || (variant === 'new' ? preset.sessionArgs : preset.resumeArgs))
        .map((variant) => [name, variant] as const),
    );

    it.for(cases)('%s (%s)', async ([name, variant], ctx) => {
      const preset = PRESETS[name];
      const definition = variantOf(preset, variant);
      requireCli(ctx, preset.command, NOT_ON_NPM[name]);

      // 1. Every flag is one the CLI documents, in the (sub)command it is given to.
      //    The town tools' flags (mcpArgs) are added at the end of every variant's arguments.
      for (const { helpArgs, args } of segments(preset.command, [...(definition.args ?? []), ...(preset.mcpArgs ?? [])])) {
        const help = await helpText(preset.command, helpArgs);
        for (const flag of flags(args)) expect(help, `${name}: ${flag} is not in \`${preset.command} ${helpArgs.join(' ')}\``).toMatch(flagPattern(flag));
      }

      // 2. The whole command line gets past the parser: the CLI stops at authentication or the
      //    network, never at its arguments.
      const result = await runPreset(definition, { timeoutMs: timeoutFor(preset.command) });
      console.info(`[real-clis] ${name} (${variant}): ${result.failure} after ${result.durationMs}ms — ${(result.error ?? '').split('\n')[0]}`);
      const said = `${result.stdout}\n${result.stderr}`;
      expect(said, `${name} refused its arguments:\n${said}`).not.toMatch(PARSER_COMPLAINT);
      expect(result.failure, result.error).not.toBe('not_found');
      expect(expectedFailures(preset.command, variant), `${name} ${variant}: ${result.error}`).toContain(result.failure);
    });
  });

  // Claude Code, Codex and OpenCode start their MCP servers before they reach the model, so the
  // town tools' wiring is shown end to end without credentials: the worker's flags make the real
  // CLI start tinytown's server, which reaches the worker's bridge and answers the handshake.
  // (Copilot and Auggie stop at authentication before starting any server.)
  describe('town tools: the real CLI starts tinytown\'s MCP server through the preset\'s flags', () => {
    const cases = [
      { preset: 'claude', failure: 'not_authenticated', timeoutMs: 30_000 },
      { preset: 'codex', failure: 'timeout', timeoutMs: 8_000 },
      { preset: 'opencode', failure: 'timeout', timeoutMs: 8_000 },
    ] as const;
    it.for(cases)('$preset', async ({ preset, failure, timeoutMs }, ctx) => {
      requireCli(ctx, preset);
      const dir = await mkdtemp(join(tmpdir(), 'tt-real-mcp-'));
      const log = join(dir, 'rpc.jsonl');
      const spy = join(dir, 'spy.mjs');
      const { esm } = await builtPackage();
      await writeFile(spy, spyScript(join(esm, '..', 'mcp-server.js'), log));
      const saved = process.env.TINYTOWN_MCP_SERVER;
      process.env.TINYTOWN_MCP_SERVER = spy;
      try {
        const town = await openTown();
        const agent = await town.spawnAgent('lead', {
          cli: { ...PRESETS[preset], command: join(BIN, PRESETS[preset].command) },
          tools: true,
          env: environment(),
          cwd: work,
          timeoutMs,
          maxAttempts: 1,
        });
        const task = await agent.assign('Reply with the single word: ready');
        const done = await town.waitForTask(task.id, { timeoutMs: timeoutMs + 15_000 });
        expect(done.state).toBe('failed');
        expect(done.error ?? '').toMatch(failure === 'timeout' ? /timed out/ : /not authenticated/);
        const lines = (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);
        type Line = { dir: 'env' | 'in' | 'out'; msg: { method?: string; id?: number; socket?: boolean; token?: boolean; result?: { serverInfo?: { name: string }; tools?: { name: string }[] } } };
        const rpc = lines.map((line) => JSON.parse(line) as Line);
        console.info(`[real-clis] ${preset} with town tools: ${rpc.map((r) => (r.dir === 'out' ? 'answer' : (r.msg.method ?? r.dir))).join(' → ')}`);
        // The CLI started the server with the run's socket (there, while the run lasts) and token,
        // and asked it to initialise.
        expect(rpc[0]).toEqual({ dir: 'env', msg: { socket: true, token: true } });
        expect(rpc.find((r) => r.dir === 'in')?.msg.method).toBe('initialize');
        // Claude quits at its login check before the server answers; the others wait on the
        // network, long enough to hear tinytown's server (built only after the bridge's hello)
        // and list its tools.
        if (preset !== 'claude') {
          expect(rpc.find((r) => r.dir === 'out' && r.msg.id === 0)?.msg.result?.serverInfo?.name).toBe('tinytown');
          const listed = rpc.find((r) => r.dir === 'out' && r.msg.result?.tools !== undefined)?.msg.result?.tools;
          expect(listed?.map((t) => t.name).sort()).toEqual([...TOOL_NAMES].sort());
        }
        await town.close();
      } finally {
        if (saved === undefined) delete process.env.TINYTOWN_MCP_SERVER;
        else process.env.TINYTOWN_MCP_SERVER = saved;
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  it('Claude without login fails within seconds with its own reason, not retryable', async (ctx) => {
    requireCli(ctx, 'claude');
    const started = performance.now();
    const result = await runPreset(PRESETS.claude, { timeoutMs: 30_000 });
    const seconds = (performance.now() - started) / 1000;
    expect(result).toMatchObject({ ok: false, failure: 'not_authenticated', retryable: false });
    expect(result.error).toMatch(/^claude not authenticated: Not logged in · Please run \/login \(exit code 1\)$/);
    expect(result.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(seconds).toBeLessThan(10);
  });

  it('Claude refuses to bypass permissions as root; the error says what to do', async (ctx) => {
    requireCli(ctx, 'claude');
    if (process.getuid?.() !== 0) ctx.skip('not running as root');
    const bypass: CliDefinition = { ...PRESETS.claude, args: ['-p', '--output-format', 'json', '--permission-mode', 'bypassPermissions'] };
    const result = await runPreset(bypass, { timeoutMs: 30_000 });
    expect(result).toMatchObject({ ok: false, failure: 'exit', retryable: false });
    expect(result.error).toContain('cannot be used with root/sudo privileges');
    expect(result.error).toContain('hint: Claude Code refuses');
  });

  it('Codex without network ends by timeout, quoting its last error line, leaving no process behind', async (ctx) => {
    requireCli(ctx, 'codex');
    let pgid: number | undefined;
    const recording: ProcessRunner = {
      start(spec) {
        const proc = defaultRunner.start(spec);
        pgid = proc.pid; // the CLI leads its own process group
        return proc;
      },
    };
    const result = await runPreset(PRESETS.codex, { timeoutMs: 8_000, killGraceMs: 2_000, runner: recording });
    if (result.failure === 'not_authenticated') ctx.skip('this machine reaches the OpenAI API: the no-network case cannot be shown here');
    expect(result).toMatchObject({ ok: false, failure: 'timeout', retryable: true });
    expect(result.sessionId).toBeDefined(); // thread.started was read
    expect(result.error).toMatch(/^codex timed out after 8000ms \(.*\); last error: (Reconnecting\.\.\.|stream disconnected|Falling back).*$/s);
    expect(result.durationMs).toBeLessThan(8_000 + 2_000 + 3_000);
    expect(pgid).toBeDefined();
    expect(await leftovers(pgid!)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

/** Installs the pinned CLIs into the cache folder unless they are there already. */
async function install(): Promise<void> {
  const wanted = Object.entries(PACKAGES).filter(([, { pkg, version }]) => TAG !== undefined || installedVersion(pkg) !== version);
  if (wanted.length > 0) {
    await mkdir(CACHE, { recursive: true });
    const specs = wanted.map(([, { pkg, version }]) => `${pkg}@${TAG ?? version}`);
    try {
      await run('npm', ['install', '--prefix', CACHE, '--no-audit', '--no-fund', '--loglevel=error', ...specs], { timeout: 280_000, maxBuffer: 16 * 1024 * 1024 });
    } catch (err) {
      const why = `npm install failed: ${(err as Error).message.split('\n').slice(0, 3).join(' ')}`;
      for (const [cli] of wanted) unavailable.set(cli, why);
    }
  }
  for (const [cli, { pkg }] of Object.entries(PACKAGES)) {
    const version = installedVersion(pkg);
    if (version !== undefined && existsSync(join(BIN, cli))) {
      installed.set(cli, version);
      unavailable.delete(cli);
    } else if (!unavailable.has(cli)) unavailable.set(cli, `${pkg} did not install a "${cli}" binary`);
  }
}

function installedVersion(pkg: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(join(CACHE, 'node_modules', pkg, 'package.json'), 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/** Skips (not fails) the test when the CLI could not be had here, saying why. */
function requireCli(ctx: TestContext, command: string, notOnNpm?: string): void {
  if (installed.has(command) || onPath(command)) return;
  const why = unavailable.get(command) ?? notOnNpm ?? 'not installed';
  unavailable.set(command, why);
  ctx.skip(`${command}: ${why}`);
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, command)));
}

function variantOf(preset: CliDefinition, variant: Variant): CliDefinition {
  if (variant === 'args') return preset;
  const id = preset.command === 'opencode' ? 'ses_0123456789abcdefABCDEFGHIJ' : randomUUID();
  return withSession(preset, id, variant)!;
}

/** The CLI's environment: its own empty home, the cached binaries first on PATH, nothing else. */
function environment(): Record<string, string> {
  return {
    PATH: `${BIN}:${process.env.PATH ?? ''}`,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CACHE_HOME: join(home, '.cache'),
    LANG: 'C.UTF-8',
    NO_COLOR: '1',
  };
}

async function runPreset(
  definition: CliDefinition,
  options: { timeoutMs: number; killGraceMs?: number; runner?: ProcessRunner },
): Promise<CliRunResult> {
  return runCli({
    definition,
    prompt: 'Reply with the single word: ready',
    cwd: work,
    env: environment(),
    logFile: join(home, 'logs', `${definition.command}-${randomUUID()}.log`),
    promptDir: join(home, 'prompts'),
    runner: options.runner ?? defaultRunner,
    timeoutMs: options.timeoutMs,
    killGraceMs: options.killGraceMs ?? 2_000,
  });
}

/** CLIs that wait for the network (retrying) rather than failing at once get a short leash. */
function timeoutFor(command: string): number {
  return command === 'codex' ? 5_000 : command === 'opencode' ? 6_000 : 30_000;
}

/** Outcomes that show the arguments were accepted, on a machine without credentials or network. */
function expectedFailures(command: string, variant: Variant): Array<FailureClass | undefined> {
  const resumeUnknown: FailureClass[] = variant === 'resume' ? ['exit', 'cli_error'] : []; // "no such session"
  switch (command) {
    case 'codex':
    case 'opencode':
      return ['timeout', ...resumeUnknown]; // still retrying the network when stopped
    default:
      return ['not_authenticated', ...resumeUnknown];
  }
}

/** The arguments cut where a subcommand starts, each part with the help screen that documents it. */
function segments(command: string, args: readonly string[]): Array<{ helpArgs: string[]; args: string[] }> {
  const known = HELP[command];
  if (!known) return [];
  const parts = [{ helpArgs: known.help, args: [] as string[] }];
  for (const arg of args) {
    const sub = known.subcommands?.[arg];
    if (sub) parts.push({ helpArgs: sub, args: [] });
    else parts.at(-1)!.args.push(arg);
  }
  return parts;
}

async function helpText(command: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await run(command, args, { env: environment(), cwd: work, timeout: 30_000, maxBuffer: 4 * 1024 * 1024 }).catch(
    (err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }),
  );
  return `${stdout}\n${stderr}`;
}

/** The option names in an argument list (values and placeholders excluded). */
function flags(args: readonly string[]): string[] {
  return args.filter((arg) => /^--?[A-Za-z]/.test(arg)).map((arg) => arg.split('=')[0]!);
}

function flagPattern(flag: string): RegExp {
  return new RegExp(`(^|[\\s,\\[])${flag.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=[\\s,=<\\[]|$)`, 'm');
}

/**
 * A stand-in for tinytown's MCP server script that runs the real one and logs each JSON-RPC line
 * both ways. Paths are written into it: a CLI may hand its MCP servers only a few variables.
 */
function spyScript(server: string, log: string): string {
  return `import { spawn } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
const { TINYTOWN_MCP_SOCKET: socket, TINYTOWN_MCP_TOKEN: token } = process.env;
appendFileSync(${JSON.stringify(log)}, JSON.stringify({ dir: 'env', msg: { socket: !!socket && existsSync(socket), token: /^[0-9a-f]{64}$/.test(token ?? '') } }) + '\\n');
const child = spawn(process.execPath, [${JSON.stringify(server)}], { stdio: ['pipe', 'pipe', 'inherit'] });
const tee = (from, to, dir) => createInterface({ input: from }).on('line', (line) => {
  try { appendFileSync(${JSON.stringify(log)}, JSON.stringify({ dir, msg: JSON.parse(line) }) + '\\n'); } catch {}
  to.write(line + '\\n');
});
tee(process.stdin, child.stdin, 'in');
tee(child.stdout, process.stdout, 'out');
process.stdin.on('end', () => child.stdin.end());
child.on('exit', (code) => process.exit(code ?? 1));
`;
}

/** Processes still alive (not zombies) in the group, or running a cached CLI binary. */
async function leftovers(pgid: number): Promise<string[]> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const state = fields[0];
      const group = Number(fields[2]);
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (state === 'Z') continue;
      if (group === pgid || cmdline.includes(join(CACHE, 'node_modules', '@openai'))) found.push(`${entry} ${cmdline}`);
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}
