/**
 * Splitting and routing against a simple model: for random tables of
 * `testmap` targets over one disk, every sector written through the mapped
 * device lands exactly where an independent per-sector mapping says, and no
 * piece crosses a target boundary or a max_io multiple (testmap checks that).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { memoryRegistry } from '../helpers/registry.ts';
import { testmapTarget } from '../helpers/test-targets.ts';

const DISK = 1 << 14;

interface Seg {
  length: number;
  offset: number;
  maxIo?: number;
}

const segArb = fc.record({
  length: fc.integer({ min: 1, max: 300 }),
  offset: fc.integer({ min: 0, max: DISK - 300 }),
  maxIo: fc.option(fc.integer({ min: 1, max: 64 }), { nil: undefined }),
});

function tableOf(segs: Seg[]): string[] {
  let start = 0;
  return segs.map((s) => {
    const line = `${start} ${s.length} testmap /dev/loop0 ${s.offset}${s.maxIo ? ` ${s.maxIo}` : ''}`;
    start += s.length;
    return line;
  });
}

/** Independent model: the disk sector a device sector maps to. */
function modelMap(segs: Seg[], sector: number): number {
  let begin = 0;
  for (const s of segs) {
    if (sector < begin + s.length) return s.offset + (sector - begin);
    begin += s.length;
  }
  throw new Error('outside');
}

test('property: writes land where the model maps them, reads return them', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(segArb, { minLength: 1, maxLength: 6 }).chain((segs) => {
        const size = segs.reduce((a, s) => a + s.length, 0);
        return fc.tuple(
          fc.constant(segs),
          fc.integer({ min: 0, max: size - 1 }).chain((start) =>
            fc.tuple(fc.constant(start), fc.integer({ min: 1, max: Math.min(size - start, 200) })),
          ),
        );
      }),
      async ([segs, [start, count]]) => {
        const { registry, disks } = memoryRegistry([testmapTarget], { '/dev/loop0': DISK });
        await registry.create('m', { table: tableOf(segs) });
        const md = registry.get('m');
        const data = Buffer.alloc(count * 512);
        for (let i = 0; i < count; i++) data.writeUInt32LE(start + i + 1, i * 512);
        await md.write(start, data);
        // Overlapping segments may share disk sectors: the model says which write wins only
        // per disk sector, so check every device sector whose disk sector is not shared.
        const owners = new Map<number, number>();
        for (let i = 0; i < count; i++) {
          const d = modelMap(segs, start + i);
          owners.set(d, (owners.get(d) ?? 0) + 1);
        }
        for (let i = 0; i < count; i++) {
          const d = modelMap(segs, start + i);
          if (owners.get(d) === 1) assert.equal(disks['/dev/loop0']!.peek(d * 512, 4).readUInt32LE(0), start + i + 1);
        }
        const back = Buffer.alloc(count * 512);
        await md.read(start, back);
        for (let i = 0; i < count; i++) {
          const d = modelMap(segs, start + i);
          assert.equal(back.readUInt32LE(i * 512), disks['/dev/loop0']!.peek(d * 512, 4).readUInt32LE(0));
        }
        await registry.shutdown();
      },
    ),
    { numRuns: 150 },
  );
});

test('discard and write-zeroes are split at target boundaries only', async () => {
  const { registry, disks } = memoryRegistry([testmapTarget], { '/dev/loop0': 4096 });
  await registry.create('m', { table: ['0 100 testmap /dev/loop0 1000 8', '100 100 testmap /dev/loop0 0 8'] });
  const md = registry.get('m');
  await md.write(0, Buffer.alloc(200 * 512, 0xee));
  await md.writeZeroes(50, 100);
  const disk = disks['/dev/loop0']!;
  assert.equal(disk.peek(1049 * 512, 1)[0], 0xee);
  assert.equal(disk.peek(1050 * 512, 1)[0], 0);
  assert.equal(disk.peek(1099 * 512, 1)[0], 0);
  assert.equal(disk.peek(49 * 512, 1)[0], 0);
  assert.equal(disk.peek(50 * 512, 1)[0], 0xee);
  const extents = await md.extents(0, 200);
  assert.equal(extents.reduce((a, x) => a + x.count, 0), 200);
  await registry.shutdown();
});

test('a request past the end is refused with ENOSPC naming the device; misaligned buffers with EINVAL', async () => {
  const { registry } = memoryRegistry([testmapTarget], { '/dev/loop0': 4096 });
  await registry.create('m', { table: ['0 100 testmap /dev/loop0 0'] });
  const md = registry.get('m');
  await assert.rejects(md.read(99, Buffer.alloc(1024)), { code: 'ENOSPC', message: /^m: read of 2 sectors at sector 99/ });
  await assert.rejects(md.write(0, Buffer.alloc(100)), { code: 'EINVAL' });
  await registry.shutdown();
});
