/**
 * Crash safety of thin-pool + thin (CRASH-TESTING §2, §3): a pool over a
 * metadata disk and a data disk that start full of stale bytes, a thin
 * volume (or a snapshot of a written volume) on top, random workloads, and
 * every crash-state family — meta and data disks crashing independently.
 * Each recovered state must hold every acknowledged-and-flushed write,
 * never show a byte nobody wrote to that volume, and pass the metadata
 * checks (§2.4: dmkit's thin check on every state, Debian's thin_check on
 * a sample). The I/O-error sweep fails each request of a run in turn.
 * The broken variant that commits a mapping before flushing its data (the
 * bug "dm thin: Flush data device before committing metadata" fixed) must
 * be found.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { SECTOR_SIZE, type BlockDevice } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { type Budget, type Checker, type CrashTarget, explore, formatFailure, recordRun } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { commitPointLint } from '../../src/crash/lint.ts';
import { ioErrorSweep } from '../../src/crash/sweep.ts';
import { randomWorkload } from '../../src/crash/workload.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { Clock } from '../../src/mapper/target.ts';
import { Rng } from '../../src/sim/rng.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';
import { makeThinPoolTarget } from '../../src/targets/thin/pool.ts';
import { thinTarget } from '../../src/targets/thin/thin.ts';
import { checkThinMetadata } from '../../src/tools/thin/check.ts';
import { run } from '../nbd/helpers.ts';

const DBS = 128;
const DATA_BLOCKS = 48;
const VOLUME_SECTORS = 16 * DBS;
const META_SECTORS = 1024;

interface ThinCrashOptions {
  broken?: boolean;
  /** Expose a snapshot of a written volume instead of a fresh volume (copy-on-write paths). */
  snapshot?: boolean;
  /** Data blocks of the pool (default 48, more than the volume needs). */
  dataBlocks?: number;
  /** Also run Debian's thin_check on a sample of the states. */
  debianCheck?: boolean;
}

/** What the data disk held before: another tenant's bytes, which must never show. */
function staleImage(sectors: number): SparseImage {
  const img = new SparseImage(sectors);
  img.write(0, Buffer.alloc(sectors * SECTOR_SIZE, 0xab));
  return img;
}

function originContent(): Buffer {
  const buf = Buffer.alloc(VOLUME_SECTORS * SECTOR_SIZE);
  for (let s = 0; s < VOLUME_SECTORS; s += 3) buf.writeUInt32LE(0x5eed0000 + s, s * SECTOR_SIZE);
  return buf;
}

/**
 * Power-on: build the pool, and make sure the volume exists, creating it
 * where a crash came before its create_thin (or the snapshot's setup) was
 * committed. Recovery = reopening the metadata at its last commit.
 */
async function openStack(data: BlockDevice, meta: BlockDevice, clock: Clock, opts: ThinCrashOptions): Promise<BlockDevice> {
  const targets = new TargetRegistry();
  targets.register(opts.broken ? makeThinPoolTarget({ broken: 'mapping-before-data-flush' }) : makeThinPoolTarget());
  targets.register(thinTarget);
  const registry = new DeviceRegistry({
    targets, clock,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached`);
    },
  });
  registry.attach('/data', data);
  registry.attach('/meta', meta);
  await registry.create('pool', { table: [`0 ${(opts.dataBlocks ?? DATA_BLOCKS) * DBS} thin-pool /meta /data ${DBS} 0`] });
  const ensure = (words: string[]) => registry.message('pool', 0, words).catch((err) => {
    if (!(err instanceof IoError && err.code === 'EEXIST')) throw err;
  });
  await ensure(['create_thin', '1']);
  if (!opts.snapshot) {
    await registry.create('vol', { table: [`0 ${VOLUME_SECTORS} thin /dev/mapper/pool 1`] });
    return registry.open('vol');
  }
  const volume = () => registry.create('vol', { table: [`0 ${VOLUME_SECTORS} thin /dev/mapper/pool 2`] });
  const snapshotMissing = await volume().then(() => false, (err) => {
    if (err instanceof IoError && err.code === 'ENODATA') return true;
    throw err;
  });
  if (snapshotMissing) {
    // Idempotent set-up: write the origin (again), flush, snapshot it. The snapshot exists only once the origin's data is committed.
    await registry.create('origin', { table: [`0 ${VOLUME_SECTORS} thin /dev/mapper/pool 1`] });
    const origin = registry.open('origin');
    await origin.write(0, originContent());
    await origin.flush();
    await origin.close();
    await registry.remove('origin');
    await registry.message('pool', 0, ['create_snap', '2', '1']);
    await volume();
  }
  return registry.open('vol');
}

/** Debian's thin_check on every 8th recovered state's metadata (a process per state would dominate the run). */
function debianThinCheck(): Checker {
  let calls = 0;
  return async ({ disks }) => {
    if (calls++ % 8 !== 0) return undefined;
    const image = Buffer.alloc(META_SECTORS * SECTOR_SIZE);
    await disks[1]!.read(0, image);
    const dir = await mkdtemp(join(tmpdir(), 'dmkit-thin-crash-'));
    try {
      await writeFile(join(dir, 'meta.img'), image);
      const r = await run('thin_check', [join(dir, 'meta.img')]);
      return r.code === 0 ? undefined : `thin_check: ${r.stderr.trim().split('\n').pop()}`;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
}

function thinCrashTarget(opts: ThinCrashOptions = {}): CrashTarget {
  return {
    name: `thin${opts.snapshot ? '-snapshot' : ''}${opts.dataBlocks ? `-${opts.dataBlocks}-blocks` : ''}${opts.broken ? '-mapping-before-data-flush' : ''}`,
    disks: [
      { name: 'data', sectors: DATA_BLOCKS * DBS, initial: () => staleImage(DATA_BLOCKS * DBS) },
      { name: 'meta', sectors: META_SECTORS },
    ],
    open: ([data, meta], clock) => openStack(data!, meta!, clock, opts),
    checkers: [
      async ({ disks }) => {
        const report = await checkThinMetadata(disks[1]!);
        const problems = [...report.errors, ...report.warnings];
        return problems.length ? `thin metadata check: ${problems[0]}` : undefined;
      },
      ...(opts.debianCheck ? [debianThinCheck()] : []),
    ],
  };
}

const BUDGET: Budget = { states: 40, ms: 2500 };
const FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];

const workload = (seed: number, length = 24) => randomWorkload(new Rng(seed), {
  sectors: VOLUME_SECTORS, blockSectors: 8, length, maxBlocks: 24, discard: true, writeZeroes: true,
});

test('thin volume: every crash-state family recovers to a state the oracle accepts', async () => {
  for (const seed of [1, 2]) {
    const r = await explore(thinCrashTarget({ debianCheck: true }), { seed, workload: workload(seed), families: FAMILIES, defaultBudget: BUDGET, lint: false });
    assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
    for (const f of FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
  }
});

test('snapshot of a written volume: copy-on-write survives every crash-state family', async () => {
  const r = await explore(thinCrashTarget({ snapshot: true }), { seed: 3, workload: workload(3), families: FAMILIES, defaultBudget: BUDGET, lint: false });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  for (const f of FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
});

test('out of data space: writes that wait out no_space_timeout and fail never disturb what was acknowledged', async () => {
  const target = thinCrashTarget({ dataBlocks: 5 });
  const w = workload(4, 30);
  const run = await recordRun(target, 4, w);
  const failed = run.recording.events.filter((e) => e.type === 'complete' && e.dev === run.model.top && !e.ok).length;
  assert.ok(failed > 0, 'the pool ran out of space: some top requests failed');
  const r = await explore(target, { seed: 4, workload: w, families: ['persistence', 'single', 'per-device'], defaultBudget: BUDGET, lint: false });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
});

test('the commit-point lint finds no commit before its data flush (one request at a time)', async () => {
  const fixed = await recordRun(thinCrashTarget(), 1, workload(1), 1);
  assert.deepEqual(commitPointLint(fixed.recording).map((v) => v.message), []);
  const broken = await recordRun(thinCrashTarget({ broken: true }), 1, workload(1), 1);
  assert.ok(commitPointLint(broken.recording).length > 0, 'the lint misses the broken commit');
});

test('the explorer finds the broken variant that commits a mapping before flushing its data (R1)', async () => {
  for (const seed of [1, 2]) {
    const r = await explore(thinCrashTarget({ broken: true }), {
      seed, workload: workload(seed), families: ['single', 'per-device'], defaultBudget: { states: 200, ms: 8000 }, lint: false, minimise: false,
    });
    assert.ok(r.failure, `seed ${seed}: not found in ${JSON.stringify(r.checked)}`);
    assert.equal(r.failure.check, 'oracle');
    assert.match(r.failure.message, /data no write put there|acknowledged, flushed data was lost/);
  }
});

test('I/O-error sweep: every write and flush of both disks failed in turn never loses acknowledged data', async () => {
  const r = await ioErrorSweep(thinCrashTarget(), { seed: 5, workload: workload(5, 16), statesPerRun: 6, maxRuns: 1000, ms: 120_000 });
  assert.equal(r.failure, undefined, r.failure && `${r.failure.fault}: ${formatFailure(r.failure)}`);
  const faults = r.counts.reduce((n, c) => n + c.write + c.flush, 0);
  assert.equal(r.runs, faults, 'every write and flush of both disks was failed once');
  assert.ok(r.runs - r.openFailures >= 30, `only ${r.runs - r.openFailures} faults hit the workload rather than the set-up`);
  assert.ok(r.counts[1]!.write > 10 && r.counts[1]!.flush > 2, 'the run commits metadata');
});
