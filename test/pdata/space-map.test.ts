import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { assertConsistent } from './helpers.ts';

test('a block freed in the transaction is not reallocated before the commit (§5.8)', async () => {
  const dev = new MemoryDevice(1024 * 8);
  const md = await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 64 });
  const sm = md.dataSm;
  const first = await sm.newBlock();
  await md.commit();
  await sm.dec(first);
  assert.equal(await sm.count(first), 0);
  const handed = new Set<number>();
  for (let i = 0; i < 63; i++) handed.add(await sm.newBlock());
  assert.ok(!handed.has(first), 'freed block reused in the same transaction');
  await assert.rejects(sm.newBlock(), { code: 'ENOSPC' });
  await md.commit();
  assert.equal(await sm.newBlock(), first);
  await md.close();
});

test('the metadata space map does not reuse a freed metadata block before the commit either', async () => {
  const dev = new MemoryDevice(1024 * 8);
  const md = await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 64 });
  const sm = md.metadataSm;
  const b = await sm.newBlock();
  await md.commit();
  await sm.dec(b);
  for (let i = 0; i < 50; i++) assert.notEqual(await sm.newBlock(), b);
  await md.close();
});

test('counts of three and more live in the overflow tree and come back down', async () => {
  const dev = new MemoryDevice(1024 * 8);
  const md = await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 40000 });
  const sm = md.dataSm;
  const blocks: number[] = [];
  for (let i = 0; i < 300; i++) blocks.push(await sm.newBlock());
  for (const b of blocks) for (let k = 0; k < 4; k++) await sm.inc(b);
  await md.commit();
  for (const b of blocks) assert.equal(await sm.count(b), 5);
  for (const b of blocks.slice(0, 150)) for (let k = 0; k < 3; k++) await sm.dec(b);
  await md.commit();
  assert.deepEqual(await Promise.all(blocks.slice(148, 152).map((b) => sm.count(b))), [2, 2, 5, 5]);
  assert.equal(sm.nrFree(), 40000 - 300);
  await md.close();
  const reopened = await ThinMetadata.open(dev);
  assert.equal(await reopened.dataSm.count(blocks[0]!), 2);
  assert.equal(await reopened.dataSm.count(blocks[299]!), 5);
  await reopened.close();
});

test('extend grows the data space map across bitmaps and the metadata space map in place', async () => {
  const dev = new MemoryDevice(40000 * 8);
  const md = await ThinMetadata.format(dev, { dataBlockSize: 128, nrDataBlocks: 100, cacheBytes: 1 << 20 });
  await md.createThin(1);
  await md.dataSm.extend(50000);
  for (let v = 0; v < 20000; v++) await md.insertMapping(1, v, await md.allocDataBlock());
  await md.metadataSm.extend(40000 - md.metadataSm.nrBlocks);
  await md.commit();
  assert.equal(md.dataSm.nrBlocks, 50100);
  await md.close();
  await assertConsistent(dev);
  const reopened = await ThinMetadata.open(dev);
  assert.equal((await reopened.lookupMapping(1, 19999))?.block, 19999);
  assert.equal(reopened.metadataSm.nrBlocks, 40000);
  await reopened.close();
});
