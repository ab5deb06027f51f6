import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The real agent CLIs suite (`npm run test:clis`): installs them from npm into
 * node_modules/.cache/real-clis and checks every preset against them. The town-tools checks run
 * a town, on the tests' Redis (the base config's global setup and .lua loader).
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ['test/real-clis.test.ts'],
    typecheck: { enabled: false },
    env: { TINYTOWN_REAL_CLIS: '1' },
    testTimeout: 60_000,
    hookTimeout: 300_000, // a first install downloads about 600 MB of CLIs
    fileParallelism: false,
  },
});
