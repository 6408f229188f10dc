/**
 * crc32c of one 4 KiB block, the unit dm-integrity and the thin metadata
 * checksum: the native addon's best path (SSE4.2 when the CPU has it) and
 * its portable table path. bench/micro/crc32c.ts measures throughput over
 * other sizes and against pure JS.
 *
 *   node --import tsx bench/micro/crc32c-4k.ts
 */
import { randomFillSync } from 'node:crypto';
import { Bench } from 'tinybench';

import { crc32c, crc32cHardware, crc32cRawTable } from '../../src/native/index.ts';

const block = randomFillSync(Buffer.alloc(4096));
let sink = 0;

const bench = new Bench({ name: 'crc32c per 4 KiB block', time: 1000 });
bench
  .add(`native crc32c (${crc32cHardware ? 'SSE4.2' : 'table: no SSE4.2 here'})`, () => {
    sink ^= crc32c(block);
  })
  .add('native table (slicing-by-8)', () => {
    sink ^= crc32cRawTable(block, 0xffffffff);
  });

await bench.run();
console.log(bench.name);
console.table(bench.table());
if (sink === 0.5) console.log(sink); // keeps the results alive
