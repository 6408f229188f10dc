/**
 * The CLI's end of the control socket (src/daemon/protocol.ts): one
 * connection per command, requests numbered, replies matched by id.
 */
import { connect, type Socket } from 'node:net';
import { LineSplitter } from '../daemon/control.ts';
import { MAX_LINE_BYTES, type Op, type Reply, type Requests, type Results } from '../daemon/protocol.ts';

/** Replies are bounded by the daemon, not by us; this only stops a runaway peer. */
const MAX_REPLY_BYTES = 256 * 1024 * 1024;

/** The daemon refused a request: its errno code and message. */
export class DaemonError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Something the user has to fix (usage, an unreachable daemon): printed as `dmkit: <message>`. */
export class CliError extends Error {}

interface Pending {
  resolve(result: unknown): void;
  reject(err: Error): void;
}

export class ControlClient {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    const lines = new LineSplitter(MAX_REPLY_BYTES);
    socket.on('data', (chunk: Buffer) => {
      const got = lines.push(chunk);
      for (const line of got.lines) this.receive(line.toString('utf8'));
      if (got.overflow) this.fail(new CliError(`reply from the daemon at ${path} is too long`));
    });
    socket.on('error', (err) => this.fail(new CliError(`lost the daemon at ${path}: ${err.message}`)));
    socket.on('close', () => this.fail(new CliError(`the daemon at ${path} closed the connection`)));
  }

  static connect(path: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(new ControlClient(socket, path));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        reject(new CliError(`cannot reach the dmkit daemon at ${path} (${err.code ?? err.message}); is "dmkit serve" running?`));
      });
    });
  }

  call<K extends Op>(op: K, args: Requests[K]): Promise<Results[K]> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const line = JSON.stringify({ id, op, ...args });
    const bytes = Buffer.byteLength(line);
    if (bytes > MAX_LINE_BYTES) {
      return Promise.reject(new CliError(`${op}: the request is ${bytes} bytes, more than the daemon takes (${MAX_LINE_BYTES})`));
    }
    return new Promise<Results[K]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject });
      this.socket.write(`${line}\n`);
    });
  }

  close(): void {
    this.failure ??= new CliError('connection closed');
    this.socket.end();
  }

  private receive(line: string): void {
    let reply: Reply;
    try {
      reply = JSON.parse(line) as Reply;
    } catch {
      return this.fail(new CliError(`unreadable reply from the daemon at ${this.path}`));
    }
    if (reply.id === null && !reply.ok) return this.fail(new DaemonError(reply.error.code, reply.error.message));
    const waiter = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
    if (!waiter) return this.fail(new CliError(`reply for no request from the daemon at ${this.path}: ${line.slice(0, 200)}`));
    this.pending.delete(reply.id as number);
    if (reply.ok) waiter.resolve(reply.result);
    else waiter.reject(new DaemonError(reply.error.code, reply.error.message));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.socket.destroy();
  }
}
