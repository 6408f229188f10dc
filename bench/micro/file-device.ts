/**
 * 4 KiB random reads from a file in /dev/shm (page cache only, so the cost
 * measured is the software path): FileDevice against raw callback fs.read,
 * and FileHandle.read for the choice FileDevice made. Queue depth 1 and 16.
 * The contenders take turns for ROUNDS rounds and each keeps its best round,
 * so a busy machine disturbs the ratio less.
 *
 *   node --import tsx bench/micro/file-device.ts
 */
import { closeSync, existsSync, openSync, read, rmSync, writeSync } from 'node:fs';
import { open as openHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { FileDevice } from '../../src/block/file-device.ts';

const FILE_BYTES = 64 << 20;
const BLOCK = 4096;
const BLOCKS = FILE_BYTES / BLOCK;
const SECONDS = 0.5;
const ROUNDS = 4;

const dir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const path = join(dir, `dmkit-bench-${process.pid}.img`);

/** xorshift32: the same offsets for every contender. */
function offsets(count: number): Uint32Array {
  const out = new Uint32Array(count);
  let x = 2463534242;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) % BLOCKS;
  }
  return out;
}
const OFFSETS = offsets(1 << 20);

/** Runs `depth` workers issuing reads back to back for SECONDS; ops/s. */
async function run(depth: number, readBlock: (block: number, buf: Buffer) => Promise<void>): Promise<number> {
  let next = 0;
  let ops = 0;
  const stop = performance.now() + SECONDS * 1000;
  const worker = async () => {
    const buf = Buffer.alloc(BLOCK);
    while (performance.now() < stop) {
      await readBlock(OFFSETS[next++ & (OFFSETS.length - 1)]!, buf);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  return ops / SECONDS;
}

async function main(): Promise<void> {
  const fd = openSync(path, 'w+');
  const chunk = Buffer.alloc(1 << 20, 0x6b);
  for (let pos = 0; pos < FILE_BYTES; pos += chunk.length) writeSync(fd, chunk, 0, chunk.length, pos);
  const dev = await FileDevice.open(path);
  const handle = await openHandle(path, 'r');
  const contenders: [string, (block: number, buf: Buffer) => Promise<void>][] = [
    ['raw fs.read (callback)', (block, buf) =>
      new Promise((resolve, reject) => read(fd, buf, 0, BLOCK, block * BLOCK, (err) => (err ? reject(err) : resolve())))],
    ['FileHandle.read', async (block, buf) => {
      await handle.read(buf, 0, BLOCK, block * BLOCK);
    }],
    ['FileDevice.read', (block, buf) => dev.read(block * (BLOCK / 512), buf)],
  ];
  try {
    console.log(
      `4 KiB random reads, ${FILE_BYTES >> 20} MiB file in ${dir}, best of ${ROUNDS} × ${SECONDS} s ` +
        `(UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4})`,
    );
    for (const depth of [1, 16]) {
      for (const [, readBlock] of contenders) await run(depth, readBlock); // warm-up, not counted
      const results = contenders.map(() => 0);
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, [, readBlock]] of contenders.entries()) results[i] = Math.max(results[i]!, await run(depth, readBlock));
      }
      for (const [i, [name]] of contenders.entries()) {
        console.log(`QD${String(depth).padEnd(3)} ${name.padEnd(24)} ${results[i]!.toFixed(0).padStart(8)} ops/s`);
      }
      console.log(`QD${String(depth).padEnd(3)} FileDevice / raw fs.read  ${(results[2]! / results[0]!).toFixed(2)}`);
    }
  } finally {
    await dev.close();
    await handle.close();
    closeSync(fd);
    rmSync(path, { force: true });
  }
}

await main();
