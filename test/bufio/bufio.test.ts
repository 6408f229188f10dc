import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WriteOptions } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { BufferCache } from '../../src/bufio/bufio.ts';
import { ManualClock } from '../helpers/target-context.ts';

const BS = 4096;

/** A MemoryDevice whose writes can be held in flight, fail on demand, and are logged. */
class GatedDevice extends MemoryDevice {
  writes: { block: number; first: number }[] = [];
  /** Device reads, as [first block, blocks]. */
  reads: [number, number][] = [];
  flushes = 0;
  inFlight = 0;
  maxInFlightPerBlock = 0;
  private perBlock = new Map<number, number>();
  gate: Promise<void> | null = null;
  failWrites = false;
  failReads = false;

  override async write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    const block = sector / 8;
    const n = (this.perBlock.get(block) ?? 0) + 1;
    this.perBlock.set(block, n);
    this.maxInFlightPerBlock = Math.max(this.maxInFlightPerBlock, n);
    this.writes.push({ block, first: data[0]! });
    try {
      if (this.gate) await this.gate;
      if (this.failWrites) throw new IoError('EIO', `write of block ${block} failed`);
      await super.write(sector, data, opts);
    } finally {
      this.perBlock.set(block, n - 1);
    }
  }

  override async read(sector: number, into: Buffer): Promise<void> {
    this.reads.push([sector / 8, into.length / BS]);
    if (this.failReads) throw new IoError('EIO', `read at ${sector} failed`);
    return super.read(sector, into);
  }

  override async flush(): Promise<void> {
    this.flushes++;
  }
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

test('read caches the block: one device read for repeated reads, held until released', async () => {
  const dev = new GatedDevice(64 * 8);
  await dev.write(8, Buffer.alloc(BS, 7));
  const c = new BufferCache(dev, { blockSize: BS });
  const a = await c.read(1);
  assert.equal(a.data[0], 7);
  c.release(a);
  const b = await c.read(1);
  c.release(b);
  assert.equal(c.stats.reads, 1);
  assert.throws(() => c.release(b), { code: 'EINVAL' });
});

test('new gives a zeroed buffer without reading; writeDirty writes it and flush flushes after', async () => {
  const dev = new GatedDevice(64 * 8);
  await dev.write(16, Buffer.alloc(BS, 9));
  const c = new BufferCache(dev, { blockSize: BS });
  const b = await c.new(2);
  assert.equal(c.stats.reads, 0);
  assert.equal(b.data[0], 0);
  b.data.fill(5);
  c.markDirty(b);
  c.release(b);
  assert.equal(c.dirtyCount, 1);
  await c.flush();
  assert.equal(c.dirtyCount, 0);
  assert.equal(dev.peek(2 * BS, 1)[0], 5);
  assert.equal(dev.flushes, 1);
});

test('a buffer changed while its write is in flight: the write carries the old copy, the buffer stays dirty', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS });
  const b = await c.new(3);
  b.data.fill(1);
  c.markDirty(b);
  const g = gate();
  dev.gate = g.promise;
  const first = c.writeDirty();
  await new Promise((r) => setImmediate(r));
  b.data.fill(2); // allowed: the cache wrote a private copy
  c.markDirty(b);
  const second = c.writeDirty(); // must wait for the first write of this block, not overlap it
  await new Promise((r) => setImmediate(r));
  g.open();
  await first;
  await second;
  c.release(b);
  assert.deepEqual(dev.writes.map((w) => w.first), [1, 2]);
  assert.equal(dev.maxInFlightPerBlock, 1);
  assert.equal(dev.peek(3 * BS, 1)[0], 2);
  assert.equal(c.dirtyCount, 0);
});

test('memory bound: clean buffers are evicted, dirty ones written back first; data survives', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS, maxBytes: 4 * BS });
  for (let i = 0; i < 16; i++) {
    const b = await c.new(i);
    b.data.fill(i + 1);
    c.markDirty(b);
    c.release(b);
    assert.ok(c.cachedBytes <= 4 * BS, `cache holds ${c.cachedBytes} bytes`);
  }
  assert.ok(dev.writes.length >= 12, 'dirty buffers were written back to make room');
  for (let i = 0; i < 16; i++) {
    const b = await c.read(i);
    assert.equal(b.data[0], i + 1);
    c.release(b);
  }
  assert.ok(c.stats.evictions > 0);
});

test('held buffers are never evicted, even past the bound', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS, maxBytes: 2 * BS });
  const held = [await c.new(0), await c.new(1), await c.new(2)];
  held[0]!.data.fill(4);
  assert.equal(c.cachedBytes, 3 * BS);
  const again = c.get(0);
  assert.equal(again?.data[0], 4);
  for (const b of [...held, again!]) c.release(b);
});

test('background write-back on a timer writes dirty buffers without flushing', async () => {
  const dev = new GatedDevice(64 * 8);
  const clock = new ManualClock();
  const c = new BufferCache(dev, { blockSize: BS, writebackMs: 1000, clock });
  const b = await c.new(5);
  b.data.fill(3);
  c.markDirty(b);
  c.release(b);
  clock.advance(999);
  await new Promise((r) => setImmediate(r));
  assert.equal(dev.writes.length, 0);
  clock.advance(1);
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(dev.writes.length, 1);
  assert.equal(dev.flushes, 0);
  await c.close();
});

test('a failed asynchronous write surfaces once, at the next writeDirty', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS });
  const b = await c.new(6);
  c.markDirty(b);
  c.release(b);
  dev.failWrites = true;
  c.writeDirtyAsync();
  await new Promise((r) => setImmediate(r));
  dev.failWrites = false;
  await assert.rejects(c.writeDirty(), { code: 'EIO' });
  await c.writeDirty();
});

test('a failed read caches nothing: the next read retries the device', async () => {
  const dev = new GatedDevice(64 * 8);
  await dev.write(7 * 8, Buffer.alloc(BS, 8));
  const c = new BufferCache(dev, { blockSize: BS });
  dev.failReads = true;
  await assert.rejects(c.read(7), { code: 'EIO' });
  assert.equal(c.get(7), undefined);
  dev.failReads = false;
  const b = await c.read(7);
  assert.equal(b.data[0], 8);
  c.release(b);
});

test('prefetch starts reads that a later read reuses; get never does I/O', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS });
  assert.equal(c.get(10), undefined);
  c.prefetch(10, 4);
  assert.equal(c.stats.reads, 4);
  for (let i = 10; i < 14; i++) c.release(await c.read(i));
  assert.equal(c.stats.reads, 4);
  await assert.rejects(c.read(64), { code: 'ENOSPC' });
});

test('prefetch reads each run of adjacent uncached blocks at once, and each block gets its own contents', async () => {
  const dev = new GatedDevice(64 * 8);
  for (let b = 20; b < 30; b++) await dev.write(b * 8, Buffer.alloc(BS, b));
  const c = new BufferCache(dev, { blockSize: BS });
  c.release(await c.read(23));
  dev.reads = [];
  c.prefetch(20, 10);
  assert.deepEqual(dev.reads, [[20, 3], [24, 6]]);
  for (let b = 20; b < 30; b++) {
    const e = await c.read(b);
    assert.ok(e.data.every((x) => x === b), `block ${b}`);
    c.release(e);
  }
  assert.equal(dev.reads.length, 2);
  assert.equal(c.stats.reads, 10);

  const small = new GatedDevice(64 * 8, { limits: { maxTransfer: 3 * 8 } });
  const d = new BufferCache(small, { blockSize: BS });
  d.prefetch(0, 8);
  assert.deepEqual(small.reads, [[0, 3], [3, 3], [6, 2]], 'runs split at the largest transfer');
});

test('prefetch evicts idle buffers for room, never held ones, and a failed prefetch caches nothing', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS, maxBytes: 4 * BS });
  const held = await c.read(0);
  for (let b = 1; b < 4; b++) c.release(await c.read(b));
  c.prefetch(10, 3); // room by evicting blocks 1..3, the idle ones
  assert.equal(c.get(1), undefined);
  for (let b = 10; b < 13; b++) c.release(await c.read(b));
  assert.equal(c.cachedBytes, 4 * BS);
  const all = [held];
  for (let b = 10; b < 13; b++) all.push(await c.read(b));
  dev.reads = [];
  c.prefetch(20, 2); // everything is held: nothing is read
  assert.deepEqual(dev.reads, []);
  for (const e of all) c.release(e);
  dev.failReads = true;
  c.prefetch(30, 2);
  assert.deepEqual(dev.reads, [[30, 2]]);
  await new Promise((r) => setImmediate(r));
  dev.failReads = false;
  assert.equal(c.get(30), undefined);
  const e = await c.read(31);
  c.release(e);
  assert.deepEqual(dev.reads, [[30, 2], [31, 1]]);
});

test('discardAll drops dirty buffers after in-flight writes settle', async () => {
  const dev = new GatedDevice(64 * 8);
  const c = new BufferCache(dev, { blockSize: BS });
  const b = await c.new(1);
  b.data.fill(6);
  c.markDirty(b);
  c.release(b);
  await c.discardAll();
  assert.equal(c.dirtyCount, 0);
  await c.flush();
  assert.equal(dev.writes.length, 0);
});
