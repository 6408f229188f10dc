import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SECTOR_SIZE } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { Rng } from '../../src/sim/rng.ts';
import { Scheduler, settle } from '../../src/sim/scheduler.ts';
import { SimulatedDisk } from '../../src/sim/simulated-disk.ts';
import { CHUNK_BYTES, SparseImage } from '../../src/sim/sparse-image.ts';

const fill = (sectors: number, byte: number) => Buffer.alloc(sectors * SECTOR_SIZE, byte);

function readImage(img: SparseImage, sector: number, count: number): Buffer {
  const buf = Buffer.alloc(count * SECTOR_SIZE);
  img.read(sector, buf);
  return buf;
}

/** First byte of each sector of an image: enough to tell the test's fills apart. */
function bytesOf(img: SparseImage, sector: number, count: number): number[] {
  const buf = readImage(img, sector, count);
  return Array.from({ length: count }, (_, i) => buf[i * SECTOR_SIZE] as number);
}

function manualDisk(opts: { seed?: number; limits?: ConstructorParameters<typeof SimulatedDisk>[0]['limits']; sectors?: number } = {}) {
  const scheduler = new Scheduler({ seed: opts.seed ?? 1, auto: false });
  const disk = new SimulatedDisk({ name: 'd', sectors: opts.sectors ?? 64, scheduler, limits: opts.limits ?? {} });
  return { scheduler, disk };
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof IoError && err.code === code);
}

test('nothing completes until the scheduler lets it (manual mode)', async () => {
  const { scheduler, disk } = manualDisk();
  let done = false;
  const p = disk.write(0, fill(1, 1)).then(() => (done = true));
  await settle();
  await settle();
  assert.equal(done, false);
  assert.equal(scheduler.pendingCount, 1);
  assert.equal(scheduler.step(), true);
  await p;
  assert.equal(done, true);
  assert.equal(scheduler.step(), false);
});

test('a completed write is volatile until a flush submitted after it completes', async () => {
  const { scheduler, disk } = manualDisk();
  await scheduler.drive(disk.write(0, fill(2, 1)));
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'none' }), 0, 2), [0, 0]);
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'all' }), 0, 2), [1, 1]);
  // A flush submitted while a second write is in flight covers only the first (§1.4).
  const w2 = disk.write(4, fill(1, 2));
  const f = disk.flush();
  await scheduler.runUntilIdle();
  await Promise.all([w2, f]);
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'none' }), 0, 5), [1, 1, 0, 0, 0]);
  assert.deepEqual(disk.volatileWrites().map((w) => w.req.sector), [4]);
});

test('FUA makes only its own write durable at completion', async () => {
  const { scheduler, disk } = manualDisk();
  await scheduler.drive(disk.write(0, fill(1, 1)));
  await scheduler.drive(disk.write(1, fill(1, 2), { fua: true }));
  assert.deepEqual(bytesOf(disk.crash(), 0, 2), [0, 2]);
});

test('a durable newer write is never undone by an older volatile one', async () => {
  const { scheduler, disk } = manualDisk();
  await scheduler.drive(disk.write(0, fill(2, 1)));
  await scheduler.drive(disk.write(1, fill(1, 2), { fua: true }));
  // The older write keeps only the sector the newer one did not cover.
  assert.deepEqual(disk.volatileWrites().map((w) => w.live), [[[0, 1]]]);
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'all' }), 0, 2), [1, 2]);
});

test('writes in flight tear at the atomic unit; misaligned tears are refused', async () => {
  const { disk } = manualDisk({ limits: { logicalBlockSize: 4096 } });
  void disk.write(0, fill(16, 7));
  const [w] = disk.inflightWrites();
  assert.ok(w);
  const img = disk.crash({ volatile: 'none', inflight: [{ id: w.req.id, ranges: [{ sector: 8, count: 8 }] }] });
  assert.deepEqual(bytesOf(img, 0, 16), [...Array(8).fill(0), ...Array(8).fill(7)]);
  assert.throws(() => disk.crash({ volatile: 'none', inflight: [{ id: w.req.id, ranges: [{ sector: 4, count: 8 }] }] }),
    (err: unknown) => err instanceof IoError && err.code === 'EINVAL');
  assert.throws(() => disk.crash({ volatile: [{ id: w.req.id }] }), /not volatile/);
});

test('spontaneous write-back of part of a volatile write', async () => {
  const { scheduler, disk } = manualDisk();
  await scheduler.drive(disk.write(0, fill(4, 3)));
  const [w] = disk.volatileWrites();
  disk.writeBack([{ id: w!.req.id, ranges: [{ sector: 2, count: 2 }] }]);
  assert.deepEqual(bytesOf(disk.crash(), 0, 4), [0, 0, 3, 3]);
  assert.deepEqual(disk.volatileWrites()[0]?.live, [[0, 2]]);
});

test('overlapping writes: the later completion wins, in reads and in crash images', async () => {
  for (let seed = 0; seed < 8; seed++) {
    const { scheduler, disk } = manualDisk({ seed });
    const order: number[] = [];
    const a = disk.write(0, fill(1, 1)).then(() => order.push(1));
    const b = disk.write(0, fill(1, 2)).then(() => order.push(2));
    await scheduler.runUntilIdle();
    await Promise.all([a, b]);
    const last = order[1];
    const buf = fill(1, 0);
    await scheduler.drive(disk.read(0, buf));
    assert.equal(buf[0], last);
    assert.deepEqual(bytesOf(disk.crash({ volatile: 'all' }), 0, 1), [last]);
  }
});

test('discard without discardZeroes leaves old data or zeroes; with it, zeroes', async () => {
  const seen = new Set<number>();
  for (let seed = 0; seed < 16; seed++) {
    const { scheduler, disk } = manualDisk({ seed, limits: { discardZeroes: false } });
    await scheduler.drive(disk.write(0, fill(2, 9)));
    await scheduler.drive(disk.discard(0, 2));
    const buf = fill(2, 0xee);
    await scheduler.drive(disk.read(0, buf));
    assert.ok(buf.every((b) => b === buf[0]) && (buf[0] === 0 || buf[0] === 9));
    seen.add(buf[0] as number);
  }
  assert.deepEqual([...seen].sort(), [0, 9]);
  const { scheduler, disk } = manualDisk();
  await scheduler.drive(disk.write(0, fill(2, 9)));
  await scheduler.drive(disk.discard(0, 2));
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'all' }), 0, 2), [0, 0]);
});

test('fault rules: fail the Nth write once or sticky, with an errno', async () => {
  const { scheduler, disk } = manualDisk();
  disk.addFault({ op: 'write', action: 'fail', nth: 2, errno: 'ENOSPC' });
  await scheduler.drive(disk.write(0, fill(1, 1)));
  await rejectsCode(scheduler.drive(disk.write(1, fill(1, 2))), 'ENOSPC');
  await scheduler.drive(disk.write(2, fill(1, 3)));
  // A failed write stays in doubt: a crash may show any part of it (§1.9).
  assert.equal(disk.inflightWrites().length, 1);
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'all', inflight: [{ id: disk.inflightWrites()[0]!.req.id }] }), 0, 3), [1, 2, 3]);
  const sticky = disk.addFault({ op: 'write', action: 'fail', nth: 1, sticky: true, range: { sector: 10, count: 2 } });
  await rejectsCode(scheduler.drive(disk.write(11, fill(1, 4))), 'EIO');
  await rejectsCode(scheduler.drive(disk.write(8, fill(4, 4))), 'EIO');
  await scheduler.drive(disk.write(12, fill(1, 4)));
  assert.equal(sticky.fired, 2);
  sticky.remove();
  await scheduler.drive(disk.write(10, fill(1, 5)));
});

test('fault rules: a failed flush persists nothing; a dropped flush or write lies', async () => {
  const { scheduler, disk } = manualDisk();
  await scheduler.drive(disk.write(0, fill(1, 1)));
  disk.addFault({ op: 'flush', action: 'fail' });
  await rejectsCode(scheduler.drive(disk.flush()), 'EIO');
  assert.deepEqual(bytesOf(disk.crash(), 0, 1), [0]);
  disk.addFault({ op: 'flush', action: 'drop' });
  await scheduler.drive(disk.flush());
  assert.deepEqual(bytesOf(disk.crash(), 0, 1), [0]);
  disk.addFault({ op: 'write', action: 'drop' });
  await scheduler.drive(disk.write(1, fill(1, 2)));
  const buf = fill(1, 0);
  await scheduler.drive(disk.read(1, buf));
  assert.equal(buf[0], 2, 'a dropped write is still served to reads');
  await scheduler.drive(disk.flush());
  assert.deepEqual(bytesOf(disk.crash({ volatile: 'all' }), 0, 2), [1, 0]);
});

test('fault rules: corrupt reads and writes, and an invalid rule is refused', async () => {
  const { scheduler, disk } = manualDisk();
  disk.addFault({ op: 'write', action: 'corrupt' });
  await scheduler.drive(disk.write(0, fill(1, 0x11), { fua: true }));
  assert.deepEqual(bytesOf(disk.crash(), 0, 1), [0x11 ^ 0xff]);
  disk.addFault({ op: 'read', action: 'corrupt' });
  const buf = fill(1, 0);
  await scheduler.drive(disk.read(0, buf));
  assert.equal(buf[0], 0x11);
  assert.throws(() => disk.addFault({ op: 'read', action: 'drop' }), /does not apply/);
});

test('fault rules: a delay holds a request until virtual time passes', async () => {
  const { scheduler, disk } = manualDisk();
  disk.addFault({ op: 'read', action: 'delay', delayMs: 500 });
  const order: string[] = [];
  const slow = disk.read(0, fill(1, 0)).then(() => order.push(`read@${scheduler.clock.now()}`));
  const fast = disk.write(1, fill(1, 1)).then(() => order.push(`write@${scheduler.clock.now()}`));
  await scheduler.runUntilIdle();
  await Promise.all([slow, fast]);
  assert.deepEqual(order, ['write@0', 'read@500']);
});

test('a vanished device fails everything with ESHUTDOWN, in flight too', async () => {
  const { scheduler, disk } = manualDisk();
  const inflight = disk.write(0, fill(1, 1));
  disk.disappear();
  await rejectsCode(scheduler.drive(inflight), 'ESHUTDOWN');
  await rejectsCode(disk.read(0, fill(1, 0)), 'ESHUTDOWN');
  await rejectsCode(disk.flush(), 'ESHUTDOWN');
});

test('the virtual clock wakes sleepers when the scheduler is idle', async () => {
  const scheduler = new Scheduler({ seed: 3 });
  const disk = new SimulatedDisk({ sectors: 8, scheduler });
  const t0 = scheduler.clock.now();
  await Promise.all([scheduler.clock.sleep(1000), disk.write(0, fill(1, 1))]);
  assert.equal(scheduler.clock.now() - t0, 1000);
});

/** A small concurrent workload over two disks, logged. */
async function run(seed: number): Promise<{ log: string; images: Buffer[] }> {
  const scheduler = new Scheduler({ seed });
  const disks = [0, 1].map((i) => new SimulatedDisk({ name: `d${i}`, sectors: 64, scheduler }));
  const rng = new Rng(seed);
  const ops: Promise<void>[] = [];
  for (let i = 0; i < 40; i++) {
    const d = disks[rng.below(2)]!;
    ops.push(rng.chance(0.2) ? d.flush() : d.write(rng.below(60), fill(1 + rng.below(4), i)));
  }
  await Promise.all(ops);
  return {
    log: JSON.stringify(disks.map((d) => d.log)),
    images: disks.map((d) => readImage(d.crash({ volatile: 'none' }), 0, 64)),
  };
}

test('one seed reproduces a run bit for bit; another seed orders it differently', async () => {
  const a = await run(42);
  const b = await run(42);
  assert.equal(a.log, b.log);
  assert.deepEqual(a.images, b.images);
  const others = await Promise.all([43, 44, 45].map(run));
  assert.ok(others.some((o) => o.log !== a.log));
});

test('drive() reports an await that no request can satisfy', async () => {
  const { scheduler } = manualDisk();
  await assert.rejects(scheduler.drive(new Promise(() => undefined)), /waits on no request/);
});

test('images are sparse and crash overlays share the durable image', async () => {
  const scheduler = new Scheduler({ seed: 5, auto: false });
  const disk = new SimulatedDisk({ sectors: 2 ** 31, scheduler }); // 1 TiB
  await scheduler.drive(disk.write(2 ** 31 - 8, fill(8, 1), { fua: true }));
  await scheduler.drive(disk.write(0, fill(1, 2)));
  const states = Array.from({ length: 1000 }, () => disk.crash({ volatile: 'all' }));
  for (const s of states) assert.equal(s.layerBytes, CHUNK_BYTES);
  assert.deepEqual(bytesOf(states[999]!, 2 ** 31 - 8, 1), [1]);
  assert.deepEqual(bytesOf(states[0]!, 0, 1), [2]);
  // A crash image is frozen: the disk moving on does not change it.
  await scheduler.drive(disk.write(2 ** 31 - 8, fill(8, 3), { fua: true }));
  assert.deepEqual(bytesOf(states[0]!, 2 ** 31 - 8, 1), [1]);
  const ext = await scheduler.drive(disk.extents(0, 2 ** 31));
  assert.deepEqual(ext.filter((e) => !e.hole).map((e) => [e.sector, e.count]), [[0, 8], [2 ** 31 - 8, 8]]);
});

test('sparse image: snapshot is copy-on-write both ways, zeroing an overlay hides the base', () => {
  const img = new SparseImage(64);
  img.write(0, fill(16, 1));
  const snap = img.snapshot();
  img.write(0, fill(1, 2));
  snap.write(8, fill(1, 3));
  assert.deepEqual(bytesOf(img, 0, 9), [2, 1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(bytesOf(snap, 0, 9), [1, 1, 1, 1, 1, 1, 1, 1, 3]);
  const top = snap.overlay();
  top.zero(0, 16);
  assert.deepEqual(bytesOf(top, 0, 16), Array(16).fill(0));
  assert.equal(top.isHole(0), true);
  assert.deepEqual(bytesOf(snap, 0, 1), [1]);
});
