/**
 * The wire between a worker and the MCP server its agent's CLI starts: newline-delimited JSON
 * over a unix socket the worker opens for one run.
 *
 * Request, one line: `{"id": 1, "token": "<hex>", "op": "hello"}` or
 * `{"id": 2, "token": "<hex>", "op": "call", "tool": "send_message", "args": {…}}`.
 * Response, one line: `{"id": 1, "ok": true, "result": …}` or
 * `{"id": 2, "ok": false, "error": {"code": "…", "message": "…"}}`.
 * Every request carries the run's token; a wrong one ends the connection. Requests on one
 * connection may overlap: answers carry the request's id.
 *
 * @module
 */
import { createConnection, type Socket } from 'node:net';

/** Environment variable holding the socket path, for the MCP server (and the agent's CLI). */
export const SOCKET_ENV = 'TINYTOWN_MCP_SOCKET';
/** Environment variable holding the run's token. */
export const TOKEN_ENV = 'TINYTOWN_MCP_TOKEN';
/** The MCP server's name in the configurations tinytown writes (Claude: `mcp__tinytown__*`). */
export const SERVER_NAME = 'tinytown';
/** Longest request or response line, in bytes. */
export const MAX_LINE_BYTES = 8 * 1024 * 1024;

/** A request line. */
export interface BridgeRequest {
  id: number;
  token: string;
  op: 'hello' | 'call';
  tool?: string;
  args?: unknown;
}

/** A response line. */
export type BridgeResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { code: string; message: string } };

/**
 * Who an MCP server speaks for, as its worker told it: the town, the agent, the agent's current
 * task, and the tools the agent was given (the only ones the server lists).
 *
 * @example
 * ```ts
 * import { createTownMcpServer, type BridgeHello } from 'tinytown/mcp';
 * const { scope }: { scope: BridgeHello } = await createTownMcpServer();
 * console.error(`${scope.agent.name} on ${scope.task.id}: ${scope.tools.join(', ')}`);
 * ```
 */
export interface BridgeHello {
  /** The town's name. */
  town: string;
  /** The agent the tools act as. */
  agent: {
    /** Its id. */
    id: string;
    /** Its name. */
    name: string;
  };
  /** The task it is running. */
  task: {
    /** The task's id. */
    id: string;
    /** Its description, cut to 2 000 characters. */
    description: string;
  };
  /** The tools it was given. */
  tools: string[];
}

/** An error the worker answered with. */
export class BridgeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'BridgeError';
  }
}

/** Splits a byte stream into lines, refusing any longer than {@link MAX_LINE_BYTES}. */
export class LineReader {
  private buffered: Buffer[] = [];
  private size = 0;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly onOverflow: () => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, start)) {
      const part = chunk.subarray(start, i);
      const line = this.size === 0 ? part : Buffer.concat([...this.buffered, part]);
      this.buffered = [];
      this.size = 0;
      start = i + 1;
      if (line.length > MAX_LINE_BYTES) return this.onOverflow();
      if (line.length > 0) this.onLine(line.toString('utf8'));
    }
    if (start < chunk.length) {
      this.buffered.push(chunk.subarray(start));
      this.size += chunk.length - start;
      if (this.size > MAX_LINE_BYTES) this.onOverflow();
    }
  }
}

/** The MCP server's end of the wire: one connection, requests answered by id. */
export class BridgeClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  private closedWith: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly token: string,
  ) {
    const reader = new LineReader(
      (line) => this.onLine(line),
      () => this.fail(new BridgeError('PROTOCOL', 'the worker sent an over-long line')),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (err) => this.fail(new BridgeError('RUN_ENDED', `lost the connection to the worker: ${err.message}`)));
    socket.on('close', () => this.fail(new BridgeError('RUN_ENDED', 'the worker closed the connection: the run has ended')));
  }

  /** Connects to the worker's socket. */
  static connect(socketPath: string, token: string): Promise<BridgeClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(socketPath);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        resolve(new BridgeClient(socket, token));
      });
      socket.once('error', (err) => reject(new BridgeError('RUN_ENDED', `cannot reach the worker at ${socketPath}: ${err.message}`)));
    });
  }

  hello(): Promise<BridgeHello> {
    return this.request({ op: 'hello' }) as Promise<BridgeHello>;
  }

  call(tool: string, args: unknown): Promise<unknown> {
    return this.request({ op: 'call', tool, args });
  }

  close(): void {
    this.socket.destroy();
  }

  private request(body: Omit<BridgeRequest, 'id' | 'token'>): Promise<unknown> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify({ id, token: this.token, ...body })}\n`);
    });
  }

  private onLine(line: string): void {
    let response: BridgeResponse;
    try {
      response = JSON.parse(line) as BridgeResponse;
    } catch {
      return this.fail(new BridgeError('PROTOCOL', 'the worker sent a line that is not JSON'));
    }
    const waiting = this.pending.get(response.id);
    if (!waiting) return;
    this.pending.delete(response.id);
    if (response.ok) waiting.resolve(response.result);
    else waiting.reject(new BridgeError(response.error?.code ?? 'ERROR', response.error?.message ?? 'the worker refused the call'));
  }

  private fail(err: Error): void {
    this.closedWith ??= err;
    for (const { reject } of this.pending.values()) reject(this.closedWith);
    this.pending.clear();
    this.socket.destroy();
  }
}
