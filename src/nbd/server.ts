/**
 * dmkit's NBD server: listeners, connections, and their life cycle. The
 * protocol lives in handshake.ts (options) and transmission.ts (commands).
 * Nothing a client sends can throw out of here: every failure ends that one
 * connection.
 */
import net from 'node:net';
import { IoError, toIoError } from '../block/errors.ts';
import { ByteReader, StreamEnded } from './byte-reader.ts';
import type { ExportProvider } from './exports.ts';
import { negotiate } from './handshake.ts';
import { type NbdLogger, quietLogger } from './logger.ts';
import { DEFAULT_LIMITS, Transmission, type TransmissionLimits } from './transmission.ts';

export type ListenAddress = { host: string; port: number } | { path: string };

export interface NbdServerOptions {
  logger?: NbdLogger;
  limits?: Partial<TransmissionLimits>;
  /** From accept to a chosen export; slower clients are disconnected (spec §13). Default 30 s. */
  handshakeTimeoutMs?: number;
  /**
   * Advertise each device's logical block size as the minimum block size and
   * refuse misaligned requests with EINVAL from the clients that asked for it
   * (as nbdkit's blocksize-policy filter with error-policy=error). Default:
   * minimum 1, every misaligned request served by read-modify-write.
   */
  strictBlockSize?: boolean;
}

/** One accepted socket: in the handshake until `transmission` is set. */
interface Connection {
  readonly socket: net.Socket;
  done: Promise<void>;
  transmission?: Transmission;
}

export class NbdServer {
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private readonly log: NbdLogger;
  private readonly limits: TransmissionLimits;
  private readonly handshakeTimeoutMs: number;
  private readonly strictBlockSize: boolean;
  private closing = false;

  constructor(private readonly provider: ExportProvider, opts: NbdServerOptions = {}) {
    this.log = opts.logger ?? quietLogger;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 30_000;
    this.strictBlockSize = opts.strictBlockSize ?? false;
  }

  /** Starts a listener; resolves with the bound address (the real port when asked for port 0). */
  listen(addr: ListenAddress): Promise<net.AddressInfo | string> {
    if (this.closing) return Promise.reject(new IoError('ESHUTDOWN', 'NBD server is closed'));
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const ready = (): void => {
        server.off('error', reject);
        server.on('error', (err) => this.log.error(`NBD listener: ${err.message}`));
        this.listeners.push(server);
        resolve(server.address()!);
      };
      if ('path' in addr) server.listen(addr.path, ready);
      else server.listen(addr.port, addr.host, ready);
    });
  }

  /** Connections in transmission on `name` (all connections when omitted). */
  connectionCount(name?: string): number {
    let n = 0;
    for (const c of this.connections) if (name === undefined || c.transmission?.exportName === name) n++;
    return n;
  }

  /**
   * Ends every connection serving `name` (the device was removed): requests
   * still arriving get ESHUTDOWN, in-flight ones finish, the export is
   * flushed if written and released. Resolves when they are all gone.
   */
  async endExport(name: string): Promise<void> {
    const ending = [...this.connections].filter((c) => c.transmission?.exportName === name);
    for (const c of ending) c.transmission!.shutdown();
    await Promise.all(ending.map((c) => c.done));
  }

  /**
   * Stops accepting, lets in-flight requests finish, flushes each export that
   * had writes, closes every socket. Connections still negotiating are cut.
   */
  async close(): Promise<void> {
    this.closing = true;
    const stopped = this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    const all = [...this.connections];
    for (const c of all) {
      if (c.transmission) c.transmission.shutdown();
      else c.socket.destroy();
    }
    await Promise.all(all.map((c) => c.done));
    await Promise.all(stopped);
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix client';
    // Errors (ECONNRESET, EPIPE) show up as a closed stream where it matters.
    socket.on('error', () => {});
    const conn: Connection = {
      socket,
      done: Promise.resolve(),
    };
    conn.done = this.serve(conn, peer).catch((err) => {
      this.log.error(`NBD ${peer}: ${toIoError(err).message}`);
      socket.destroy();
    }).finally(() => this.connections.delete(conn));
    this.connections.add(conn);
  }

  private async serve(conn: Connection, peer: string): Promise<void> {
    const { socket } = conn;
    const reader = new ByteReader(socket, `NBD ${peer}`);
    const timer = setTimeout(() => {
      this.log.warn(`NBD ${peer}: no export chosen within ${this.handshakeTimeoutMs} ms; disconnecting`);
      socket.destroy();
    }, this.handshakeTimeoutMs);
    let session;
    try {
      session = await negotiate({
        socket, reader, provider: this.provider, strictBlockSize: this.strictBlockSize, shuttingDown: () => this.closing,
      });
    } catch (err) {
      if (err instanceof StreamEnded) return;
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (!session) return;
    if (this.closing || socket.destroyed) {
      session.handle.release();
      socket.destroy();
      return;
    }
    const t = new Transmission(socket, reader, session, this.limits, this.log, `NBD ${peer}`);
    conn.transmission = t;
    await t.run();
  }
}

export { StaticExports } from './exports.ts';
export type { ExportHandle, ExportInfo, ExportProvider, StaticExportOptions } from './exports.ts';
