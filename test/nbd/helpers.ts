/** Shared fixtures for NBD tests: an in-process server on an ephemeral port, child processes, raw sockets. */
import { spawn } from 'node:child_process';
import net from 'node:net';
import type { BlockDevice } from '../../src/block/device.ts';
import { ByteReader, StreamEnded } from '../../src/nbd/byte-reader.ts';
import { NbdServer, type NbdServerOptions, StaticExports, type StaticExportOptions } from '../../src/nbd/server.ts';

export interface Served {
  server: NbdServer;
  exports: StaticExports;
  port: number;
  uri(name?: string): string;
  close(): Promise<void>;
}

export async function serve(
  devices: Record<string, BlockDevice>,
  opts: StaticExportOptions & NbdServerOptions = {},
): Promise<Served> {
  const exports = new StaticExports(new Map(Object.entries(devices)), opts);
  const server = new NbdServer(exports, opts);
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  const port = typeof addr === 'string' ? 0 : addr.port;
  return {
    server, exports, port,
    uri: (name = '') => `nbd://127.0.0.1:${port}/${name}`,
    close: () => server.close(),
  };
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Runs a tool to completion (killed after `timeoutMs`), capturing its output. */
export function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Starts `nbdkit -f` on an ephemeral port (nbdkit picks none itself, so we find a free one). */
export async function startNbdkit(args: string[]): Promise<{ uri: string; port: number; stop(): Promise<void> }> {
  const port = await freePort();
  const child = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  for (let i = 0; i < 100; i++) {
    if (await canConnect(port)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    uri: `nbd://127.0.0.1:${port}/`,
    port,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/** A hand-driven protocol peer: send raw bytes, read exact replies, observe EOF. */
export class RawPeer {
  readonly reader: ByteReader;
  private constructor(readonly socket: net.Socket) {
    socket.on('error', () => {});
    this.reader = new ByteReader(socket, 'raw peer');
  }

  static async connect(port: number): Promise<RawPeer> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    return new RawPeer(socket);
  }

  send(...parts: Buffer[]): void {
    for (const p of parts) this.socket.write(p);
  }

  async read(n: number): Promise<Buffer> {
    return Buffer.from(await this.reader.readExact(n));
  }

  /** True if the server closed the connection without sending anything more. */
  async closedByServer(): Promise<boolean> {
    try {
      await this.reader.readExact(1);
      return false;
    } catch (err) {
      if (err instanceof StreamEnded) return true;
      throw err;
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
