import { readFile } from 'node:fs/promises';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  plugins: [
    {
      // Same as tsup's `loader: { '.lua': 'text' }`: a .lua import is its source text.
      name: 'lua-as-text',
      async load(id) {
        if (!id.endsWith('.lua')) return null;
        return `export default ${JSON.stringify(await readFile(id, 'utf8'))};`;
      },
    },
  ],
  test: {
    include: ['test/**/*.test.ts'],
    // Type-level tests of the public API (expectTypeOf, @ts-expect-error), checked by tsc as
    // part of every run; they never execute.
    typecheck: {
      enabled: true,
      include: ['test/types/**/*.test-d.ts'],
      tsconfig: './tsconfig.json',
    },
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
});
