import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { zeroTarget } from '../../src/targets/zero/zero.ts';
import { fakeContext } from '../helpers/target-context.ts';
import { assertIoError, assertRefused, pattern } from './support.ts';

const ctx = () => fakeContext({}, { length: 8192 });

describe('zero', () => {
  it('takes no arguments; table and status are empty (§8.3 worked example)', async () => {
    const t = await zeroTarget.construct(ctx(), []);
    assert.equal(t.status('table'), '');
    assert.equal(t.status('info'), '');
    assert.deepEqual(zeroTarget.version, [1, 2, 0]);
  });

  it('refuses any argument with "No arguments required"', async () => {
    for (const argv of [['0'], ['x'], ['/dev/loop0', '0']]) {
      await assertRefused(zeroTarget, ctx(), argv, 'No arguments required', 'EINVAL');
    }
  });

  it('reads zeroes, drops writes, succeeds discards and flushes', async () => {
    const t = await zeroTarget.construct(ctx(), []);
    await t.write(0, pattern(8, 1), { fua: true });
    const buf = Buffer.alloc(8 * 512, 0xaa);
    await t.read(0, buf);
    assert.deepEqual(buf, Buffer.alloc(8 * 512));
    await t.discard(0, 8192);
    await t.flush();
  });

  it('does not support write-zeroes', async () => {
    const t = await zeroTarget.construct(ctx(), []);
    await assertIoError(t.writeZeroes(0, 8, {}), 'EOPNOTSUPP');
  });

  it('reports one hole-and-zero extent, no devices, and discard without zeroing or cache', async () => {
    const t = await zeroTarget.construct(ctx(), []);
    assert.deepEqual(await t.extents!(16, 100), [{ sector: 16, count: 100, hole: true, zero: true }]);
    assert.deepEqual(t.areas(), []);
    const l = t.limits();
    assert.equal(l.logicalBlockSize, 512);
    assert.equal(l.discard, true);
    assert.equal(l.discardZeroes, false);
    assert.equal(l.writeZeroes, false);
    assert.equal(l.flush, false);
    assert.equal(l.fua, false);
  });
});
