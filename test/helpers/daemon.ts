/**
 * The harness of the end-to-end tests: a temporary directory, real child
 * processes (`bin/dmkit.js serve`, the `dmkit` CLI, qemu-io, cmp …) tracked
 * so that nothing outlives the test file, and a running daemon found by the
 * port of its ready line.
 *
 *   const h = await Harness.create('dmkit-e2e-');
 *   after(() => h.cleanup());                      // SIGKILLs every child, removes the directory
 *   let d = await h.serve({ dataDir: h.path('data') });
 *   await d.dmkit('create', 'a', '--table', `0 8 linear ${await h.blankFile('a.img', 4096)} 0`);
 *   await d.qemuIo('a', 'write -P 0x11 0 4k', 'flush');
 *   await d.kill('SIGKILL');                       // a crash of the daemon process
 *   d = await d.restart();                         // same data dir: state.json recreates the devices
 */
import assert from 'node:assert/strict';
import { type ChildProcess, type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { blankFile } from './temp-dir.ts';

export const BIN = new URL('../../bin/dmkit.js', import.meta.url).pathname;

/** How a child process ended. */
export interface Run {
  stdout: string;
  stderr: string;
  status: number | null;
}

export interface RunOptions {
  /** Text written to the child's stdin (closed in any case). */
  stdin?: string;
  /** Working directory; the harness directory by default. */
  cwd?: string;
  /** Added to the test's environment. */
  env?: Record<string, string>;
  /** SIGKILLs the child after this many milliseconds (its status is then null). */
  timeoutMs?: number;
}

export interface ServeOptions {
  /** `--data-dir`: state.json, the control socket and the embedded default live here. */
  dataDir: string;
  /** More `dmkit serve` arguments (`--config F`, …); `--listen 127.0.0.1:0` is always given. */
  args?: string[];
}

/** The ready line: `dmkit: serving N devices on 127.0.0.1:PORT, control socket PATH`. */
const READY = /^dmkit: serving \d+ devices? on 127\.0\.0\.1:(\d+), control socket .*\n/;

export class Harness {
  private readonly children = new Set<ChildProcess>();

  private constructor(readonly dir: string) {}

  /** A harness on a fresh temporary directory named `prefix…`. */
  static async create(prefix: string): Promise<Harness> {
    return new Harness(await mkdtemp(join(tmpdir(), prefix)));
  }

  /** `name` inside the harness directory. */
  path(name: string): string {
    return join(this.dir, name);
  }

  /** Kills every child still running and removes the directory. */
  async cleanup(): Promise<void> {
    const exits = [...this.children].map((child) => new Promise((resolve) => {
      child.on('exit', resolve);
      child.kill('SIGKILL');
    }));
    await Promise.all(exits);
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Spawns `cmd` with piped stdio, tracked until it exits. */
  spawn(cmd: string, args: string[], opts: Omit<RunOptions, 'stdin'> = {}): ChildProcessWithoutNullStreams {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? this.dir, env: { ...process.env, ...opts.env }, stdio: 'pipe' });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    // A child may exit without reading its input (replay-log, nbdinfo): the
    // EPIPE that our end of its stdin then gets is not a failure of the test,
    // whose verdict is the child's exit status.
    child.stdin.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
    return child;
  }

  /** Runs `cmd` to its end; never rejects for a non-zero status (the caller checks it). */
  run(cmd: string, args: string[], opts: RunOptions = {}): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = this.spawn(cmd, args, opts);
      const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      child.on('error', reject);
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve({ stdout, stderr, status });
      });
      if (opts.stdin === undefined) child.stdin.end();
      else child.stdin.end(opts.stdin);
    });
  }

  /** `dmkit ARGS…` naming no daemon (offline commands, or `--socket`/`--data-dir` among ARGS), as it ended. */
  cli(args: string[], opts: RunOptions = {}): Promise<Run> {
    return this.run(process.execPath, [BIN, ...args], opts);
  }

  /**
   * qemu-io commands on `image` (a file path or an `nbd://` URI); returns
   * stdout, which reports each command, and fails the test if qemu-io
   * fails. Cache mode writeback: qemu-io's default (writethrough) would send
   * every write with FUA, so a `flush` command is what makes writes durable.
   */
  async qemuIo(image: string, ...cmds: string[]): Promise<string> {
    const r = await this.qemuIoRun(image, ...cmds);
    assert.equal(r.status, 0, `qemu-io ${cmds.join('; ')} ${image}: ${r.stderr}`);
    return r.stdout;
  }

  /** The same qemu-io run, as it ended, for runs that may fail. */
  qemuIoRun(image: string, ...cmds: string[]): Promise<Run> {
    return this.run('qemu-io', [...cmds.flatMap((c) => ['-c', c]), '-t', 'writeback', '-f', 'raw', image]);
  }

  /** An empty (sparse) file of `bytes` in the harness directory; returns its path. */
  blankFile(name: string, bytes: number): Promise<string> {
    return blankFile(this.path(name), bytes);
  }

  /** Starts `dmkit serve` and resolves once its ready line names the bound port. */
  serve(opts: ServeOptions): Promise<Daemon> {
    const child = this.spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--data-dir', opts.dataDir, ...opts.args ?? []]);
    child.stdin.end();
    let out = '';
    let err = '';
    const exit = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ? null : code)));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    return new Promise((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (s: string) => {
        out += s;
        const m = READY.exec(out);
        if (m) resolve(new Daemon(this, opts, child, Number(m[1]), m[0], () => err, exit));
      });
      void exit.then((code) => reject(new Error(`dmkit serve exited (${code}) before it was ready: ${err}`)));
    });
  }
}

/** One running `dmkit serve`. */
export class Daemon {
  /** Its control socket (`<data-dir>/dmkit.sock`). */
  readonly socket: string;

  constructor(
    private readonly harness: Harness,
    private readonly opts: ServeOptions,
    readonly child: ChildProcess,
    /** The NBD port it bound. */
    readonly port: number,
    /** Its ready line, with the newline. */
    readonly ready: string,
    /** What it wrote on stderr so far. */
    readonly stderr: () => string,
    /** Its exit status; null when a signal ended it. */
    readonly exit: Promise<number | null>,
  ) {
    this.socket = join(opts.dataDir, 'dmkit.sock');
  }

  /** `dmkit ARGS…` against this daemon, as it ended. */
  cli(args: string[], opts: Omit<RunOptions, 'env'> = {}): Promise<Run> {
    return this.harness.cli(args, { ...opts, env: { DMKIT_SOCKET: this.socket } });
  }

  /** `dmkit ARGS…`, which must succeed with nothing on stderr; returns stdout. */
  async dmkit(...args: string[]): Promise<string> {
    const r = await this.cli(args);
    assert.deepEqual({ stderr: r.stderr, status: r.status }, { stderr: '', status: 0 }, `dmkit ${args.join(' ')}`);
    return r.stdout;
  }

  /** The NBD URI of the export `name`. */
  uri(name: string): string {
    return `nbd://127.0.0.1:${this.port}/${name}`;
  }

  /** qemu-io commands (Harness.qemuIo) on a file path, or on the export of that name. */
  qemuIo(image: string, ...cmds: string[]): Promise<string> {
    return this.harness.qemuIo(isAbsolute(image) ? image : this.uri(image), ...cmds);
  }

  /** Sends `signal` (SIGKILL: the process dies with no chance to flush or save anything) and waits for the exit. */
  kill(signal: NodeJS.Signals): Promise<number | null> {
    this.child.kill(signal);
    return this.exit;
  }

  /** SIGTERM, the orderly stop; resolves with the exit status. */
  stop(): Promise<number | null> {
    return this.kill('SIGTERM');
  }

  /** A new daemon on the same data dir and arguments (this one must have exited). */
  restart(): Promise<Daemon> {
    return this.harness.serve(this.opts);
  }
}
