/**
 * Git worktrees for agents (`spawnAgent(name, { worktree: true })`): each such agent works in
 * `<root>/.tt/worktrees/<name>` on a branch of its own, so agents editing the same repository
 * never step on each other's files. Every git call is an `execFile` (never a shell), with the
 * variables that would point git at another repository removed.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { mkdir, realpath, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidNameError, NotAGitRepositoryError, WorktreeDirtyError, WorktreeError } from './errors.js';

/** Where an agent's worktree is and where its CLI runs in it. */
export interface AgentWorktree {
  /** The worktree's root. */
  path: string;
  /** The worktree's copy of the town's folder (the town may live below the repository's root). */
  cwd: string;
  /** Its branch. */
  branch: string;
}

interface GitResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  /** git itself could not be started (not installed). */
  missing: boolean;
}

/** Variables that point git at another repository (a hook or a tool may export them). */
const GIT_LOCATION_ENV = ['GIT_DIR', 'GIT_WORK_TREE', 'GIT_COMMON_DIR', 'GIT_INDEX_FILE', 'GIT_PREFIX', 'GIT_NAMESPACE'];

/** Runs git in `cwd`; never throws. */
function git(cwd: string, args: readonly string[]): Promise<GitResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C', GIT_TERMINAL_PROMPT: '0' };
  for (const name of GIT_LOCATION_ENV) delete env[name];
  return new Promise((resolve) => {
    execFile('git', args, { cwd, env, timeout: 30_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const missing = (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
      resolve({ ok: err === null, stdout: String(stdout), stderr: String(stderr).trim() || (err?.message ?? ''), missing });
    });
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The canonical form of a path that may not exist (yet). */
async function canonical(path: string): Promise<string> {
  return realpath(path).catch(() => path);
}

/**
 * Creates the worktree of agent `name` under `<root>/.tt/worktrees/`, or reuses it when git
 * already knows it there. Its branch (`tt/<name>` unless given) starts at the repository's
 * `HEAD` when it does not exist yet.
 */
export async function ensureWorktree(root: string, name: string, branch = `tt/${name}`): Promise<AgentWorktree> {
  const top = await git(root, ['rev-parse', '--show-toplevel']);
  if (!top.ok) {
    throw new NotAGitRepositoryError(
      top.missing
        ? `An agent worktree needs git, which is not installed (or not on PATH). Install git, or spawn the agent without worktree.`
        : `The town folder ${root} is not inside a git repository, so agent ${name} cannot have a worktree: run git init (and commit) there, or spawn the agent without worktree. git said: ${top.stderr}`,
    );
  }
  const ref = await git(root, ['check-ref-format', '--branch', branch]);
  if (!ref.ok || branch.startsWith('-')) {
    throw new InvalidNameError(
      `${JSON.stringify(branch)} is not a valid git branch name (git check-ref-format): ${ref.stderr || 'it starts with "-"'}. ${branch === `tt/${name}` ? 'Pick another agent name' : 'Pick another branch'}.`,
    );
  }
  const prefix = (await git(root, ['rev-parse', '--show-prefix'])).stdout.trim();
  const path = join(root, '.tt', 'worktrees', name);
  const known = await registeredWorktrees(root);
  const wanted = await canonical(path);
  if (known.has(wanted)) {
    if (await exists(path)) return { path, cwd: join(path, prefix), branch: known.get(wanted) ?? branch };
    await git(root, ['worktree', 'prune']); // its folder was deleted by hand: forget it, make it again
  }

  if (!(await git(root, ['rev-parse', '--verify', '--quiet', 'HEAD'])).ok) {
    throw new WorktreeError(`The git repository at ${top.stdout.trim()} has no commit yet, so agent ${name}'s worktree has nothing to start from: commit once, then spawn it.`);
  }
  // `.tt/` holds the worktrees: keep it out of the repository's status.
  await mkdir(join(root, '.tt', 'worktrees'), { recursive: true });
  const ignore = join(root, '.tt', '.gitignore');
  if (!(await exists(ignore))) await writeFile(ignore, '*\n', { flag: 'wx' }).catch(() => undefined);
  const hasBranch = (await git(root, ['show-ref', '--verify', '--quiet', `refs/heads/${branch}`])).ok;
  const added = await git(root, hasBranch ? ['worktree', 'add', '--', path, branch] : ['worktree', 'add', '-b', branch, '--', path, 'HEAD']);
  if (!added.ok) throw new WorktreeError(`git could not create the worktree of agent ${name} at ${path} on branch ${branch}: ${added.stderr}`);
  return { path, cwd: join(path, prefix), branch };
}

/** Worktrees git knows of in the repository of `root`: canonical path → branch name. */
async function registeredWorktrees(root: string): Promise<Map<string, string | undefined>> {
  const list = await git(root, ['worktree', 'list', '--porcelain']);
  const out = new Map<string, string | undefined>();
  let current: string | undefined;
  for (const line of list.stdout.split('\n')) {
    if (line.startsWith('worktree ')) {
      current = await canonical(line.slice('worktree '.length));
      out.set(current, undefined);
    } else if (line.startsWith('branch refs/heads/') && current !== undefined) {
      out.set(current, line.slice('branch refs/heads/'.length));
    }
  }
  return out;
}

/** Uncommitted work in a worktree (`git status --porcelain` lines); none when it is gone. */
export async function worktreeChanges(path: string): Promise<string[]> {
  if (!(await exists(path))) return [];
  const status = await git(path, ['status', '--porcelain']);
  if (!status.ok) throw new WorktreeError(`git could not read the status of the worktree ${path}: ${status.stderr}`);
  return status.stdout.split('\n').filter((line) => line.trim().length > 0);
}

/** The error for a worktree that holds uncommitted work. */
export function dirtyError(agent: string, path: string, changes: readonly string[], removed: boolean): WorktreeDirtyError {
  const shown = changes.slice(0, 5).map((line) => line.trim()).join(', ');
  const more = changes.length > 5 ? ` and ${changes.length - 5} more` : '';
  return new WorktreeDirtyError(
    `The worktree of agent ${agent} (${path}) holds uncommitted work: ${shown}${more}. ${removed ? 'The agent was removed; its worktree was kept.' : 'Nothing was removed.'} Commit or stash it there (its branch stays after removal), or discard it (git -C ${path} reset --hard && git -C ${path} clean -fd), then remove again.`,
  );
}

/**
 * Removes a clean worktree (git refuses a dirty one: then `WorktreeDirtyError`); its branch
 * stays. A worktree whose folder is already gone is only forgotten.
 */
export async function removeWorktree(root: string, agent: string, path: string): Promise<void> {
  if (!(await exists(path))) {
    await git(root, ['worktree', 'prune']);
    return;
  }
  const removed = await git(root, ['worktree', 'remove', '--', path]);
  if (removed.ok) return;
  if (/modified or untracked|uncommitted|is dirty/i.test(removed.stderr)) throw dirtyError(agent, path, await worktreeChanges(path).catch(() => []), true);
  throw new WorktreeError(`git could not remove the worktree of agent ${agent} (${path}): ${removed.stderr}`);
}
