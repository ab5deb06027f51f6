/**
 * Provides a real Redis to every test file: `REDIS_URL` when set, else a container when a
 * container runtime answers, else a local `redis-server` started on a free port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePort } from './redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let stop: (() => Promise<void>) | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const url = process.env.REDIS_URL ?? (await fromContainer()) ?? (await fromLocalServer());
  project.provide('redisUrl', url);
  return async () => {
    await stop?.();
  };
}

async function fromContainer(): Promise<string | undefined> {
  if (process.env.TINYTOWN_TEST_NO_CONTAINERS === '1') return undefined;
  try {
    const { GenericContainer, getContainerRuntimeClient } = await import('testcontainers');
    await withTimeout(getContainerRuntimeClient(), 5_000);
    const container = await new GenericContainer('redis:7-alpine').withExposedPorts(6379).start();
    stop = async () => {
      await container.stop();
    };
    return `redis://${container.getHost()}:${container.getMappedPort(6379)}`;
  } catch {
    return undefined; // no container runtime here: fall back to a local redis-server
  }
}

async function fromLocalServer(): Promise<string> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'tinytown-test-redis-'));
  const child: ChildProcess = spawn(
    process.env.TINYTOWN_REDIS_SERVER ?? 'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${log}`)), 10_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(
        new Error(
          'No Redis for the tests: set REDIS_URL, or install redis-server (apt-get install -y redis-server)',
          { cause: err },
        ),
      );
    });
    child.stdout?.on('data', () => {
      if (log.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  stop = async () => {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  };
  return `redis://127.0.0.1:${port}`;
}


function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timeout')), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
