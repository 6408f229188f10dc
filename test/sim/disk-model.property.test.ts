/**
 * SimulatedDisk against an independent model of ARCHITECTURE §1: per sector,
 * the set of values a power loss may leave. Random concurrent workloads with
 * FUA, flushes, zeroes, failures and spontaneous write-back; then random crash
 * selections (kept, torn, in flight) must each land inside those sets, with
 * atomic units whole.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';

import { SECTOR_SIZE } from '../../src/block/device.ts';
import type { KeptWrite, PendingWrite } from '../../src/sim/disk-state.ts';
import { Rng } from '../../src/sim/rng.ts';
import { Scheduler, settle } from '../../src/sim/scheduler.ts';
import { SimulatedDisk } from '../../src/sim/simulated-disk.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';

const INITIAL = 0xffff;

/** Sector content naming its source: write number (INITIAL for the image) and sector. Zero writes are all zeroes. */
function stamp(buf: Buffer, source: number, sector: number, count: number): void {
  for (let i = 0; i < count; i++) {
    const s = buf.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE);
    s.fill(0x5a);
    s.writeUInt32LE(source, 0);
    s.writeUInt32LE(sector + i, 4);
  }
}

/** Which source a sector holds: a write number, INITIAL, 'zero', or 'garbage'. */
function sourceOf(buf: Buffer, sector: number): number | 'zero' | 'garbage' {
  const s = buf.subarray(sector * SECTOR_SIZE, (sector + 1) * SECTOR_SIZE);
  if (s.every((b) => b === 0)) return 'zero';
  const expect = Buffer.alloc(SECTOR_SIZE);
  stamp(expect, s.readUInt32LE(0), sector, 1);
  return expect.equals(s) ? s.readUInt32LE(0) : 'garbage';
}

interface ModelWrite {
  n: number;
  sector: number;
  count: number;
  zero: boolean;
  fua: boolean;
  completedAt?: number;
  failed?: boolean;
}

interface ModelFlush {
  submittedAt: number;
  completedAt?: number;
}

/** The independent model: event times and the acceptable sources of each sector. */
class Model {
  time = 0;
  readonly writes: ModelWrite[] = [];
  readonly flushes: ModelFlush[] = [];

  /** Sources a crash may leave in `sector` (§1 items 3, 4, 7, 9). */
  acceptable(sector: number): Set<number | 'zero'> {
    const touching = this.writes.filter((w) => sector >= w.sector && sector < w.sector + w.count);
    const guaranteed = touching
      .filter((w) => w.completedAt !== undefined && !w.failed)
      .filter((w) => w.fua || this.flushes.some((f) => f.completedAt !== undefined && f.submittedAt > w.completedAt!))
      .sort((a, b) => b.completedAt! - a.completedAt!)[0];
    const value = (w: ModelWrite | undefined) => (w === undefined ? INITIAL : w.zero ? 'zero' : w.n);
    const out = new Set<number | 'zero'>([value(guaranteed)]);
    for (const w of touching) {
      const undecided = w.completedAt === undefined || w.failed;
      if (undecided || guaranteed === undefined || w.completedAt! > guaranteed.completedAt!) out.add(value(w));
    }
    return out;
  }

  /** The newest guaranteed write's source: all a cautious disk (no write-back) has made durable. */
  durable(sector: number): number | 'zero' {
    return [...this.acceptable(sector)][0] as number | 'zero';
  }

  /** What a read returns: the newest completed write (§1.6). */
  newest(sector: number): number | 'zero' {
    const w = this.writes
      .filter((x) => sector >= x.sector && sector < x.sector + x.count && x.completedAt !== undefined && !x.failed)
      .sort((a, b) => b.completedAt! - a.completedAt!)[0];
    return w === undefined ? INITIAL : w.zero ? 'zero' : w.n;
  }
}

type Op =
  | { kind: 'write'; block: number; blocks: number; fua: boolean; zero: boolean }
  | { kind: 'flush' };

const opArb = (blocks: number): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        block: fc.nat(blocks - 1),
        blocks: fc.integer({ min: 1, max: 4 }),
        fua: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
        zero: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
      }),
    },
    { weight: 2, arbitrary: fc.constant({ kind: 'flush' as const }) },
  );

const scenarioArb = fc.record({
  lbs: fc.constantFrom(512, 4096),
  seed: fc.nat(),
  batches: fc.array(
    fc.record({ ops: fc.array(opArb(8), { minLength: 1, maxLength: 6 }), steps: fc.nat(8), writeBack: fc.boolean() }),
    { minLength: 1, maxLength: 6 },
  ),
  failWrite: fc.option(fc.integer({ min: 1, max: 12 })),
  failFlush: fc.option(fc.integer({ min: 1, max: 4 })),
  crashes: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
});

/** A random crash selection: each volatile write kept, dropped or torn; each write in flight torn or not. */
function randomSelection(rng: Rng, volatile: readonly PendingWrite[], inflight: readonly PendingWrite[], unit: number) {
  const pick = (w: PendingWrite): KeptWrite | undefined => {
    const r = rng.below(3);
    if (r === 0) return undefined;
    if (r === 1) return { id: w.req.id };
    const ranges = [];
    for (let s = w.req.sector; s < w.req.sector + w.req.count; s += unit) if (rng.chance(0.5)) ranges.push({ sector: s, count: unit });
    return { id: w.req.id, ranges };
  };
  const kept = (list: readonly PendingWrite[]) => list.map(pick).filter((k): k is KeptWrite => k !== undefined);
  return { volatile: kept(volatile), inflight: kept(inflight) };
}

test('every crash image satisfies ARCHITECTURE §1 against an independent model', async () => {
  await fc.assert(
    fc.asyncProperty(scenarioArb, async (sc) => {
      const unit = sc.lbs / SECTOR_SIZE;
      const sectors = 8 * unit + 4 * unit; // room for the 4-block writes at block 7
      const initial = new SparseImage(sectors);
      const init = Buffer.alloc(sectors * SECTOR_SIZE);
      stamp(init, INITIAL, 0, sectors);
      initial.write(0, init);
      const scheduler = new Scheduler({ seed: sc.seed, auto: false });
      const disk = new SimulatedDisk({ name: 'd', image: initial, scheduler, limits: { logicalBlockSize: sc.lbs } });
      if (sc.failWrite !== null) disk.addFault({ op: 'write', action: 'fail', nth: sc.failWrite });
      if (sc.failFlush !== null) disk.addFault({ op: 'flush', action: 'fail', nth: sc.failFlush });
      const model = new Model();
      const rng = new Rng(sc.seed);
      const pending: Promise<unknown>[] = [];

      for (const batch of sc.batches) {
        for (const op of batch.ops) {
          model.time++;
          if (op.kind === 'flush') {
            const f: ModelFlush = { submittedAt: model.time };
            model.flushes.push(f);
            pending.push(disk.flush().then(() => (f.completedAt = ++model.time), () => undefined));
            continue;
          }
          const w: ModelWrite = { n: model.writes.length, sector: op.block * unit, count: op.blocks * unit, zero: op.zero, fua: op.fua };
          model.writes.push(w);
          const done = () => (w.completedAt = ++model.time);
          const failed = () => {
            w.failed = true;
            w.completedAt = ++model.time;
          };
          if (op.zero) {
            pending.push(disk.writeZeroes(w.sector, w.count, { fua: op.fua }).then(done, failed));
          } else {
            const data = Buffer.alloc(w.count * SECTOR_SIZE);
            stamp(data, w.n, w.sector, w.count);
            pending.push(disk.write(w.sector, data, { fua: op.fua }).then(done, failed));
          }
        }
        for (let i = 0; i < batch.steps && scheduler.step(); i++) await settle();
        if (batch.writeBack) disk.writeBackRandom(0.5, rng);
      }

      const check = (img: SparseImage, what: string) => {
        const buf = Buffer.alloc(sectors * SECTOR_SIZE);
        img.read(0, buf);
        for (let s = 0; s < sectors; s++) {
          const src = sourceOf(buf, s);
          assert.notEqual(src, 'garbage', `${what}: sector ${s} holds bytes no write produced`);
          const ok = model.acceptable(s);
          assert.ok(ok.has(src as number | 'zero'), `${what}: sector ${s} holds ${String(src)}, acceptable ${[...ok].join(',')}`);
        }
        // One atomic unit is wholly one write's (or the image's) content.
        for (let u = 0; u < sectors; u += unit) {
          const first = sourceOf(buf, u);
          for (let s = u + 1; s < u + unit; s++) assert.equal(sourceOf(buf, s), first, `${what}: atomic unit at ${u} is torn`);
        }
      };

      for (const c of sc.crashes) {
        const sel = randomSelection(new Rng(c), disk.volatileWrites(), disk.inflightWrites(), unit);
        check(disk.crash(sel), `crash ${JSON.stringify(sel)}`);
      }
      const none = disk.crash({ volatile: 'none' });
      check(none, 'crash keeping nothing volatile');
      if (!sc.batches.some((b) => b.writeBack)) {
        // Without spontaneous write-back the disk persists exactly what FUA and flushes promised, no more.
        const buf = Buffer.alloc(sectors * SECTOR_SIZE);
        none.read(0, buf);
        for (let s = 0; s < sectors; s++) assert.equal(sourceOf(buf, s), model.durable(s), `durable image: sector ${s}`);
      }
      const all = disk.crash({ volatile: 'all' });
      check(all, 'crash keeping every volatile write');
      // Keeping every volatile write and nothing in flight is exactly what reads see (§1.6).
      const allBuf = Buffer.alloc(sectors * SECTOR_SIZE);
      all.read(0, allBuf);
      for (let s = 0; s < sectors; s++) {
        assert.equal(sourceOf(allBuf, s), model.newest(s), `crash keeping all volatile writes: sector ${s}`);
      }
      await scheduler.runUntilIdle();
      await Promise.allSettled(pending);
      const view = Buffer.alloc(sectors * SECTOR_SIZE);
      await scheduler.drive(disk.read(0, view));
      for (let s = 0; s < sectors; s++) assert.equal(sourceOf(view, s), model.newest(s), `read after the run: sector ${s}`);
    }),
    { numRuns: 300 },
  );
});
