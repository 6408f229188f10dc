/**
 * dm-integrity under the crash explorer (CRASH-TESTING §2, §3): J mode over
 * one device and with meta_device (data and metadata disks crash
 * independently; torn journal writes; crash during replay) must return, for
 * every sector, old or new data with a matching tag and never a false
 * mismatch; B mode must recalculate every dirty region; and the seed bug of
 * integrity.md §6.3 (with meta_device, flushing metadata and only starting
 * the data flush, relying on order) must be FOUND by independent per-device
 * choices within the CI budget.
 *
 * A read that fails (EILSEQ above all) is turned into a poison sector that no
 * write produces, so the oracle reports it as "data no write put there".
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { type Budget, explore, formatFailure } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { workloadFor } from '../../src/crash/targets/index.ts';
import { integrityCrashTarget } from '../../src/crash/targets/integrity.ts';

const ALL: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];
const BUDGET: Budget = { states: 40, ms: 1500 };

for (const v of [
  { mode: 'J', meta: false },
  { mode: 'J', meta: true },
  { mode: 'B', meta: false },
  { mode: 'B', meta: true },
] as const) {
  test(`integrity ${v.mode}${v.meta ? ' with meta_device' : ''}: every crash state recovers to old or new data with matching tags`, async () => {
    const target = await integrityCrashTarget(v);
    const seed = v.meta ? 2 : 1;
    const r = await explore(target, { seed, workload: await workloadFor(target, seed, 40), defaultBudget: BUDGET, minimise: false });
    assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
    assert.deepEqual(r.lint, []);
    // Independent per-device choices need two devices.
    for (const f of ALL.filter((f) => v.meta || f !== 'per-device')) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
  });
}

/**
 * The 5.10 bug (integrity.md §6.3): a user FLUSH in B mode with meta_device
 * completed once the metadata flush did, the data flush merely started
 * behind it. Acknowledged data can then be lost on the data disk alone.
 */
test('the seed bug: with meta_device, not waiting for the data flush (R3) is found by per-device choices', async () => {
  const target = await integrityCrashTarget({ mode: 'B', meta: true, brokenFlushOrder: true });
  let found = 0;
  for (const seed of [1, 2, 3]) {
    const r = await explore(target, {
      seed, workload: await workloadFor(target, seed, 40), families: ['per-device'], defaultBudget: { states: 200, ms: 6000 }, lint: false, minimise: false,
    });
    if (r.failure) {
      found++;
      assert.equal(r.failure.check, 'oracle', formatFailure(r.failure));
      assert.match(r.failure.message, /acknowledged, flushed data was lost|data no write put there|durably replaced/);
    }
  }
  assert.ok(found >= 2, `found on ${found} of 3 seeds`);
  // The same search on the real code finds nothing: the bug, not the setup, is what fails.
  const fixed = await integrityCrashTarget({ mode: 'B', meta: true });
  for (const seed of [1, 2, 3]) {
    const r = await explore(fixed, {
      seed, workload: await workloadFor(fixed, seed, 40), families: ['per-device'], defaultBudget: { states: 200, ms: 6000 }, lint: false, minimise: false,
    });
    assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
  }
});
