/**
 * Fixed-size chunk allocation, shared by the sparse in-memory images
 * (MemoryDevice, SimulatedDisk's SparseImage).
 */
import type { Extent } from './device.ts';

/**
 * The extents of [sector, sector+count) on a device that allocates in fixed
 * chunks: runs of allocated chunks are data, runs of unallocated ones are
 * holes that read as zeroes.
 */
export function chunkExtents(sector: number, count: number, chunkSectors: number, isHole: (chunk: number) => boolean): Extent[] {
  const out: Extent[] = [];
  const end = sector + count;
  for (let s = sector; s < end; ) {
    const chunk = Math.floor(s / chunkSectors);
    const next = Math.min(end, (chunk + 1) * chunkSectors);
    const hole = isHole(chunk);
    const last = out[out.length - 1];
    if (last && last.hole === hole) last.count += next - s;
    else out.push({ sector: s, count: next - s, hole, zero: hole });
    s = next;
  }
  return out;
}

/**
 * Calls `piece` for each part of the bytes [offset, offset + length) that lies
 * in one chunk of `chunkBytes`: the chunk's number, where the part starts in
 * the chunk and in the range, and its length.
 */
export function forEachChunkPiece(
  offset: number,
  length: number,
  chunkBytes: number,
  piece: (chunk: number, within: number, done: number, n: number) => void,
): void {
  for (let done = 0; done < length; ) {
    const pos = offset + done;
    const chunk = Math.floor(pos / chunkBytes);
    const within = pos - chunk * chunkBytes;
    const n = Math.min(length - done, chunkBytes - within);
    piece(chunk, within, done, n);
    done += n;
  }
}
