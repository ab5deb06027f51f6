/** Opens towns on the test Redis, each with a unique name and its own folder; closes them after each test. */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, inject } from 'vitest';
import { Town, type TownOptions } from '../../src/index.js';

const opened: Town[] = [];
const folders: string[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((town) => town.close()));
  await Promise.all(folders.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

/** The Redis URL the global setup provides. */
export function redisUrl(): string {
  return inject('redisUrl');
}

/** A fresh folder, removed after the test. */
export async function tempDir(prefix = 'tinytown-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  folders.push(dir);
  return dir;
}

/** A unique town name for this test. */
export function uniqueName(): string {
  return `t-${randomUUID().slice(0, 12)}`;
}

/** Connects a town with a unique name in a fresh folder on the test Redis; closed after the test. */
export async function openTown(options: TownOptions = {}, dir?: string): Promise<Town> {
  const root = dir ?? (await tempDir());
  const town = await Town.connect(root, { redis: redisUrl(), name: uniqueName(), ...options });
  opened.push(town);
  return town;
}

/** Registers a town opened elsewhere for closing after the test. */
export function track(town: Town): Town {
  opened.push(town);
  return town;
}

/** The fake agent CLI as an inline CLI definition (prompt on stdin unless told otherwise). */
export const FAKE_AGENT = fileURLToPath(new URL('../fixtures/fake-agent.mjs', import.meta.url));
export const fakeCli = (prompt: 'stdin' | 'arg' | 'file' = 'stdin') =>
  prompt === 'stdin'
    ? { command: FAKE_AGENT, args: [] as string[], prompt }
    : prompt === 'arg'
      ? { command: FAKE_AGENT, args: ['--prompt', '{prompt}'], prompt }
      : { command: FAKE_AGENT, args: ['--prompt-file', '{promptFile}'], prompt };
