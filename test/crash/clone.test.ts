/**
 * Crash tests of clone (CRASH-TESTING §2–§3): a clone device over three
 * SimulatedDisks (metadata, destination, source) crashing independently,
 * every state family, the clone checker of §2.4, the I/O-error sweep, and
 * the seed bug — committing hydrated bits before the destination flush
 * (Linux before 8b3fd1f53af3) — kept as a broken variant the explorer must
 * find.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { type BlockDevice, SECTOR_SIZE } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { type Budget, type CheckContext, type CrashTarget, explore, formatFailure, recordRun } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { commitPointLint } from '../../src/crash/lint.ts';
import { Recording } from '../../src/crash/recording.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { ioErrorSweep } from '../../src/crash/sweep.ts';
import { type TopOp, randomWorkload } from '../../src/crash/workload.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { Clock } from '../../src/mapper/target.ts';
import { Rng } from '../../src/sim/rng.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';
import { type CloneTestOptions, makeCloneTarget } from '../../src/targets/clone/clone.ts';
import { CloneMetadata } from '../../src/targets/clone/metadata.ts';
import { sourceData } from '../targets/clone-support.ts';

const REGION = 16;
const SECTORS = 256; // 16 regions
const META_SECTORS = 1024; // 128 metadata blocks

interface Variant {
  /** Table arguments from the region size on. */
  args: string;
  test?: CloneTestOptions;
  /**
   * List the destination first: the I/O-error sweep fails requests disk by
   * disk in list order, so within a budget this sweeps copies and
   * destination flushes before metadata writes.
   */
  destFirst?: boolean;
}

function cloneCrashTarget({ args, test: testOpts = {}, destFirst = false }: Variant): CrashTarget {
  const line = `0 ${SECTORS} clone /dev/meta /dev/dest /dev/source ${args}`;
  const meta = { name: 'meta', sectors: META_SECTORS };
  const dest = { name: 'dest', sectors: SECTORS };
  const source = { name: 'source', sectors: SECTORS, initial: () => sourceImage() };
  /** Disks in [meta, dest, source] order, whatever order they are listed in. */
  const canonical = <T>(d: readonly T[]): T[] => (destFirst ? [d[1]!, d[0]!, d[2]!] : [...d]);
  return {
    name: testOpts.commitBeforeDestinationFlush ? 'clone-commit-before-destination-flush' : 'clone',
    disks: destFirst ? [dest, meta, source] : [meta, dest, source],
    open: (disks, clock) => openClone(canonical(disks), clock, line, testOpts),
    checkers: [(c) => hydratedRegionsHoldSourceOrNewer(canonical(c.disks), c)],
  };
}

function sourceImage(): SparseImage {
  const img = new SparseImage(SECTORS);
  img.write(0, sourceData(0, SECTORS));
  return img;
}

/** The stack as at power-on: a registry over the disks, the clone table created (and so resumed). */
async function openClone(disks: BlockDevice[], clock: Clock, line: string, testOpts: CloneTestOptions): Promise<BlockDevice> {
  const targets = new TargetRegistry();
  targets.register(makeCloneTarget(testOpts));
  const registry = new DeviceRegistry({
    targets, clock,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached`);
    },
  });
  registry.attach('/dev/meta', disks[0]!);
  registry.attach('/dev/dest', disks[1]!);
  registry.attach('/dev/source', disks[2]!);
  await registry.create('clone', { table: [line] });
  const handle = registry.open('clone');
  // Closing the top device is a clean shutdown: flush, suspend (which commits), destroy.
  return Object.assign(Object.create(handle) as BlockDevice, {
    close: async () => {
      await handle.close();
      await registry.shutdown();
    },
  });
}

/**
 * CRASH-TESTING §2.4, clone: every region the committed metadata marks
 * hydrated holds, on the destination, the source's data or data a top-level
 * write or discard put there.
 */
async function hydratedRegionsHoldSourceOrNewer(disks: readonly BlockDevice[], c: CheckContext): Promise<string | undefined> {
  const [meta, dest, source] = disks;
  const md = await CloneMetadata.open(meta!, { regionSize: REGION, targetSize: SECTORS, readOnly: true });
  try {
    const top = c.recording.devices.findIndex((d) => d.initial === undefined);
    const topWrites = c.recording.events.filter((e) => e.type === 'submit' && e.dev === top && e.seq < c.cut && e.op !== 'flush');
    const d = Buffer.alloc(REGION * SECTOR_SIZE);
    const s = Buffer.alloc(REGION * SECTOR_SIZE);
    for (let r = 0; r < md.nrRegions; r++) {
      if (!md.isHydrated(r)) continue;
      await dest!.read(r * REGION, d);
      await source!.read(r * REGION, s);
      for (let i = 0; i < REGION; i++) {
        const sector = r * REGION + i;
        const got = d.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE);
        if (got.equals(s.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE))) continue;
        const newer = topWrites.some((w) => w.type === 'submit' && sector >= w.sector && sector < w.sector + w.count &&
          (w.data ? got.equals(w.data.subarray((sector - w.sector) * SECTOR_SIZE, (sector - w.sector + 1) * SECTOR_SIZE)) : got.every((b) => b === 0)));
        if (!newer) return `region ${r} is marked hydrated but sector ${sector} on the destination holds neither the source's data nor a newer write`;
      }
    }
    return undefined;
  } finally {
    await md.close();
  }
}

const workload = (seed: number, length = 24): TopOp[] =>
  randomWorkload(new Rng(seed), { sectors: SECTORS, blockSectors: 8, length, discard: true });

const BUDGET: Budget = { states: 60, ms: 2000 };
const HYDRATING: Variant = { args: `${REGION} 0 4 hydration_threshold 2 hydration_batch_size 2` };
const NO_HYDRATION: Variant = { args: `${REGION} 1 no_hydration` };
const SEED_BUG: Variant = { ...HYDRATING, test: { commitBeforeDestinationFlush: true } };
const ALL_FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];

test('clone passes every crash family and the clone checker, hydrating in the background', async () => {
  const r = await explore(cloneCrashTarget(HYDRATING), { seed: 1, workload: workload(1), defaultBudget: BUDGET, lint: false });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  for (const f of ALL_FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
});

test('clone without background hydration passes every family and the commit-point lint', async () => {
  const r = await explore(cloneCrashTarget(NO_HYDRATION), { seed: 3, workload: workload(3), defaultBudget: BUDGET, concurrency: 1 });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  assert.deepEqual(r.lint, []);
});

test('the explorer finds the seed bug: hydrated bits committed before the destination flush (R1)', async () => {
  for (const seed of [1, 2, 3]) {
    const r = await explore(cloneCrashTarget(SEED_BUG), {
      seed, workload: workload(seed), families: ['persistence', 'subsets'], defaultBudget: BUDGET, lint: false, minimise: false,
    });
    assert.ok(r.failure, `seed ${seed}: not found in ${JSON.stringify(r.checked)} states`);
    assert.match(r.failure.message, /data no write put there|neither the source's data nor a newer write|flushed data was lost/);
  }
  // The commit-point lint flags it without enumerating states.
  const run = await recordRun(cloneCrashTarget({ ...NO_HYDRATION, test: SEED_BUG.test }), 1, workload(1), 1);
  const violations = commitPointLint(run.recording);
  assert.ok(violations.length > 0);
  assert.match(violations[0]!.message, /\(data\) on dest.* had to be durable before .*\(superblock\) on meta/);
});

test('the I/O-error sweep: failed writes and flushes on any disk keep the last commit', async () => {
  const r = await ioErrorSweep(cloneCrashTarget(NO_HYDRATION), { seed: 4, workload: workload(4, 14), concurrency: 1, statesPerRun: 10, maxRuns: 80, ms: 9000 });
  assert.equal(r.failure, undefined, r.failure && `${r.failure.fault}: ${formatFailure(r.failure)}`);
  assert.ok(r.runs >= 20, `only ${r.runs} faulted runs`);
  const hydrating = await ioErrorSweep(cloneCrashTarget({ ...HYDRATING, destFirst: true }), {
    seed: 5, workload: workload(5, 10), statesPerRun: 10, maxRuns: 40, ms: 6000,
  });
  assert.ok(hydrating.runs >= 10, `only ${hydrating.runs} faulted runs`);
  assert.equal(hydrating.failure, undefined, hydrating.failure && `${hydrating.failure.fault}: ${formatFailure(hydrating.failure)}`);
});

test('the clone checker flags a hydrated region whose destination holds neither the source nor a write', async () => {
  const meta = new MemoryDevice(META_SECTORS);
  const dest = new MemoryDevice(SECTORS);
  const source = new MemoryDevice(SECTORS);
  await source.write(0, sourceData(0, SECTORS));
  const top = await openClone([meta, dest, source], { now: () => 0, sleep: () => new Promise(() => undefined) }, `0 ${SECTORS} clone /dev/meta /dev/dest /dev/source ${NO_HYDRATION.args}`, {});
  await top.write(REGION * 3, sourceData(REGION * 3, 1));
  await top.flush();
  const check = () => hydratedRegionsHoldSourceOrNewer([meta, dest, source], { top, disks: [], cut: 0, recording: new Recording() });
  assert.equal(await check(), undefined);
  await dest.write(REGION * 3 + 5, Buffer.alloc(SECTOR_SIZE, 0xee));
  assert.match((await check()) ?? '', /^region 3 is marked hydrated but sector 53 on the destination holds neither/);
  await top.close();
});
