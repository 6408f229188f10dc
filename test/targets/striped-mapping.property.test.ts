/**
 * striped's sector and range mapping (§8.2.2, §8.2.5) against independent
 * models: a per-sector enumeration that deals chunks out round-robin, and a
 * BigInt evaluation for positions near 2^53.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { stripeMapRange, stripeMapSector, stripedTarget } from '../../src/targets/striped/striped.ts';
import { fakeContext } from '../helpers/target-context.ts';
import { pattern, splitIo, TestDevice } from './support.ts';

interface Placed {
  stripe: number;
  sector: number;
}

/** Deals chunks out to stripes 0, 1, …, n−1, 0, … and records where every sector went. */
function dealChunks(stripes: number, chunk: number, length: number): Placed[] {
  const placed: Placed[] = [];
  const filled = new Array<number>(stripes).fill(0);
  let stripe = 0;
  for (let x = 0; x < length; x += chunk) {
    for (let i = 0; i < chunk; i++) placed.push({ stripe, sector: filled[stripe]! + i });
    filled[stripe]! += chunk;
    stripe = stripe + 1 === stripes ? 0 : stripe + 1;
  }
  return placed;
}

const layout = fc
  .record({ stripes: fc.integer({ min: 1, max: 6 }), chunk: fc.integer({ min: 1, max: 40 }), rows: fc.integer({ min: 1, max: 5 }) })
  .map((g) => ({ ...g, length: g.stripes * g.chunk * g.rows }));

const layoutAndRange = layout.chain((g) =>
  fc
    .tuple(fc.integer({ min: 0, max: g.length }), fc.integer({ min: 0, max: g.length }))
    .filter(([a, b]) => a !== b)
    .map(([a, b]) => ({ ...g, a: Math.min(a, b), e: Math.max(a, b) })),
);

describe('striped mapping properties', () => {
  it('maps every sector where dealing chunks round-robin puts it', () => {
    fc.assert(
      fc.property(layout, ({ stripes, chunk, length }) => {
        const model = dealChunks(stripes, chunk, length);
        for (let x = 0; x < length; x++) assert.deepEqual(stripeMapSector({ stripes, chunk }, x), model[x]);
      }),
      { numRuns: 300 },
    );
  });

  it('maps a range to exactly the contiguous run of each stripe that holds its sectors', () => {
    fc.assert(
      fc.property(layoutAndRange, ({ stripes, chunk, length, a, e }) => {
        const model = dealChunks(stripes, chunk, length);
        for (let t = 0; t < stripes; t++) {
          const mine = model.slice(a, e).filter((p) => p.stripe === t).map((p) => p.sector).sort((p, q) => p - q);
          const [begin, end] = stripeMapRange({ stripes, chunk }, a, e, t);
          if (mine.length === 0) {
            assert.ok(begin >= end, `stripe ${t} holds nothing of [${a}, ${e}) but got [${begin}, ${end})`);
          } else {
            assert.equal(mine[mine.length - 1]! - mine[0]! + 1, mine.length, 'the model run is contiguous');
            assert.deepEqual([begin, end], [mine[0], mine[mine.length - 1]! + 1]);
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('is exact for positions up to 2^53 with any 32-bit chunk and stripe count', () => {
    const u32 = fc.integer({ min: 1, max: 0xffffffff });
    fc.assert(
      fc.property(fc.maxSafeNat(), u32, u32, (x, chunk, stripes) => {
        const [bx, bc, bn] = [BigInt(x), BigInt(chunk), BigInt(stripes)];
        const chunkNr = bx / bc;
        const expected = { stripe: Number(chunkNr % bn), sector: Number((chunkNr / bn) * bc + (bx % bc)) };
        assert.deepEqual(stripeMapSector({ stripes, chunk }, x), expected);
      }),
      { numRuns: 2000 },
    );
  });

  it('puts data and discards at the model locations of the backing devices', async () => {
    await fc.assert(
      fc.asyncProperty(
        layoutAndRange,
        fc.array(fc.integer({ min: 0, max: 64 }), { minLength: 6, maxLength: 6 }),
        async ({ stripes, chunk, length, a, e }, offsets) => {
          const devices = Array.from({ length: stripes }, () => new TestDevice(512));
          const ctx = fakeContext(Object.fromEntries(devices.map((d, i) => [`/dev/s${i}`, d])), { length });
          const argv = [String(stripes), String(chunk), ...devices.flatMap((_, i) => [`/dev/s${i}`, String(offsets[i])])];
          const t = await stripedTarget.construct(ctx, argv);
          const model = dealChunks(stripes, chunk, length);
          const at = (x: number) => devices[model[x]!.stripe]!.peek((offsets[model[x]!.stripe]! + model[x]!.sector) * 512, 512);

          // Every sector x of the target holds byte (x + 1) & 0xff (never 0).
          await splitIo(t, 'write', 0, pattern(length, 1));
          for (let x = 0; x < length; x++) assert.deepEqual(at(x), Buffer.alloc(512, (x + 1) & 0xff));

          await t.discard(a, e - a);
          for (let x = 0; x < length; x++) {
            const expected = x >= a && x < e ? 0 : (x + 1) & 0xff;
            assert.deepEqual(at(x), Buffer.alloc(512, expected), `sector ${x} after discarding [${a}, ${e})`);
          }
          // Nothing outside the target's areas was touched.
          devices.forEach((d, i) => {
            assert.deepEqual(d.peek(0, offsets[i]! * 512), Buffer.alloc(offsets[i]! * 512));
            const areaEnd = (offsets[i]! + length / stripes) * 512;
            assert.deepEqual(d.peek(areaEnd, 512 * 512 - areaEnd), Buffer.alloc(512 * 512 - areaEnd));
          });
        },
      ),
      { numRuns: 100 },
    );
  });
});
