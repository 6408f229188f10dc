import assert from 'node:assert/strict';
import { closeSync, fsyncSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';

import { crc32c, crc32cHardware, crc32cRaw, crc32cRawTable, punchHole, readNowait, seekData, seekHole } from '../../src/native/index.ts';

/** Bit-at-a-time CRC-32C register update: the definition, independent of any table. */
function crc32cRawReference(buf: Uint8Array, register: number): number {
  let crc = register >>> 0;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return crc >>> 0;
}

function le64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

describe('crc32c', () => {
  test('standard check values (iSCSI, RFC 3720 B.4)', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
  });

  test('a 4 KiB all-zero block', () => {
    const zero = Buffer.alloc(4096);
    assert.equal(crc32c(zero), ~crc32cRawReference(zero, 0xffffffff) >>> 0);
    assert.equal(crc32c(zero), 0x98f94189);
  });

  test('raw register update: persistent-data block checksums (thin-metadata.md §2)', () => {
    assert.equal(crc32cRaw(Buffer.from('123456789'), 0xffffffff), 0x1cf96d7c);
    // csum of a block whose bytes 4..4095 are zero, per block type salt.
    const body = Buffer.alloc(4092);
    const csum = (salt: number) => (crc32cRaw(body, 0xffffffff) ^ salt) >>> 0;
    assert.equal(csum(160774), 0x58cfd397); // thin superblock
    assert.equal(csum(121107), 0x58cc7e82); // btree node
    assert.equal(csum(240779), 0x58ce0b1a); // space-map bitmap
    assert.equal(csum(595846735), 0x7b4e41de); // dm-array block
  });

  test('chained: dm-integrity internal_hash:crc32c tags (integrity.md §3.8)', () => {
    const sector = Buffer.alloc(512);
    const tag = (parts: Buffer[]) => parts.reduce((crc, part) => crc32c(part, crc), 0);
    assert.equal(tag([le64(0), sector]), 0x82e840c7);
    assert.equal(tag([le64(1), sector]), 0x706d25db);
    assert.equal(tag([Buffer.alloc(16), le64(0), sector]), 0x48adc49a);
    // A key replaces the initial register: seed = ~key.
    const key = 0x12345678;
    assert.equal(crc32c(sector, ~key), ~crc32cRawReference(sector, key) >>> 0);
  });

  test('crc32c(a ‖ b) === crc32c(b, crc32c(a))', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.uint8Array({ maxLength: 3000 }), (a, b) => {
        assert.equal(crc32c(b, crc32c(a)), crc32c(Buffer.concat([a, b])));
      }),
    );
  });

  test(`the ${crc32cHardware ? 'SSE4.2' : 'table'} path, the table path and the bitwise definition agree`, () => {
    // Lengths around the interleaved loops' thresholds (3·256 and 3·8192 bytes)
    // and at every alignment of the start.
    const lengths = fc.oneof(fc.integer({ min: 0, max: 800 }), fc.integer({ min: 24570, max: 50000 }), fc.constantFrom(767, 768, 769, 24575, 24576, 24577));
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 7 }), lengths, fc.integer({ min: 0, max: 0xffffffff }), fc.nat(), (skew, length, register, seed) => {
        const buf = Buffer.alloc(skew + length);
        for (let i = 0; i < buf.length; i++) buf[i] = (seed + i * 2654435761) >>> 24;
        const view = buf.subarray(skew);
        const fast = crc32cRaw(view, register);
        assert.equal(fast, crc32cRawTable(view, register));
        if (length <= 4096) assert.equal(fast, crc32cRawReference(view, register));
      }),
      { numRuns: 300 },
    );
  });

  test('reads only the bytes of the view it is given', () => {
    const buf = Buffer.from('xx123456789yy');
    assert.equal(crc32c(buf.subarray(2, 11)), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(buf.buffer, buf.byteOffset + 2, 9)), 0xe3069283);
  });

  test('refuses what is not a Uint8Array', () => {
    assert.throws(() => crc32c('123456789' as unknown as Buffer), TypeError);
    assert.throws(() => crc32c(new Uint16Array(4) as unknown as Buffer), TypeError);
  });
});

describe('file helpers', () => {
  const withFile = async (body: (fd: number, path: string) => Promise<void>) => {
    const dir = mkdtempSync(join(tmpdir(), 'dmkit-native-'));
    const path = join(dir, 'f.img');
    const fd = openSync(path, 'w+');
    try {
      await body(fd, path);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const KiB = 1024;

  test('punchHole makes a range read zero and frees its blocks', () =>
    withFile(async (fd, path) => {
      const data = Buffer.alloc(1024 * KiB, 0x5a);
      writeSync(fd, data, 0, data.length, 0);
      fsyncSync(fd);
      const before = statSync(path);
      assert.ok(before.blocks * 512 >= data.length);
      await punchHole(fd, 256 * KiB, 512 * KiB);
      const after = statSync(path);
      assert.equal(after.size, before.size, 'KEEP_SIZE: the file size must not change');
      assert.ok(after.blocks * 512 <= before.blocks * 512 - 512 * KiB, `blocks ${before.blocks} → ${after.blocks}`);
      const back = Buffer.alloc(data.length);
      readSync(fd, back, 0, back.length, 0);
      assert.ok(back.subarray(256 * KiB, 768 * KiB).equals(Buffer.alloc(512 * KiB)), 'the hole does not read as zeroes');
      assert.ok(back.subarray(0, 256 * KiB).equals(data.subarray(0, 256 * KiB)), 'data before the hole changed');
      assert.ok(back.subarray(768 * KiB).equals(data.subarray(768 * KiB)), 'data after the hole changed');
      // An unaligned punch zeroes the partial blocks at its edges too.
      await punchHole(fd, 100, 1000);
      readSync(fd, back, 0, 2048, 0);
      assert.ok(back.subarray(100, 1100).equals(Buffer.alloc(1000)));
      assert.equal(back[99], 0x5a);
      assert.equal(back[1100], 0x5a);
    }));

  test('seekData and seekHole walk a sparse file', () =>
    withFile(async (fd) => {
      ftruncateSync(fd, 1024 * KiB);
      writeSync(fd, Buffer.alloc(4 * KiB, 1), 0, 4 * KiB, 256 * KiB);
      writeSync(fd, Buffer.alloc(4 * KiB, 2), 0, 4 * KiB, 768 * KiB);
      assert.equal(await seekData(fd, 0), 256 * KiB);
      assert.equal(await seekHole(fd, 256 * KiB), 260 * KiB);
      assert.equal(await seekData(fd, 260 * KiB), 768 * KiB);
      assert.equal(await seekHole(fd, 768 * KiB), 772 * KiB);
      assert.equal(await seekHole(fd, 900 * KiB), 900 * KiB);
      assert.equal(await seekHole(fd, 0), 0);
      await assert.rejects(seekData(fd, 772 * KiB), { code: 'ENXIO', syscall: 'lseek(SEEK_DATA)' });
      await assert.rejects(seekHole(fd, 2048 * KiB), { code: 'ENXIO' });
    }));

  test('readNowait reads cached pages at once, or says why not (EOPNOTSUPP on tmpfs), never anything else', () =>
    withFile(async (fd) => {
      const data = Buffer.alloc(64 * KiB);
      for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
      writeSync(fd, data, 0, data.length, 0); // just written: in the page cache
      const into = Buffer.alloc(8 * KiB);
      const n = readNowait(fd, into, 4 * KiB + 512);
      if (n === -95) return; // this file system has no RWF_NOWAIT reads
      assert.ok(n > 0, `readNowait returned ${n}`);
      assert.ok(into.subarray(0, n).equals(data.subarray(4 * KiB + 512, 4 * KiB + 512 + n)));
      assert.equal(readNowait(fd, into, 64 * KiB), 0, 'at end of file');
      assert.equal(readNowait(1_000_000, into, 0), -9, 'EBADF as a negative errno');
      assert.throws(() => readNowait(fd, into, -1), RangeError);
    }));

  test('OS errors reject with the errno name, number and call', () =>
    withFile(async (_fd, path) => {
      const ro = openSync(path, 'r');
      try {
        // fallocate needs a file opened for writing.
        await assert.rejects(punchHole(ro, 0, 4096), { code: 'EBADF', errno: -9, syscall: 'fallocate' });
      } finally {
        closeSync(ro);
      }
      await assert.rejects(punchHole(1_000_000, 0, 4096), { code: 'EBADF' });
    }));

  test('bad arguments throw before any work is queued', () => {
    assert.throws(() => punchHole(-1, 0, 1), TypeError);
    assert.throws(() => seekData(0, -1), RangeError);
    assert.throws(() => seekHole(0, 1.5), RangeError);
    assert.throws(() => punchHole(0, 0, 2 ** 54), RangeError);
  });
});
