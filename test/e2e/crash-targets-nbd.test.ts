/**
 * flakey and log-writes as a user drives them: a real `bin/dmkit.js serve`
 * child, the real CLI, qemu-io over NBD, data checked byte for byte.
 *
 * flakey is made deterministic with intervals instead of timing: `1 0` is
 * always up and `0 1` always down (elapsed % (up + down) >= up), swapped
 * with load + resume between qemu-io runs (flakey.md's FLAKEY_TABLE_ERROR /
 * FLAKEY_TABLE_DROP shapes). log-writes: writes, a flush, a mark, more
 * writes, teardown; replay-log to the mark must give exactly the bytes
 * written before it, and the whole log exactly the data device.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

const BIN = new URL('../../bin/dmkit.js', import.meta.url).pathname;
const MiB = 1024 * 1024;

interface Run {
  stdout: string;
  stderr: string;
  status: number | null;
}

const children = new Set<ChildProcess>();
let dir: string;
let socket: string;
let port: number;

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (status) => {
      children.delete(child);
      resolve({ stdout, stderr, status });
    });
  });
}

/** `dmkit ARGS…` against this file's daemon; must succeed silently on stderr. */
async function dmkit(...args: string[]): Promise<string> {
  const r = await run(process.execPath, [BIN, ...args], { DMKIT_SOCKET: socket });
  assert.deepEqual({ stderr: r.stderr, status: r.status }, { stderr: '', status: 0 }, `dmkit ${args.join(' ')}`);
  return r.stdout;
}

/**
 * qemu-io commands on an image (a file, or an NBD export by name); returns
 * stdout, which reports each command. Cache mode writeback: qemu-io's default
 * (writethrough) would send every write with FUA.
 */
async function qemuIo(image: string, ...cmds: string[]): Promise<string> {
  const target = ['-t', 'writeback', '-f', 'raw', image.startsWith('/') ? image : `nbd://127.0.0.1:${port}/${image}`];
  const r = await run('qemu-io', [...cmds.flatMap((c) => ['-c', c]), ...target]);
  assert.equal(r.status, 0, `qemu-io ${cmds.join('; ')}: ${r.stderr}`);
  return r.stdout;
}

/** Every qemu-io read with -P verified its pattern. */
function assertVerified(out: string, reads: number): void {
  assert.doesNotMatch(out, /Pattern verification failed/, out);
  assert.equal((out.match(/^read \d+\/\d+ bytes/gm) ?? []).length, reads, out);
}

async function blankFile(name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dmkit-crash-nbd-'));
  const dataDir = join(dir, 'data');
  socket = join(dataDir, 'dmkit.sock');
  await writeFile(join(dir, 'empty.json'), '{"devices":[]}');
  const child = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--config', 'empty.json'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  port = await new Promise<number>((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const m = /^dmkit: serving \d+ devices? on 127\.0\.0\.1:(\d+),/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`dmkit serve exited (${code}) before it was ready: ${err}`)));
  });
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('flakey over NBD', () => {
  const table = (intervals: string, features = '') => [`0 8192 flakey ${join(dir, 'flakey.img')} 2048 ${intervals}${features}`];
  const swap = async (lines: string[]) => {
    await dmkit('load', 'fl', ...lines.flatMap((l) => ['--table', l]));
    await dmkit('resume', 'fl');
  };

  it('fails writes while down with error_writes, acknowledges and drops them with drop_writes, serves reads throughout', async () => {
    const backing = await blankFile('flakey.img', 8 * MiB);
    await dmkit('create', 'fl', '--table', table('1 0')[0]!); // always up
    assert.match(await qemuIo('fl', 'write -P 0x11 0 64k', 'flush'), /wrote 65536\/65536 bytes at offset 0/);

    await swap(table('0 1', ' 1 error_writes')); // always down
    assert.equal(await dmkit('table', 'fl'), `0 8192 flakey 7:0 2048 0 1 1 error_writes\n`);
    const failing = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 4k', '-c', 'read -P 0x11 0 64k', `nbd://127.0.0.1:${port}/fl`]);
    assert.match(failing.stdout + failing.stderr, /^write failed: Input\/output error$/m);
    assertVerified(failing.stdout, 1);

    await swap(table('0 1', ' 1 drop_writes'));
    const dropped = await qemuIo('fl', 'write -P 0x33 0 4k', 'flush', 'read -P 0x11 0 64k');
    assert.match(dropped, /wrote 4096\/4096 bytes at offset 0/); // acknowledged ...
    assertVerified(dropped, 1); // ... and thrown away

    await swap(table('1 0'));
    await qemuIo('fl', 'write -P 0x44 60k 4k', 'flush');
    await dmkit('remove', 'fl');
    // The backing file holds exactly what the up intervals let through, at offset 2048 sectors.
    assertVerified(await qemuIo(backing, 'read -P 0 0 1M', 'read -P 0x11 1M 60k', 'read -P 0x44 1084k 4k', 'read -P 0 1088k 1M'), 4);
  });
});

describe('log-writes over NBD', () => {
  it('replay-log to a mark reproduces exactly the bytes qemu-io wrote before it, and the whole log the data device', async () => {
    const data = await blankFile('lw-data.img', 4 * MiB);
    const log = await blankFile('lw-log.img', 16 * MiB);
    await dmkit('create', 'lw', '--table', `0 8192 log-writes ${data} ${log}`);
    await qemuIo('lw', 'write -P 0x41 0 64k', 'write -P 0x42 1M 4k', 'write -f -P 0x43 2M 8k', 'flush');
    await dmkit('message', 'lw', '0', 'mark', 'synced');

    await qemuIo('lw', 'write -P 0x44 32k 64k', 'flush', 'write -P 0x45 3M 4k');
    await dmkit('remove', 'lw'); // teardown logs the unflushed write and the end mark

    const found = await run(process.execPath, [BIN, 'replay-log', '--log', log, '--find', '--end-mark', 'synced']);
    assert.equal(found.status, 0, found.stderr);
    assert.match(found.stdout, /^\d+@\d+\n$/);
    // log-writes §4.7: the FUA write is logged at its completion, ahead of the older unflushed
    // writes that the flush then logs, in completion order, before its own entry.
    const head = await blankFile('replay-head.img', 4 * MiB);
    assert.equal(await dmkit('replay-log', '--log', log, '--replay', head, '-v', '--limit', '4'), [
      'replaying 0@2: sector 4096, size 8192, flags 0x2(FUA)',
      'replaying 1@19: sector 0, size 65536, flags 0x0(NONE)',
      'replaying 2@148: sector 2048, size 4096, flags 0x0(NONE)',
      'replaying 3@157: sector 0, size 0, flags 0x1(FLUSH)',
      '',
    ].join('\n'));

    const atMark = await blankFile('replay-mark.img', 4 * MiB);
    assert.equal(await dmkit('replay-log', '--log', log, '--replay', atMark, '--end-mark', 'synced'), '');
    assertVerified(await qemuIo(atMark, 'read -P 0x41 0 64k', 'read -P 0 64k 960k', 'read -P 0x42 1M 4k', 'read -P 0 1028k 1020k',
      'read -P 0x43 2M 8k', 'read -P 0 2056k 2040k'), 6);

    const whole = await blankFile('replay-all.img', 4 * MiB);
    assert.equal(await dmkit('replay-log', '--log', log, '--replay', whole), '');
    assert.ok((await readFile(whole)).equals(await readFile(data)), 'replaying the whole log does not give the data device');
    assertVerified(await qemuIo(whole, 'read -P 0x41 0 32k', 'read -P 0x44 32k 64k', 'read -P 0x45 3M 4k'), 3);
  });
});
