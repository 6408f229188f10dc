/**
 * What the mapper adds to a request: a 4 KiB read straight from a
 * MemoryDevice, then through MappedDevices whose tables need a lookup
 * (1 and 64 linear entries) or a split (a 1 MiB read over striped 64 KiB
 * chunks: 16 pieces), and through the zero target (no backing device).
 *
 *   node --import tsx bench/micro/mapper.ts
 */
import { Bench } from 'tinybench';

import { MemoryDevice } from '../../src/block/memory-device.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { builtinTargets } from '../../src/targets/index.ts';

const DISK_SECTORS = 64 * 2048; // 64 MiB each
const ENTRIES = 64;
const PER_ENTRY = DISK_SECTORS / ENTRIES;

const registry = new DeviceRegistry({
  targets: builtinTargets(),
  openFile: () => Promise.reject(new Error('the mapper micro-benchmark opens no files')),
});
const disks = ['disk0', 'disk1'].map((name) => {
  const d = new MemoryDevice(DISK_SECTORS, { name });
  registry.attach(name, d);
  return d;
});
const fill = Buffer.alloc(1 << 20, 0x3c); // allocated everywhere: reads copy real data
for (const d of disks) for (let s = 0; s < DISK_SECTORS; s += fill.length / 512) await d.write(s, fill);

await registry.create('one', { table: [`0 ${DISK_SECTORS} linear disk0 0`] });
// 64 entries alternating between the disks, so every lookup is a real search.
await registry.create('many', {
  table: Array.from({ length: ENTRIES }, (_, i) =>
    `${i * PER_ENTRY} ${PER_ENTRY} linear disk${i % 2} ${Math.floor(i / 2) * PER_ENTRY}`),
});
await registry.create('striped', { table: [`0 ${2 * DISK_SECTORS} striped 2 128 disk0 0 disk1 0`] });
await registry.create('zero', { table: [`0 ${DISK_SECTORS} zero`] });
const [one, many, striped, zero] = ['one', 'many', 'striped', 'zero'].map((n) => registry.get(n));

let next = 0;
const nextSector = (limit: number): number => ((next = (next + 2053) % (limit / 8)) * 8);
const block = Buffer.alloc(4096);
const big = Buffer.alloc(1 << 20);

const bench = new Bench({ name: 'mapper: table lookup and I/O split', time: 1000 });
bench
  .add('MemoryDevice.read 4 KiB (baseline)', () => disks[0]!.read(nextSector(DISK_SECTORS), block))
  .add('linear, 1 entry: read 4 KiB', () => one!.read(nextSector(DISK_SECTORS), block))
  .add(`linear, ${ENTRIES} entries: read 4 KiB`, () => many!.read(nextSector(DISK_SECTORS), block))
  .add('zero: read 4 KiB', () => zero!.read(nextSector(DISK_SECTORS), block))
  .add('MemoryDevice.read 1 MiB (baseline)', () => disks[0]!.read(nextSector(DISK_SECTORS - 2048), big))
  .add('striped 2 × 64 KiB: read 1 MiB (16 pieces)', () => striped!.read(nextSector(2 * DISK_SECTORS - 2048), big));

try {
  await bench.run();
  console.log(bench.name);
  console.table(bench.table());
} finally {
  await registry.shutdown();
}
