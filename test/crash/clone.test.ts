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

import { SECTOR_SIZE } from '../../src/block/device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { type Budget, explore, formatFailure, recordRun } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { commitPointLint } from '../../src/crash/lint.ts';
import { Recording } from '../../src/crash/recording.ts';
import { ioErrorSweep } from '../../src/crash/sweep.ts';
import { CLONE_REGION, type CloneCrashOptions, cloneCrashTarget, hydratedRegionsHoldSourceOrNewer } from '../../src/crash/targets/clone.ts';
import { workloadFor } from '../../src/crash/targets/index.ts';

const workload = (opts: CloneCrashOptions, seed: number, length = 24) => workloadFor(cloneCrashTarget(opts), seed, length);

const BUDGET: Budget = { states: 60, ms: 2000 };
const NO_HYDRATION: CloneCrashOptions = { hydration: false };
const SEED_BUG: CloneCrashOptions = { commitBeforeDestinationFlush: true };
const ALL_FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];

test('clone passes every crash family and the clone checker, hydrating in the background', async () => {
  const r = await explore(cloneCrashTarget(), { seed: 1, workload: await workload({}, 1), defaultBudget: BUDGET, lint: false });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  for (const f of ALL_FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
});

test('clone without background hydration passes every family and the commit-point lint', async () => {
  const r = await explore(cloneCrashTarget(NO_HYDRATION), { seed: 3, workload: await workload(NO_HYDRATION, 3), defaultBudget: BUDGET, concurrency: 1 });
  assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  assert.deepEqual(r.lint, []);
});

test('the explorer finds the seed bug: hydrated bits committed before the destination flush (R1)', async () => {
  for (const seed of [1, 2, 3]) {
    const r = await explore(cloneCrashTarget(SEED_BUG), {
      seed, workload: await workload(SEED_BUG, seed), families: ['persistence', 'subsets'], defaultBudget: BUDGET, lint: false, minimise: false,
    });
    assert.ok(r.failure, `seed ${seed}: not found in ${JSON.stringify(r.checked)} states`);
    assert.match(r.failure.message, /data no write put there|neither the source's data nor a newer write|flushed data was lost/);
  }
  // The commit-point lint flags it without enumerating states.
  const lintOnly = { ...NO_HYDRATION, ...SEED_BUG };
  const run = await recordRun(cloneCrashTarget(lintOnly), 1, await workload(lintOnly, 1), 1);
  const violations = commitPointLint(run.recording);
  assert.ok(violations.length > 0);
  assert.match(violations[0]!.message, /\(data\) on dest.* had to be durable before .*\(superblock\) on meta/);
});

test('the I/O-error sweep: failed writes and flushes on any disk keep the last commit', async () => {
  const r = await ioErrorSweep(cloneCrashTarget(NO_HYDRATION), {
    seed: 4, workload: await workload(NO_HYDRATION, 4, 14), concurrency: 1, statesPerRun: 10, maxRuns: 80, ms: 9000,
  });
  assert.equal(r.failure, undefined, r.failure && `${r.failure.fault}: ${formatFailure(r.failure)}`);
  assert.ok(r.runs >= 20, `only ${r.runs} faulted runs`);
  const destFirst = { destFirst: true };
  const hydrating = await ioErrorSweep(cloneCrashTarget(destFirst), {
    seed: 5, workload: await workload(destFirst, 5, 10), statesPerRun: 10, maxRuns: 40, ms: 6000,
  });
  assert.ok(hydrating.runs >= 10, `only ${hydrating.runs} faulted runs`);
  assert.equal(hydrating.failure, undefined, hydrating.failure && `${hydrating.failure.fault}: ${formatFailure(hydrating.failure)}`);
});

test('the clone checker flags a hydrated region whose destination holds neither the source nor a write', async () => {
  const target = cloneCrashTarget(NO_HYDRATION);
  const [meta, dest, source] = target.disks.map((d) => new MemoryDevice(d.sectors, { name: d.name }));
  const sourceContent = Buffer.alloc(source!.sectors * SECTOR_SIZE);
  target.disks[2]!.initial!().read(0, sourceContent);
  await source!.write(0, sourceContent);
  const top = await target.open([meta!, dest!, source!], { now: () => 0, sleep: () => new Promise(() => undefined) });
  const region3 = CLONE_REGION * 3 * SECTOR_SIZE;
  await top.write(CLONE_REGION * 3, sourceContent.subarray(region3, region3 + SECTOR_SIZE));
  await top.flush();
  const check = () => hydratedRegionsHoldSourceOrNewer([meta!, dest!, source!], { cut: 0, recording: new Recording() });
  assert.equal(await check(), undefined);
  await dest!.write(CLONE_REGION * 3 + 5, Buffer.alloc(SECTOR_SIZE, 0xee));
  assert.match((await check()) ?? '', /^region 3 is marked hydrated but sector 53 on the destination holds neither/);
  await top.close();
});
