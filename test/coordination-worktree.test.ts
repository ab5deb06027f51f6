/**
 * A git worktree per agent: `spawnAgent(name, { worktree: true })` makes (or reuses)
 * `<root>/.tt/worktrees/<name>` on branch `tt/<name>` and runs the agent's CLI there;
 * `agent.remove()` deletes a clean worktree and refuses one with uncommitted work. Real git,
 * real child processes, real Redis.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidNameError, NotAGitRepositoryError, WorktreeDirtyError, WorktreeError } from '../src/index.js';
import { fakeCli, openTown, tempDir } from './helpers/town.js';

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', ...args], { cwd, encoding: 'utf8' }).trim();
}

/** A fresh git repository with one commit. */
async function repository(): Promise<string> {
  const dir = await tempDir('tinytown-git-');
  git(dir, 'init', '-q', '-b', 'main');
  await writeFile(join(dir, 'README.md'), '# project\n');
  git(dir, 'add', '.');
  git(dir, 'commit', '-q', '-m', 'first');
  return dir;
}

describe('worktree agents', () => {
  it("run their CLI in their own worktree, on branch tt/<name>, reused when spawned again", async () => {
    const repo = await repository();
    const town = await openTown({}, repo);
    const agent = await town.spawnAgent('coder', { cli: fakeCli(), worktree: true });
    const path = join(repo, '.tt', 'worktrees', 'coder');
    expect((await agent.info()).worktree).toBe(path);
    const task = await agent.assign('[fake:cwd]');
    expect(await town.waitForTask(task.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'completed', result: `cwd=${path}` });
    expect(git(path, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('tt/coder');
    expect(existsSync(join(path, 'README.md'))).toBe(true);
    // the main checkout does not see .tt/ (worktrees included) as changes
    expect(git(repo, 'status', '--porcelain')).not.toMatch(/\.tt/);

    await agent.stop();
    await writeFile(join(path, 'kept.txt'), 'work in progress\n');
    const again = await town.spawnAgent('coder', { cli: fakeCli(), worktree: true, cwd: 'sub' });
    await mkdir(join(path, 'sub'), { recursive: true });
    const second = await again.assign('[fake:cwd]');
    expect((await town.waitForTask(second.id, { timeoutMs: 10_000 })).result).toBe(`cwd=${join(path, 'sub')}`);
    expect(existsSync(join(path, 'kept.txt'))).toBe(true); // reused, not made afresh
  });

  it('remove() refuses a worktree holding uncommitted work, and deletes a clean one (the branch stays)', async () => {
    const repo = await repository();
    const town = await openTown({}, repo);
    const agent = await town.spawnAgent('writer', { run: async () => 'ok', worktree: true });
    const path = (await agent.info()).worktree!;
    await writeFile(join(path, 'draft.md'), 'unsaved\n');
    const refused = await agent.remove().catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(WorktreeDirtyError);
    expect((refused as Error).message).toContain(path);
    expect((refused as Error).message).toContain('draft.md');
    expect((await town.agent('writer')).id).toBe(agent.id); // nothing removed
    expect(existsSync(join(path, 'draft.md'))).toBe(true);

    git(path, 'add', 'draft.md');
    git(path, 'commit', '-q', '-m', 'draft');
    await agent.remove();
    expect(existsSync(path)).toBe(false);
    expect(git(repo, 'worktree', 'list')).not.toContain(path);
    expect(git(repo, 'log', '--format=%s', 'tt/writer', '-1')).toBe('draft');
    await expect(town.agent('writer')).rejects.toThrow(/No agent/);
  });

  it('a town in a subfolder of the repository runs its agents in the same subfolder of their worktree', async () => {
    const repo = await repository();
    const sub = join(repo, 'services', 'api');
    await mkdir(sub, { recursive: true });
    await writeFile(join(sub, 'app.js'), '// app\n');
    git(repo, 'add', '.');
    git(repo, 'commit', '-q', '-m', 'api');
    const town = await openTown({}, sub);
    const agent = await town.spawnAgent('api', { cli: fakeCli(), worktree: true });
    const task = await agent.assign('[fake:cwd]');
    const worktree = join(sub, '.tt', 'worktrees', 'api');
    expect((await town.waitForTask(task.id, { timeoutMs: 10_000 })).result).toBe(`cwd=${join(worktree, 'services', 'api')}`);
  });
});

describe('worktree errors', () => {
  it('outside a git repository: NotAGitRepositoryError, and no agent is registered', async () => {
    const town = await openTown();
    await expect(town.spawnAgent('coder', { cli: fakeCli(), worktree: true })).rejects.toBeInstanceOf(NotAGitRepositoryError);
    expect(await town.agents()).toEqual([]);
  });

  it('a name or branch git refuses: InvalidNameError quoting check-ref-format', async () => {
    const repo = await repository();
    const town = await openTown({}, repo);
    for (const name of ['two..dots', 'ends.lock', 'trailing.']) {
      const err = await town.spawnAgent(name, { run: async () => 'x', worktree: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidNameError);
      expect((err as Error).message).toContain(`tt/${name}`);
    }
    for (const branch of ['has space', 'x~1', '-flag', 'a..b']) {
      await expect(town.spawnAgent('ok', { run: async () => 'x', worktree: { branch } })).rejects.toBeInstanceOf(InvalidNameError);
    }
    expect(await town.agents()).toEqual([]);
    const custom = await town.spawnAgent('ok', { run: async () => 'x', worktree: { branch: 'feature/ok' } });
    expect(git((await custom.info()).worktree!, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('feature/ok');
  });

  it('a repository with no commit: WorktreeError saying so', async () => {
    const dir = await tempDir('tinytown-git-');
    git(dir, 'init', '-q');
    const town = await openTown({}, dir);
    await expect(town.spawnAgent('coder', { run: async () => 'x', worktree: true })).rejects.toBeInstanceOf(WorktreeError);
    await rm(join(dir, '.tt'), { recursive: true, force: true });
  });
});
