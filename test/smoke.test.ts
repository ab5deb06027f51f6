import { describe, expect, it } from 'vitest';
import { waitForIdle } from '../src/index.js';
import { fakeCli, openTown } from './helpers/town.js';

describe('smoke', () => {
  it('runs an in-process agent and a CLI agent', async () => {
    const town = await openTown();
    const echo = await town.spawnAgent('echo', { run: async (task) => `echo: ${task.description}` });
    const cli = await town.spawnAgent('cli', { cli: fakeCli() });
    const a = await echo.assign('hello');
    const b = await cli.assign('build the thing');
    await waitForIdle([echo, cli], { timeoutMs: 10_000 });
    expect((await town.task(a.id)).result).toBe('echo: hello');
    expect((await town.task(b.id)).result).toBe('done: build the thing');
    const status = await town.status();
    expect(status.tasks.completed).toBe(2);
  });
});
