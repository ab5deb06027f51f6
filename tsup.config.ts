import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defineConfig } from 'tsup';

/**
 * ESM-only packages bundled into both builds, so `require('tinytown')` works on every Node >= 20
 * (Node 20 before 20.19 cannot `require()` an ES module). They are devDependencies: the published
 * package does not load them. `npm run check:package` fails if the build loads any package that
 * is not a declared dependency.
 */
const BUNDLED = ['p-retry', 'is-network-error'];

/** The installed copy of a bundled package (hoisted, else nested under another bundled one). */
function packageDir(name: string): string {
  const candidates = [join('node_modules', name), ...BUNDLED.map((parent) => join('node_modules', parent, 'node_modules', name))];
  const found = candidates.find((dir) => existsSync(join(dir, 'package.json')));
  if (found === undefined) throw new Error(`Cannot find the bundled package ${name} in node_modules.`);
  return found;
}

/** Their licenses ship next to the code that contains them (MIT asks for the notice). */
async function writeThirdPartyLicenses(outDir: string): Promise<void> {
  const sections = await Promise.all(
    BUNDLED.map(async (name) => {
      const dir = packageDir(name);
      const { version } = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version: string };
      const license = await readFile(join(dir, 'license'), 'utf8');
      return `${name}@${version}\n${'-'.repeat(name.length + version.length + 1)}\n${license.trim()}\n`;
    }),
  );
  const intro = 'dist/index.js and dist/index.cjs include the following packages, bundled:\n\n';
  await writeFile(join(outDir, 'THIRD-PARTY-LICENSES.txt'), intro + sections.join('\n'));
}

// A function, so a build into another folder (the tests' `build({ outDir })`) gets its notice there.
export default defineConfig((options) => ({
  // `tinytown/mcp` (needs the optional peer @modelcontextprotocol/sdk), and the MCP server
  // script workers hand to agents' CLIs (dist/mcp-server.js, run by path).
  entry: { index: 'src/index.ts', mcp: 'src/mcp/index.ts', 'mcp-server': 'src/mcp/main.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Each entry stands alone (no shared chunks), and finds its folder in both formats.
  splitting: false,
  shims: true,
  // Lua scripts are documented source files; they ship inlined as strings.
  loader: { '.lua': 'text' },
  noExternal: BUNDLED,
  onSuccess: () => writeThirdPartyLicenses(options.outDir ?? 'dist'),
}));
