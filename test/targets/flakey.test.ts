import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { BlockDevice, WriteOptions } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { splitArgs } from '../../src/mapper/args.ts';
import type { Target } from '../../src/mapper/target.ts';
import { flakeyTarget, makeFlakeyTarget } from '../../src/targets/flakey/flakey.ts';
import type { RandomSource } from '../../src/targets/flakey/random.ts';
import { Rng } from '../../src/sim/rng.ts';
import { ManualClock, fakeContext } from '../helpers/target-context.ts';

const SIZE = 2097152; // 1 GiB in sectors, as in flakey §5.4
const SECOND = 1000;

function setup(args: string, opts: { random?: RandomSource; device?: BlockDevice; length?: number } = {}) {
  const dev = opts.device ?? new MemoryDevice(SIZE, { name: 'sdb' });
  const clock = new ManualClock();
  const ctx = fakeContext({ '/dev/sdb': dev }, { clock, length: opts.length ?? SIZE });
  const type = opts.random ? makeFlakeyTarget(opts.random) : flakeyTarget;
  return { dev, clock, ctx, make: () => type.construct(ctx, splitArgs(args)) };
}

async function build(args: string, opts: Parameters<typeof setup>[1] = {}) {
  const s = setup(args, opts);
  return { ...s, target: await s.make() };
}

async function refuses(args: string, message: string, code = 'EINVAL'): Promise<void> {
  await assert.rejects(setup(args).make(), (err: unknown) => {
    assert.ok(err instanceof IoError, `expected IoError, got ${String(err)}`);
    assert.equal(err.message, message);
    assert.equal(err.code, code);
    return true;
  });
}

/** A random source that plays back the given 32-bit words and fails when it runs dry. */
function scripted(words: number[]): RandomSource & { left(): number } {
  return {
    u32() {
      const w = words.shift();
      if (w === undefined) throw new Error('random source exhausted');
      return w;
    },
    left: () => words.length,
  };
}

const pattern = (bytes: number, value: number) => Buffer.alloc(bytes, value);

async function readBack(t: Target, sector: number, bytes: number): Promise<Buffer> {
  const buf = Buffer.alloc(bytes);
  await t.read(sector, buf);
  return buf;
}

const isEIO = (err: unknown) => err instanceof IoError && err.code === 'EIO';

describe('flakey constructor', () => {
  it('identifies as flakey v1.5.0', () => {
    assert.equal(flakeyTarget.name, 'flakey');
    assert.deepEqual(flakeyTarget.version, [1, 5, 0]);
  });

  it('prints the tables of flakey §5.4 byte for byte (mainline), device as major:minor', async () => {
    const cases: [string, string][] = [
      ['/dev/sdb 0 180 0', '7:0 0 180 0 2 error_reads error_writes'],
      ['/dev/sdb 0 0 180 1 drop_writes', '7:0 0 0 180 1 drop_writes'],
      ['/dev/sdb 0 0 180 1 error_writes', '7:0 0 0 180 1 error_writes'],
      ['/dev/sdb 0 0 180 0', '7:0 0 0 180 2 error_reads error_writes'],
      [
        '7:0 2048 10 5 8 RANDOM_WRITE_CORRUPT 1000000 corrupt_bio_byte 32 W 0 4096 Error_Reads',
        '7:0 2048 10 5 8 error_reads corrupt_bio_byte 32 w 0 4096 random_write_corrupt 1000000',
      ],
      ['/dev/sdb 0 3 3 2 random_read_corrupt 0', '7:0 0 3 3 2 error_reads error_writes'],
      ['/dev/sdb 0 5 5 1 drop_writes junk junk', '7:0 0 5 5 1 drop_writes'],
      ['/dev/sdb 0 5 5 4 random_read_corrupt 0 random_read_corrupt 7', '7:0 0 5 5 2 random_read_corrupt 7'],
      ['/dev/sdb 0 1 1 2 error_reads drop_writes', '7:0 0 1 1 2 error_reads drop_writes'],
      ['/dev/sdb 0 1 1 2 error_reads error_writes', '7:0 0 1 1 2 error_reads error_writes'],
      ['/dev/sdb 0 1 1 3 drop_writes random_read_corrupt 5', '7:0 0 1 1 3 drop_writes random_read_corrupt 5'],
      [
        '/dev/sdb 0 1 1 6 drop_writes corrupt_bio_byte 1 r 255 0',
        '7:0 0 1 1 6 drop_writes corrupt_bio_byte 1 r 255 0',
      ],
      [
        '/dev/sdb 0 1 1 3 error_reads random_write_corrupt 9',
        '7:0 0 1 1 3 error_reads random_write_corrupt 9',
      ],
      // The largest group (11 words) is accepted.
      [
        '/dev/sdb 0 1 1 11 random_read_corrupt 0 random_read_corrupt 0 random_read_corrupt 0 random_read_corrupt 0 random_read_corrupt 0 error_reads',
        '7:0 0 1 1 1 error_reads',
      ],
      [
        '/dev/sdb 0 1 1 10 drop_writes corrupt_bio_byte 4294967295 r 0 4294967295 random_read_corrupt 1000000000 random_write_corrupt 0',
        '7:0 0 1 1 8 drop_writes corrupt_bio_byte 4294967295 r 0 4294967295 random_read_corrupt 1000000000',
      ],
      // %u wraps: 4294967296 parses as 0 (kernel sscanf).
      ['/dev/sdb 0 4294967296 3 0', '7:0 0 0 3 2 error_reads error_writes'],
    ];
    for (const [args, table] of cases) {
      const { target } = await build(args);
      assert.equal(target.status('table'), table, args);
      assert.equal(target.status('info'), '', args);
    }
  });

  it('refuses bad tables with Linux texts, in Linux order', async () => {
    await refuses('/dev/sdb 0 180', 'Invalid argument count');
    await refuses('/dev/sdb 12k 180 0', 'Invalid device sector');
    await refuses('/dev/sdb -1 180 0', 'Invalid device sector');
    await refuses('/dev/sdb 0 +1 0', 'Invalid up interval');
    await refuses('/dev/sdb 0 1 0x1', 'Invalid down interval');
    await refuses('/dev/sdb 0 0 0', 'Total (up + down) interval is zero');
    await refuses('/dev/sdb 0 4294967295 2', 'Interval overflow');
    // The 32-bit sum wraps to exactly zero: Linux reports it as zero.
    await refuses('/dev/sdb 0 1 4294967295', 'Total (up + down) interval is zero');
    await refuses('/dev/sdb 0 1 1 12 a b c d e f g h i j k l', 'Invalid number of feature args');
    await refuses('/dev/sdb 0 1 1 2 drop_writes', 'Invalid number of feature args');
    await refuses('/dev/sdb 0 1 1 x', 'Invalid number of feature args');
    await refuses('/dev/sdb 0 1 1 2 error_reads error_reads', 'Feature error_reads duplicated');
    await refuses('/dev/sdb 0 1 1 2 drop_writes drop_writes', 'Feature drop_writes duplicated');
    await refuses('/dev/sdb 0 1 1 2 error_writes drop_writes', 'Feature drop_writes conflicts with feature error_writes');
    await refuses('/dev/sdb 0 1 1 2 error_writes error_writes', 'Feature error_writes duplicated');
    await refuses('/dev/sdb 0 1 1 2 drop_writes error_writes', 'Feature error_writes conflicts with feature drop_writes');
    await refuses('/dev/sdb 0 1 1 4 corrupt_bio_byte 1 r 0', 'Feature corrupt_bio_byte requires 4 parameters');
    await refuses(
      '/dev/sdb 0 1 1 10 corrupt_bio_byte 1 r 0 0 corrupt_bio_byte 1 r 0 0',
      'Feature corrupt_bio_byte duplicated',
    );
    await refuses('/dev/sdb 0 1 1 5 corrupt_bio_byte 0 r 0 0', 'Invalid corrupt bio byte');
    await refuses('/dev/sdb 0 1 1 5 corrupt_bio_byte 1 x 0 0', 'Invalid corrupt bio direction (r or w)');
    await refuses('/dev/sdb 0 1 1 5 corrupt_bio_byte 1 r 256 0', 'Invalid corrupt value to write into bio byte (0-255)');
    await refuses('/dev/sdb 0 1 1 5 corrupt_bio_byte 1 r 0 -1', 'Invalid corrupt bio flags mask');
    await refuses('/dev/sdb 0 1 1 4 random_read_corrupt 1 random_read_corrupt 2', 'Feature random_read_corrupt duplicated');
    await refuses('/dev/sdb 0 1 1 1 random_read_corrupt', 'Feature random_read_corrupt requires a parameter');
    await refuses('/dev/sdb 0 1 1 4 random_write_corrupt 1 random_write_corrupt 2', 'Feature random_write_corrupt duplicated');
    await refuses('/dev/sdb 0 1 1 1 random_write_corrupt', 'Feature random_write_corrupt requires a parameter');
    await refuses('/dev/sdb 0 1 1 2 random_write_corrupt 1000000001', 'Invalid random corrupt argument');
    await refuses('/dev/sdb 0 1 1 1 bogus', 'Unrecognised flakey feature requested');
    await refuses(
      '/dev/sdb 0 1 1 6 drop_writes corrupt_bio_byte 1 w 0 0',
      'drop_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set',
    );
    await refuses(
      '/dev/sdb 0 1 1 3 error_writes random_write_corrupt 1',
      'error_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set',
    );
    await refuses(
      '/dev/sdb 0 1 1 3 error_reads random_read_corrupt 1',
      'error_reads is incompatible with random_read_corrupt or corrupt_bio_byte with the READ flag set',
    );
    // First match wins: drop_writes is reported before error_reads.
    await refuses(
      '/dev/sdb 0 1 1 6 error_reads drop_writes random_write_corrupt 1 random_read_corrupt 1',
      'drop_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set',
    );
    // The device is looked up last: a bad feature wins over a missing device, and
    // the lookup keeps its errno.
    await refuses('/dev/nope 0 1 1 1 bogus', 'Unrecognised flakey feature requested');
    await refuses('/dev/nope 0 1 1', 'Device lookup failed', 'ENOENT');
  });

  it('re-parses its own table text to the same table (property)', async () => {
    const feature = fc.oneof(
      fc.constant(['error_reads']),
      fc.constant(['drop_writes']),
      fc.constant(['error_writes']),
      fc.tuple(fc.integer({ min: 1, max: 0xffffffff }), fc.constantFrom('r', 'w', 'R', 'W'),
        fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffffffff }))
        .map(([n, d, v, f]) => ['corrupt_bio_byte', String(n), d, String(v), String(f)]),
      fc.integer({ min: 0, max: 1e9 }).map((p) => ['random_read_corrupt', String(p)]),
      fc.integer({ min: 0, max: 1e9 }).map((p) => ['Random_Write_Corrupt', String(p)]),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0xffffffff }), fc.array(feature, { maxLength: 4 }),
        async (offset, up, down, features) => {
          const words = features.flat();
          const args = `/dev/sdb ${offset} ${up} ${down} ${words.length} ${words.join(' ')}`;
          let first: Target;
          try {
            first = await setup(args).make();
          } catch (err) {
            assert.ok(err instanceof IoError && err.code === 'EINVAL');
            return;
          }
          const table = first.status('table');
          const again = await setup(table).make();
          assert.equal(again.status('table'), table);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('inherits limits from the device but never offers write-zeroes', async () => {
    const { target } = await build('/dev/sdb 0 1 0');
    const l = target.limits();
    assert.equal(l.writeZeroes, false);
    assert.equal(l.discard, true);
    assert.deepEqual(target.areas().map((a) => [a.ref.id, a.start, a.length]), [['7:0', 0, SIZE]]);
    const noDiscard = new MemoryDevice(SIZE, { limits: { discard: false } });
    const { target: t2 } = await build('/dev/sdb 100 1 0', { device: noDiscard, length: 10 });
    assert.equal(t2.limits().discard, false);
    await assert.rejects(t2.discard(0, 1), (e: unknown) => e instanceof IoError && e.code === 'EOPNOTSUPP');
    await assert.rejects(t2.writeZeroes(0, 1, {}), (e: unknown) => e instanceof IoError && e.code === 'EOPNOTSUPP');
  });
});

describe('flakey up/down intervals', () => {
  it('10 up, 5 down: seconds 0-9 up, 10-14 down, 15-24 up, counted from table load', async () => {
    const { target, clock } = await build('/dev/sdb 0 10 5');
    const upAt: boolean[] = [];
    for (let s = 0; s < 30; s++) {
      upAt.push(await target.read(0, Buffer.alloc(512)).then(() => true, (e) => (isEIO(e) ? false : Promise.reject(e))));
      clock.advance(SECOND);
    }
    const expected = Array.from({ length: 30 }, (_, s) => s % 15 < 10);
    assert.deepEqual(upAt, expected);
  });

  it('the boundary is at whole seconds after load (not at resume or first I/O)', async () => {
    const s = setup('/dev/sdb 0 1 1');
    s.clock.advance(500); // the table loads at t = 500 ms
    const target = await s.make();
    s.clock.advance(999); // 1499 ms: 0.999 s after load, still up
    await target.read(0, Buffer.alloc(512));
    s.clock.advance(1); // exactly 1 s after load: down
    await assert.rejects(target.read(0, Buffer.alloc(512)), isEIO);
  });

  it('up 0 is always down; down 0 is always up (features never act)', async () => {
    const down = await build('/dev/sdb 0 0 7');
    const up = await build('/dev/sdb 0 7 0');
    for (let s = 0; s < 20; s++) {
      await assert.rejects(down.target.write(0, pattern(512, 1), {}), isEIO);
      await up.target.write(0, pattern(512, 1), {});
      down.clock.advance(SECOND);
      up.clock.advance(SECOND);
    }
  });

  it('decides at submission: a read submitted up and completed down is not corrupted, and vice versa', async () => {
    const mem = new MemoryDevice(64);
    await mem.write(0, pattern(512, 0x11));
    const gate = new SlowDevice(mem);
    const { target, clock } = await build('/dev/sdb 0 1 1 5 corrupt_bio_byte 1 r 255 0', { device: gate, length: 64 });

    const a = Buffer.alloc(512);
    const pa = target.read(0, a); // submitted up
    clock.advance(SECOND); // now down
    gate.release();
    await pa;
    assert.equal(a[0], 0x11);

    const b = Buffer.alloc(512);
    const pb = target.read(0, b); // submitted down
    clock.advance(SECOND); // now up again
    gate.release();
    await pb;
    assert.equal(b[0], 255);
  });
});

/** A device whose reads wait until release() is called, to complete them at a chosen time. */
class SlowDevice implements BlockDevice {
  private waiting: (() => void)[] = [];
  constructor(private readonly inner: MemoryDevice) {}
  get name() { return this.inner.name; }
  get sectors() { return this.inner.sectors; }
  get limits() { return this.inner.limits; }
  async read(sector: number, into: Buffer): Promise<void> {
    await new Promise<void>((r) => this.waiting.push(r));
    await this.inner.read(sector, into);
  }
  release(): void {
    for (const w of this.waiting.splice(0)) w();
  }
  write(sector: number, data: Buffer, opts?: WriteOptions) { return this.inner.write(sector, data, opts); }
  flush() { return this.inner.flush(); }
  discard(sector: number, count: number) { return this.inner.discard(sector, count); }
  writeZeroes(sector: number, count: number) { return this.inner.writeZeroes(sector, count); }
  close() { return this.inner.close(); }
}

describe('flakey features in the down interval', () => {
  it('maps like linear with the offset while up', async () => {
    const { target, dev } = await build('/dev/sdb 1000 5 0', { length: 100 });
    await target.write(3, pattern(1024, 0xab), {});
    assert.deepEqual((dev as MemoryDevice).peek(1003 * 512, 1024), pattern(1024, 0xab));
    assert.deepEqual(await readBack(target, 3, 1024), pattern(1024, 0xab));
  });

  it('default (no features): reads, writes, flushes and discards fail with EIO', async () => {
    const { target, dev } = await build('/dev/sdb 0 0 1');
    await assert.rejects(target.read(0, Buffer.alloc(512)), isEIO);
    await assert.rejects(target.write(0, pattern(512, 1), {}), isEIO);
    await assert.rejects(target.flush(), isEIO);
    await assert.rejects(target.discard(0, 8), isEIO);
    assert.equal((dev as MemoryDevice).allocatedBytes, 0);
  });

  it('error_reads only: reads fail, writes/flushes/discards pass', async () => {
    const { target, dev } = await build('/dev/sdb 0 0 1 1 error_reads');
    await assert.rejects(target.read(0, Buffer.alloc(512)), isEIO);
    await target.write(8, pattern(512, 7), {});
    await target.flush();
    assert.deepEqual((dev as MemoryDevice).peek(8 * 512, 512), pattern(512, 7));
    await target.discard(8, 1);
    assert.deepEqual((dev as MemoryDevice).peek(8 * 512, 512), pattern(512, 0));
  });

  it('drop_writes: writes, flushes and discards succeed and change nothing; reads serve old data', async () => {
    const s = setup('/dev/sdb 0 1 1 1 drop_writes');
    const mem = s.dev as MemoryDevice;
    await mem.write(0, pattern(4096, 0x55));
    const target = await s.make();
    s.clock.advance(SECOND);
    const mine = pattern(4096, 0x66);
    await target.write(0, mine, { fua: true });
    await target.flush();
    await target.discard(0, 8);
    assert.deepEqual(mem.peek(0, 4096), pattern(4096, 0x55));
    assert.deepEqual(await readBack(target, 0, 4096), pattern(4096, 0x55));
    assert.deepEqual(mine, pattern(4096, 0x66));
  });

  it('error_writes: writes, flushes and discards fail with EIO; reads pass', async () => {
    const s = setup('/dev/sdb 0 1 1 1 error_writes');
    const mem = s.dev as MemoryDevice;
    await mem.write(0, pattern(512, 0x55));
    const target = await s.make();
    s.clock.advance(SECOND);
    await assert.rejects(target.write(0, pattern(512, 1), {}), isEIO);
    await assert.rejects(target.flush(), isEIO);
    await assert.rejects(target.discard(0, 1), isEIO);
    assert.deepEqual(await readBack(target, 0, 512), pattern(512, 0x55));
  });

  it('error_reads drop_writes: reads fail, writes dropped', async () => {
    const { target, dev } = await build('/dev/sdb 0 0 1 2 error_reads drop_writes');
    await assert.rejects(target.read(0, Buffer.alloc(512)), isEIO);
    await target.write(0, pattern(512, 1), {});
    assert.equal((dev as MemoryDevice).allocatedBytes, 0);
  });

  it('corrupt_bio_byte r: successful reads get byte N replaced; the device stays intact', async () => {
    const s = setup('/dev/sdb 0 0 1 5 corrupt_bio_byte 32 r 1 0');
    const mem = s.dev as MemoryDevice;
    await mem.write(0, pattern(4096, 0xee));
    const target = await s.make();
    const got = await readBack(target, 0, 4096);
    const want = pattern(4096, 0xee);
    want[31] = 1;
    assert.deepEqual(got, want);
    assert.deepEqual(mem.peek(0, 4096), pattern(4096, 0xee));
    // Offsets are relative to each request's payload; a payload shorter than N is untouched.
    const { target: late } = await build('/dev/sdb 0 0 1 5 corrupt_bio_byte 513 r 1 0');
    assert.deepEqual(await readBack(late, 0, 512), pattern(512, 0));
    const two = await readBack(late, 0, 1024);
    assert.equal(two[512], 1);
    // Writes pass untouched with a read-direction corruption.
    await target.write(0, pattern(512, 3), {});
    assert.deepEqual(mem.peek(0, 512), pattern(512, 3));
  });

  it('corrupt_bio_byte flags mask is matched against the synthesised bi_opf', async () => {
    // mask 1 (op bit 0): never matches a read (REQ_OP_READ = 0).
    const { target: rd } = await build('/dev/sdb 0 0 1 5 corrupt_bio_byte 1 r 9 1');
    assert.equal((await readBack(rd, 0, 512))[0], 0);
    // mask REQ_FUA (131072): only FUA writes are corrupted.
    const fua = await build('/dev/sdb 0 0 1 5 corrupt_bio_byte 1 w 9 131072');
    const mem = fua.dev as MemoryDevice;
    await fua.target.write(0, pattern(512, 4), {});
    assert.equal(mem.peek(0, 1)[0], 4);
    await fua.target.write(0, pattern(512, 4), { fua: true });
    assert.equal(mem.peek(0, 1)[0], 9);
    // mask REQ_META (4096): only writes tagged as metadata.
    const meta = await build('/dev/sdb 0 0 1 5 corrupt_bio_byte 2 w 9 4096');
    const mm = meta.dev as MemoryDevice;
    await meta.target.write(0, pattern(512, 4), { tag: 'data' });
    assert.equal(mm.peek(1, 1)[0], 4);
    await meta.target.write(0, pattern(512, 4), { tag: 'superblock' });
    assert.equal(mm.peek(1, 1)[0], 9);
    // mask REQ_SYNC (2048) is never set by dmkit: never matches.
    const sync = await build('/dev/sdb 0 0 1 5 corrupt_bio_byte 1 w 9 2048');
    await sync.target.write(0, pattern(512, 4), { fua: true, tag: 'metadata' });
    assert.equal((sync.dev as MemoryDevice).peek(0, 1)[0], 4);
  });

  it('corrupt_bio_byte w: a corrupted copy is written; the caller buffer is never modified', async () => {
    const { target, dev } = await build('/dev/sdb 0 0 1 5 corrupt_bio_byte 4096 w 0 0');
    const data = pattern(8192, 0x77);
    await target.write(16, data, {});
    assert.deepEqual(data, pattern(8192, 0x77));
    const want = pattern(8192, 0x77);
    want[4095] = 0;
    assert.deepEqual((dev as MemoryDevice).peek(16 * 512, 8192), want);
    // Flushes and discards pass.
    await target.flush();
    await target.discard(16, 8);
    assert.deepEqual((dev as MemoryDevice).peek(16 * 512, 4096), pattern(4096, 0));
    // Concurrent corrupted writes each get their own copy.
    const a = pattern(4096, 0xa1);
    const b = pattern(4096, 0xb2);
    await Promise.all([target.write(0, a, {}), target.write(8, b, {})]);
    const wa = pattern(4096, 0xa1);
    wa[4095] = 0;
    const wb = pattern(4096, 0xb2);
    wb[4095] = 0;
    assert.deepEqual((dev as MemoryDevice).peek(0, 4096), wa);
    assert.deepEqual((dev as MemoryDevice).peek(4096, 4096), wb);
    assert.deepEqual(a, pattern(4096, 0xa1));
  });

  it('random_read_corrupt: a draw below P corrupts one byte at u32 mod size with a random value', async () => {
    // Draw 1 (u64 = 0:999_999_999 → mod 1e9 = 999999999 ≥ P): no corruption.
    // Draw 2 (u64 = 0:4 → 4 < P): corrupt byte (1000 mod 512 = 488) := 0x1ab & 0xff = 0xab.
    const rng = scripted([0, 999_999_999, 0, 4, 1000, 0x1ab]);
    const { target } = await build('/dev/sdb 0 0 1 2 random_read_corrupt 5', { random: rng });
    assert.deepEqual(await readBack(target, 0, 512), pattern(512, 0));
    const hit = await readBack(target, 0, 512);
    const want = pattern(512, 0);
    want[488] = 0xab;
    assert.deepEqual(hit, want);
    assert.equal(rng.left(), 0);
  });

  it('random_read_corrupt uses the whole 64-bit draw modulo 10^9', async () => {
    // 2^32 mod 1e9 = 294967296: with hi = 1, lo = 0 the remainder is 294967296.
    const rng = scripted([1, 0, 3, 7]);
    const below = await build('/dev/sdb 0 0 1 2 random_read_corrupt 294967297', { random: rng });
    const buf = await readBack(below.target, 0, 512);
    assert.equal(buf[3], 7);
    const rng2 = scripted([1, 0]);
    const atP = await build('/dev/sdb 0 0 1 2 random_read_corrupt 294967296', { random: rng2 });
    assert.deepEqual(await readBack(atP.target, 0, 512), pattern(512, 0));
  });

  it('random_write_corrupt: corrupts a copy; combined with a fixed write corruption both apply', async () => {
    const rng = scripted([0, 0, 10, 0x42]);
    const { target, dev } = await build('/dev/sdb 0 0 1 7 corrupt_bio_byte 1 w 200 0 random_write_corrupt 1000000000', {
      random: rng,
    });
    const data = pattern(512, 0x10);
    await target.write(0, data, {});
    assert.deepEqual(data, pattern(512, 0x10));
    const want = pattern(512, 0x10);
    want[0] = 200;
    want[10] = 0x42;
    assert.deepEqual((dev as MemoryDevice).peek(0, 512), want);
    assert.equal(rng.left(), 0);
  });

  it('features do nothing while up', async () => {
    const rng = scripted([]);
    const { target, dev } = await build('/dev/sdb 0 5 5 5 corrupt_bio_byte 1 w 1 0', { random: rng });
    await target.write(0, pattern(512, 9), {});
    assert.deepEqual((dev as MemoryDevice).peek(0, 512), pattern(512, 9));
    const rr = await build('/dev/sdb 0 5 5 2 random_read_corrupt 1000000000', { random: rng });
    assert.deepEqual(await readBack(rr.target, 0, 512), pattern(512, 0));
  });

  it('random_write_corrupt with a seeded source: at most one byte per write differs, at about rate P', async () => {
    const { target, dev } = await build('/dev/sdb 0 0 1 2 random_write_corrupt 500000000', { random: new Rng(11) });
    let corrupted = 0;
    for (let i = 0; i < 200; i++) {
      const data = pattern(1024, i & 0xff);
      await target.write(i * 2, data, {});
      assert.deepEqual(data, pattern(1024, i & 0xff));
      const diff = (dev as MemoryDevice).peek(i * 1024, 1024).reduce((n, b) => n + (b !== (i & 0xff) ? 1 : 0), 0);
      assert.ok(diff <= 1, `write ${i}: ${diff} bytes differ`);
      corrupted += diff;
    }
    // ~100 draws hit; a hit may write the same value back, so a few count as 0.
    assert.ok(corrupted > 60 && corrupted < 140, `${corrupted} corrupted writes`);
  });
});
