/**
 * `tinytown/mcp`: the MCP server that gives an agent's CLI its town tools. Workers start it for
 * agents spawned with `tools` (see `AgentOptions.tools`); it needs `@modelcontextprotocol/sdk`
 * (an optional peer dependency of tinytown), and reaches the town only through its worker.
 *
 * @example
 * ```ts
 * import { TOOL_NAMES } from 'tinytown/mcp';
 * console.log(TOOL_NAMES); // ['town_status', 'send_message', …]
 * ```
 *
 * @packageDocumentation
 */
export { createTownMcpServer, runTownMcpServer, type TownMcpServer, type TownMcpServerOptions } from './server.js';
export { TOOL_NAMES, type ToolName } from './tools.js';
export type { BridgeHello } from './protocol.js';
