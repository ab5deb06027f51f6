/**
 * Town tools for CLI agents: per run, the worker opens its bridge ({@link openToolBridge}) and
 * the CLI's command line and environment are extended so that it starts tinytown's MCP server
 * (`dist/mcp-server.js`, run by this very Node) pointed at the bridge. Everything is undone when
 * the run ends.
 *
 * @module
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from '../errors.js';
import type { CliDefinition } from '../runner/cli.js';
import type { Repository } from '../store/repository.js';
import type { TaskRecord } from '../task.js';
import type { RunContext } from '../worker/executor.js';
import { openToolBridge } from './bridge.js';
import { SERVER_NAME, SOCKET_ENV, TOKEN_ENV } from './protocol.js';
import type { ToolName } from './tools.js';

/** Environment variable naming the MCP server script, for builds that do not ship it next to tinytown's own files. */
export const SERVER_SCRIPT_ENV = 'TINYTOWN_MCP_SERVER';

/** What an executor needs to give its runs town tools. */
export interface ToolHost {
  /** Opens the tools for one run: the definition and environment to run the CLI with. */
  open(task: TaskRecord, context: RunContext, definition: CliDefinition): Promise<ToolRun>;
}

/** One run's tools. */
export interface ToolRun {
  definition: CliDefinition;
  env: Record<string, string>;
  close(): Promise<void>;
}

/**
 * The tool host of a CLI agent, or an error naming why it cannot have tools (a CLI that loads no
 * MCP server per run, an in-process handler, a build without the server script).
 */
export function toolHost(options: {
  agentName: string;
  grants: readonly ToolName[];
  definition: CliDefinition;
  repo: Repository;
  report: (err: unknown) => void;
}): ToolHost {
  const { agentName, grants, definition, repo, report } = options;
  if (definition.mcpArgs === undefined && definition.mcpEnv === undefined) {
    throw new InvalidArgumentError(
      `Agent ${agentName} has tools, but its CLI (${definition.command}) loads no MCP server for a single run: give its definition mcpArgs or mcpEnv (see CliDefinition), or drop tools. Presets with tools: claude, codex, codex-mini, copilot, opencode, auggie, goose.`,
    );
  }
  const script = serverScript();
  return {
    async open(task, context, runDefinition) {
      if (context.fence === undefined) throw new Error('town tools need the run’s claim (fence)');
      const bridge = await openToolBridge({
        town: context.town,
        repo,
        agent: context.agent,
        task,
        fence: context.fence,
        grants,
        notesInPrompt: context.notes.length,
        report,
      });
      try {
        const env = { [SOCKET_ENV]: bridge.socketPath, [TOKEN_ENV]: bridge.token };
        const configFile = join(bridge.dir, 'mcp.json');
        const server = { type: 'stdio', command: process.execPath, args: [script], env };
        await writeFile(configFile, `${JSON.stringify({ mcpServers: { [SERVER_NAME]: server } }, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
        const values: Record<string, string> = {
          mcpConfig: configFile,
          mcpCommand: process.execPath,
          mcpScript: script,
          mcpSocket: bridge.socketPath,
          mcpToken: bridge.token,
        };
        const fill = (text: string): string => {
          let out = text;
          for (const [name, value] of Object.entries(values)) {
            out = out.split(`{${name}Json}`).join(JSON.stringify(value)).split(`{${name}}`).join(value);
          }
          return out;
        };
        const mcpEnv = Object.fromEntries(Object.entries(runDefinition.mcpEnv ?? {}).map(([k, v]) => [k, fill(v)]));
        return {
          definition: { ...runDefinition, args: [...(runDefinition.args ?? []), ...(runDefinition.mcpArgs ?? []).map(fill)] },
          env: { ...env, ...mcpEnv },
          close: () => bridge.close(),
        };
      } catch (err) {
        await bridge.close();
        throw err;
      }
    },
  };
}

/**
 * The MCP server's script: `TINYTOWN_MCP_SERVER`, else `mcp-server.js` next to this build of
 * tinytown (`dist/`).
 */
export function serverScript(): string {
  const given = process.env[SERVER_SCRIPT_ENV];
  const script = given || join(moduleDir(), 'mcp-server.js');
  if (!existsSync(script)) {
    throw new InvalidArgumentError(
      `Town tools need tinytown's MCP server script, and ${script} does not exist${given ? ` (${SERVER_SCRIPT_ENV})` : ''}. Set ${SERVER_SCRIPT_ENV} to the path of tinytown's dist/mcp-server.js (an application bundle does not carry it).`,
    );
  }
  return script;
}

function moduleDir(): string {
  // The CommonJS build has __dirname; the ES module build has import.meta.url.
  return typeof __dirname === 'string' ? __dirname : dirname(fileURLToPath(import.meta.url));
}
