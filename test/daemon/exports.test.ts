/** The NBD export provider over the device registry. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { RegistryExports } from '../../src/daemon/exports.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { builtinTargets } from '../../src/targets/index.ts';

async function registry(): Promise<DeviceRegistry> {
  const r = new DeviceRegistry({
    targets: builtinTargets(),
    openFile: (path) => Promise.reject(new IoError('ENOENT', `${path}: no files in this test`)),
  });
  r.attach('/mem0', new MemoryDevice(4096));
  await r.create('b', { table: ['0 2048 linear /mem0 0'] });
  await r.create('a', { table: ['0 1024 zero', '1024 1024 linear /mem0 2048'], readOnly: true });
  await r.create('c');
  return r;
}

describe('RegistryExports', () => {
  it('lists every device by name with its disk, dev_t and target types', async () => {
    const exports = new RegistryExports(await registry(), false);
    assert.deepEqual(exports.list(), [
      { name: 'a', description: 'dm-1 (253:1): zero, linear' },
      { name: 'b', description: 'dm-0 (253:0): linear' },
      { name: 'c', description: 'dm-2 (253:2): no table' },
    ]);
    assert.equal(exports.defaultExport(), 'a');
  });

  it('holds an open export in the open count, so remove fails with EBUSY until it is released', async () => {
    const r = await registry();
    const exports = new RegistryExports(r, false);
    const handle = exports.open('b')!;
    assert.equal(handle.readOnly, false);
    assert.equal(handle.device.sectors, 2048);
    assert.equal(r.info('b').openCount, 1);
    await assert.rejects(r.remove('b'), (err: IoError) => err.code === 'EBUSY');
    handle.release();
    handle.release(); // a second release changes nothing
    assert.equal(r.info('b').openCount, 0);
    await r.remove('b');
    assert.equal(exports.open('b'), undefined);
  });

  it('serves read-only tables read-only, and everything read-only under --read-only', async () => {
    const r = await registry();
    assert.equal(new RegistryExports(r, false).open('a')!.readOnly, true);
    assert.equal(new RegistryExports(r, true).open('b')!.readOnly, true);
  });
});
