/**
 * The explorer's self-test (CRASH-TESTING §3): every family must find the
 * toy target's "written before the data flush" bug within the CI budget, the
 * crash-during-recovery family must find its non-idempotent recovery, the
 * I/O-error sweep its swallowed flush error, and the fixed toy must pass all.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { type Budget, explore, formatFailure } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { commitPointLint } from '../../src/crash/lint.ts';
import { ioErrorSweep } from '../../src/crash/sweep.ts';
import { randomWorkload } from '../../src/crash/workload.ts';
import { recordRun } from '../../src/crash/explorer.ts';
import { Rng } from '../../src/sim/rng.ts';
import { TOY_BLOCK_SECTORS, toyTarget } from './toy-target.ts';

/** The CI budget per family: enough to find the toy's bug on every seed below, small enough for 2 cores. */
const BUDGET: Budget = { states: 400, ms: 8000 };
const STATE_FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device'];
const SEEDS = [1, 2, 3];

const workload = (seed: number) =>
  randomWorkload(new Rng(seed), { sectors: 16 * TOY_BLOCK_SECTORS, blockSectors: TOY_BLOCK_SECTORS, length: 24 });

test('the fixed toy target passes every family', async () => {
  for (const seed of SEEDS) {
    const r = await explore(toyTarget(), { seed, workload: workload(seed), defaultBudget: BUDGET });
    assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
    assert.deepEqual(r.lint, []);
    for (const f of [...STATE_FAMILIES, 'recovery'] as const) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
  }
});

for (const family of STATE_FAMILIES) {
  test(`family ${family} finds the toy's bitmap-before-data-flush bug`, async () => {
    for (const seed of SEEDS) {
      const r = await explore(toyTarget({ broken: true }), {
        seed, workload: workload(seed), families: [family], defaultBudget: BUDGET, lint: false, minimise: false,
      });
      assert.ok(r.failure, `seed ${seed}: not found in ${r.checked[family]} states`);
      assert.equal(r.failure.check, 'oracle');
      assert.match(r.failure.message, /data no write put there|acknowledged, flushed data was lost/);
    }
  });
}

test('a failure report names seed, family, state, the ordering and a minimised workload (§2.7)', async () => {
  const r = await explore(toyTarget({ broken: true }), { seed: 1, workload: workload(1), families: ['single'], defaultBudget: BUDGET, lint: false });
  assert.ok(r.failure);
  const f = r.failure;
  assert.ok(f.ops.length < f.originalOps, 'the workload was not minimised');
  assert.match(f.ordering ?? '', /^write #\d+ \(data\) on data, sectors \d+\+8 had to be durable before FUA write #\d+ \(superblock\) on meta/);
  const text = formatFailure(f);
  for (const part of ['seed:     1', 'family:   single', 'state:    single: omit write', 'violated: top sector', 'npm run crash -- --seed 1']) {
    assert.ok(text.includes(part), `report lacks "${part}":\n${text}`);
  }
  // The same seed reruns the same failure.
  const again = await explore(toyTarget({ broken: true }), { seed: 1, workload: f.ops, families: ['single'], defaultBudget: BUDGET, lint: false, minimise: false });
  assert.equal(again.failure?.message, (await explore(toyTarget({ broken: true }), { seed: 1, workload: f.ops, families: ['single'], defaultBudget: BUDGET, lint: false, minimise: false })).failure?.message);
  assert.ok(again.failure);
});

test('the commit-point lint flags the broken toy and passes the fixed one', async () => {
  const { references } = toyTarget();
  for (const seed of SEEDS) {
    const broken = await recordRun(toyTarget({ broken: true }), seed, workload(seed));
    const violations = commitPointLint(broken.recording, references);
    assert.ok(violations.length > 0, `seed ${seed}`);
    assert.match(violations[0]!.message, /\(data\) on data.* had to be durable before FUA write #\d+ \(superblock\) on meta.*: no flush of data completed/);
    const fixed = await recordRun(toyTarget(), seed, workload(seed));
    assert.deepEqual(commitPointLint(fixed.recording, references).map((v) => v.message), []);
  }
  // Without the target's references the lint assumes every completed data write is referenced: exact one request at a time.
  assert.ok(commitPointLint((await recordRun(toyTarget({ broken: true }), 1, workload(1), 1)).recording).length > 0);
  assert.deepEqual(commitPointLint((await recordRun(toyTarget(), 1, workload(1), 1)).recording), []);
  const r = await explore(toyTarget({ broken: true }), { seed: 1, workload: workload(1), families: [], minimise: false });
  assert.equal(r.failure?.family, 'lint');
});

test('only the crash-during-recovery family finds a recovery that is not crash-safe (R7)', async () => {
  const target = toyTarget({ brokenRecovery: true });
  const others = await explore(target, { seed: 1, workload: workload(1), families: STATE_FAMILIES, defaultBudget: BUDGET });
  assert.equal(others.failure, undefined, others.failure && formatFailure(others.failure));
  for (const seed of SEEDS) {
    const r = await explore(target, { seed, workload: workload(seed), families: ['recovery'], defaultBudget: BUDGET, minimise: false });
    assert.ok(r.failure, `seed ${seed}: not found in ${r.checked.recovery} states`);
    assert.match(r.failure.state, /then recovery crashed/);
  }
});

test('the I/O-error sweep finds a swallowed data flush error, and passes the fixed toy', async () => {
  const w = workload(1);
  const found = await ioErrorSweep(toyTarget({ ignoreFlushErrors: true }), { seed: 1, workload: w });
  assert.ok(found.failure, `not found in ${found.runs} faulted runs`);
  assert.match(found.failure.fault, /^flush #\d+ of data failed with EIO$/);
  const fixed = await ioErrorSweep(toyTarget(), { seed: 1, workload: w });
  assert.equal(fixed.failure, undefined, fixed.failure && `${fixed.failure.fault}: ${formatFailure(fixed.failure)}`);
  const total = fixed.counts.reduce((n, c) => n + c.write + c.flush, 0);
  assert.equal(fixed.runs, total, 'every write and flush was failed once');
});

test('a recovered device whose reads fail is a reported failure, not an exception out of the explorer', async () => {
  const inner = toyTarget();
  let opens = 0;
  const failingReads = {
    ...inner,
    name: 'toy-eio',
    async open(...args: Parameters<typeof inner.open>) {
      const top = await inner.open(...args);
      if (opens++ === 0) return top; // the recorded run itself reads fine
      return Object.assign(Object.create(top), {
        read: () => Promise.reject(Object.assign(new Error('simulated medium error'), { code: 'EIO' })),
      });
    },
  };
  const r = await explore(failingReads, {
    seed: 1, workload: workload(1), families: ['persistence'], defaultBudget: { states: 5, ms: 5000 }, lint: false, minimise: false,
  });
  assert.ok(r.failure);
  assert.equal(r.failure.check, 'read');
  assert.match(r.failure.message, /^reading the recovered device failed: simulated medium error/);
});
