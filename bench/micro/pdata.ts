/**
 * persistent-data at 1M mappings: building a thin device's mapping tree by
 * sequential inserts, then random lookups, random inserts (new keys and
 * overwrites) into the 1M-mapping tree, and the latency of a commit after
 * 100 random remaps. Metadata on a MemoryDevice with a cache large enough
 * to hold it (the figures are CPU cost, not I/O).
 *
 *   node --import tsx bench/micro/pdata.ts
 */
import { Bench } from 'tinybench';

import { MemoryDevice } from '../../src/block/memory-device.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';

const MAPPINGS = 1_000_000;
const device = new MemoryDevice(256 * 2048); // 256 MiB of metadata
const md = await ThinMetadata.format(device, { dataBlockSize: 128, nrDataBlocks: 4 * MAPPINGS, cacheBytes: 512 << 20 });
await md.createThin(1);

let t = performance.now();
for (let v = 0; v < MAPPINGS; v++) await md.insertMapping(1, v, await md.allocDataBlock());
const buildMs = performance.now() - t;
t = performance.now();
await md.commit();
const firstCommitMs = performance.now() - t;
console.log(`build: ${MAPPINGS} sequential inserts (with data-block allocation) in ${(buildMs / 1000).toFixed(1)} s = ${Math.round(MAPPINGS / (buildMs / 1000))} inserts/s; commit of that transaction ${firstCommitMs.toFixed(0)} ms`);

let x = 12345;
const rand = (n: number): number => ((x = (x * 1103515245 + 12345) % 2147483648) % n);

const bench = new Bench({ name: `pdata: thin mapping tree of ${MAPPINGS} mappings`, time: 1500 });
bench
  .add('lookup (random mapped block)', async () => {
    await md.lookupMapping(1, rand(MAPPINGS));
  })
  .add('insert (random new block past the end, with data-block allocation)', async () => {
    await md.insertMapping(1, MAPPINGS + rand(4 * MAPPINGS), await md.allocDataBlock());
  })
  .add('insert (overwrite of a random mapped block, same data block)', async () => {
    const v = rand(MAPPINGS);
    const old = await md.lookupMapping(1, v);
    await md.insertMapping(1, v, old!.block);
  });
await bench.run();
console.log(bench.name);
console.table(bench.table());

t = performance.now();
await md.commit(); // the benchmark's own inserts
console.log(`commit of the benchmark's inserts: ${(performance.now() - t).toFixed(0)} ms`);
const samples: number[] = [];
for (let i = 0; i < 30; i++) {
  // Remaps of random mapped blocks: each touches its own leaf, as provisioning over a thin volume does.
  for (let k = 0; k < 100; k++) await md.insertMapping(1, rand(MAPPINGS), await md.allocDataBlock());
  const c = performance.now();
  await md.commit();
  samples.push(performance.now() - c);
}
samples.sort((a, b) => a - b);
console.log(`commit after 100 random remaps: median ${samples[15]!.toFixed(2)} ms, max ${samples.at(-1)!.toFixed(2)} ms (30 commits)`);
await md.close();
