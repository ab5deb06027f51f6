import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Lua scripts are documented source files; they ship inlined as strings.
  loader: { '.lua': 'text' },
  // p-retry is ESM-only: bundle it so `require('tinytown')` works on every Node >= 20.
  noExternal: ['p-retry', 'is-network-error'],
});
