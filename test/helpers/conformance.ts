/**
 * The BlockDevice conformance suite (ARCHITECTURE §3): every device and every
 * mapped device passes it. Usage, in a test file:
 *
 *   blockDeviceConformance('MemoryDevice', async () => ({ dev: new MemoryDevice(8192) }));
 *
 * `make` is called once per test and must return a fresh open device (its
 * contents need not be zero: the suite learns what it has not written). The
 * suite closes every device it was given; `cleanup` then removes whatever
 * `make` created. With `reopen` (the same storage opened again after `dev`
 * was closed), data flushed before close must read back after it.
 *
 * What it checks, against the device's own `limits`:
 * - data round trip: random reads, writes (some FUA), flushes, write-zeroes
 *   and discards, near the start, the end and anywhere, against a model;
 * - bounds: ENOSPC past the end; EINVAL for a bad sector, a zero-length or
 *   non-sector buffer, misalignment to the logical block size, a transfer
 *   over maxTransfer; all as rejected promises carrying an IoError;
 * - read-only refusal with EPERM when `limits.readOnly` (skipped otherwise);
 * - write-zeroes always reads back zeroes, discard does where
 *   `discardZeroes` says so (else old data or zeroes), neighbours untouched;
 * - extents cover the range exactly once, in order, aligned, and every
 *   extent marked hole or zero reads as zeroes;
 * - concurrent overlapping writes leave each sector holding one of the
 *   writes that covered it (§1.7); neither they nor concurrent reads disturb
 *   other sectors;
 * - vectored writes (`writeChunks`: the device's `writev` where it has one,
 *   else the shared fallback) split at random places, zero-length pieces and
 *   boundaries inside sectors included, each piece a view inside a larger
 *   buffer: they read back as the single-buffer write of the same bytes, mix
 *   with every other request in the model run, and keep the same bounds,
 *   read-only and after-close refusals;
 * - the device keeps no caller buffer after a promise settles;
 * - after close, every request rejects with an IoError.
 * Read-only devices run the read-side checks only. Requests stay small (a
 * few MiB; the maxTransfer check alone sends one request just over
 * maxTransfer, when that is at most 64 MiB), so the suite is quick on any
 * device size.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';

import { type BlockDevice, SECTOR_SIZE } from '../../src/block/device.ts';
import { type Errno, IoError } from '../../src/block/errors.ts';
import { writeChunks } from '../../src/block/vectored.ts';

export interface ConformanceSubject {
  /** A freshly opened device. */
  dev: BlockDevice;
  /** Opens the same storage again, after `dev` was closed. */
  reopen?: () => Promise<BlockDevice>;
  /** Removes what `make` created; runs after every device was closed. */
  cleanup?: () => Promise<void>;
}

export function blockDeviceConformance(label: string, make: () => Promise<ConformanceSubject>): void {
  const check = (name: string, body: (h: Harness) => Promise<void>) =>
    test(`${label}: ${name}`, async (t) => {
      const subject = await make();
      const h = new Harness(subject, (why) => t.skip(why));
      try {
        await body(h);
      } finally {
        await h.closeAll();
        await subject.cleanup?.();
      }
    });

  check('data round trip against a model', roundTrip);
  check('bounds and validation', bounds);
  check('read-only refusal', readOnlyRefusal);
  check('write-zeroes and discard semantics', zeroesAndDiscard);
  check('extents agree with data', extentsAgree);
  check('vectored writes equal single-buffer writes', vectoredWrites);
  check('concurrent overlapping requests', concurrentOverlap);
  check('buffers are not kept after a request settles', buffersNotKept);
  check('requests after close reject', afterClose);
  check('flushed data survives close and reopen', reopenKeepsData);
}

// ---------------------------------------------------------------------------

class Harness {
  readonly dev: BlockDevice;
  /** Sectors per logical block: every position and length is a multiple. */
  readonly step: number;
  readonly blocks: number;
  private readonly open: BlockDevice[];
  private readonly closed = new Set<BlockDevice>();

  constructor(readonly subject: ConformanceSubject, readonly skip: (why: string) => void) {
    this.dev = subject.dev;
    this.open = [subject.dev];
    this.step = this.dev.limits.logicalBlockSize / SECTOR_SIZE;
    this.blocks = Math.floor(this.dev.sectors / this.step);
  }

  get writable(): boolean {
    return !this.dev.limits.readOnly;
  }

  /** Largest request the suite issues, in logical blocks. */
  maxRequestBlocks(capSectors: number): number {
    return Math.max(1, Math.floor(Math.min(capSectors, this.dev.limits.maxTransfer) / this.step));
  }

  async close(dev: BlockDevice): Promise<void> {
    this.closed.add(dev);
    await dev.close();
  }

  async reopen(): Promise<BlockDevice> {
    const dev = await this.subject.reopen!();
    this.open.push(dev);
    return dev;
  }

  async closeAll(): Promise<void> {
    for (const dev of this.open) if (!this.closed.has(dev)) await this.close(dev);
  }

  /** Reads any length, split at maxTransfer. */
  async readRange(sector: number, count: number, dev = this.dev): Promise<Buffer> {
    const out = Buffer.alloc(count * SECTOR_SIZE);
    const chunk = this.maxRequestBlocks(Infinity) * this.step;
    for (let s = 0; s < count; s += chunk) {
      await dev.read(sector + s, out.subarray(s * SECTOR_SIZE, Math.min(count, s + chunk) * SECTOR_SIZE));
    }
    return out;
  }

  /** Writes any length, split at maxTransfer. */
  async writeRange(sector: number, data: Buffer, dev = this.dev): Promise<void> {
    const count = data.length / SECTOR_SIZE;
    const chunk = this.maxRequestBlocks(Infinity) * this.step;
    for (let s = 0; s < count; s += chunk) {
      await dev.write(sector + s, data.subarray(s * SECTOR_SIZE, Math.min(count, s + chunk) * SECTOR_SIZE));
    }
  }
}

/** Bytes that name their seed and position, so misplaced data never matches. */
function pattern(sectors: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(sectors * SECTOR_SIZE);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < buf.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, i);
  }
  return buf;
}

const ZERO_SECTOR = Buffer.alloc(SECTOR_SIZE);

function sectorOf(buf: Buffer, i: number): Buffer {
  return buf.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE);
}

/** Cut points for splitting a buffer: any bytes, any number, repeats allowed. */
const cutsArb = fc.array(fc.nat(), { maxLength: 8 });

/** Bytes written around each piece of `split`: a device that reads past a view writes these. */
const OUTSIDE_VIEW = 0xee;

/**
 * `data` split at `cuts` (taken modulo its length + 1, so a cut may fall
 * inside a sector, at either end, or twice at one place: zero-length
 * pieces), each piece a copy placed inside a larger buffer, as a socket
 * chunk holds the end of one request and the start of the next.
 */
function split(data: Buffer, cuts: readonly number[]): Buffer[] {
  const at = cuts.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
  const bounds = [0, ...at, data.length];
  const pieces: Buffer[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const part = data.subarray(bounds[i], bounds[i + 1]);
    const pad = 1 + (i % 3) * 7;
    const holder = Buffer.alloc(part.length + 2 * pad, OUTSIDE_VIEW);
    part.copy(holder, pad);
    pieces.push(holder.subarray(pad, pad + part.length));
  }
  return pieces;
}

function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i += SECTOR_SIZE) if (!sectorOf(buf, i / SECTOR_SIZE).equals(ZERO_SECTOR)) return false;
  return true;
}

/** Calls fn, which must return a promise that rejects with an IoError of one of the codes ('any': any code). */
async function rejectsWith(what: string, codes: readonly Errno[] | 'any', fn: () => Promise<unknown>): Promise<IoError> {
  const expected = codes === 'any' ? 'an IoError' : codes.join(' or ');
  let p: Promise<unknown>;
  try {
    p = fn();
  } catch (err) {
    assert.fail(`${what}: threw synchronously (${String(err)}) instead of returning a rejected promise`);
  }
  let caught: unknown;
  await p.then(
    () => assert.fail(`${what}: resolved, expected ${expected}`),
    (err: unknown) => (caught = err),
  );
  assert.ok(caught instanceof IoError, `${what}: rejected with ${String(caught)}, not an IoError`);
  assert.ok(codes === 'any' || codes.includes(caught.code), `${what}: rejected with ${caught.code} (${caught.message}), expected ${expected}`);
  return caught;
}

/**
 * What each sector may hold: one known content, or several after a discard
 * that need not zero. Sectors never written are learned at their first read.
 */
class Model {
  private readonly sectors = new Map<number, Buffer | Buffer[]>();

  write(sector: number, data: Buffer): void {
    const copy = Buffer.from(data);
    for (let i = 0; i < copy.length / SECTOR_SIZE; i++) this.sectors.set(sector + i, sectorOf(copy, i));
  }

  zero(sector: number, count: number): void {
    for (let i = 0; i < count; i++) this.sectors.set(sector + i, ZERO_SECTOR);
  }

  /** After a discard without discardZeroes: the old content or zeroes. */
  zeroOrOld(sector: number, count: number): void {
    for (let i = 0; i < count; i++) {
      const old = this.sectors.get(sector + i);
      if (old !== undefined) this.sectors.set(sector + i, [...[old].flat(), ZERO_SECTOR]);
      else this.sectors.delete(sector + i); // unknown stays unknown
    }
  }

  check(what: string, sector: number, got: Buffer): void {
    for (let i = 0; i < got.length / SECTOR_SIZE; i++) {
      const actual = sectorOf(got, i);
      const allowed = this.sectors.get(sector + i);
      if (allowed === undefined) {
        this.sectors.set(sector + i, Buffer.from(actual));
        continue;
      }
      const options = [allowed].flat();
      if (!options.some((b) => b.equals(actual))) {
        assert.fail(
          `${what}: sector ${sector + i} holds ${actual.subarray(0, 16).toString('hex')}…, ` +
            `expected ${options.map((b) => b.subarray(0, 16).toString('hex') + '…').join(' or ')}`,
        );
      }
    }
  }
}

type Op =
  | { kind: 'read'; block: number; blocks: number }
  | { kind: 'write'; block: number; blocks: number; seed: number; fua: boolean }
  | { kind: 'writev'; block: number; blocks: number; seed: number; fua: boolean; cuts: number[] }
  | { kind: 'zeroes'; block: number; blocks: number; mayUnmap: boolean }
  | { kind: 'discard'; block: number; blocks: number }
  | { kind: 'flush' };

/** A range of whole logical blocks inside the device, biased to its start and end. */
function rangeArb(h: Harness, maxBlocks: number): fc.Arbitrary<{ block: number; blocks: number }> {
  const last = h.blocks - 1;
  const edge = Math.min(last, 64);
  const start = fc.oneof(
    fc.integer({ min: 0, max: edge }),
    fc.integer({ min: last - edge, max: last }),
    fc.integer({ min: 0, max: last }),
  );
  return fc
    .tuple(start, fc.integer({ min: 1, max: maxBlocks }))
    .map(([block, blocks]) => ({ block, blocks: Math.min(blocks, h.blocks - block) }));
}

async function roundTrip(h: Harness): Promise<void> {
  const { dev, step } = h;
  const model = new Model();
  const range = rangeArb(h, h.maxRequestBlocks(256));
  const ops: fc.Arbitrary<Op>[] = [range.map((r) => ({ kind: 'read' as const, ...r }))];
  if (h.writable) {
    ops.push(
      fc.tuple(range, fc.nat(), fc.boolean()).map(([r, seed, fua]) => ({ kind: 'write' as const, ...r, seed, fua })),
      fc.tuple(range, fc.nat(), fc.boolean(), cutsArb).map(([r, seed, fua, cuts]) => ({ kind: 'writev' as const, ...r, seed, fua, cuts })),
      fc.constant({ kind: 'flush' as const }),
    );
    if (dev.limits.writeZeroes) {
      ops.push(fc.tuple(range, fc.boolean()).map(([r, mayUnmap]) => ({ kind: 'zeroes' as const, ...r, mayUnmap })));
    }
    if (dev.limits.discard) ops.push(range.map((r) => ({ kind: 'discard' as const, ...r })));
  }
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(...ops), { minLength: 1, maxLength: 16 }), async (list) => {
      const touched: { sector: number; count: number }[] = [];
      for (const op of list) {
        if (op.kind === 'flush') {
          await dev.flush();
          continue;
        }
        const sector = op.block * step;
        const count = op.blocks * step;
        switch (op.kind) {
          case 'read': {
            const buf = Buffer.alloc(count * SECTOR_SIZE);
            await dev.read(sector, buf);
            model.check(`read of ${count} sectors at ${sector}`, sector, buf);
            break;
          }
          case 'write': {
            const data = pattern(count, op.seed);
            await dev.write(sector, data, { fua: op.fua });
            model.write(sector, data);
            break;
          }
          case 'writev': {
            const data = pattern(count, op.seed);
            await writeChunks(dev, sector, split(data, op.cuts), { fua: op.fua });
            model.write(sector, data);
            break;
          }
          case 'zeroes':
            await dev.writeZeroes(sector, count, { mayUnmap: op.mayUnmap });
            model.zero(sector, count);
            break;
          case 'discard':
            await dev.discard(sector, count);
            if (dev.limits.discardZeroes) model.zero(sector, count);
            else model.zeroOrOld(sector, count);
            break;
        }
        if (op.kind !== 'read') touched.push({ sector, count });
      }
      for (const { sector, count } of touched) {
        model.check(`read-back of ${count} sectors at ${sector}`, sector, await h.readRange(sector, count));
      }
    }),
    { numRuns: 25 },
  );
}

async function bounds(h: Harness): Promise<void> {
  const { dev, step } = h;
  const block = Buffer.alloc(step * SECTOR_SIZE);
  const end = dev.sectors;
  const nameOk = (err: IoError) => assert.ok(err.message.includes(dev.name), `message "${err.message}" does not name ${dev.name}`);

  nameOk(await rejectsWith('read at the end', ['ENOSPC'], () => dev.read(h.blocks * step, block)));
  await rejectsWith('read straddling the end', ['ENOSPC'], () => dev.read((h.blocks - 1) * step, Buffer.alloc(2 * block.length)));
  await rejectsWith('read far past the end', ['ENOSPC'], () => dev.read(end + 1_000_000 * step, block));
  nameOk(await rejectsWith('read at sector -1', ['EINVAL'], () => dev.read(-1, block)));
  await rejectsWith('read at sector 1.5', ['EINVAL'], () => dev.read(1.5, block));
  await rejectsWith('read at sector NaN', ['EINVAL'], () => dev.read(Number.NaN, block));
  await rejectsWith('read into an empty buffer', ['EINVAL'], () => dev.read(0, Buffer.alloc(0)));
  await rejectsWith('read into a 100-byte buffer', ['EINVAL'], () => dev.read(0, Buffer.alloc(100)));
  await rejectsWith('read into a 513-byte buffer', ['EINVAL'], () => dev.read(0, Buffer.alloc(513)));
  if (dev.extents) {
    await rejectsWith('extents of 0 sectors', ['EINVAL'], () => dev.extents!(0, 0));
    await rejectsWith('extents past the end', ['ENOSPC'], () => dev.extents!(h.blocks * step, step));
  }
  if (step > 1) {
    await rejectsWith('read at a sector inside a logical block', ['EINVAL'], () => dev.read(1, block));
    await rejectsWith('read of one 512-byte sector', ['EINVAL'], () => dev.read(0, Buffer.alloc(SECTOR_SIZE)));
  }
  const over = dev.limits.maxTransfer + step;
  const overBytes = over * SECTOR_SIZE;
  const canTestMaxTransfer = over <= dev.sectors && overBytes <= 64 << 20;
  if (canTestMaxTransfer) {
    await rejectsWith(`read of ${over} sectors (maxTransfer ${dev.limits.maxTransfer})`, ['EINVAL'], () =>
      dev.read(0, Buffer.alloc(overBytes)));
  }
  if (!h.writable) return;

  const before = await h.readRange(0, step);
  await rejectsWith('write at the end', ['ENOSPC'], () => dev.write(h.blocks * step, block));
  await rejectsWith('write straddling the end', ['ENOSPC'], () => dev.write((h.blocks - 1) * step, Buffer.alloc(2 * block.length)));
  await rejectsWith('write of an empty buffer', ['EINVAL'], () => dev.write(0, Buffer.alloc(0)));
  await rejectsWith('write of a 100-byte buffer', ['EINVAL'], () => dev.write(0, Buffer.alloc(100, 1)));
  await rejectsWith('write at sector -1', ['EINVAL'], () => dev.write(-1, block));
  await rejectsWith('write-zeroes past the end', ['ENOSPC'], () => dev.writeZeroes(h.blocks * step, step));
  await rejectsWith('write-zeroes of 0 sectors', ['EINVAL'], () => dev.writeZeroes(0, 0));
  await rejectsWith('discard past the end', ['ENOSPC'], () => dev.discard(h.blocks * step, step));
  await rejectsWith('discard of 0 sectors', ['EINVAL'], () => dev.discard(0, 0));
  await rejectsWith('discard of -1 sectors', ['EINVAL'], () => dev.discard(0, -1));
  if (step > 1) {
    await rejectsWith('write at a sector inside a logical block', ['EINVAL'], () => dev.write(1, block));
    await rejectsWith('write-zeroes of a partial logical block', ['EINVAL'], () => dev.writeZeroes(0, 1));
    await rejectsWith('discard of a partial logical block', ['EINVAL'], () => dev.discard(0, 1));
  }
  if (canTestMaxTransfer) {
    await rejectsWith(`write of ${over} sectors`, ['EINVAL'], () => dev.write(0, Buffer.alloc(overBytes, 0x5a)));
    await rejectsWith(`vectored write of ${over} sectors`, ['EINVAL'], () =>
      writeChunks(dev, 0, split(Buffer.alloc(overBytes, 0x5a), [1, overBytes >> 1])));
  }
  const halves = split(block, [block.length >> 1]);
  await rejectsWith('vectored write at the end', ['ENOSPC'], () => writeChunks(dev, h.blocks * step, halves));
  await rejectsWith('vectored write straddling the end', ['ENOSPC'], () =>
    writeChunks(dev, (h.blocks - 1) * step, [...halves, ...halves]));
  await rejectsWith('vectored write of no chunks', ['EINVAL'], () => writeChunks(dev, 0, []));
  await rejectsWith('vectored write of empty chunks', ['EINVAL'], () => writeChunks(dev, 0, [Buffer.alloc(0), Buffer.alloc(0)]));
  await rejectsWith('vectored write of 100 + 413 bytes', ['EINVAL'], () => writeChunks(dev, 0, [Buffer.alloc(100, 1), Buffer.alloc(413, 1)]));
  await rejectsWith('vectored write at sector -1', ['EINVAL'], () => writeChunks(dev, -1, halves));
  if (step > 1) {
    await rejectsWith('vectored write of one 512-byte sector', ['EINVAL'], () => writeChunks(dev, 0, split(Buffer.alloc(SECTOR_SIZE, 1), [7])));
  }
  assert.ok((await h.readRange(0, step)).equals(before), 'a rejected request changed sector 0');
}

async function readOnlyRefusal(h: Harness): Promise<void> {
  const { dev, step } = h;
  if (h.writable) return h.skip('device is writable');
  const count = Math.min(h.blocks, h.maxRequestBlocks(8 * step)) * step;
  const before = await h.readRange(0, count);
  await rejectsWith('write to a read-only device', ['EPERM'], () => dev.write(0, pattern(count, 1)));
  await rejectsWith('FUA write to a read-only device', ['EPERM'], () => dev.write(0, pattern(count, 2), { fua: true }));
  await rejectsWith('vectored write to a read-only device', ['EPERM'], () => writeChunks(dev, 0, split(pattern(count, 3), [1, 600])));
  await rejectsWith('write-zeroes on a read-only device', ['EPERM'], () => dev.writeZeroes(0, count));
  await rejectsWith('discard on a read-only device', ['EPERM'], () => dev.discard(0, count));
  await dev.flush();
  assert.ok((await h.readRange(0, count)).equals(before), 'a refused request changed the device');
}

async function zeroesAndDiscard(h: Harness): Promise<void> {
  const { dev, step } = h;
  if (!h.writable) return h.skip('device is read-only');
  // Over 2 MiB, so zeroing crosses the 1 MiB chunk FileDevice writes, with
  // edges that are not aligned to 4 KiB.
  const total = Math.min(h.blocks, Math.ceil(4200 / step)) * step;
  const margin = Math.min(3 * step, Math.floor(total / 3 / step) * step);
  const inner = { sector: margin, count: total - 2 * margin };
  assert.ok(inner.count > 0, 'device too small for the write-zeroes check');

  const cases: { what: string; run: () => Promise<void>; zeroes: boolean }[] = [];
  if (dev.limits.writeZeroes) {
    cases.push(
      { what: 'write-zeroes', run: () => dev.writeZeroes(inner.sector, inner.count), zeroes: true },
      { what: 'write-zeroes (may unmap)', run: () => dev.writeZeroes(inner.sector, inner.count, { mayUnmap: true }), zeroes: true },
      { what: 'write-zeroes (FUA)', run: () => dev.writeZeroes(inner.sector, inner.count, { fua: true }), zeroes: true },
    );
  }
  if (dev.limits.discard) {
    cases.push({ what: 'discard', run: () => dev.discard(inner.sector, inner.count), zeroes: dev.limits.discardZeroes });
  }
  if (cases.length === 0) return h.skip('device supports neither write-zeroes nor discard');

  for (const [i, c] of cases.entries()) {
    const before = pattern(total, 100 + i);
    await h.writeRange(0, before);
    await c.run();
    const after = await h.readRange(0, total);
    for (let s = 0; s < total; s++) {
      const got = sectorOf(after, s);
      const old = sectorOf(before, s);
      const inside = s >= inner.sector && s < inner.sector + inner.count;
      if (!inside) assert.ok(got.equals(old), `${c.what} of ${inner.count} sectors at ${inner.sector} changed sector ${s} outside it`);
      else if (c.zeroes) assert.ok(got.equals(ZERO_SECTOR), `${c.what}: sector ${s} does not read as zeroes`);
      else assert.ok(got.equals(ZERO_SECTOR) || got.equals(old), `${c.what}: sector ${s} holds neither its old data nor zeroes`);
    }
    // The range is usable again at once.
    const again = pattern(step, 200 + i);
    await dev.write(inner.sector, again);
    assert.ok((await h.readRange(inner.sector, step)).equals(again), `${c.what}: a write after it did not read back`);
  }
}

/** Every extent in order, no gap or overlap, covering [sector, sector+count), aligned; holes and zeroes read as zeroes. */
async function checkExtents(h: Harness, sector: number, count: number): Promise<void> {
  const extents = await h.dev.extents!(sector, count);
  let at = sector;
  for (const e of extents) {
    const what = `extent ${JSON.stringify(e)} of extents(${sector}, ${count})`;
    assert.equal(e.sector, at, `${what} does not start where the previous one ended (${at})`);
    assert.ok(Number.isSafeInteger(e.count) && e.count > 0, `${what} has a bad length`);
    assert.ok(e.sector % h.step === 0 && e.count % h.step === 0, `${what} is not aligned to the logical block size`);
    if (e.hole || e.zero) assert.ok(isZero(await h.readRange(e.sector, e.count)), `${what} does not read as zeroes`);
    at += e.count;
  }
  assert.equal(at, sector + count, `extents(${sector}, ${count}) end at ${at}`);
}

async function extentsAgree(h: Harness): Promise<void> {
  const { dev, step } = h;
  if (!dev.extents) return h.skip('device has no extents()');
  const window = Math.min(h.blocks, Math.floor(8192 / step)) * step;
  if (h.writable) {
    // Data, holes and zeroed stretches at several places, some at the end.
    const spots = [0, Math.floor(window / 3), window - step].map((s) => Math.floor(s / step) * step);
    for (const [i, s] of spots.entries()) await dev.write(s, pattern(step, 300 + i));
    const mid = Math.floor(window / 2 / step) * step;
    const span = Math.min(256 * step, window - mid);
    await h.writeRange(mid, pattern(span, 310));
    if (dev.limits.writeZeroes) await dev.writeZeroes(mid, span, { mayUnmap: true });
    if (dev.limits.discard && span > 2 * step) await dev.discard(mid + step, span - 2 * step);
  }
  await checkExtents(h, 0, window);
  await checkExtents(h, (h.blocks - Math.min(h.blocks, 64)) * step, Math.min(h.blocks, 64) * step);
  await fc.assert(
    fc.asyncProperty(rangeArb(h, Math.floor(window / step)), async ({ block, blocks }) => {
      await checkExtents(h, block * step, blocks * step);
    }),
    { numRuns: 20 },
  );
}

/**
 * The same bytes written as one buffer and as a split chunk list read back
 * identically, and as written; the bytes around each view are never stored,
 * and changing the chunks after the write settled changes nothing.
 */
async function vectoredWrites(h: Harness): Promise<void> {
  const { dev, step } = h;
  if (!h.writable) return h.skip('device is read-only');
  const range = rangeArb(h, h.maxRequestBlocks(256));
  await fc.assert(
    fc.asyncProperty(range, fc.nat(), cutsArb, fc.boolean(), async ({ block, blocks }, seed, cuts, fua) => {
      const sector = block * step;
      const count = blocks * step;
      const data = pattern(count, seed);
      const what = `${count} sectors at ${sector} split at ${JSON.stringify(cuts)}`;
      await dev.write(sector, data, { fua });
      const single = await h.readRange(sector, count);
      assert.ok(single.equals(data), `single-buffer write of ${what}: does not read back`);
      await h.writeRange(sector, pattern(count, seed + 1));
      const chunks = split(data, cuts);
      await writeChunks(dev, sector, chunks, { fua });
      for (const c of chunks) c.fill(0xa5);
      const vectored = await h.readRange(sector, count);
      assert.ok(vectored.equals(single), `vectored write of ${what}: reads back other bytes than the single-buffer write`);
    }),
    { numRuns: 30 },
  );
}

async function concurrentOverlap(h: Harness): Promise<void> {
  const { dev, step } = h;
  if (!h.writable) return h.skip('device is read-only');
  const regionBlocks = Math.min(32, Math.floor(h.blocks / 2), Math.floor(h.maxRequestBlocks(Infinity) / 2));
  assert.ok(regionBlocks > 0, 'device too small for the concurrency check');
  const region = regionBlocks * step; // writes land in [0, region); [region, 2·region) must not change
  const base = pattern(2 * region, 400);
  await h.writeRange(0, base);
  const write = fc.record({ block: fc.integer({ min: 0, max: regionBlocks - 1 }), blocks: fc.integer({ min: 1, max: regionBlocks }), seed: fc.nat() });
  await fc.assert(
    fc.asyncProperty(fc.array(write, { minLength: 2, maxLength: 12 }), fc.integer({ min: 1, max: 4 }), async (writes, readers) => {
      await h.writeRange(0, base);
      const issued = writes.map((w) => {
        const blocks = Math.min(w.blocks, regionBlocks - w.block);
        return { sector: w.block * step, data: pattern(blocks * step, w.seed) };
      });
      const allowed = (s: number): Buffer[] => [
        sectorOf(base, s),
        ...issued.filter((w) => s >= w.sector && s < w.sector + w.data.length / SECTOR_SIZE).map((w) => sectorOf(w.data, s - w.sector)),
      ];
      const reads = Array.from({ length: readers }, () => Buffer.alloc(2 * region * SECTOR_SIZE));
      await Promise.all([
        ...issued.map((w) => dev.write(w.sector, w.data)),
        ...reads.map((buf) => dev.read(0, buf)),
      ]);
      // A read racing a write of the same sectors may see anything, even a
      // sector torn mid-copy (Linux's page cache does not order a buffered
      // read against a write), so concurrent reads are checked only where
      // nothing was written.
      const after = await h.readRange(0, 2 * region);
      for (const [n, got] of [after, ...reads].entries()) {
        const what = n === 0 ? 'after the writes' : `concurrent read ${n}`;
        for (let s = n === 0 ? 0 : region; s < 2 * region; s++) {
          const options = s < region ? allowed(s) : [sectorOf(base, s)];
          assert.ok(options.some((b) => b.equals(sectorOf(got, s))), `${what}: sector ${s} holds data no request wrote there`);
        }
      }
    }),
    { numRuns: 15 },
  );
}

async function buffersNotKept(h: Harness): Promise<void> {
  const { dev, step } = h;
  const count = Math.min(h.blocks, h.maxRequestBlocks(8 * step)) * step;
  const into = Buffer.alloc(count * SECTOR_SIZE);
  await dev.read(0, into);
  const seen = Buffer.from(into);
  if (!h.writable) {
    into.fill(0xa5);
    assert.ok((await h.readRange(0, count)).equals(seen), 'changing a read buffer after the read changed the device');
    return;
  }
  const data = pattern(count, 500);
  const written = Buffer.from(data);
  await dev.write(0, data, { fua: true });
  data.fill(0xa5); // a device that kept the buffer now holds 0xa5
  await dev.flush();
  assert.ok(into.equals(seen), 'a later write changed the buffer of an earlier, settled read');
  assert.ok((await h.readRange(0, count)).equals(written), 'changing a write buffer after the write settled changed the device');
}

async function afterClose(h: Harness): Promise<void> {
  const { dev, step } = h;
  await h.close(dev);
  const block = Buffer.alloc(step * SECTOR_SIZE);
  const any = 'any';
  await rejectsWith('read after close', any, () => dev.read(0, block));
  await rejectsWith('write after close', any, () => dev.write(0, block));
  await rejectsWith('vectored write after close', any, () => writeChunks(dev, 0, split(block, [100])));
  await rejectsWith('flush after close', any, () => dev.flush());
  await rejectsWith('discard after close', any, () => dev.discard(0, step));
  await rejectsWith('write-zeroes after close', any, () => dev.writeZeroes(0, step));
  if (dev.extents) await rejectsWith('extents after close', any, () => dev.extents!(0, step));
}

async function reopenKeepsData(h: Harness): Promise<void> {
  const { dev, step } = h;
  if (!h.subject.reopen) return h.skip('no reopen given');
  const count = Math.min(h.blocks, 16) * step;
  const head = h.writable ? pattern(count, 600) : await h.readRange(0, count);
  const tailSector = (h.blocks * step) - count;
  const tail = h.writable ? pattern(count, 601) : await h.readRange(tailSector, count);
  if (h.writable) {
    await h.writeRange(0, head);
    await h.writeRange(tailSector, tail);
    await dev.flush();
  }
  await h.close(dev);
  const again = await h.reopen();
  assert.equal(again.sectors, dev.sectors, 'the reopened device has another size');
  assert.ok((await h.readRange(0, count, again)).equals(head), 'data at the start did not survive close and reopen');
  assert.ok((await h.readRange(tailSector, count, again)).equals(tail), 'data at the end did not survive close and reopen');
}
