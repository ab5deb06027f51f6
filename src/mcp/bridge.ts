/**
 * The worker's end of the town tools: for one run of an agent's CLI, a unix socket (mode 0600,
 * in a private per-user folder) that answers the MCP server's requests with the worker's own
 * town handle, scoped to the agent and its current task and claim. The agent's processes get
 * the socket's path and a random token, never Redis credentials. Closed when the run ends.
 *
 * @module
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Agent } from '../agent.js';
import { SocketPathTooLongError, TinytownError } from '../errors.js';
import type { Message } from '../message.js';
import { ensurePrivateFolder, fallbackFolders, socketPathFits } from '../redis-server/socket-path.js';
import { SUPERVISOR_ID } from '../store/keys.js';
import type { Repository } from '../store/repository.js';
import type { Priority, TaskRecord } from '../task.js';
import type { Town } from '../town.js';
import { LineReader, type BridgeHello, type BridgeRequest, type BridgeResponse } from './protocol.js';
import { isToolName, parseToolArgs, type ToolName } from './tools.js';

/** What one run's bridge may act on. */
export interface ToolScope {
  town: Town;
  repo: Repository;
  agent: Agent;
  task: TaskRecord;
  /** The run's claim: settlements and progress of any other claim are refused. */
  fence: string;
  /** The tools the agent was given. */
  grants: readonly ToolName[];
  /** Notes already in this run's prompt (the first ones of the agent's notes). */
  notesInPrompt: number;
  /** Where unexpected faults go (the town's `error` listeners). */
  report: (err: unknown) => void;
}

/** An open bridge. */
export interface ToolBridge {
  /** The run's private folder (the socket and any configuration file live here). */
  dir: string;
  socketPath: string;
  token: string;
  /** Stops answering, ends every connection and deletes the folder. Idempotent. */
  close(): Promise<void>;
}

/** Messages shown by read_inbox at most. */
const MAX_INBOX_ITEMS = 50;
/** Characters of a task description shown in listings. */
const DESCRIPTION_CHARS = 2_000;

/** Opens the bridge for one run. */
export async function openToolBridge(scope: ToolScope): Promise<ToolBridge> {
  const dir = await privateRunFolder();
  const socketPath = join(dir, 's');
  const token = randomBytes(32).toString('hex');
  const expected = Buffer.from(token);
  const sockets = new Set<Socket>();
  let open = true;

  const server: Server = createServer((socket) => {
    if (!open) return socket.destroy();
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const send = (response: BridgeResponse): void => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
    };
    const reader = new LineReader(
      (line) => void answer(line),
      () => {
        send({ id: 0, ok: false, error: { code: 'PROTOCOL', message: 'request line too long' } });
        socket.destroy();
      },
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));

    async function answer(line: string): Promise<void> {
      let request: BridgeRequest;
      try {
        request = JSON.parse(line) as BridgeRequest;
      } catch {
        send({ id: 0, ok: false, error: { code: 'PROTOCOL', message: 'a request must be one JSON object per line' } });
        return void socket.destroy();
      }
      const id = typeof request?.id === 'number' ? request.id : 0;
      const given = Buffer.from(typeof request?.token === 'string' ? request.token : '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        send({ id, ok: false, error: { code: 'UNAUTHORIZED', message: 'wrong token for this run' } });
        return void socket.destroy();
      }
      if (!open) return send({ id, ok: false, error: { code: 'RUN_ENDED', message: 'the run has ended' } });
      try {
        const result = request.op === 'hello' ? hello(scope) : await call(scope, request.tool, request.args);
        send({ id, ok: true, result });
      } catch (err) {
        send({ id, ok: false, error: describe(err, scope) });
      }
    }
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    await chmod(socketPath, 0o600);
  } catch (err) {
    server.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    dir,
    socketPath,
    token,
    close() {
      closing ??= (async () => {
        open = false;
        for (const socket of sockets) socket.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await rm(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

function hello({ town, agent, task, grants }: ToolScope): BridgeHello {
  return {
    town: town.name,
    agent: { id: agent.id, name: agent.name },
    task: { id: task.id, description: clip(task.description) },
    tools: [...grants],
  };
}

async function call(scope: ToolScope, tool: unknown, rawArgs: unknown): Promise<unknown> {
  if (!isToolName(tool)) throw coded('UNKNOWN_TOOL', `There is no town tool ${JSON.stringify(tool)}.`);
  if (!scope.grants.includes(tool)) {
    throw coded('TOOL_NOT_GRANTED', `Agent ${scope.agent.name} may not use ${tool}: it is not among the tools it was given.`);
  }
  const args = parseToolArgs(tool, rawArgs);
  const { town, repo, agent, task, fence } = scope;
  switch (tool) {
    case 'town_status': {
      const status = await town.status();
      return {
        town: status.name,
        you: { agent: agent.name, task: task.id },
        agents: status.agents.map((a) => ({
          name: a.name,
          ...(a.nickname !== undefined && { nickname: a.nickname }),
          ...(a.role !== undefined && { role: a.role }),
          state: a.state,
          ...(a.currentTask !== undefined && { currentTask: a.currentTask }),
          queued: a.queued,
        })),
        tasks: status.tasks,
        backlog: status.backlog,
      };
    }
    case 'send_message': {
      const to = args.to as string;
      const type = (args.type as 'info' | 'query' | 'task' | 'ack' | undefined) ?? 'info';
      const messageId = await town.send(to, args.text as string, { type, priority: args.urgent === true ? 'urgent' : 'normal', from: agent.id });
      return { messageId, to, type };
    }
    case 'read_inbox': {
      const [queued, notes, names] = await Promise.all([repo.inbox(agent.id), repo.notes(agent.id), agentNames(repo)]);
      const waiting = [...queued, ...notes.slice(scope.notesInPrompt)].slice(0, MAX_INBOX_ITEMS);
      const items = await Promise.all(waiting.map((m) => inboxItem(m, names, repo)));
      return { messages: items, more: Math.max(0, queued.length + notes.length - scope.notesInPrompt - items.length) };
    }
    case 'backlog_list': {
      const tasks = await town.backlog.list();
      return {
        tasks: tasks.map((t) => ({ id: t.id, description: clip(t.description), tags: t.tags, priority: t.priority, createdAt: t.createdAt.toISOString() })),
      };
    }
    case 'backlog_claim': {
      const claimed = await town.backlog.claim(args.taskId as string, agent.id);
      return { taskId: claimed.id, state: claimed.state, queuedFor: agent.name, note: 'It runs after your current task.' };
    }
    case 'assign_task': {
      const target = await town.agent(args.to as string);
      const created = await target.assign({
        description: args.description as string,
        parentId: task.id,
        ...(args.priority !== undefined && { priority: args.priority as Priority }),
        ...(args.tags !== undefined && { tags: args.tags as string[] }),
      });
      return { taskId: created.id, to: target.name, state: created.state };
    }
    case 'report_progress':
      await repo.reportProgress(agent.id, task.id, fence, args.message as string, args.percent as number | undefined);
      return { recorded: true };
    case 'complete_task':
      await repo.settleFenced(agent.id, task.id, fence, 'completed', args.result as string);
      return { taskId: task.id, state: 'completed' };
    case 'fail_task':
      await repo.settleFenced(agent.id, task.id, fence, 'failed', args.error as string);
      return { taskId: task.id, state: 'failed' };
  }
}

async function agentNames(repo: Repository): Promise<Map<string, string>> {
  const names = new Map<string, string>([[SUPERVISOR_ID, 'supervisor']]);
  for (const a of await repo.listAgents()) names.set(a.id, a.name);
  return names;
}

async function inboxItem(m: Message, names: Map<string, string>, repo: Repository): Promise<Record<string, unknown>> {
  const item: Record<string, unknown> = {
    id: m.id,
    from: names.get(m.from) ?? m.from,
    type: m.type === 'task_assign' ? 'task' : m.type,
    priority: m.priority,
    at: m.createdAt.toISOString(),
  };
  if (m.text !== undefined) item.text = m.text;
  if (m.correlationId !== undefined) item.inReplyTo = m.correlationId;
  if (m.taskId !== undefined) {
    item.taskId = m.taskId;
    const task = await repo.getTask(m.taskId).catch(() => undefined);
    if (task) item.text = clip(task.description);
  }
  return item;
}

function describe(err: unknown, scope: ToolScope): { code: string; message: string } {
  if (err instanceof TinytownError) return { code: err.code, message: err.message };
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && err instanceof Error && !('errno' in err)) return { code, message: err.message };
  scope.report(err);
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

function coded(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function clip(text: string): string {
  return text.length <= DESCRIPTION_CHARS ? text : `${text.slice(0, DESCRIPTION_CHARS)}…`;
}

// ── the private folder ──────────────────────────────────────────────────────────────────────

/**
 * A fresh folder for one run (mode 0700) inside a per-user folder (mode 0700, ours, not a
 * symlink), short enough that its socket path fits a `sockaddr_un`: under `$XDG_RUNTIME_DIR`,
 * else the OS temp folder, else `/tmp`.
 */
async function privateRunFolder(): Promise<string> {
  const bases = [...(await fallbackFolders()), join('/tmp', `tinytown-${String(process.getuid?.() ?? userInfo().username)}`)];
  const problems: string[] = [];
  for (const base of bases) {
    // mkdtemp adds six characters; the socket is `<dir>/s`.
    if (!socketPathFits(join(base, 'r-XXXXXX', 's'))) {
      problems.push(`${base} is too long for a unix socket path`);
      continue;
    }
    const unsafe = await ensurePrivateFolder(base);
    if (unsafe !== undefined) {
      problems.push(unsafe);
      continue;
    }
    return mkdtemp(join(base, 'r-'));
  }
  throw new SocketPathTooLongError(`No private folder for the town tools' socket: ${problems.join('; ')}. Set TMPDIR to a short folder you own.`);
}
