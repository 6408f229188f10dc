/** Top-level workloads: the operations a crash test issues on the top device (CRASH-TESTING §1). */
import { type BlockDevice, SECTOR_SIZE } from '../block/device.ts';
import type { Rng } from '../sim/rng.ts';

export type TopOp =
  /** `n` names the op's data, so a minimised workload writes the same bytes. */
  | { readonly op: 'write'; readonly sector: number; readonly count: number; readonly fua?: boolean; readonly n: number }
  | { readonly op: 'write-zeroes'; readonly sector: number; readonly count: number; readonly fua?: boolean }
  | { readonly op: 'discard'; readonly sector: number; readonly count: number }
  | { readonly op: 'flush' };

/** The bytes of write `n`: every sector names the write and its own sector, so misplaced data never matches. */
export function writeData(n: number, sector: number, count: number): Buffer {
  const buf = Buffer.alloc(count * SECTOR_SIZE);
  for (let i = 0; i < count; i++) {
    const off = i * SECTOR_SIZE;
    buf.write('dmkit-w', off, 'latin1');
    buf.writeUInt32LE(n, off + 8);
    buf.writeUInt32LE(sector + i, off + 12);
    buf.fill((n * 31 + sector + i) & 0xff, off + 16, off + SECTOR_SIZE);
  }
  return buf;
}

export function formatOp(op: TopOp): string {
  if (op.op === 'flush') return 'flush';
  const fua = 'fua' in op && op.fua ? ' fua' : '';
  return `${op.op} ${op.sector}+${op.count}${fua}`;
}

/**
 * Issues the ops in order with at most `concurrency` in flight. Errors are
 * left to the recording (a failed top-level write is simply not acknowledged).
 */
export async function runWorkload(top: BlockDevice, ops: readonly TopOp[], concurrency = 1): Promise<void> {
  const inflight = new Set<Promise<void>>();
  for (const op of ops) {
    while (inflight.size >= concurrency) await Promise.race(inflight);
    const p = issue(top, op).catch(() => undefined).then(() => {
      inflight.delete(p);
    });
    inflight.add(p);
  }
  await Promise.all(inflight);
}

function issue(top: BlockDevice, op: TopOp): Promise<void> {
  switch (op.op) {
    case 'write':
      return top.write(op.sector, writeData(op.n, op.sector, op.count), { fua: op.fua ?? false });
    case 'write-zeroes':
      return top.writeZeroes(op.sector, op.count, { fua: op.fua ?? false });
    case 'discard':
      return top.discard(op.sector, op.count);
    case 'flush':
      return top.flush();
  }
}

export interface RandomWorkloadOptions {
  /** Top device size and logical block, sectors. */
  sectors: number;
  blockSectors: number;
  length: number;
  /** Largest request, blocks (default 4). */
  maxBlocks?: number;
  discard?: boolean;
  writeZeroes?: boolean;
}

/**
 * How a crash target's random workloads are shaped (CrashTarget.workload):
 * anything given here overrides what the top device's geometry suggests.
 */
export type WorkloadShape = Partial<Pick<RandomWorkloadOptions, 'blockSectors' | 'maxBlocks' | 'discard' | 'writeZeroes'>>;

/** A seeded random mix: writes (some FUA), flushes, and zeroes/discards where the device has them. */
export function randomWorkload(rng: Rng, o: RandomWorkloadOptions): TopOp[] {
  const blocks = Math.floor(o.sectors / o.blockSectors);
  const ops: TopOp[] = [];
  for (let n = 0; n < o.length; n++) {
    const block = rng.below(blocks);
    const len = Math.min(1 + rng.below(o.maxBlocks ?? 4), blocks - block);
    const sector = block * o.blockSectors;
    const count = len * o.blockSectors;
    const r = rng.below(100);
    if (r < 20) ops.push({ op: 'flush' });
    else if (r < 26 && o.writeZeroes) ops.push({ op: 'write-zeroes', sector, count, fua: rng.chance(0.2) });
    else if (r < 30 && o.discard) ops.push({ op: 'discard', sector, count });
    else ops.push({ op: 'write', sector, count, fua: rng.chance(0.1), n });
  }
  return ops;
}

/** Reads a whole device, split at its maxTransfer. */
export async function readAll(dev: BlockDevice): Promise<Buffer> {
  const out = Buffer.alloc(dev.sectors * SECTOR_SIZE);
  const step = Math.max(1, Math.floor(dev.limits.maxTransfer / (dev.limits.logicalBlockSize / SECTOR_SIZE))) *
    (dev.limits.logicalBlockSize / SECTOR_SIZE);
  const reads: Promise<void>[] = [];
  for (let s = 0; s < dev.sectors; s += step) {
    reads.push(dev.read(s, out.subarray(s * SECTOR_SIZE, Math.min(dev.sectors, s + step) * SECTOR_SIZE)));
  }
  await Promise.all(reads);
  return out;
}
