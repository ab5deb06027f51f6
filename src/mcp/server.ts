/**
 * tinytown's MCP server: the town tools of one agent's run, over stdio. The agent's CLI starts it
 * from the configuration its worker wrote; it reaches the town only through that worker's socket
 * (`TINYTOWN_MCP_SOCKET`, `TINYTOWN_MCP_TOKEN`) and lists only the tools the agent was given.
 *
 * @module
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { ConfigInvalidError } from '../errors.js';
import { BridgeClient, BridgeError, SERVER_NAME, SOCKET_ENV, TOKEN_ENV, type BridgeHello } from './protocol.js';
import { isToolName, TOOL_SPECS } from './tools.js';

/**
 * Where the MCP server finds its worker. Both default to the environment the worker gave the
 * agent's CLI (`TINYTOWN_MCP_SOCKET`, `TINYTOWN_MCP_TOKEN`).
 *
 * @example
 * ```ts
 * import type { TownMcpServerOptions } from 'tinytown/mcp';
 * const options: TownMcpServerOptions = { socketPath: process.env.TINYTOWN_MCP_SOCKET, token: process.env.TINYTOWN_MCP_TOKEN };
 * ```
 */
export interface TownMcpServerOptions {
  /** The worker's socket for this run. */
  socketPath?: string;
  /** The run's token. */
  token?: string;
}

/**
 * An MCP server connected to its worker, not yet to a transport.
 *
 * @example
 * ```ts
 * import { createTownMcpServer, type TownMcpServer } from 'tinytown/mcp';
 * const town: TownMcpServer = await createTownMcpServer();
 * console.error(`serving ${town.scope.agent.name}: ${town.scope.tools.join(', ')}`);
 * ```
 */
export interface TownMcpServer {
  /** The SDK server with the granted tools registered; connect it to any transport. */
  server: McpServer;
  /** Who it speaks for: the town, the agent, its current task, and the tools it was given. */
  scope: BridgeHello;
  /** Closes the server and the connection to the worker. */
  close(): Promise<void>;
}

/**
 * Connects to the worker's socket and builds an MCP server with the tools the agent was given
 * (the others are not registered: a client neither sees nor can call them).
 *
 * @example
 * ```ts
 * import { createTownMcpServer } from 'tinytown/mcp';
 * import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
 * const { server } = await createTownMcpServer();
 * await server.connect(new StdioServerTransport());
 * ```
 */
export async function createTownMcpServer(options: TownMcpServerOptions = {}): Promise<TownMcpServer> {
  const socketPath = options.socketPath ?? process.env[SOCKET_ENV];
  const token = options.token ?? process.env[TOKEN_ENV];
  if (!socketPath || !token) {
    throw new ConfigInvalidError(
      `tinytown's MCP server is started by an agent's CLI during a run, with ${SOCKET_ENV} and ${TOKEN_ENV} set by its worker; they are missing. Give the agent tools (spawnAgent(name, { tools: true })) instead of starting the server yourself.`,
    );
  }
  const bridge = await BridgeClient.connect(socketPath, token);
  let scope: BridgeHello;
  try {
    scope = await bridge.hello();
  } catch (err) {
    bridge.close();
    throw err;
  }
  const server = new McpServer(
    { name: SERVER_NAME, version: '1' },
    {
      instructions:
        `You are agent ${scope.agent.name} in the tinytown town ${scope.town}, running task ${scope.task.id}. ` +
        'These tools act on the town as you: talk to other agents and the supervisor (the orchestrator), take or hand out work, report progress, and settle your current task.',
    },
  );
  for (const name of scope.tools) {
    if (!isToolName(name)) continue;
    const spec = TOOL_SPECS[name];
    const handler = async (args: Record<string, unknown>) => {
      try {
        const result = await bridge.call(name, args);
        return { content: [{ type: 'text' as const, text: JSON.stringify(result, null, 2) }] };
      } catch (err) {
        const text = err instanceof BridgeError ? `${err.code}: ${err.message}` : String(err);
        return { content: [{ type: 'text' as const, text }], isError: true };
      }
    };
    server.registerTool(name, { title: spec.title, description: spec.description, inputSchema: spec.shape }, handler as never);
  }
  return {
    server,
    scope,
    async close() {
      bridge.close();
      await server.close();
    },
  };
}

/**
 * Runs the server over stdio until its client (the agent's CLI) goes away or the run ends:
 * what `dist/mcp-server.js` does. Use it for a server script of your own (say, to log its
 * calls); workers start tinytown's own unless `TINYTOWN_MCP_SERVER` names another script.
 *
 * @example
 * ```ts
 * #!/usr/bin/env node
 * import { runTownMcpServer } from 'tinytown/mcp';
 * await runTownMcpServer(); // until the agent's CLI closes stdin
 * ```
 */
export async function runTownMcpServer(options: TownMcpServerOptions = {}): Promise<void> {
  const town = await createTownMcpServer(options);
  const transport = new StdioServerTransport();
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      town.close().then(resolve, reject);
    };
    transport.onclose = finish;
    process.stdin.once('end', finish);
    process.stdin.once('close', finish);
    town.server.connect(transport).catch((err: unknown) => {
      done = true;
      void town.close();
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}
