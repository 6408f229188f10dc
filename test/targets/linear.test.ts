import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BlockDevice } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { linearTarget } from '../../src/targets/linear/linear.ts';
import { fakeContext } from '../helpers/target-context.ts';
import { assertIoError, assertRefused, pattern, TestDevice } from './support.ts';

function setup(length = 2048, dev: BlockDevice = new TestDevice(8192, { name: 'loop0' })) {
  return fakeContext({ '/dev/loop0': dev, '/dev/loop1': new MemoryDevice(8192) }, { length });
}

describe('linear: constructor', () => {
  it('accepts <dev> <offset> and reports the table as major:minor (§8.1 worked example)', async () => {
    const ctx = setup();
    const t = await linearTarget.construct(ctx, ['/dev/loop0', '1024']);
    assert.equal(t.status('table'), '7:0 1024');
    assert.equal(t.status('info'), '');
    assert.deepEqual(linearTarget.version, [1, 5, 0]);
  });

  it('accepts a major:minor device argument', async () => {
    const t = await linearTarget.construct(setup(), ['7:1', '0']);
    assert.equal(t.status('table'), '7:1 0');
  });

  it('refuses any argument count but 2 with "Invalid argument count"', async () => {
    for (const argv of [[], ['/dev/loop0'], ['/dev/loop0', '0', '0']]) {
      await assertRefused(linearTarget, setup(), argv, 'Invalid argument count', 'EINVAL');
    }
  });

  it('refuses an offset that is not %llu-clean with "Invalid device sector"', async () => {
    for (const bad of ['12k', '0x10', '5.0', '-1', '+1', ' 1', 'abc']) {
      await assertRefused(linearTarget, setup(), ['/dev/loop0', bad], 'Invalid device sector', 'EINVAL');
    }
  });

  it('parses the offset before looking up the device', async () => {
    const ctx = setup();
    await assertRefused(linearTarget, ctx, ['/dev/missing', 'x'], 'Invalid device sector', 'EINVAL');
    assert.equal(ctx.opened.length, 0);
  });

  it('reports a failed lookup as "Device lookup failed" with the lookup errno', async () => {
    await assertRefused(linearTarget, setup(), ['/dev/missing', '0'], 'Device lookup failed', 'ENOENT');
    const ctx = setup();
    ctx.openDevice = async (arg) => {
      throw new IoError('ENOTBLK', `${arg}: not a block device`);
    };
    await assertRefused(linearTarget, ctx, ['/etc/passwd', '0'], 'Device lookup failed', 'ENOTBLK');
  });
});

describe('linear: I/O mapping', () => {
  it('maps sector S to offset + S for reads and writes, passing FUA through', async () => {
    const dev = new TestDevice(8192);
    const t = await linearTarget.construct(setup(2048, dev), ['/dev/loop0', '1024']);
    const data = pattern(8, 3);
    await t.write(100, data, { fua: true });
    assert.deepEqual(dev.peek((1024 + 100) * 512, data.length), data);
    assert.deepEqual(dev.log, ['write@1124+8 fua']);
    const back = Buffer.alloc(data.length);
    await t.read(100, back);
    assert.deepEqual(back, data);
  });

  it('sends flush, discard and write-zeroes to the device at the remapped sector', async () => {
    const dev = new TestDevice(8192);
    const t = await linearTarget.construct(setup(2048, dev), ['/dev/loop0', '1024']);
    await t.flush();
    await t.discard(8, 16);
    await t.writeZeroes(40, 8, { mayUnmap: false });
    assert.deepEqual(dev.log, ['flush', 'discard@1032+16', 'write-zeroes@1064+8']);
  });

  it('fails discard and write-zeroes with EOPNOTSUPP when the device has neither', async () => {
    const dev = new TestDevice(8192, { limits: { discard: false, writeZeroes: false } });
    const t = await linearTarget.construct(setup(2048, dev), ['/dev/loop0', '0']);
    await assertIoError(t.discard(0, 8), 'EOPNOTSUPP');
    await assertIoError(t.writeZeroes(0, 8, {}), 'EOPNOTSUPP');
    assert.deepEqual(dev.log, []);
    assert.equal(t.limits().discard, false);
    assert.equal(t.limits().writeZeroes, false);
  });

  it('passes device errors through', async () => {
    const dev = new TestDevice(8192);
    dev.failing.add('read');
    const t = await linearTarget.construct(setup(2048, dev), ['/dev/loop0', '0']);
    await assertIoError(t.read(0, Buffer.alloc(512)), 'EIO');
  });

  it('reports the device extents shifted back to target sectors', async () => {
    const dev = new MemoryDevice(1 << 16);
    const t = await linearTarget.construct(setup(1 << 15, dev), ['/dev/loop0', '128']);
    // MemoryDevice allocates 128-sector chunks: this fills device sectors 128–383.
    await t.write(0, Buffer.alloc(512, 1), {});
    await dev.write(256, Buffer.alloc(512, 1));
    assert.ok(t.extents);
    const ext = await t.extents(0, 256);
    assert.deepEqual(ext, [{ sector: 0, count: 256, hole: false, zero: false }]);
    const later = await t.extents(256, 512);
    assert.deepEqual(later, [{ sector: 256, count: 512, hole: true, zero: true }]);
  });

  it('has no extents when the device has none', async () => {
    const mem = new MemoryDevice(8192);
    const plain: BlockDevice = {
      name: 'plain', sectors: mem.sectors, limits: mem.limits,
      read: (s, b) => mem.read(s, b), write: (s, b, o) => mem.write(s, b, o), flush: () => mem.flush(),
      discard: (s, n) => mem.discard(s, n), writeZeroes: (s, n, o) => mem.writeZeroes(s, n, o), close: () => mem.close(),
    };
    const t = await linearTarget.construct(setup(2048, plain), ['/dev/loop0', '0']);
    assert.equal(t.extents, undefined);
  });

  it('reports its area and inherits the device limits', async () => {
    const dev = new MemoryDevice(8192, { limits: { logicalBlockSize: 4096, flush: true, fua: false } });
    const ctx = setup(2048, dev);
    const t = await linearTarget.construct(ctx, ['/dev/loop0', '1024']);
    assert.deepEqual(t.areas(), [{ ref: ctx.opened[0], start: 1024, length: 2048 }]);
    const l = t.limits();
    assert.equal(l.logicalBlockSize, 4096);
    assert.equal(l.flush, true);
    assert.equal(l.fua, false);
    assert.equal(t.maxIoSectors, undefined);
  });

  it('does not close the device', async () => {
    const dev = new MemoryDevice(8192);
    const t = await linearTarget.construct(setup(2048, dev), ['/dev/loop0', '0']);
    await t.close();
    await dev.write(0, Buffer.alloc(512));
  });
});
