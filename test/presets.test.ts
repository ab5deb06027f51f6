import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, UnknownCliError } from '../src/errors.js';
import { defaultRunner } from '../src/runner/child-process-runner.js';
import { runCli, type CliDefinition } from '../src/runner/cli.js';
import { isOutputFormat } from '../src/runner/parsers/index.js';
import { PRESETS, resolveCli, withSession, type PresetName } from '../src/runner/presets.js';
import type { ProcessRunner, ProcessSpec } from '../src/runner/process-runner.js';

const FAKE = fileURLToPath(new URL('./fixtures/fake-agent.mjs', import.meta.url));
const NAMES: PresetName[] = ['claude', 'codex', 'codex-mini', 'gemini', 'auggie', 'aider', 'copilot', 'cursor', 'opencode', 'goose'];

describe('presets', () => {
  it('covers the ten CLIs, each with a parser, a prompt mode and its placeholder', () => {
    expect(Object.keys(PRESETS).sort()).toEqual([...NAMES].sort());
    for (const name of NAMES) {
      const preset = PRESETS[name];
      expect(isOutputFormat(preset.output), name).toBe(true);
      const args = preset.args ?? [];
      if (preset.prompt === 'arg') expect(args, name).toContain('{prompt}');
      if (preset.prompt === 'file') expect(args, name).toContain('{promptFile}');
      if (preset.prompt === 'stdin') expect(args.join(' '), name).not.toMatch(/\{prompt(File)?\}/);
      for (const template of [preset.sessionArgs, preset.resumeArgs]) {
        if (!template) continue;
        expect(template, name).toContain('{sessionId}');
        // The session variants deliver the prompt the same way.
        for (const token of ['{prompt}', '{promptFile}']) expect(template.includes(token), `${name} ${token}`).toBe(args.includes(token));
      }
    }
  });

  it('never asks Claude Code for what it refuses as root', () => {
    const args = PRESETS.claude.args ?? [];
    expect(args).not.toContain('--dangerously-skip-permissions');
    expect(args.join(' ')).not.toContain('bypassPermissions');
    expect(args).toEqual(expect.arrayContaining(['-p', '--output-format', 'json', '--permission-mode', 'acceptEdits']));
  });

  it('runs Codex outside git repositories and gives OpenCode its permission', () => {
    expect(PRESETS.codex.args).toContain('--skip-git-repo-check');
    expect(PRESETS.codex.args).not.toContain('--full-auto'); // removed from codex exec (0.169 rejects it)
    expect(PRESETS.opencode.env).toEqual({ OPENCODE_PERMISSION: '{"*":"allow"}' });
  });

  it('resolves inline definitions, custom names, then presets', () => {
    const inline: CliDefinition = { command: 'my-agent' };
    expect(resolveCli(inline)).toBe(inline);
    expect(resolveCli('codex')).toBe(PRESETS.codex);
    expect(resolveCli('codex', { codex: inline })).toBe(inline);
    expect(() => resolveCli('nope')).toThrow(UnknownCliError);
  });
});

describe('withSession', () => {
  it('starts or resumes by exact id where the CLI can', () => {
    const id = randomUUID();
    expect(withSession(PRESETS.claude, id, 'new')?.args?.slice(-2)).toEqual(['--session-id', id]);
    expect(withSession(PRESETS.claude, id, 'resume')?.args?.slice(-2)).toEqual(['--resume', id]);
    expect(withSession(PRESETS.codex, id, 'resume')?.args?.slice(-3)).toEqual(['resume', id, '-']);
    expect(withSession(PRESETS.codex, id, 'new')).toBeUndefined(); // Codex mints its own ids
    expect(withSession(PRESETS.aider, id, 'resume')).toBeUndefined();
    expect(withSession(PRESETS.opencode, 'ses_5c1f0e9a3ffeA7b2', 'resume')).toMatchObject({ args: ['run', '--format', 'json', '--session', 'ses_5c1f0e9a3ffeA7b2'], env: PRESETS.opencode.env });
  });

  it('refuses ids that would read as flags or carry odd characters', () => {
    for (const bad of ['--help', '-x', '', 'a b', 'a;b', 'x'.repeat(300)]) expect(() => withSession(PRESETS.claude, bad, 'resume')).toThrow(InvalidArgumentError);
  });
});

describe('presets through runCli', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tt-presets-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(NAMES)('%s: the runner gets the preset command line, its env and the prompt as data', async (name) => {
    const specs: ProcessSpec[] = [];
    // Record what would run, then run the fake CLI instead (the real ones are in real-clis.test.ts).
    const recording: ProcessRunner = {
      start(spec) {
        specs.push(spec);
        return defaultRunner.start({ ...spec, command: process.execPath, args: [FAKE, ...(spec.stdin === undefined ? ['--prompt', 'x'] : [])] });
      },
    };
    const preset = PRESETS[name];
    const prompt = 'Fix the bug; $(rm -rf /) `x`';
    await runCli({
      definition: { ...preset, output: 'text' },
      prompt,
      env: { PATH: process.env.PATH ?? '', MINE: '1' },
      logFile: join(dir, 'log'),
      promptDir: join(dir, 'prompts'),
      runner: recording,
    });
    const spec = specs[0]!;
    expect(spec.command).toBe(preset.command);
    expect(spec.env).toMatchObject({ MINE: '1', ...preset.env });
    if (preset.prompt === 'stdin') expect(spec.stdin).toBe(prompt);
    if (preset.prompt === 'arg') expect(spec.args).toContain(prompt);
    if (preset.prompt === 'file') expect(spec.args.some((a) => a.startsWith(join(dir, 'prompts')))).toBe(true);
  });

  it("lets the run's environment override a preset's env defaults", async () => {
    const specs: ProcessSpec[] = [];
    const recording: ProcessRunner = {
      start(spec) {
        specs.push(spec);
        return defaultRunner.start({ ...spec, command: process.execPath, args: [FAKE] });
      },
    };
    await runCli({
      definition: PRESETS.opencode,
      prompt: 'x',
      env: { PATH: process.env.PATH ?? '', OPENCODE_PERMISSION: '{"bash":"deny"}' },
      logFile: join(dir, 'log'),
      promptDir: join(dir, 'prompts'),
      runner: recording,
    });
    expect(specs[0]?.env.OPENCODE_PERMISSION).toBe('{"bash":"deny"}');
  });
});
