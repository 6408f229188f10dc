import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';

import { SECTOR_SIZE } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { FileDevice } from '../../src/block/file-device.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';

const MiB = 1 << 20;

/** A fresh temp directory per call; the returned cleanup removes it. */
function tempDir(): { dir: string; cleanup: () => Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), 'dmkit-file-device-'));
  return { dir, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
}

/** Allocated bytes of a file (st_blocks is in 512-byte units whatever the file system). */
function allocated(path: string): number {
  return statSync(path).blocks * 512;
}

blockDeviceConformance('FileDevice on a sparse file', async () => {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'disk.img');
  return { dev: await FileDevice.open(path, { sectors: 16384 }), reopen: () => FileDevice.open(path), cleanup };
});

blockDeviceConformance('FileDevice, read-only', async () => {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(2 * MiB, 0x3c));
  truncateSync(path, 4 * MiB); // half data, half hole
  const open = () => FileDevice.open(path, { readOnly: true, name: 'ro-file' });
  return { dev: await open(), reopen: open, cleanup };
});

/** A loop device over a fresh 8 MiB temp file, when this machine lets us make one (root, loop driver). */
function attachLoop(): { path: string; detach: () => Promise<void> } | undefined {
  const { dir, cleanup } = tempDir();
  const backing = join(dir, 'backing.img');
  writeFileSync(backing, '');
  truncateSync(backing, 8 * MiB);
  try {
    const path = execFileSync('losetup', ['--find', '--show', backing], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return {
      path,
      detach: async () => {
        execFileSync('losetup', ['--detach', path]);
        await cleanup();
      },
    };
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
}

const loop = attachLoop();
if (!loop) {
  test('FileDevice on a loop block device', (t) => t.skip('losetup cannot attach a loop device here'));
} else {
  describe('FileDevice on a loop block device', () => {
    after(loop.detach);

    test('size and limits come from sysfs', async () => {
      const dev = await FileDevice.open(loop.path);
      try {
        assert.equal(dev.sectors, (8 * MiB) / SECTOR_SIZE);
        assert.equal(dev.limits.logicalBlockSize, 512);
        const queue = `/sys/block/${basename(loop.path)}/queue`;
        assert.equal(dev.limits.discardZeroes, Number(readFileSync(`${queue}/write_zeroes_max_bytes`, 'utf8')) > 0);
      } finally {
        await dev.close();
      }
    });

    test('a device size larger than the block device is refused', async () => {
      await assert.rejects(FileDevice.open(loop.path, { sectors: (8 * MiB) / SECTOR_SIZE + 1 }), { name: 'IoError', code: 'ENOSPC' });
    });

    blockDeviceConformance('loop', async () => ({
      dev: await FileDevice.open(loop.path),
      reopen: () => FileDevice.open(loop.path),
    }));
  });
}

describe('FileDevice', () => {
  test('creates a sparse file of the asked size', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'new.img');
      const dev = await FileDevice.open(path, { sectors: 20480 });
      assert.equal(dev.sectors, 20480);
      assert.equal(dev.name, path);
      assert.equal(statSync(path).size, 20480 * SECTOR_SIZE);
      assert.equal(allocated(path), 0);
      assert.deepEqual(await dev.extents(0, 20480), [{ sector: 0, count: 20480, hole: true, zero: true }]);
      await dev.close();
    } finally {
      await cleanup();
    }
  });

  test('takes its size from the file, rounded down to sectors, and extends but never shrinks it', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'odd.img');
      writeFileSync(path, Buffer.alloc(5000, 7));
      const whole = await FileDevice.open(path);
      assert.equal(whole.sectors, 9);
      // The partial tenth sector is not part of the device and is never touched.
      await whole.write(8, Buffer.alloc(SECTOR_SIZE, 1));
      await whole.close();
      assert.equal(statSync(path).size, 5000);

      const prefix = await FileDevice.open(path, { sectors: 4 });
      assert.equal(prefix.sectors, 4);
      await prefix.close();
      assert.equal(statSync(path).size, 5000);

      const grown = await FileDevice.open(path, { sectors: 100 });
      assert.equal(grown.sectors, 100);
      const tail = Buffer.alloc(SECTOR_SIZE, 0xff);
      await grown.read(99, tail);
      assert.ok(tail.equals(Buffer.alloc(SECTOR_SIZE)), 'the extension does not read as zeroes');
      await grown.close();
      assert.equal(statSync(path).size, 100 * SECTOR_SIZE);
    } finally {
      await cleanup();
    }
  });

  test('open failures are IoErrors naming the path', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const missing = join(dir, 'missing.img');
      await assert.rejects(FileDevice.open(missing), (err: unknown) => {
        assert.ok(err instanceof IoError);
        assert.equal(err.code, 'ENOENT');
        assert.match(err.message, /missing\.img/);
        return true;
      });
      await assert.rejects(FileDevice.open(dir, { readOnly: true }), { name: 'IoError', code: 'ENOTBLK' });
      const small = join(dir, 'small.img');
      writeFileSync(small, Buffer.alloc(4096));
      await assert.rejects(FileDevice.open(small, { readOnly: true, sectors: 16 }), { name: 'IoError', code: 'EINVAL' });
      await assert.rejects(FileDevice.open(small, { sectors: 0 }), { name: 'IoError', code: 'EINVAL' });
      writeFileSync(join(dir, 'tiny.img'), Buffer.alloc(100));
      await assert.rejects(FileDevice.open(join(dir, 'tiny.img')), { name: 'IoError', code: 'EINVAL' });
    } finally {
      await cleanup();
    }
  });

  test('discard and write-zeroes with mayUnmap punch holes; plain write-zeroes keeps the blocks', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'holes.img');
      const dev = await FileDevice.open(path, { sectors: 8192 });
      assert.equal(dev.limits.discardZeroes, true, `${tmpdir()} should support hole punching`);
      const data = Buffer.alloc(2 * MiB, 0x77);
      await dev.write(0, data);
      await dev.flush();
      const full = allocated(path);
      assert.ok(full >= 2 * MiB);

      await dev.writeZeroes(0, 1024); // 512 KiB written as zeroes: still allocated
      assert.ok(allocated(path) >= full, 'write-zeroes without mayUnmap freed blocks');
      await dev.discard(1024, 1024);
      assert.ok(allocated(path) <= full - 512 * 1024, 'discard did not free blocks');
      await dev.writeZeroes(2048, 1024, { mayUnmap: true });
      assert.ok(allocated(path) <= full - MiB, 'write-zeroes with mayUnmap did not free blocks');

      const back = Buffer.alloc(2 * MiB);
      await dev.read(0, back);
      assert.ok(back.subarray(0, 1.5 * MiB).equals(Buffer.alloc(1.5 * MiB)), 'zeroed ranges do not read as zeroes');
      assert.ok(back.subarray(1.5 * MiB).equals(data.subarray(1.5 * MiB)), 'data after the zeroed ranges changed');
      await dev.close();
    } finally {
      await cleanup();
    }
  });

  test('extents follow the file system allocation', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const dev = await FileDevice.open(join(dir, 'map.img'), { sectors: 4096 });
      await dev.write(1024, Buffer.alloc(8 * SECTOR_SIZE, 1));
      await dev.write(4088, Buffer.alloc(8 * SECTOR_SIZE, 2));
      assert.deepEqual(await dev.extents(0, 4096), [
        { sector: 0, count: 1024, hole: true, zero: true },
        { sector: 1024, count: 8, hole: false, zero: false },
        { sector: 1032, count: 3056, hole: true, zero: true },
        { sector: 4088, count: 8, hole: false, zero: false },
      ]);
      assert.deepEqual(await dev.extents(1028, 10), [
        { sector: 1028, count: 4, hole: false, zero: false },
        { sector: 1032, count: 6, hole: true, zero: true },
      ]);
      await dev.close();
    } finally {
      await cleanup();
    }
  });

  test('reads past a backing file truncated underneath return zeroes, as loop does', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'shrunk.img');
      const dev = await FileDevice.open(path, { sectors: 64 });
      await dev.write(0, Buffer.alloc(64 * SECTOR_SIZE, 9));
      truncateSync(path, 10 * SECTOR_SIZE);
      const back = Buffer.alloc(64 * SECTOR_SIZE, 0xee);
      await dev.read(0, back);
      assert.ok(back.subarray(0, 10 * SECTOR_SIZE).equals(Buffer.alloc(10 * SECTOR_SIZE, 9)));
      assert.ok(back.subarray(10 * SECTOR_SIZE).equals(Buffer.alloc(54 * SECTOR_SIZE)));
      await dev.close();
    } finally {
      await cleanup();
    }
  });

  test('close waits for requests in flight and is idempotent', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const dev = await FileDevice.open(join(dir, 'close.img'), { sectors: 2048 });
      const data = Buffer.alloc(MiB, 0x42);
      const writing = dev.write(0, data, { fua: true });
      const closing = dev.close();
      await writing;
      await closing;
      await dev.close();
      await assert.rejects(dev.read(0, Buffer.alloc(SECTOR_SIZE)), { name: 'IoError', code: 'ESHUTDOWN' });
      const again = await FileDevice.open(join(dir, 'close.img'));
      const back = Buffer.alloc(MiB);
      await again.read(0, back);
      assert.ok(back.equals(data));
      await again.close();
    } finally {
      await cleanup();
    }
  });

  test('extents stay exact around the cached data range: writes into holes, discards and unmapping zeroes (property)', async () => {
    const { dir, cleanup } = tempDir();
    const dev = await FileDevice.open(join(dir, 'cache.img'), { sectors: 4096 });
    try {
      // 4 KiB steps, the file system's block: a partial block would count as data.
      const op = fc.record({
        kind: fc.constantFrom('write', 'discard', 'zero-unmap', 'zero-keep', 'extents'),
        block: fc.integer({ min: 0, max: 511 }),
        blocks: fc.integer({ min: 1, max: 64 }),
      });
      await fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 25 }), async (ops) => {
        await dev.discard(0, 4096);
        const data = new Uint8Array(512); // 1 where the 4 KiB block holds written non-zero bytes
        const check = async (sector: number, count: number): Promise<void> => {
          for (const e of await dev.extents(sector, count)) {
            if (!e.hole) continue;
            for (let s = e.sector; s < e.sector + e.count; s += 8) {
              assert.equal(data[Math.floor(s / 8)], 0, `sector ${s} reported as a hole but holds data`);
            }
          }
        };
        for (const o of ops) {
          const sector = o.block * 8;
          const count = Math.min(o.blocks, 512 - o.block) * 8;
          if (o.kind === 'write') {
            await dev.write(sector, Buffer.alloc(count * SECTOR_SIZE, 0x77));
            data.fill(1, o.block, o.block + count / 8);
          } else if (o.kind === 'extents') {
            await check(sector, count);
          } else {
            if (o.kind === 'discard') await dev.discard(sector, count);
            else await dev.writeZeroes(sector, count, { mayUnmap: o.kind === 'zero-unmap' });
            data.fill(0, o.block, o.block + count / 8);
          }
        }
        await check(0, 4096);
        // And a hole punched after a walk cached data is reported again.
        await dev.write(0, Buffer.alloc(64 * 1024, 1));
        assert.equal((await dev.extents(0, 128))[0]!.hole, false);
        await dev.discard(0, 128);
        assert.deepEqual((await dev.extents(0, 128)).map((e) => e.hole), [true]);
      }), { numRuns: 40 });
    } finally {
      await dev.close();
      await cleanup();
    }
  });
});
