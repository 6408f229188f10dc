import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { errorTarget } from '../../src/targets/error/error.ts';
import { fakeContext } from '../helpers/target-context.ts';
import { assertIoError, assertRefused, pattern } from './support.ts';

function ctx() {
  const dev = new MemoryDevice(8192, { limits: { logicalBlockSize: 4096, discard: false } });
  return fakeContext({ '/dev/loop0': dev }, { length: 8192 });
}

describe('error: constructor', () => {
  it('accepts no arguments; table and status are empty (§8.4 worked example)', async () => {
    const c = ctx();
    const t = await errorTarget.construct(c, []);
    assert.equal(t.status('table'), '');
    assert.equal(t.status('info'), '');
    assert.deepEqual(t.areas(), []);
    assert.deepEqual(errorTarget.version, [1, 7, 0]);
    assert.deepEqual(errorTarget.features, { wildcard: true });
  });

  it('ignores every argument count but 2, without looking anything up', async () => {
    for (const argv of [['foo'], ['/dev/missing', 'x', 'y'], ['1', '2', '3', '4']]) {
      const c = ctx();
      const t = await errorTarget.construct(c, argv);
      assert.equal(c.opened.length, 0);
      assert.deepEqual(t.areas(), []);
      assert.equal(t.status('table'), '');
    }
  });

  it('parses exactly 2 arguments as <dev> <offset>, like linear', async () => {
    await assertRefused(errorTarget, ctx(), ['/dev/missing', '1k'], 'Invalid device sector', 'EINVAL');
    await assertRefused(errorTarget, ctx(), ['/dev/missing', '0'], 'Device lookup failed', 'ENOENT');
    const c = ctx();
    const t = await errorTarget.construct(c, ['/dev/loop0', '64']);
    assert.deepEqual(t.areas(), [{ ref: c.opened[0], start: 64, length: 8192 }]);
    assert.equal(t.status('table'), '');
    assert.equal(t.status('info'), '');
    assert.equal(t.limits().logicalBlockSize, 4096, 'the device is used for its limits');
  });
});

describe('error: I/O', () => {
  it('fails reads, writes and discards with EIO, even with a device that has no discard', async () => {
    const t = await errorTarget.construct(ctx(), ['/dev/loop0', '0']);
    await assertIoError(t.read(0, Buffer.alloc(512)), 'EIO');
    await assertIoError(t.write(8, pattern(1, 0), {}), 'EIO');
    await assertIoError(t.discard(0, 8), 'EIO');
    assert.equal(t.limits().discard, true);
  });

  it('succeeds flushes and does not support write-zeroes', async () => {
    const t = await errorTarget.construct(ctx(), []);
    await t.flush();
    await assertIoError(t.writeZeroes(0, 8, {}), 'EOPNOTSUPP');
    const l = t.limits();
    assert.equal(l.writeZeroes, false);
    assert.equal(l.flush, false);
    assert.equal(t.extents, undefined);
  });

  it('names the mapped device and sector in its errors', async () => {
    const c = fakeContext({}, { length: 100, begin: 1000 });
    const t = await errorTarget.construct(c, []);
    await assert.rejects(t.read(5, Buffer.alloc(512)), { code: 'EIO', device: 'test', sector: 1005 });
  });
});
