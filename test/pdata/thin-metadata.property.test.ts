import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { type MappingModel, assertConsistent, cloneModel, readModel } from './helpers.ts';

/*
 * B-tree and space-map operations against a Map model, through the thin
 * metadata's 2-level mapping tree: snapshots share subtrees (metadata count
 * 2), later writes copy shared nodes, deletes free only what is no longer
 * shared. After every sequence the reference counts of every metadata and
 * data block are re-derived by a full walk and compared with both space maps.
 */

type Op =
  | { t: 'create'; dev: number }
  | { t: 'snap'; dev: number; origin: number }
  | { t: 'delete'; dev: number }
  | { t: 'map'; dev: number; start: number; n: number; stride: number }
  | { t: 'unmap'; dev: number; start: number; n: number }
  | { t: 'discard'; dev: number; start: number; n: number }
  | { t: 'commit' }
  | { t: 'heldSnap' };

const dev = fc.integer({ min: 0, max: 3 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: dev.map((d) => ({ t: 'create' as const, dev: d })) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('snap' as const), dev, origin: dev }) },
  { weight: 1, arbitrary: dev.map((d) => ({ t: 'delete' as const, dev: d })) },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('map' as const),
      dev,
      start: fc.integer({ min: 0, max: 3000 }),
      n: fc.integer({ min: 1, max: 600 }),
      stride: fc.integer({ min: 1, max: 3 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('unmap' as const), dev, start: fc.integer({ min: 0, max: 3000 }), n: fc.integer({ min: 1, max: 700 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('discard' as const), dev, start: fc.integer({ min: 0, max: 3000 }), n: fc.integer({ min: 1, max: 1500 }) }) },
  { weight: 2, arbitrary: fc.constant({ t: 'commit' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'heldSnap' as const }) },
);

async function apply(md: ThinMetadata, model: MappingModel, o: Op): Promise<void> {
  switch (o.t) {
    case 'create':
      if (model.has(o.dev)) return assert.rejects(md.createThin(o.dev), { code: 'EEXIST' });
      await md.createThin(o.dev);
      model.set(o.dev, new Map());
      return;
    case 'snap':
      if (model.has(o.dev)) return assert.rejects(md.createSnap(o.dev, o.origin), { code: 'EEXIST' });
      if (!model.has(o.origin)) return assert.rejects(md.createSnap(o.dev, o.origin), { code: 'ENODATA' });
      await md.createSnap(o.dev, o.origin);
      model.set(o.dev, new Map(model.get(o.origin)));
      return;
    case 'delete':
      if (!model.has(o.dev)) return assert.rejects(md.deleteDevice(o.dev), { code: 'ENODATA' });
      await md.deleteDevice(o.dev);
      model.delete(o.dev);
      return;
    case 'map': {
      const maps = model.get(o.dev);
      if (!maps) return;
      for (let i = 0; i < o.n; i++) {
        const block = await md.allocDataBlock();
        await md.insertMapping(o.dev, o.start + i * o.stride, block);
        maps.set(o.start + i * o.stride, block);
      }
      return;
    }
    case 'unmap': {
      const maps = model.get(o.dev);
      if (!maps) return;
      for (let v = o.start; v < o.start + o.n; v++) assert.equal(await md.removeMapping(o.dev, v), maps.delete(v));
      return;
    }
    case 'discard': {
      const maps = model.get(o.dev);
      if (!maps) return assert.rejects(md.removeRange(o.dev, o.start, o.start + o.n), { code: 'ENODATA' });
      let n = 0;
      for (const v of [...maps.keys()]) if (v >= o.start && v < o.start + o.n && maps.delete(v)) n++;
      assert.equal(await md.removeRange(o.dev, o.start, o.start + o.n), n);
      return;
    }
    case 'commit':
      return md.commit();
    case 'heldSnap':
      if (md.heldRoot) await md.releaseMetadataSnap();
      else await md.reserveMetadataSnap();
      return;
  }
}

test('thin metadata operations match a Map model; counts equal a full re-walk', async () => {
  let mapped = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 30 }), async (ops) => {
      const device = new MemoryDevice(4096 * 8);
      const md = await ThinMetadata.format(device, { dataBlockSize: 128, nrDataBlocks: 40000, cacheBytes: 1 << 20 });
      const model: MappingModel = new Map();
      let held: MappingModel | null = null;
      for (const o of [{ t: 'create' as const, dev: 0 }, ...ops]) {
        await apply(md, model, o);
        if (o.t === 'heldSnap') held = md.heldRoot ? cloneModel(model) : null;
        if (o.t === 'map' && model.has(o.dev)) mapped += o.n;
      }
      for (const [id, maps] of model) {
        assert.equal((await md.deviceDetails(id))?.mappedBlocks, maps.size, `mapped_blocks of device ${id}`);
        for (const [v, block] of [...maps].slice(0, 50)) assert.equal((await md.lookupMapping(id, v))?.block, block);
      }
      await md.commit();
      assert.deepEqual(await readModel(md), model);
      await md.close();
      await assertConsistent(device);
      // What was committed is what a fresh open reads, and the held snapshot still shows its moment.
      const reopened = await ThinMetadata.open(device);
      assert.deepEqual(await readModel(reopened), model);
      assert.equal(reopened.heldRoot !== 0, held !== null);
      if (held) assert.deepEqual(await readModel(reopened, { metadataSnap: true }), held);
      await reopened.close();
    }),
    { numRuns: 30, seed: 42, unbiased: true },
  );
  assert.ok(mapped > 20000, `the sequences inserted only ${mapped} mappings`);
});
