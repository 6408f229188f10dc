/**
 * The control socket: JSON lines over a Unix socket (ARCHITECTURE §6;
 * protocol.ts has the messages). Requests on one connection run concurrently
 * and each reply carries its request's id. A line that cannot be understood
 * gets an error reply and the connection lives on; a line longer than
 * MAX_LINE_BYTES is refused as soon as it grows past the limit, and that
 * connection is closed, since the rest of the line cannot be told apart from
 * the next request.
 */
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { IoError, toIoError } from '../block/errors.ts';
import { MAX_LINE_BYTES, ProtocolError, parseRequest, type Reply, type Request, type RequestId } from './protocol.ts';

export type RequestHandler = (request: Request, signal: AbortSignal) => Promise<unknown>;

/** Splits a byte stream into lines, holding at most `limit` bytes of an unfinished line. */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly limit: number) {}

  /**
   * The complete lines in `chunk`; `overflow` once a line grew past the limit
   * (the lines before it are still returned, nothing after it is).
   */
  push(chunk: Buffer): { lines: Buffer[]; overflow: boolean } {
    const lines: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      if (this.pendingBytes + nl - start > this.limit) return { lines, overflow: true };
      const part = chunk.subarray(start, nl);
      lines.push(this.pendingBytes === 0 ? part : Buffer.concat([...this.pending, part]));
      this.pending = [];
      this.pendingBytes = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes > this.limit) return { lines, overflow: true };
      this.pending.push(chunk.subarray(start));
    }
    return { lines, overflow: false };
  }
}

interface Connection {
  readonly socket: Socket;
  readonly abort: AbortController;
  readonly running: Set<Promise<void>>;
}

export class ControlServer {
  private readonly connections = new Set<Connection>();
  private closing = false;

  private constructor(
    readonly path: string,
    private readonly server: Server,
    private readonly handle: RequestHandler,
  ) {
    server.on('connection', (socket) => this.accept(socket));
  }

  /**
   * Listens on `path`, mode 0600. A socket file left by a daemon that is gone
   * is replaced; one that a live daemon answers on is not (EBUSY).
   */
  static async listen(path: string, handle: RequestHandler): Promise<ControlServer> {
    await mkdir(dirname(path), { recursive: true });
    await assertNoDaemon(path);
    await unlink(path).catch((err) => {
      if (toIoError(err).code !== 'ENOENT') throw err;
    });
    const server = createServer();
    const oldMask = process.umask(0o177); // the socket is created 0600, never briefly wider
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      throw new IoError(toIoError(err).code, `control socket ${path}: ${toIoError(err).message}`, { cause: err });
    } finally {
      process.umask(oldMask);
    }
    await chmod(path, 0o600);
    return new ControlServer(path, server, handle);
  }

  /**
   * Stops accepting, interrupts `wait`s (EINTR), lets every other running
   * request finish and send its reply, closes every connection and removes
   * the socket file.
   */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) c.abort.abort();
    await Promise.all([...this.connections].flatMap((c) => [...c.running]));
    for (const c of this.connections) c.socket.end(() => c.socket.destroy());
    await closed;
    await unlink(this.path).catch(() => undefined);
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn: Connection = { socket, abort: new AbortController(), running: new Set() };
    this.connections.add(conn);
    const lines = new LineSplitter(MAX_LINE_BYTES);
    const onData = (chunk: Buffer): void => {
      const got = lines.push(chunk);
      for (const line of got.lines) this.dispatch(conn, line);
      if (got.overflow) {
        socket.off('data', onData);
        const reply: Reply = { id: null, ok: false, error: { code: 'EMSGSIZE', message: `request line longer than ${MAX_LINE_BYTES} bytes; closing the connection` } };
        // Replies still running for earlier lines are written before this one ends the stream.
        void Promise.all(conn.running).then(() => socket.end(`${JSON.stringify(reply)}\n`, () => socket.destroy()));
      }
    };
    socket.on('data', onData);
    socket.on('error', () => undefined); // a client that went away; its requests' replies are dropped
    socket.on('close', () => {
      conn.abort.abort();
      this.connections.delete(conn);
    });
  }

  private dispatch(conn: Connection, line: Buffer): void {
    const text = line.toString('utf8').replace(/\r$/, '');
    if (text.trim() === '') return;
    const run = this.answer(text, conn.abort.signal).then((reply) => {
      if (!conn.socket.destroyed && conn.socket.writable) conn.socket.write(`${JSON.stringify(reply)}\n`);
    });
    conn.running.add(run);
    void run.finally(() => conn.running.delete(run));
  }

  private async answer(text: string, signal: AbortSignal): Promise<Reply> {
    let id: RequestId = null;
    try {
      const request = parseRequest(text);
      id = request.id;
      if (this.closing) throw new IoError('ESHUTDOWN', 'the daemon is shutting down');
      return { id, ok: true, result: await this.handle(request, signal) };
    } catch (err) {
      if (err instanceof ProtocolError) return { id: err.id, ok: false, error: { code: 'EINVAL', message: err.message } };
      const e = toIoError(err);
      return { id, ok: false, error: { code: e.code, message: e.message } };
    }
  }
}

/** EBUSY when a live daemon accepts connections on `path`. */
export async function assertNoDaemon(path: string): Promise<void> {
  if (await answers(path)) throw new IoError('EBUSY', `${path}: another dmkit daemon is serving on this control socket`);
}

/** True when something accepts connections on the Unix socket `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
