/**
 * Crash safety of thin-pool + thin (CRASH-TESTING §2, §3): a pool over a
 * metadata disk and a data disk that start full of stale bytes, a thin
 * volume (or a snapshot of a written volume) on top, random workloads, and
 * every crash-state family — meta and data disks crashing independently.
 * Each recovered state must hold every acknowledged-and-flushed write,
 * never show a byte nobody wrote to that volume, and pass the metadata
 * checks (§2.4: dmkit's thin check and the mapping checker on every state,
 * Debian's thin_check on a sample). The mapping checker must flag metadata
 * whose mappings the workload does not explain. The I/O-error sweep fails
 * each request of a run in turn. The broken variant that commits a mapping
 * before flushing its data (the bug "dm thin: Flush data device before
 * committing metadata" fixed) must be found.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, test } from 'node:test';

import { type BlockDevice, SECTOR_SIZE } from '../../src/block/device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { type Budget, type Checker, explore, formatFailure, recordRun } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { commitPointLint } from '../../src/crash/lint.ts';
import { Recording } from '../../src/crash/recording.ts';
import { ioErrorSweep } from '../../src/crash/sweep.ts';
import { workloadFor } from '../../src/crash/targets/index.ts';
import { THIN_BLOCK_SECTORS, THIN_META_DISK, type ThinCrashOptions, thinCrashTarget, thinMappings } from '../../src/crash/targets/thin.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';
import { run } from '../nbd/helpers.ts';

/** Debian's thin_check on every 8th recovered state's metadata (a process per state would dominate the run). */
function debianThinCheck(): Checker {
  let calls = 0;
  return async ({ disks }) => {
    if (calls++ % 8 !== 0) return undefined;
    const image = await contentOf(disks[THIN_META_DISK]!);
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

async function contentOf(dev: BlockDevice): Promise<Buffer> {
  const buf = Buffer.alloc(dev.sectors * SECTOR_SIZE);
  await dev.read(0, buf);
  return buf;
}

const BUDGET: Budget = { states: 40, ms: 2500 };
const FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];
const BROKEN: ThinCrashOptions = { broken: 'mapping-before-data-flush' };

test('thin volume: every crash-state family recovers to a state the oracle and the checkers accept', async () => {
  const target = thinCrashTarget({ checkers: [debianThinCheck()] });
  for (const seed of [1, 2]) {
    const r = await explore(target, { seed, workload: await workloadFor(target, seed, 24), families: FAMILIES, defaultBudget: BUDGET, lint: false });
    assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
    for (const f of FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
  }
});

test('snapshot of a written volume: copy-on-write survives every crash-state family', async () => {
  const target = thinCrashTarget({ snapshot: true });
  const r = await explore(target, { seed: 3, workload: await workloadFor(target, 3, 24), families: FAMILIES, defaultBudget: BUDGET, lint: false });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  for (const f of FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
});

test('out of data space: writes that wait out no_space_timeout and fail never disturb what was acknowledged', async () => {
  const target = thinCrashTarget({ dataBlocks: 5 });
  const w = await workloadFor(target, 4, 30);
  const run = await recordRun(target, 4, w);
  const failed = run.recording.events.filter((e) => e.type === 'complete' && e.dev === run.model.top && !e.ok).length;
  assert.ok(failed > 0, 'the pool ran out of space: some top requests failed');
  const r = await explore(target, { seed: 4, workload: w, families: ['persistence', 'single', 'per-device'], defaultBudget: BUDGET, lint: false });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
});

test('the commit-point lint finds no commit before its data flush (one request at a time)', async () => {
  const w = await workloadFor(thinCrashTarget(), 1, 24);
  const fixed = await recordRun(thinCrashTarget(), 1, w, 1);
  assert.deepEqual(commitPointLint(fixed.recording).map((v) => v.message), []);
  const broken = await recordRun(thinCrashTarget(BROKEN), 1, w, 1);
  assert.ok(commitPointLint(broken.recording).length > 0, 'the lint misses the broken commit');
});

test('the explorer finds the broken variant that commits a mapping before flushing its data (R1)', async () => {
  const target = thinCrashTarget(BROKEN);
  for (const seed of [1, 2]) {
    const r = await explore(target, {
      seed, workload: await workloadFor(target, seed, 24), families: ['single', 'per-device'], defaultBudget: { states: 200, ms: 8000 }, lint: false, minimise: false,
    });
    assert.ok(r.failure, `seed ${seed}: not found in ${JSON.stringify(r.checked)}`);
    assert.equal(r.failure.check, 'oracle');
    assert.match(r.failure.message, /data no write put there|acknowledged, flushed data was lost/);
  }
});

test('I/O-error sweep: every write and flush of both disks failed in turn never loses acknowledged data', async () => {
  const target = thinCrashTarget();
  const r = await ioErrorSweep(target, { seed: 5, workload: await workloadFor(target, 5, 16), statesPerRun: 6, maxRuns: 1000, ms: 120_000 });
  assert.equal(r.failure, undefined, r.failure && `${r.failure.fault}: ${formatFailure(r.failure)}`);
  const faults = r.counts.reduce((n, c) => n + c.write + c.flush, 0);
  assert.equal(r.runs, faults, 'every write and flush of both disks was failed once');
  assert.ok(r.runs - r.openFailures >= 30, `only ${r.runs - r.openFailures} faults hit the workload rather than the set-up`);
  assert.ok(r.counts[THIN_META_DISK]!.write > 10 && r.counts[THIN_META_DISK]!.flush > 2, 'the run commits metadata');
});

// ---- the mapping checker on hand-made metadata ------------------------------------------

/** A clock whose timers never fire: nothing happens in the background of these stacks. */
const STILL = { now: () => 0, sleep: () => new Promise<void>(() => undefined) };

/** A thin stack on memory disks, its top device recorded as the explorer records a run. */
async function recordedStack(opts: ThinCrashOptions) {
  const target = thinCrashTarget(opts);
  const recording = new Recording();
  const disks = target.disks.map((d) => recording.record(new MemoryDevice(d.sectors, { name: d.name }), new SparseImage(d.sectors)));
  const top = recording.record(await target.open(disks, STILL));
  return { top, recording, disks };
}

type Stack = Awaited<ReturnType<typeof recordedStack>>;

/**
 * Checks copies of the disks as the explorer checks the state at the end of
 * the recording, after `change` rewrote the metadata through ThinMetadata
 * (committed) and the data disk.
 */
async function checkCopy(s: Stack, opts: { snapshot: boolean }, change?: (md: ThinMetadata, data: BlockDevice) => Promise<void>) {
  const [data, meta] = await Promise.all(s.disks.map(async (d) => {
    const copy = new MemoryDevice(d.sectors, { name: d.name });
    await copy.write(0, await contentOf(d));
    return copy;
  }));
  if (change) {
    const md = await ThinMetadata.open(meta!);
    try {
      await change(md, data!);
      await md.commit();
    } finally {
      await md.close();
    }
  }
  return thinMappings(data!, meta!, { recording: s.recording, cut: s.recording.events.length }, opts);
}

const at = (vblock: number, offset = 8) => vblock * THIN_BLOCK_SECTORS + offset;

describe('the thin mapping checker', () => {
  it('flags a mapping no write explains, and a flushed zero write whose mapping is gone (which reads the same)', async () => {
    const s = await recordedStack({});
    await s.top.write(at(2), Buffer.alloc(8 * SECTOR_SIZE, 0x11));
    await s.top.writeZeroes(at(7), 8);
    await s.top.flush();
    const fresh = { snapshot: false };
    assert.equal(await checkCopy(s, fresh), undefined);
    assert.match(await checkCopy(s, fresh, async (md) => md.insertMapping(1, 5, await md.allocDataBlock())) ?? '',
      /^thin volume block 5 has a data block of its own \(\d+, time 0\), but no top-level write before the crash touched it$/);
    assert.match(await checkCopy(s, fresh, async (md) => void (await md.removeMapping(1, 7))) ?? '',
      /^thin volume block 7 is unmapped, but top write #2 \(904\+8\) to it was acknowledged and flushed/);
    assert.match(await checkCopy(s, fresh, async (md) => md.createThin(9)) ?? '', /^the pool holds thin devices \[1, 9\]; the stack created \[1\]$/);
    // The same data block mapped twice, though its reference count says once.
    assert.match(await checkCopy(s, fresh, async (md) => md.insertMapping(1, 3, (await md.lookupMapping(1, 2))!.block)) ?? '',
      /^data block \d+ is mapped by device 1 block 2 and by device 1 block 3$/);
    await s.top.close();
  });

  it('flags a snapshot origin whose mappings or data changed, and a snapshot that did not break sharing', async () => {
    const s = await recordedStack({ snapshot: true });
    await s.top.write(at(3), Buffer.alloc(8 * SECTOR_SIZE, 0x33));
    await s.top.discard(at(9, 0), THIN_BLOCK_SECTORS);
    await s.top.flush();
    const snapshot = { snapshot: true };
    assert.equal(await checkCopy(s, snapshot), undefined);
    assert.match(await checkCopy(s, snapshot, async (md) => md.insertMapping(1, 4, await md.allocDataBlock())) ?? '',
      /^origin block 4 was remapped \(to data block \d+, time 1\) after its snapshot \(time 1\)$/);
    assert.match(await checkCopy(s, snapshot, async (md, data) => {
      await data.write((await md.lookupMapping(1, 3))!.block * THIN_BLOCK_SECTORS, Buffer.alloc(SECTOR_SIZE, 0x33));
    }) ?? '', /^origin block 3 \(data block \d+\) no longer holds the origin's data: a write to the snapshot reached a shared block$/);
    assert.match(await checkCopy(s, snapshot, async (md) => md.insertMapping(2, 3, (await md.lookupMapping(1, 3))!.block)) ?? '',
      /^data block \d+ is mapped by device 1 block 3 and by device 2 block 3$/);
    assert.match(await checkCopy(s, snapshot, async (md) => void (await md.removeMapping(2, 5))) ?? '',
      /^snapshot block 5 lost the origin's block it shared, though no discard or write-zeroes covered it whole$/);
    assert.match(await checkCopy(s, snapshot, async (md) => void (await md.removeMapping(2, 3))) ?? '',
      /^snapshot block 3 is unmapped, but top write #1 \(392\+8\) to it was acknowledged and flushed/);
    await s.top.close();
  });
});
