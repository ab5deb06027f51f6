#!/usr/bin/env node
// dist/mcp-server.js: what an agent's CLI starts (by absolute path, with this Node) when its
// worker gives it town tools. It serves MCP on stdin/stdout until the CLI or the run ends.
import { runTownMcpServer } from './server.js';

runTownMcpServer().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`tinytown MCP server: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
