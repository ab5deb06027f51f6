/**
 * Town tools over MCP, with no mocks: agents are real CLI processes (test/fixtures/mcp-agent.mjs)
 * run by real workers; tinytown's MCP server is the built dist/mcp-server.js, started from the
 * configuration the worker wrote; the client is the MCP SDK's own Client over stdio.
 */
import { chmodSync, constants, accessSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOOL_NAMES, type Agent, type CliDefinition, type TownEvent } from '../src/index.js';
import { builtPackage } from './helpers/build.js';
import { collectHistory, prefixOf, rawRedis } from './helpers/kit.js';
import { openTown, tempDir } from './helpers/town.js';

const MCP_AGENT = fileURLToPath(new URL('./fixtures/mcp-agent.mjs', import.meta.url));
/** The fake CLI, loading its MCP server the way Claude Code does. */
const mcpCli: CliDefinition = { command: MCP_AGENT, args: [], prompt: 'stdin', mcpArgs: ['--mcp-config', '{mcpConfig}'] };

let savedServer: string | undefined;
beforeAll(async () => {
  // vitest runs src/, which has no dist/mcp-server.js beside it: point at the built one.
  const { esm } = await builtPackage();
  savedServer = process.env.TINYTOWN_MCP_SERVER;
  process.env.TINYTOWN_MCP_SERVER = join(dirname(esm), 'mcp-server.js');
  accessSync(MCP_AGENT, constants.X_OK);
}, 120_000);
afterAll(() => {
  if (savedServer === undefined) delete process.env.TINYTOWN_MCP_SERVER;
  else process.env.TINYTOWN_MCP_SERVER = savedServer;
});

interface Handoff {
  config: { mcpServers: { tinytown: { command: string; args: string[]; env: Record<string, string> } } };
  configFile: string;
  argv: string[];
  env: Record<string, string>;
}

/** Assigns a handoff task: resolves when the agent's CLI runs and has written what it was given. */
async function handoff(agent: Agent, extra = ''): Promise<{ taskId: string; given: Handoff; release: () => Promise<void> }> {
  const file = join(await tempDir('tt-mcp-handoff-'), 'handoff.json');
  const task = await agent.assign(`Work with the town. [mcp:handoff=${file}]${extra}`);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text !== undefined) return { taskId: task.id, given: JSON.parse(text) as Handoff, release: () => writeFile(`${file}.done`, '') };
    if (Date.now() > deadline) throw new Error('the agent CLI never started');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A real MCP client on the server the worker's configuration describes. */
async function connect(given: Handoff): Promise<Client> {
  const { command, args, env } = given.config.mcpServers.tinytown;
  const client = new Client({ name: 'test-agent', version: '1' });
  await client.connect(new StdioClientTransport({ command, args, env, stderr: 'pipe' }));
  return client;
}

type CallResult = { isError?: boolean; content: Array<{ type: string; text?: string }> };

async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<{ isError: boolean; text: string; json: unknown }> {
  const result = (await client.callTool({ name, arguments: args })) as CallResult;
  const text = result.content.map((c) => c.text ?? '').join('');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { isError: result.isError === true, text, json };
}

function eventsOf(history: TownEvent[], type: string): TownEvent[] {
  return history.filter((e) => e.type === type);
}

describe('town tools over MCP', () => {
  it('a real MCP client calls every tool; the effects are in Redis and in the event stream', async () => {
    const town = await openTown();
    const peer = await town.spawnAgent('peer', { start: false, role: 'backend' });
    const lead = await town.spawnAgent('lead', { cli: mcpCli, tools: true, role: 'lead' });
    const backlogTask = await town.backlog.add({ description: 'Triage flaky tests', tags: ['qa'] });
    const { taskId, given, release } = await handoff(lead);
    const client = await connect(given);
    let delegatedId = '';
    try {
      // Listing: every tool, each with its description and input schema.
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual([...TOOL_NAMES].sort());
      expect(tools.find((t) => t.name === 'send_message')?.inputSchema.required).toEqual(expect.arrayContaining(['to', 'text']));

      const status = await call(client, 'town_status');
      expect(status.isError).toBe(false);
      expect(status.json).toMatchObject({ town: town.name, you: { agent: 'lead', task: taskId }, backlog: 1 });
      expect((status.json as { agents: { name: string }[] }).agents.map((a) => a.name).sort()).toEqual(['lead', 'peer']);

      // send_message: a query to the peer (urgent), an info to the supervisor.
      const query = await call(client, 'send_message', { to: 'peer', text: 'Which ORM do we use?', type: 'query', urgent: true });
      expect(query.isError).toBe(false);
      const peerInbox = await peer.inbox();
      expect(peerInbox).toEqual([expect.objectContaining({ type: 'query', text: 'Which ORM do we use?', from: lead.id, priority: 'urgent' })]);
      const report = await call(client, 'send_message', { to: 'supervisor', text: 'Starting on it' });
      expect(report.isError).toBe(false);
      expect(await town.inbox()).toEqual([expect.objectContaining({ type: 'info', text: 'Starting on it', from: lead.id })]);

      // read_inbox: what waits for the lead (its worker is busy, so the message stays queued).
      await town.send('lead', 'The schema is in docs/api.md');
      const inbox = await call(client, 'read_inbox');
      expect(inbox.isError).toBe(false);
      expect(inbox.json).toMatchObject({ messages: [{ from: 'supervisor', type: 'info', text: 'The schema is in docs/api.md' }], more: 0 });

      // backlog_list, backlog_claim.
      const listed = await call(client, 'backlog_list');
      expect(listed.json).toMatchObject({ tasks: [{ id: backlogTask.id, description: 'Triage flaky tests', tags: ['qa'] }] });
      const claimed = await call(client, 'backlog_claim', { taskId: backlogTask.id });
      expect(claimed.isError).toBe(false);
      expect(await town.backlog.list()).toEqual([]);
      expect(await town.task(backlogTask.id)).toMatchObject({ state: 'assigned', assignedTo: lead.id });
      const again = await call(client, 'backlog_claim', { taskId: backlogTask.id });
      expect(again).toMatchObject({ isError: true, text: expect.stringMatching(/^NOT_IN_BACKLOG: /) });

      // assign_task: delegation, linked to the current task.
      const delegated = await call(client, 'assign_task', { to: 'peer', description: 'Write the migration', priority: 'high', tags: ['db'] });
      expect(delegated.isError).toBe(false);
      delegatedId = (delegated.json as { taskId: string }).taskId;
      expect(await town.task(delegatedId)).toMatchObject({ state: 'assigned', assignedTo: peer.id, parentId: taskId, priority: 'high', tags: ['db'] });
      expect((await peer.inbox()).map((m) => m.type)).toEqual(['query', 'task_assign']);

      // report_progress: an event on the stream.
      const progress = await call(client, 'report_progress', { message: 'schema read, writing endpoints', percent: 40 });
      expect(progress.isError).toBe(false);

      // Bad arguments are refused by the server's schema, before reaching the town.
      const bad = await call(client, 'report_progress', { message: 'x', percent: 140 });
      expect(bad.isError).toBe(true);

      // complete_task: the current task, now; a second settlement is refused.
      const completed = await call(client, 'complete_task', { result: 'endpoints done, see src/api' });
      expect(completed).toMatchObject({ isError: false, json: { taskId, state: 'completed' } });
      expect(await town.task(taskId)).toMatchObject({ state: 'completed', result: 'endpoints done, see src/api' });
      const twice = await call(client, 'fail_task', { error: 'changed my mind' });
      expect(twice).toMatchObject({ isError: true, text: expect.stringMatching(/^INVALID_TRANSITION: .*already completed/) });
    } finally {
      await client.close();
      await release();
    }

    // The run ends; the worker's own finish is superseded: the agent's result stands.
    await lead.waitForIdle({ timeoutMs: 15_000 });
    expect(await town.task(taskId)).toMatchObject({ state: 'completed', result: 'endpoints done, see src/api' });
    expect(await town.task(backlogTask.id)).toMatchObject({ state: 'completed', result: 'done: Triage flaky tests' });
    expect(await lead.info()).toMatchObject({ tasksCompleted: 2, tasksFailed: 0 });

    const history = await collectHistory(town);
    expect(eventsOf(history, 'task.progress')).toEqual([
      expect.objectContaining({ agentId: lead.id, taskId, data: expect.objectContaining({ message: 'schema read, writing endpoints', percent: 40 }) }),
    ]);
    expect(eventsOf(history, 'message.sent').map((e) => [e.agentId, e.data.kind, e.data.from])).toEqual(
      expect.arrayContaining([
        [peer.id, 'query', lead.id],
        [expect.any(String), 'info', lead.id],
      ]),
    );
    expect(eventsOf(history, 'backlog.claimed')).toEqual([expect.objectContaining({ taskId: backlogTask.id, agentId: lead.id })]);
    expect(eventsOf(history, 'task.assigned').map((e) => e.taskId)).toContain(delegatedId);
    expect(eventsOf(history, 'task.completed').filter((e) => e.taskId === taskId)).toEqual([
      expect.objectContaining({ agentId: lead.id, data: expect.objectContaining({ by: 'agent' }) }),
    ]);
    // The raw Redis record: one completion counted, the result the agent gave.
    const raw = await rawRedis().hmget(`${prefixOf(town)}task:${taskId}`, 'state', 'result');
    expect(raw).toEqual(['completed', 'endpoints done, see src/api']);
  });

  it('tools outside the agent’s permissions are not listed, and refused when called anyway', async () => {
    const town = await openTown();
    await town.spawnAgent('peer', { start: false });
    const reviewerTools = TOOL_NAMES.filter((t) => t !== 'assign_task' && t !== 'backlog_claim');
    const reviewer = await town.spawnAgent('reviewer', { cli: mcpCli, tools: reviewerTools, role: 'reviewer' });
    const { taskId, given, release } = await handoff(reviewer);
    const client = await connect(given);
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual([...reviewerTools].sort());
      // Through the SDK: the server does not know the tool.
      const refused = await client.callTool({ name: 'assign_task', arguments: { to: 'peer', description: 'do my review' } }).then(
        (result) => (result as CallResult).isError === true && (result as CallResult).content.map((c) => c.text).join(''),
        (err: Error) => err.message,
      );
      expect(refused).toMatch(/assign_task/);
      // Past the server, straight at the worker's socket with the run's own token: refused there too.
      const { TINYTOWN_MCP_SOCKET: socket, TINYTOWN_MCP_TOKEN: token } = given.config.mcpServers.tinytown.env;
      expect(await rawRequest(socket!, { id: 1, token, op: 'call', tool: 'assign_task', args: { to: 'peer', description: 'x' } })).toMatchObject({
        id: 1,
        ok: false,
        error: { code: 'TOOL_NOT_GRANTED' },
      });
      expect(await rawRequest(socket!, { id: 2, token: 'f'.repeat(64), op: 'hello' })).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });
      expect(await town.task(taskId)).toMatchObject({ state: 'running' });
      expect((await town.agent('peer').then((p) => p.inbox())).length).toBe(0);
      const allowed = await call(client, 'report_progress', { message: 'reading the diff' });
      expect(allowed.isError).toBe(false);

      // The agent's process got the socket and token, never Redis credentials; the files are private.
      expect(given.env.TINYTOWN_MCP_SOCKET).toBe(socket);
      expect(given.env.REDIS_URL).toBeUndefined();
      expect(JSON.stringify(given.config)).not.toContain('redis://');
      expect((await stat(given.configFile)).mode & 0o777).toBe(0o600);
      expect((await stat(socket!)).mode & 0o777).toBe(0o600);
      expect((await stat(dirname(socket!))).mode & 0o777).toBe(0o700);
      expect(Buffer.byteLength(socket!)).toBeLessThanOrEqual(100);
      expect(given.config.mcpServers.tinytown.command).toBe(process.execPath);
    } finally {
      await client.close();
      await release();
    }
    await reviewer.waitForIdle({ timeoutMs: 15_000 });
    // The run is over: its folder (socket, configuration) is gone.
    await expect(stat(dirname(given.config.mcpServers.tinytown.env.TINYTOWN_MCP_SOCKET!))).rejects.toThrow(/ENOENT/);
    expect(await town.task(taskId)).toMatchObject({ state: 'completed', result: 'done: handoff' });
  });

  it('tinytown.json grants tools by role; an agent’s own tools option overrides its role’s', async () => {
    const dir = await tempDir('tt-mcp-roles-');
    const byRole = { reviewer: ['town_status', 'report_progress', 'complete_task'], '*': ['town_status'] };
    await writeFile(join(dir, 'tinytown.json'), JSON.stringify({ name: 'roles', tools: byRole }));
    const town = await openTown({}, dir);
    const listed = async (agent: Agent): Promise<string[]> => {
      const { given, release } = await handoff(agent);
      const client = await connect(given);
      try {
        return (await client.listTools()).tools.map((t) => t.name).sort();
      } finally {
        await client.close();
        await release();
        await agent.waitForIdle({ timeoutMs: 15_000 });
      }
    };
    expect(await listed(await town.spawnAgent('rev', { cli: mcpCli, role: 'reviewer' }))).toEqual([...byRole.reviewer].sort());
    expect(await listed(await town.spawnAgent('dev', { cli: mcpCli, role: 'backend' }))).toEqual(['town_status']);
    expect(await listed(await town.spawnAgent('lead', { cli: mcpCli, role: 'reviewer', tools: ['read_inbox'] }))).toEqual(['read_inbox']);
  });

  it('a completion for a task that is no longer the agent’s is rejected', async () => {
    const town = await openTown();
    const lead = await town.spawnAgent('lead', { cli: mcpCli, tools: true });

    // 1. Settled by the supervisor meanwhile: the agent's completion does not overwrite it.
    const first = await handoff(lead);
    let client = await connect(first.given);
    try {
      await town.completeTask(first.taskId, 'done by hand');
      const late = await call(client, 'complete_task', { result: 'mine' });
      expect(late).toMatchObject({ isError: true, text: expect.stringMatching(/^INVALID_TRANSITION: .*already completed/) });
      expect(await town.task(first.taskId)).toMatchObject({ state: 'completed', result: 'done by hand' });
      expect(await call(client, 'report_progress', { message: 'still going' })).toMatchObject({ isError: true });
    } finally {
      await client.close();
      await first.release();
    }
    await lead.waitForIdle({ timeoutMs: 15_000 });

    // 2. Its claim moved on (handed back and started again under a new fencing token, as after a
    //    reclaim): the old run's completion is stale and rejected, with a task.rejected event.
    const second = await handoff(lead);
    client = await connect(second.given);
    try {
      const key = `${prefixOf(town)}task:${second.taskId}`;
      const redis = rawRedis();
      const fence = await redis.hget(key, 'fence');
      await redis.hset(key, 'fence', String(Number(fence) + 1000));
      const stale = await call(client, 'complete_task', { result: 'from the old claim' });
      expect(stale).toMatchObject({ isError: true, text: expect.stringMatching(/^INVALID_TRANSITION: .*no longer this agent's current run/) });
      const failed = await call(client, 'fail_task', { error: 'from the old claim' });
      expect(failed.isError).toBe(true);
      expect(await town.task(second.taskId)).toMatchObject({ state: 'running' });
      expect(await redis.hget(key, 'result')).toBeNull();
      await redis.hset(key, 'fence', String(fence));
      const history = await collectHistory(town);
      expect(eventsOf(history, 'task.rejected').filter((e) => e.taskId === second.taskId).length).toBe(2);
    } finally {
      await client.close();
      await second.release();
    }
    await lead.waitForIdle({ timeoutMs: 15_000 });
    expect(await town.task(second.taskId)).toMatchObject({ state: 'completed', result: 'done: handoff' });
  });

  it('spawnAgent refuses tools where they cannot work', async () => {
    const town = await openTown();
    await expect(town.spawnAgent('g', { cli: 'gemini', tools: true })).rejects.toThrow(/loads no MCP server for a single run/);
    await expect(town.spawnAgent('h', { run: async () => 'x', tools: true })).rejects.toThrow(/in-process run handler/);
    await expect(town.spawnAgent('i', { cli: mcpCli, tools: ['send_mail' as never] })).rejects.toThrow(/tools/);
    const saved = process.env.TINYTOWN_MCP_SERVER;
    process.env.TINYTOWN_MCP_SERVER = '/nonexistent/mcp-server.js';
    try {
      await expect(town.spawnAgent('j', { cli: mcpCli, tools: true })).rejects.toThrow(/TINYTOWN_MCP_SERVER/);
    } finally {
      process.env.TINYTOWN_MCP_SERVER = saved;
    }
    expect(await town.agents()).toEqual([]);
  });
});

describe('end to end through the runner', () => {
  it('the agent CLI, as an MCP client, queries another agent, claims a backlog task and reports progress; the orchestrator sees all three', async () => {
    const town = await openTown();
    const seen: TownEvent[] = [];
    town.on('*', (e) => seen.push(e));
    // The peer answers queries: it runs them as tasks, and the answer goes back to the asker.
    const peer = await town.spawnAgent('peer', { run: async (task) => `answer to: ${task.description}` });
    const worker = await town.spawnAgent('worker', { cli: mcpCli, tools: true });
    const chore = await town.backlog.add('Update the changelog');
    const steps = [
      { tool: 'send_message', args: { to: 'peer', text: 'Which port does the API use?', type: 'query' } },
      { tool: 'backlog_claim', args: { taskId: chore.id } },
      { tool: 'report_progress', args: { message: 'asked peer, took the changelog', percent: 50 } },
    ];
    const task = await worker.assign(`Coordinate.\nMCP-SCRIPT: ${JSON.stringify(steps)}`);
    const done = await town.waitForTask(task.id, { timeoutMs: 20_000 });
    expect(done.state).toBe('completed');
    expect(done.result).toContain(`tools=${TOOL_NAMES.join(',')}`);
    expect(done.result).toMatch(/send_message ok: .*"type": "query"/);
    expect(done.result).toMatch(/backlog_claim ok: /);
    expect(done.result).toMatch(/report_progress ok: /);

    // 1. The query reached the peer, which ran it and answered the worker.
    await peer.waitForIdle({ timeoutMs: 15_000 });
    const query = (await town.tasks({ agent: 'peer' }))[0]!;
    expect(query).toMatchObject({ description: 'Which port does the API use?', tags: ['query'], state: 'completed' });
    // 2. The claimed backlog task ran on the worker after its current one.
    expect(await town.waitForTask(chore.id, { timeoutMs: 15_000 })).toMatchObject({ state: 'completed', assignedTo: worker.id, result: 'done: Update the changelog' });
    await worker.waitForIdle({ timeoutMs: 15_000 });
    // 3. Progress, as the orchestrator's listeners saw it live.
    expect(seen.filter((e) => e.type === 'task.progress')).toEqual([
      expect.objectContaining({ agentId: worker.id, taskId: task.id, data: expect.objectContaining({ message: 'asked peer, took the changelog', percent: 50 }) }),
    ]);
    expect(seen.some((e) => e.type === 'message.sent' && e.agentId === peer.id && e.data.kind === 'query' && e.data.from === worker.id)).toBe(true);
    expect(seen.some((e) => e.type === 'backlog.claimed' && e.taskId === chore.id && e.agentId === worker.id)).toBe(true);
    // The peer's answer went back to the worker (it rode along with the worker's next prompt).
    expect(seen.some((e) => e.type === 'message.sent' && e.agentId === worker.id && e.data.from === peer.id && e.taskId === query.id)).toBe(true);
  });
});

/** One request straight at the worker's socket; resolves with the first answer line. */
function rawRequest(socketPath: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    let data = '';
    socket.on('data', (chunk) => {
      data += chunk.toString();
      const newline = data.indexOf('\n');
      if (newline >= 0) {
        socket.destroy();
        resolve(JSON.parse(data.slice(0, newline)) as Record<string, unknown>);
      }
    });
    socket.on('error', reject);
    socket.write(`${JSON.stringify(request)}\n`);
  });
}

// Keep the fixture executable in a fresh checkout (git keeps the bit, but be sure).
chmodSync(MCP_AGENT, 0o755);
