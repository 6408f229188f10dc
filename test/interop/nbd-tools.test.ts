/**
 * dmkit's NBD server driven by the real Debian clients (spec §16): qemu-io,
 * qemu-img, nbdinfo, nbdcopy and fio. Every check looks at data, not only
 * at exit codes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileDevice } from '../../src/block/file-device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { type Served, run, serve } from '../nbd/helpers.ts';

const MiB = 1024 * 1024;
let served: Served;
let disk: MemoryDevice;
let file: FileDevice;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dmkit-nbd-'));
  disk = new MemoryDevice((64 * MiB) / 512, { name: 'disk' });
  file = await FileDevice.open(join(dir, 'backing.img'), { sectors: (16 * MiB) / 512, name: 'file' });
  served = await serve({ disk, file, ro: new MemoryDevice(2048, { name: 'ro' }) }, {
    readOnly: new Set(['ro']),
    descriptions: new Map([['disk', 'test disk']]),
  });
});

after(async () => {
  await served.close();
  await file.close();
  await rm(dir, { recursive: true, force: true });
});

/** A 64 MiB image with data at 0–64 KiB (0x11) and 8–11 MiB (0x22), as in spec §16.3. */
async function sourceImage(): Promise<string> {
  const path = join(dir, 'src.img');
  const img = Buffer.alloc(64 * MiB);
  img.fill(0x11, 0, 65536);
  img.fill(0x22, 8 * MiB, 11 * MiB);
  await writeFile(path, img);
  return path;
}

describe('qemu-io and qemu-img against dmkit', () => {
  it('qemu-io writes (with FUA) and reads patterns; a wrong pattern is detected', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'read -P 0xab 0 64k',
      '-c', 'read -P 0 64k 64k', '-c', 'write -z 2M 64k', '-c', 'discard 4M 64k', '-c', 'flush', served.uri('disk')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote 65536\/65536 bytes at offset 0/);
    assert.match(r.stdout, /read 65536\/65536 bytes at offset 65536/);
    assert.ok(disk.peek(0, 65536).equals(Buffer.alloc(65536, 0xab)));
    const wrong = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xcd 0 4k', served.uri('disk')]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed at offset 0/);
  });

  it('qemu-io over a FileDevice export, with unaligned writes served by the server\'s read-modify-write', async () => {
    // Block size minimum 1, so qemu sends the 1000 bytes at 100 as they are (no RMW of its own).
    const r = await run('qemu-io', ['--image-opts', '-c', 'write -P 0x5c 1M 128k', '-c', 'write -P 0x01 100 1000',
      '-c', 'write -P 0x02 1048577 3', '-c', 'read -P 0x5c 1M 1', '-c', 'read -P 0x02 1048577 3',
      '-c', 'read -P 0x5c 1048580 131068', '-c', 'read -P 0x01 100 1000', '-c', 'read -P 0 0 100', '-c', 'read -P 0 1100 3000',
      `driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=${served.port},file.export=file`]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const back = Buffer.alloc(128 * 1024);
    await file.read(2048, back);
    const want = Buffer.alloc(128 * 1024, 0x5c);
    want.fill(2, 1, 4);
    assert.ok(back.equals(want));
    assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    const head = Buffer.alloc(2048);
    await file.read(0, head);
    assert.ok(head.subarray(100, 1100).equals(Buffer.alloc(1000, 1)) && head[99] === 0 && head[1100] === 0);
  });

  it('a read-only export refuses writes (qemu-io sees EPERM)', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', served.uri('ro')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Permission denied/);
    const ok = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 0 4k', served.uri('ro')]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('qemu-img info, convert to and from NBD, compare; nbdinfo --map shows the holes', async () => {
    await disk.discard(0, disk.sectors);
    const info = await run('qemu-img', ['info', '--output=json', served.uri('disk')]);
    assert.equal(JSON.parse(info.stdout)['virtual-size'], 64 * MiB);
    const src = await sourceImage();
    const conv = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, served.uri('disk')]);
    assert.equal(conv.code, 0, conv.stderr);
    const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, served.uri('disk')]);
    assert.equal(same.code, 0, same.stdout + same.stderr);
    assert.match(same.stdout, /Images are identical/);
    const map = await run('nbdinfo', ['--map', served.uri('disk')]);
    assert.equal(map.code, 0, map.stderr);
    assert.deepEqual(map.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number)), [
      [0, 65536, 0], [65536, 8323072, 3], [8388608, 3145728, 0], [11534336, 55574528, 3],
    ]);
    const out = join(dir, 'out.qcow2');
    assert.equal((await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', served.uri('disk'), out])).code, 0);
    assert.match((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', src, out])).stdout, /Images are identical/);
    assert.equal((await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 9M 512', served.uri('disk')])).code, 0);
    const diff = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, served.uri('disk')]);
    assert.equal(diff.code, 1);
    assert.match(diff.stdout, /Content mismatch at offset 9437184!/);
  });
});

describe('libnbd tools and fio against dmkit', () => {
  it('nbdinfo --json and --list describe the exports', async () => {
    const r = await run('nbdinfo', ['--json', served.uri('disk')]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.protocol, 'newstyle-fixed');
    assert.equal(j.structured, true);
    const e = j.exports[0];
    assert.equal(e['export-name'], 'disk');
    assert.equal(e['export-size'], 64 * MiB);
    assert.equal(e.description, 'test disk');
    assert.deepEqual(e.contexts, ['base:allocation']);
    for (const k of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_df', 'can_cache', 'can_multi_conn']) {
      assert.equal(e[k], true, k);
    }
    assert.equal(e.is_read_only, false);
    // Minimum 1: the server serves any alignment by read-modify-write (libnbd would refuse less than it).
    assert.deepEqual([e.block_size_minimum, e.block_size_preferred, e.block_size_maximum], [1, 4096, 32 * MiB]);
    const list = await run('nbdinfo', ['--list', '--json', served.uri()]);
    assert.equal(list.code, 0, list.stderr);
    const names = JSON.parse(list.stdout).exports.map((x: { 'export-name': string; is_read_only: boolean }) => [x['export-name'], x.is_read_only]);
    assert.deepEqual(names, [['disk', false], ['file', false], ['ro', true]]);
    const missing = await run('nbdinfo', [served.uri('nosuch')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /export 'nosuch' not present|No such file/);
  });

  it('nbdcopy round trip (4 connections, --flush) is byte-for-byte identical', async () => {
    const src = join(dir, 'copy-src.img');
    const img = Buffer.alloc(16 * MiB);
    for (let i = 0; i < img.length; i += 4096) if ((i / 4096) % 3 !== 0) img.fill((i / 4096) & 0xff, i, i + 4096);
    await writeFile(src, img);
    const to = await run('nbdcopy', ['-C', '4', '--flush', src, served.uri('file')]);
    assert.equal(to.code, 0, to.stderr);
    const out = join(dir, 'copy-out.img');
    const from = await run('nbdcopy', [served.uri('file'), out]);
    assert.equal(from.code, 0, from.stderr);
    assert.ok((await readFile(out)).equals(img));
  });

  it('fio --ioengine=nbd random writes verify with crc32c', async () => {
    const r = await run('fio', ['--name=verify', '--ioengine=nbd', `--uri=${served.uri('disk')}`, '--rw=randwrite',
      '--bs=4k', '--size=8M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=terse']);
    assert.equal(r.code, 0, r.stderr);
    const fields = r.stdout.trim().split('\n').pop()!.split(';');
    assert.equal(fields[2], 'verify');
    assert.equal(fields[4], '0', 'fio reports no error');
    assert.ok(Number(fields[5]) >= 8 * 1024, `fio read back ${fields[5]} KiB for verification`);
  });
});
