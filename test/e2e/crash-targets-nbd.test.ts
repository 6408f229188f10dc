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
import { readFile, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { type Daemon, Harness } from '../helpers/daemon.ts';

const MiB = 1024 * 1024;

let h: Harness;
let daemon: Daemon;

/** Every qemu-io read with -P verified its pattern. */
function assertVerified(out: string, reads: number): void {
  assert.doesNotMatch(out, /Pattern verification failed/, out);
  assert.equal((out.match(/^read \d+\/\d+ bytes/gm) ?? []).length, reads, out);
}

before(async () => {
  h = await Harness.create('dmkit-crash-nbd-');
  await writeFile(h.path('empty.json'), '{"devices":[]}');
  daemon = await h.serve({ dataDir: h.path('data'), args: ['--config', 'empty.json'] });
});

after(() => h.cleanup());

describe('flakey over NBD', () => {
  const table = (intervals: string, features = '') => [`0 8192 flakey ${h.path('flakey.img')} 2048 ${intervals}${features}`];
  const swap = async (lines: string[]) => {
    await daemon.dmkit('load', 'fl', ...lines.flatMap((l) => ['--table', l]));
    await daemon.dmkit('resume', 'fl');
  };

  it('fails writes while down with error_writes, acknowledges and drops them with drop_writes, serves reads throughout', async () => {
    const backing = await h.blankFile('flakey.img', 8 * MiB);
    await daemon.dmkit('create', 'fl', '--table', table('1 0')[0]!); // always up
    assert.match(await daemon.qemuIo('fl', 'write -P 0x11 0 64k', 'flush'), /wrote 65536\/65536 bytes at offset 0/);

    await swap(table('0 1', ' 1 error_writes')); // always down
    assert.equal(await daemon.dmkit('table', 'fl'), `0 8192 flakey 7:0 2048 0 1 1 error_writes\n`);
    const failing = await h.run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 4k', '-c', 'read -P 0x11 0 64k', daemon.uri('fl')]);
    assert.match(failing.stdout + failing.stderr, /^write failed: Input\/output error$/m);
    assertVerified(failing.stdout, 1);

    await swap(table('0 1', ' 1 drop_writes'));
    const dropped = await daemon.qemuIo('fl', 'write -P 0x33 0 4k', 'flush', 'read -P 0x11 0 64k');
    assert.match(dropped, /wrote 4096\/4096 bytes at offset 0/); // acknowledged ...
    assertVerified(dropped, 1); // ... and thrown away

    await swap(table('1 0'));
    await daemon.qemuIo('fl', 'write -P 0x44 60k 4k', 'flush');
    await daemon.dmkit('remove', 'fl');
    // The backing file holds exactly what the up intervals let through, at offset 2048 sectors.
    assertVerified(await daemon.qemuIo(backing, 'read -P 0 0 1M', 'read -P 0x11 1M 60k', 'read -P 0x44 1084k 4k', 'read -P 0 1088k 1M'), 4);
  });
});

describe('log-writes over NBD', () => {
  it('replay-log to a mark reproduces exactly the bytes qemu-io wrote before it, and the whole log the data device', async () => {
    const data = await h.blankFile('lw-data.img', 4 * MiB);
    const log = await h.blankFile('lw-log.img', 16 * MiB);
    await daemon.dmkit('create', 'lw', '--table', `0 8192 log-writes ${data} ${log}`);
    await daemon.qemuIo('lw', 'write -P 0x41 0 64k', 'write -P 0x42 1M 4k', 'write -f -P 0x43 2M 8k', 'flush');
    await daemon.dmkit('message', 'lw', '0', 'mark', 'synced');

    await daemon.qemuIo('lw', 'write -P 0x44 32k 64k', 'flush', 'write -P 0x45 3M 4k');
    await daemon.dmkit('remove', 'lw'); // teardown logs the unflushed write and the end mark

    const found = await h.cli(['replay-log', '--log', log, '--find', '--end-mark', 'synced']);
    assert.equal(found.status, 0, found.stderr);
    assert.match(found.stdout, /^\d+@\d+\n$/);
    // log-writes §4.7: the FUA write is logged at its completion, ahead of the older unflushed
    // writes that the flush then logs, in completion order, before its own entry.
    const head = await h.blankFile('replay-head.img', 4 * MiB);
    assert.equal(await daemon.dmkit('replay-log', '--log', log, '--replay', head, '-v', '--limit', '4'), [
      'replaying 0@2: sector 4096, size 8192, flags 0x2(FUA)',
      'replaying 1@19: sector 0, size 65536, flags 0x0(NONE)',
      'replaying 2@148: sector 2048, size 4096, flags 0x0(NONE)',
      'replaying 3@157: sector 0, size 0, flags 0x1(FLUSH)',
      '',
    ].join('\n'));

    const atMark = await h.blankFile('replay-mark.img', 4 * MiB);
    assert.equal(await daemon.dmkit('replay-log', '--log', log, '--replay', atMark, '--end-mark', 'synced'), '');
    assertVerified(await daemon.qemuIo(atMark, 'read -P 0x41 0 64k', 'read -P 0 64k 960k', 'read -P 0x42 1M 4k', 'read -P 0 1028k 1020k',
      'read -P 0x43 2M 8k', 'read -P 0 2056k 2040k'), 6);

    const whole = await h.blankFile('replay-all.img', 4 * MiB);
    assert.equal(await daemon.dmkit('replay-log', '--log', log, '--replay', whole), '');
    assert.ok((await readFile(whole)).equals(await readFile(data)), 'replaying the whole log does not give the data device');
    assertVerified(await daemon.qemuIo(whole, 'read -P 0x41 0 32k', 'read -P 0x44 32k 64k', 'read -P 0x45 3M 4k'), 3);
  });
});
