/**
 * Property: whatever background hydration has done, a clone reads exactly
 * as its model — the source image overlaid with the user's writes, whole
 * discarded regions reading zeroes (the destination is a MemoryDevice,
 * which zeroes discards) — through random writes (partial, whole-region,
 * FUA, concurrent in one region), discards, flushes, hydration steps,
 * messages, suspend/resume and reopening the metadata.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';

import type { CloneTarget } from '../../src/targets/clone/clone.ts';
import { cloneRig, readBack, settle, sourceData } from './clone-support.ts';
import { pattern } from './support.ts';

const REGION = 16;
const LENGTH = 1000; // 63 regions, the last one 8 sectors short
const DEVICE = 1024;

type Op =
  | { op: 'write'; sector: number; count: number; fua: boolean; seed: number }
  | { op: 'region-write'; region: number; fua: boolean; seed: number }
  | { op: 'pair'; region: number; a: number; b: number; seed: number }
  | { op: 'discard'; sector: number; count: number }
  | { op: 'flush' }
  | { op: 'hydrate'; rounds: number }
  | { op: 'tick' }
  | { op: 'message'; argv: string[] }
  | { op: 'cycle' }
  | { op: 'reopen' };

const sectorArb = fc.integer({ min: 0, max: LENGTH - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('write' as const), sector: sectorArb, count: fc.integer({ min: 1, max: 40 }), fua: fc.boolean(), seed: fc.nat(255) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('region-write' as const), region: fc.nat(61), fua: fc.boolean(), seed: fc.nat(255) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('pair' as const), region: fc.nat(61), a: fc.nat(7), b: fc.integer({ min: 8, max: 15 }), seed: fc.nat(255) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('discard' as const), sector: sectorArb, count: fc.integer({ min: 1, max: 80 }) }) },
  { weight: 2, arbitrary: fc.constant({ op: 'flush' as const }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('hydrate' as const), rounds: fc.integer({ min: 1, max: 30 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'tick' as const }) },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.constant(['disable_hydration']), fc.constant(['enable_hydration']),
      fc.tuple(fc.constant('hydration_threshold'), fc.integer({ min: 0, max: 8 }).map(String)),
      fc.tuple(fc.constant('hydration_batch_size'), fc.integer({ min: 0, max: 8 }).map(String)),
    ).map((argv) => ({ op: 'message' as const, argv: [...argv] })),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'cycle' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
);

test('reads always equal the model, whatever is hydrated', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
      const rig = await cloneRig(DEVICE);
      const model = sourceData(0, LENGTH);
      const args = ['16', '0', '4', 'hydration_threshold', '3', 'hydration_batch_size', '2'];
      let t: CloneTarget = await rig.open(args, { length: LENGTH });
      await t.resume!();
      const writeSplit = async (sector: number, data: Buffer, fua: boolean) => {
        const pieces: Promise<void>[] = [];
        for (let s = sector; s < sector + data.length / 512;) {
          const next = Math.min(sector + data.length / 512, (Math.floor(s / REGION) + 1) * REGION);
          pieces.push(t.write(s, data.subarray((s - sector) * 512, (next - sector) * 512), { fua }));
          s = next;
        }
        await Promise.all(pieces);
        data.copy(model, sector * 512);
      };
      const suspend = async () => {
        await t.presuspend!({ noflush: false });
        await t.postsuspend!({ noflush: false });
      };
      try {
        for (const op of ops) {
          switch (op.op) {
            case 'write': {
              const count = Math.min(op.count, LENGTH - op.sector);
              await writeSplit(op.sector, pattern(count, op.seed), op.fua);
              break;
            }
            case 'region-write':
              await writeSplit(op.region * REGION, pattern(REGION, op.seed), op.fua);
              break;
            case 'pair': {
              const base = op.region * REGION;
              await Promise.all([writeSplit(base + op.a, pattern(1, op.seed), false), writeSplit(base + op.b, pattern(1, op.seed + 1), false)]);
              break;
            }
            case 'discard': {
              const count = Math.min(op.count, LENGTH - op.sector);
              await t.discard(op.sector, count);
              const rs = Math.ceil(op.sector / REGION);
              const re = Math.floor((op.sector + count) / REGION);
              if (re > rs) model.fill(0, rs * REGION * 512, re * REGION * 512);
              break;
            }
            case 'flush':
              await t.flush();
              break;
            case 'hydrate':
              await settle(op.rounds);
              break;
            case 'tick':
              rig.clock.advance(1000);
              await settle(3);
              break;
            case 'message':
              await t.message!(op.argv);
              break;
            case 'cycle':
              await suspend();
              await t.resume!();
              break;
            case 'reopen':
              await suspend();
              await t.close();
              t = await rig.open(args, { length: LENGTH });
              await t.resume!();
              break;
          }
          const got = await readBack(t, 0, LENGTH);
          if (!got.equals(model)) {
            let s = 0;
            while (got.subarray(s * 512, s * 512 + 512).equals(model.subarray(s * 512, s * 512 + 512))) s++;
            assert.fail(`after ${JSON.stringify(op)}: sector ${s} differs from the model (status ${t.status('info')})`);
          }
        }
        // Let hydration finish: then the destination holds the whole model.
        await t.message!(['enable_hydration']);
        await t.message!(['hydration_threshold', '8']);
        await settle(300);
        assert.match(t.status('info'), / 63\/63 /);
        assert.ok(rig.dest.peek(0, LENGTH * 512).equals(model));
      } finally {
        await suspend();
        await t.close();
      }
    }),
    { numRuns: 60, seed: 20261202 },
  );
});
