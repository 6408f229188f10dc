/**
 * Property: random writes, write-zeroes, discards, flushes, snapshots and
 * deletes over several thin volumes of one pool read back exactly as an
 * in-memory model of every volume says, the status counts the model's
 * provisioned blocks, and the metadata passes the full check afterwards —
 * also after the pool is torn down and reopened.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';

import type { BlockDevice } from '../../src/block/device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { checkThinMetadata } from '../../src/tools/thin/check.ts';
import { ThinStack, pattern, readSectors } from './thin-support.ts';

const DBS = 128;
const BLOCKS = 24;
const SECTORS = BLOCKS * DBS;

type Op =
  | { op: 'write'; vol: number; sector: number; count: number; fua: boolean }
  | { op: 'zero' | 'discard'; vol: number; sector: number; count: number }
  | { op: 'flush' | 'snap' | 'delete'; vol: number };

const range = fc.record({ sector: fc.integer({ min: 0, max: SECTORS - 1 }), count: fc.integer({ min: 1, max: 3 * DBS }) })
  .map(({ sector, count }) => ({ sector, count: Math.min(count, SECTORS - sector) }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.nat(7), range, fc.boolean()).map(([vol, r, fua]) => ({ op: 'write' as const, vol, ...r, fua })) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(7), range).map(([vol, r]) => ({ op: 'zero' as const, vol, ...r })) },
  { weight: 2, arbitrary: fc.tuple(fc.nat(7), range).map(([vol, r]) => ({ op: 'discard' as const, vol, ...r })) },
  { weight: 1, arbitrary: fc.nat(7).map((vol) => ({ op: 'flush' as const, vol })) },
  { weight: 1, arbitrary: fc.nat(7).map((vol) => ({ op: 'snap' as const, vol })) },
  { weight: 1, arbitrary: fc.nat(7).map((vol) => ({ op: 'delete' as const, vol })) },
);

interface Volume {
  id: number;
  dev: BlockDevice;
  content: Buffer;
  provisioned: Set<number>;
}

async function run(ops: Op[], features: string[]): Promise<void> {
  const meta = new MemoryDevice(4096, { name: 'meta' });
  const data = new MemoryDevice(200 * DBS, { name: 'data' });
  let s = await new ThinStack({ meta, data, features }).createPool();
  const vols: Volume[] = [];
  let nextId = 1;
  let n = 0;
  const add = async (content: Buffer, provisioned: Set<number>, origin?: number) => {
    const id = nextId++;
    if (origin !== undefined) await s.message('create_snap', String(id), String(origin));
    const dev = await s.volume(`v${id}`, id, SECTORS, { existing: origin !== undefined });
    vols.push({ id, dev, content, provisioned });
  };
  try {
    await add(Buffer.alloc(SECTORS * 512), new Set());
    for (const op of ops) {
      const v = vols[op.vol % vols.length]!;
      n++;
      switch (op.op) {
        case 'write': {
          const buf = pattern(n, op.count, op.sector);
          await v.dev.write(op.sector, buf, { fua: op.fua });
          buf.copy(v.content, op.sector * 512);
          for (let b = Math.floor(op.sector / DBS); b * DBS < op.sector + op.count; b++) v.provisioned.add(b);
          break;
        }
        case 'zero': {
          await v.dev.writeZeroes(op.sector, op.count);
          v.content.fill(0, op.sector * 512, (op.sector + op.count) * 512);
          for (let b = Math.floor(op.sector / DBS); b * DBS < op.sector + op.count; b++) {
            if (b * DBS >= op.sector && (b + 1) * DBS <= op.sector + op.count) v.provisioned.delete(b);
            else v.provisioned.add(b);
          }
          break;
        }
        case 'discard': {
          await v.dev.discard(op.sector, op.count);
          for (let b = Math.ceil(op.sector / DBS); (b + 1) * DBS <= op.sector + op.count; b++) {
            v.content.fill(0, b * DBS * 512, (b + 1) * DBS * 512);
            v.provisioned.delete(b);
          }
          break;
        }
        case 'flush':
          await v.dev.flush();
          break;
        case 'snap':
          if (vols.length < 5) await add(Buffer.from(v.content), new Set(v.provisioned), v.id);
          break;
        case 'delete':
          if (vols.length > 1) {
            await v.dev.close();
            await s.registry.remove(`v${v.id}`);
            await s.message('delete', String(v.id));
            vols.splice(vols.indexOf(v), 1);
          }
          break;
      }
    }
    const verify = async (when: string) => {
      for (const v of vols) {
        assert.ok((await readSectors(v.dev, 0, SECTORS)).equals(v.content), `${when}: volume ${v.id} differs from the model`);
        const mapped = Number(s.status(`v${v.id}`).split(' ')[0]);
        assert.equal(mapped, v.provisioned.size * DBS, `${when}: volume ${v.id} mapped sectors`);
      }
    };
    await verify('live');
    for (const v of vols) await v.dev.flush();
    await s.close();
    const report = await checkThinMetadata(meta);
    assert.deepEqual([...report.errors, ...report.warnings], []);
    s = await new ThinStack({ meta, data, features }).createPool();
    for (const v of vols) v.dev = await s.volume(`v${v.id}`, v.id, SECTORS, { existing: true });
    await verify('reopened');
  } finally {
    await s.close();
  }
}

test('random I/O, snapshots and deletes match a model of every volume', async () => {
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => run(ops, [])), { numRuns: 40 });
});

test('the same with no_discard_passdown', async () => {
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => run(ops, ['no_discard_passdown'])), { numRuns: 20 });
});
