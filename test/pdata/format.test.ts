import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { BlockManager } from '../../src/pdata/block-manager.ts';
import { blockChecksum } from '../../src/pdata/checksum.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { superblockValidator } from '../../src/pdata/thin/superblock.ts';
import { SALT, bitmapValidator, btreeNodeValidator } from '../../src/pdata/validators.ts';

test('block checksums of zeroed blocks match the spec table for every salt', () => {
  const z = Buffer.alloc(4096);
  assert.equal(blockChecksum(z, SALT.thinSuperblock), 0x58cfd397);
  assert.equal(blockChecksum(z, SALT.btreeNode), 0x58cc7e82);
  assert.equal(blockChecksum(z, SALT.indexBlock), 0x58cfd54f);
  assert.equal(blockChecksum(z, SALT.bitmap), 0x58ce0b1a);
  assert.equal(blockChecksum(z, SALT.array), 0x7b4e41de);
});

test('format of a 1024-block device is the reference vector of spec §8.1, block for block', async () => {
  const dev = new MemoryDevice(1024 * 8);
  const md = await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 0 });
  await md.close();
  const want = [0xcaff9186, 0x18e0660a, 0xc360e452, 0xa19f6375, 0x787f52c8, 0x41bfaa04, 0xcb3dda35, 0xb1c81346];
  assert.deepEqual(want.map((_, b) => dev.peek(b * 4096, 4).readUInt32LE(0)), want);
  assert.ok(dev.peek(8 * 4096, 4096).every((x) => x === 0), 'nothing else was written');
});

test('a damaged block is EILSEQ naming the block and its type, and is not cached', async () => {
  const dev = new MemoryDevice(1024 * 8);
  await (await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 0 })).close();
  const good = dev.peek(6 * 4096, 4096);
  const bad = Buffer.from(good);
  bad[100] ^= 1;
  await dev.write(6 * 8, bad);
  const bm = new BlockManager(dev, { readOnly: true });
  await assert.rejects(bm.readLock(6, btreeNodeValidator), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'EILSEQ');
    assert.match(err.message, /btree node at metadata block 6: checksum/);
    return true;
  });
  await dev.write(6 * 8, good);
  const b = await bm.readLock(6, btreeNodeValidator); // re-read from disk, not the rejected copy
  bm.unlock(b);
  // A block written to the wrong place fails its location check.
  await dev.write(9 * 8, good);
  await assert.rejects(bm.readLock(9, btreeNodeValidator), { code: 'EILSEQ', message: /blocknr 6 != wanted 9/ });
  // The same block read as another type is refused.
  await assert.rejects(bm.readLock(6, bitmapValidator), { code: 'EINVAL', message: /validator mismatch/ });
  await assert.rejects(bm.writeLock(0, superblockValidator), { code: 'EPERM' });
  await bm.close();
});

test('open refuses incompat feature bits as Linux does', async () => {
  const dev = new MemoryDevice(1024 * 8);
  const md = await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 0 });
  await md.close();
  const sb = dev.peek(0, 4096);
  sb.writeUInt32LE(1, 360);
  sb.writeUInt32LE(blockChecksum(sb, SALT.thinSuperblock), 0);
  await dev.write(0, sb);
  await assert.rejects(ThinMetadata.open(dev), { code: 'EINVAL', message: /unsupported optional features/ });
});
