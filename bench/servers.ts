/**
 * The NBD servers under test, each its own process so that its CPU time and
 * peak memory can be read from /proc: `dmkit serve` (the real daemon, with a
 * config file), the memory-backed dmkit child, and nbdkit with its file and
 * memory plugins.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../test/nbd/helpers.ts';

/**
 * How a server process is started: `prefix` goes before the command
 * (`taskset -c 1` with --pin), `nodeArgs` to node itself (--cpu-prof).
 */
export interface Launch {
  prefix: string[];
  nodeArgs: string[];
}

export interface BenchServer {
  readonly name: string;
  readonly pid: number;
  uri(exportName?: string): string;
  stop(): Promise<void>;
}

const REPO = join(import.meta.dirname, '..');
const START_TIMEOUT_MS = 30_000;

/** `dmkit serve` on an ephemeral port; the port is read from its "serving … on HOST:PORT" line. */
export async function startDmkitServe(dataDir: string, configFile: string, launch: Launch): Promise<BenchServer> {
  const child = spawnWith(launch.prefix, process.execPath, [...launch.nodeArgs, join(REPO, 'bin/dmkit.js'), 'serve',
    '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const line = await firstLine(child, 'dmkit serve', (l) => / on 127\.0\.0\.1:\d+/.test(l));
  const port = Number(/ on 127\.0\.0\.1:(\d+)/.exec(line)![1]);
  return managed('dmkit serve', child, port);
}

/** bench/memory-server.ts: dmkit `linear` over a MemoryDevice, export `mem`. */
export async function startDmkitMemory(sectors: number, launch: Launch): Promise<BenchServer> {
  const child = spawnWith(launch.prefix, process.execPath,
    [...launch.nodeArgs, '--import', 'tsx', join(REPO, 'bench/memory-server.ts'), String(sectors)],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO });
  const line = await firstLine(child, 'dmkit memory server', (l) => l.startsWith('port '));
  return managed('dmkit (in-process registry)', child, Number(line.slice(5)));
}

/**
 * `nbdkit -f [--filter=F] PLUGIN ARGS` on a free port; ready once it wrote its pid file (after binding).
 * `env` adds to the environment (TMPDIR: where the cow filter keeps its overlay).
 */
export async function startNbdkit(plugin: string[], pidFile: string, launch: Launch, env: Record<string, string> = {}): Promise<BenchServer> {
  const port = await freePort();
  const child = spawnWith(launch.prefix, 'nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), '-P', pidFile, ...plugin],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  await waitFor(child, `nbdkit ${plugin.join(' ')}`, () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '');
  return managed(`nbdkit ${plugin.join(' ')}`, child, port);
}

/** A started server; one that dies before stop() says so on stderr, with the end of its own stderr. */
/** taskset execs the command, so the child's pid is the server's own. */
function spawnWith(prefix: string[], cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  return prefix.length > 0 ? spawn(prefix[0]!, [...prefix.slice(1), cmd, ...args], opts) : spawn(cmd, args, opts);
}

function managed(name: string, child: ChildProcess, port: number): BenchServer {
  let stopping = false;
  let stderr = '';
  child.stderr?.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const exited = new Promise<void>((resolve) => child.once('exit', (code, signal) => {
    if (!stopping) console.error(`bench: ${name} (pid ${child.pid}) exited unexpectedly (${code ?? signal}): ${stderr.trim()}`);
    resolve();
  }));
  return {
    name,
    pid: child.pid!,
    uri: (exportName = '') => `nbd://127.0.0.1:${port}/${exportName}`,
    stop: async () => {
      stopping = true;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Resolves with the first stdout line `ready` accepts; rejects (with stderr) if the child exits first. */
function firstLine(child: ChildProcess, what: string, ready: (line: string) => boolean): Promise<string> {
  let stderr = '';
  child.stderr?.on('data', (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    let pending = '';
    const timer = setTimeout(() => fail(`no ready line within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${what}: ${why}: ${stderr.trim()}`));
    };
    child.once('exit', (code) => fail(`exited with ${code} before it was ready`));
    child.stdout!.on('data', (d) => {
      pending += d;
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (ready(line)) {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve(line);
          return;
        }
      }
    });
  });
}

/** Polls `ready` every 20 ms; rejects if the child exits first or it takes too long. */
async function waitFor(child: ChildProcess, what: string, ready: () => boolean): Promise<void> {
  let stderr = '';
  child.stderr?.on('data', (d) => { stderr += d; });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!ready()) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
