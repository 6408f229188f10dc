import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { PersistentArray } from '../../src/pdata/array.ts';
import { BlockManager } from '../../src/pdata/block-manager.ts';
import { PersistentBitset } from '../../src/pdata/bitset.ts';
import { checkTree } from '../../src/pdata/btree/check.ts';
import { plainValue } from '../../src/pdata/btree/value-type.ts';
import { readU64 } from '../../src/pdata/endian.ts';
import { IndexBlockStore } from '../../src/pdata/space-map/index-block.ts';
import { MetadataSpaceMap } from '../../src/pdata/space-map/metadata.ts';
import { decodeSpaceMapRoot } from '../../src/pdata/space-map/root.ts';
import { TransactionManager } from '../../src/pdata/transaction-manager.ts';
import { btreeNodeValidator, checksummedValidator } from '../../src/pdata/validators.ts';

/** A minimal superblock for tests: the array root at byte 16, the space-map root at 64. */
const testSuperblock = checksummedValidator({ name: 'test superblock', salt: 12345, blocknrOffset: 8 });

async function fresh(blocks = 2048): Promise<{ tm: TransactionManager; sm: MetadataSpaceMap; dev: MemoryDevice }> {
  const dev = new MemoryDevice(blocks * 8);
  const tm = new TransactionManager(new BlockManager(dev));
  const sm = await MetadataSpaceMap.format(tm, blocks);
  return { tm, sm, dev };
}

async function commit(tm: TransactionManager, sm: MetadataSpaceMap, root: number): Promise<void> {
  await tm.commit(testSuperblock, (data) => {
    data.writeUInt32LE(root, 16);
    sm.root().copy(data, 64);
  });
}

/** Re-derives every metadata block's count from the committed superblock and compares with the space map. */
async function assertCountsFromWalk(dev: MemoryDevice): Promise<void> {
  const tm = TransactionManager.readOnly(new BlockManager(dev, { readOnly: true }));
  const sb = await tm.readLock(0, testSuperblock);
  const root = sb.data.readUInt32LE(16);
  const smRootBytes = Buffer.from(sb.data.subarray(64, 96));
  const smRoot = decodeSpaceMapRoot(smRootBytes);
  tm.unlock(sb);
  const refs = new Uint32Array(smRoot.nrBlocks);
  const errors: string[] = [];
  refs[0] = 1;
  await checkTree({ tm, refs, errors }, root, { name: 'array', valueSize: 8, onValue: (_k, leaf, at) => void refs[readU64(leaf, at)]!++ });
  refs[smRoot.bitmapRoot]!++;
  const index = await IndexBlockStore.read(tm, smRoot.bitmapRoot, Math.ceil(smRoot.nrBlocks / 16320));
  for (const e of index.entries) refs[e.blocknr]!++;
  await checkTree({ tm, refs, errors }, smRoot.refCountRoot, { name: 'ref counts', valueSize: 4 });
  assert.deepEqual(errors, []);
  const sm = await MetadataSpaceMap.open(tm, smRootBytes);
  const differ: string[] = [];
  for (let b = 0; b < smRoot.nrBlocks; b++) {
    const got = await sm.count(b);
    if (got !== refs[b]) differ.push(`block ${b}: expected ${refs[b]}, got ${got}`);
  }
  assert.deepEqual(differ, []);
}

test('bitset layout: 40000 bits are 625 words in blocks of 509 + 116; bits 0, 65 and 39999 land as the spec says', async () => {
  const { tm, sm, dev } = await fresh();
  const bits = new PersistentBitset(tm);
  let root = await bits.resize(await bits.empty(), 0, 40000, false);
  for (const b of [0, 65, 39999]) root = await bits.set(root, b);
  await commit(tm, sm, root);
  const array = new PersistentArray(tm, plainValue(8));
  const words = new Map<number, bigint>();
  await array.walk(root, (i, v) => void (v.readBigUInt64LE(0) !== 0n && words.set(i, v.readBigUInt64LE(0))));
  assert.deepEqual(words, new Map([[0, 1n], [1, 2n], [624, 0x8000000000000000n]]));
  // On disk: the second array block holds 116 entries, its last word has the top bit set.
  const leaf = await tm.readLock(root, btreeNodeValidator);
  const second = readU64(leaf.data, 32 + 8 * 252 + 8);
  tm.unlock(leaf);
  const raw = dev.peek(second * 4096, 4096);
  assert.deepEqual([raw.readUInt32LE(4), raw.readUInt32LE(8), raw.readUInt32LE(12)], [509, 116, 8]);
  assert.equal(raw.readBigUInt64LE(24 + 8 * 115), 0x8000000000000000n);
  await assertCountsFromWalk(dev);
});

type Op = { t: 'resize'; n: number; v: boolean } | { t: 'set' | 'clear'; i: number } | { t: 'commit' };

test('bitset operations and resizes match a boolean model; counts equal a full walk', async () => {
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ t: fc.constant('resize' as const), n: fc.integer({ min: 0, max: 70000 }), v: fc.boolean() }),
    fc.record({ t: fc.constantFrom('set' as const, 'clear' as const), i: fc.nat() }),
    fc.constant({ t: 'commit' as const }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
      const { tm, sm, dev } = await fresh();
      const bits = new PersistentBitset(tm);
      let root = await bits.empty();
      let model: boolean[] = [];
      for (const o of ops) {
        if (o.t === 'resize') {
          root = await bits.resize(root, model.length, o.n, o.v);
          model = Array.from({ length: o.n }, (_, i) => (i < model.length ? model[i]! : o.v));
        } else if (o.t === 'commit') {
          await commit(tm, sm, root);
        } else if (model.length > 0) {
          const i = o.i % model.length;
          root = o.t === 'set' ? await bits.set(root, i) : await bits.clear(root, i);
          model[i] = o.t === 'set';
        }
      }
      const set: number[] = [];
      await bits.walkSet(root, model.length, (b) => void set.push(b));
      assert.deepEqual(set, model.flatMap((v, i) => (v ? [i] : [])));
      if (model.length > 0) assert.equal(await bits.test(root, model.length - 1), model.at(-1));
      await commit(tm, sm, root);
      await assertCountsFromWalk(dev);
    }),
    { numRuns: 25, seed: 7 },
  );
});
