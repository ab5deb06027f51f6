import { defineConfig } from 'vitest/config';

/**
 * The real agent CLIs suite (`npm run test:clis`): installs them from npm into
 * node_modules/.cache/real-clis and checks every preset against them. No Redis needed.
 */
export default defineConfig({
  test: {
    include: ['test/real-clis.test.ts'],
    env: { TINYTOWN_REAL_CLIS: '1' },
    testTimeout: 60_000,
    hookTimeout: 300_000, // a first install downloads about 600 MB of CLIs
    pool: 'forks',
    fileParallelism: false,
  },
});
