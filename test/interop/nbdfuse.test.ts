/**
 * nbdfuse (libnbd) mounts a dmkit export as a file through FUSE, and e2fsprogs
 * work on that file. FUSE passes application I/O through as it comes: debugfs
 * writes the 2-byte-aligned pieces of the superblock at odd offsets, which
 * the server must serve by read-modify-write (spec §8.2 item 9); libnbd
 * itself refuses any request below the minimum block size it was given, so
 * this also checks that the server advertises minimum 1.
 *
 * Needs /dev/fuse and the right to mount (root here: libfuse then mounts
 * without fusermount3); skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileDevice } from '../../src/block/file-device.ts';
import { type Served, run, serve } from '../nbd/helpers.ts';

const MiB = 1024 * 1024;

/** Why FUSE cannot be used here, or undefined when it can. */
async function fuseUnavailable(): Promise<string | undefined> {
  try {
    await access('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    return '/dev/fuse is missing or not accessible';
  }
  const v = await run('nbdfuse', ['--version']).catch(() => undefined);
  if (!v || v.code !== 0) return 'nbdfuse (libnbd-bin) is not installed';
  return undefined;
}

const unavailable = await fuseUnavailable();

describe('nbdfuse over a dmkit export: ext4 made, changed and checked through FUSE', { skip: unavailable }, () => {
  let dir: string;
  let mnt: string;
  let file: FileDevice;
  let served: Served;
  let fuse: ChildProcess | undefined;
  let fuseExit: Promise<void>;
  let mountError = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dmkit-nbdfuse-'));
    mnt = join(dir, 'mnt');
    await mkdir(mnt);
    file = await FileDevice.open(join(dir, 'backing.img'), { sectors: (64 * MiB) / 512, name: 'file' });
    served = await serve({ file });
    const pidfile = join(dir, 'nbdfuse.pid');
    fuse = spawn('nbdfuse', ['-P', pidfile, join(mnt, 'disk'), served.uri('file')], { stdio: ['ignore', 'ignore', 'pipe'] });
    fuse.stderr!.on('data', (d) => { mountError += d; });
    fuseExit = new Promise((resolve) => fuse!.on('exit', () => resolve()));
    // nbdfuse writes its pid file once the mount is up.
    for (let i = 0; i < 200 && fuse.exitCode === null; i++) {
      if (await readFile(pidfile).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`nbdfuse did not mount: ${mountError}`);
  });

  after(async () => {
    if (fuse && fuse.exitCode === null) {
      const u = await run('umount', [mnt]);
      if (u.code !== 0) fuse.kill('SIGTERM');
      await fuseExit;
    }
    await served?.close();
    await file?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('mkfs.ext4, debugfs -w mkdir (unaligned superblock writes) and e2fsck -fn all succeed', async () => {
    const disk = join(mnt, 'disk');
    const mkfs = await run('mkfs.ext4', ['-q', '-F', disk], 60_000);
    assert.equal(mkfs.code, 0, mkfs.stderr);
    const mkdirResult = await run('debugfs', ['-w', '-R', 'mkdir d1', disk]);
    assert.equal(mkdirResult.code, 0, mkdirResult.stderr);
    assert.doesNotMatch(mkdirResult.stderr, /Invalid argument|error/i);
    const ls = await run('debugfs', ['-R', 'ls -l /', disk]);
    assert.match(ls.stdout, /\sd1\s*$/m);
    const fsck = await run('e2fsck', ['-fn', disk], 60_000);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    assert.doesNotMatch(fsck.stdout, /Fix\?/);
    assert.ok(mountError === '', mountError);
  });

  it('the bytes reached dmkit\'s device: e2fsck on the backing file itself is clean and sees d1', async () => {
    await file.flush();
    const backing = join(dir, 'backing.img');
    const fsck = await run('e2fsck', ['-fn', backing], 60_000);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    const ls = await run('debugfs', ['-R', 'ls -l /', backing]);
    assert.match(ls.stdout, /\sd1\s*$/m);
  });
});
