import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SECTOR_SIZE } from '../../src/block/device.ts';
import { crashImages, generateStates } from '../../src/crash/families.ts';
import { TopModel } from '../../src/crash/oracle.ts';
import { Recording } from '../../src/crash/recording.ts';
import { Scheduler } from '../../src/sim/scheduler.ts';
import { SimulatedDisk } from '../../src/sim/simulated-disk.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';

const fill = (sectors: number, byte: number) => Buffer.alloc(sectors * SECTOR_SIZE, byte);

/** One disk, recorded: three 2-sector writes (one at a time), then a flush. */
async function recorded() {
  const scheduler = new Scheduler({ seed: 9 });
  const rec = new Recording();
  const image = new SparseImage(16);
  const disk = rec.record(new SimulatedDisk({ name: 'd', image, scheduler }), image);
  for (const [i, s] of [0, 4, 8].entries()) await disk.write(s, fill(2, i + 1), { tag: 'data' });
  await disk.flush();
  await assert.rejects(disk.write(16, fill(1, 9))); // refused: past the end, never in doubt
  return rec;
}

test('state counts per family at a cut follow CRASH-TESTING §2.2', async () => {
  const rec = await recorded();
  const lastWrite = rec.events.findIndex((e) => e.type === 'complete' && e.id === 3) + 1;
  const at = (family: Parameters<typeof generateStates>[1]['families'][number]) =>
    generateStates(rec, { families: [family], seed: 1 }).filter((s) => s.cut === lastWrite);
  assert.equal(at('all-none').length, 2);
  assert.equal(at('single').length, 6); // omit or keep each of the three volatile writes
  assert.equal(at('subsets').length, 6); // 2^3 minus all and none
  assert.equal(at('torn').length, 3); // each 2-sector write torn
  assert.equal(at('per-device').length, 0); // one disk
  const persistence = generateStates(rec, { families: ['persistence'], seed: 1 });
  assert.deepEqual(persistence.map((s) => rec.events[s.cut - 1]!.id), [4]); // only after the flush
});

test('crash images follow the selections; sampling is seeded and bounded', async () => {
  const rec = await recorded();
  const states = generateStates(rec, { families: ['single', 'torn', 'subsets'], seed: 3 });
  for (const { state, images } of crashImages(rec, states)) {
    const buf = Buffer.alloc(16 * SECTOR_SIZE);
    images.get(0)!.read(0, buf);
    for (let s = 0; s < 16; s++) {
      const v = buf[s * SECTOR_SIZE]!;
      const writer = Math.floor(s / 4) + 1;
      assert.ok(v === 0 || (s % 4 < 2 && v === writer && writer <= 3), `${state.note}: sector ${s} holds ${v}`);
    }
    if (state.family === 'torn') {
      const bytes = [0, 4, 8].map((s) => [buf[s * SECTOR_SIZE], buf[(s + 1) * SECTOR_SIZE]]);
      assert.ok(bytes.some(([a, b]) => (a === 0) !== (b === 0)), `${state.note}: no write is torn`);
    }
  }
  const a = generateStates(rec, { families: ['subsets', 'single'], seed: 5, maxStates: 4 });
  const b = generateStates(rec, { families: ['subsets', 'single'], seed: 5, maxStates: 4 });
  assert.equal(a.length, 8);
  assert.deepEqual(a.map((s) => [s.cut, s.note]), b.map((s) => [s.cut, s.note]));
});

test('top oracle: flushed data must survive; concurrent overlapping writes are unordered', async () => {
  const scheduler = new Scheduler({ seed: 1 });
  const rec = new Recording();
  const top = rec.record(new SimulatedDisk({ name: 'top', sectors: 4, scheduler }));
  await top.write(0, fill(1, 1));
  await top.flush();
  await Promise.all([top.write(1, fill(1, 2)), top.write(1, fill(1, 3), { fua: true })]);
  const model = new TopModel(rec, 0, fill(4, 0));
  const end = rec.events.length;
  const image = (bytes: number[]) => Buffer.concat(bytes.map((b) => fill(1, b)));
  assert.equal(model.check(end, image([1, 2, 0, 0])), undefined);
  assert.equal(model.check(end, image([1, 3, 0, 0])), undefined);
  assert.match(model.check(end, image([0, 3, 0, 0])) ?? '', /top sector 0 holds its initial content: acknowledged, flushed data was lost/);
  assert.match(model.check(end, image([1, 3, 7, 0])) ?? '', /top sector 2 holds data no write put there/);
  assert.match(model.check(end, image([1, 0, 0, 0])) ?? '', /top sector 1 holds its initial content/);
  // Before the flush completed, losing the write is allowed.
  assert.equal(model.check(2, image([0, 0, 0, 0])), undefined);
});
