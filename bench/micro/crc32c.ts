/**
 * CRC-32C throughput: the native addon (SSE4.2 when the CPU has it, and its
 * slicing-by-8 table path) next to a pure-JS byte-table implementation.
 *
 *   node --import tsx bench/micro/crc32c.ts
 */
import { randomFillSync } from 'node:crypto';

import { crc32c, crc32cHardware, crc32cRawTable } from '../../src/native/index.ts';

const TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  TABLE[n] = c >>> 0;
}

/** The JS loop ARCHITECTURE §9 says not to use: one table lookup per byte. */
function crc32cJs(buf: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < buf.length; i++) crc = TABLE[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** MB/s (10^6 bytes per second) of fn over buf, timed for about `ms` after a warm-up. */
function throughput(fn: (b: Uint8Array) => number, buf: Uint8Array, ms: number): number {
  for (let i = 0; i < 50; i++) fn(buf);
  let bytes = 0;
  let sink = 0;
  const start = process.hrtime.bigint();
  const stop = start + BigInt(ms) * 1_000_000n;
  let now = start;
  while (now < stop) {
    for (let i = 0; i < 16; i++) sink ^= fn(buf);
    bytes += 16 * buf.length;
    now = process.hrtime.bigint();
  }
  if (sink === 0.5) console.log(sink); // keep the results alive
  return bytes / (Number(now - start) / 1e9) / 1e6;
}

const rows: [string, (b: Uint8Array) => number][] = [
  [`native (${crc32cHardware ? 'SSE4.2, 3 streams' : 'table'})`, (b) => crc32c(b)],
  ['native table (slicing-by-8)', (b) => crc32cRawTable(b, 0xffffffff)],
  ['pure JS (byte table)', crc32cJs],
];
const sizes = [512, 4096, 65536, 1 << 20];
const buffers = sizes.map((n) => randomFillSync(Buffer.alloc(n)));
for (const buf of buffers) {
  if (crc32cJs(buf) !== crc32c(buf)) throw new Error('pure-JS and native crc32c disagree');
}

const label = (n: number) => (n >= 1 << 20 ? `${n >> 20} MiB` : n >= 1024 ? `${n >> 10} KiB` : `${n} B`);
console.log(`crc32c throughput, MB/s (${process.version}, ${process.arch})`);
console.log(['implementation'.padEnd(30), ...sizes.map((n) => label(n).padStart(10))].join(''));
const results = rows.map(([name, fn]) => {
  const mbs = buffers.map((buf) => throughput(fn, buf, 400));
  console.log([name.padEnd(30), ...mbs.map((v) => v.toFixed(0).padStart(10))].join(''));
  return mbs;
});
const ratio = results[0]!.map((v, i) => v / results[2]![i]!);
console.log(['native / pure JS'.padEnd(30), ...ratio.map((r) => `${r.toFixed(1)}x`.padStart(10))].join(''));
