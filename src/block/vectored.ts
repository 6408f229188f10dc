/**
 * Vectored writes: a write whose data is a list of buffers, in order, rather
 * than one buffer. The NBD server receives a large WRITE as the socket's
 * chunks (64 KiB each on loopback); handing the device those chunks instead
 * of copying them into one buffer saves a copy of every byte written
 * (bench/README.md, "Large writes").
 *
 * The pieces may have any lengths (zero included) and need not end on sector
 * boundaries: only their total is whole sectors. A device that can take them
 * natively implements `BlockDevice.writev`; every other device gets them
 * through `writeChunks`, which joins them into one buffer and calls `write`,
 * so it sees exactly the bytes a single-buffer write would carry.
 */
import { type BlockDevice, SECTOR_SIZE, type WriteOptions, checkLength } from './device.ts';

/** Total bytes of a chunk list. */
export function chunksLength(chunks: readonly Buffer[]): number {
  let n = 0;
  for (const c of chunks) n += c.length;
  return n;
}

/** One buffer holding the chunks' bytes: the first chunk itself when it is the only one. */
export function joinChunks(chunks: readonly Buffer[]): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** checkRequest for a chunk list: its total must be a positive whole number of sectors. */
export function checkChunks(dev: BlockDevice, sector: number, chunks: readonly Buffer[]): void {
  checkLength(dev, 'write', sector, chunksLength(chunks));
}

/**
 * Writes a chunk list to any device: natively where it has `writev`, else as
 * one joined buffer (the only copy, and only on devices without `writev`).
 */
export function writeChunks(dev: BlockDevice, sector: number, chunks: readonly Buffer[], opts?: WriteOptions): Promise<void> {
  if (dev.writev) return dev.writev(sector, chunks, opts);
  return dev.write(sector, joinChunks(chunks), opts);
}

/**
 * Walks a chunk list front to back, handing out the next `n` bytes as views
 * (subarrays) of its chunks, never copies. Each call resumes where the last
 * one stopped, so splitting a list into k consecutive pieces costs O(k +
 * chunks). Empty views are left out.
 */
export class ChunkCursor {
  private index = 0;
  /** Bytes of chunks[index] already handed out. */
  private within = 0;

  constructor(private readonly chunks: readonly Buffer[]) {}

  /** The next `n` bytes; fewer only when the list ends first. */
  next(n: number): Buffer[] {
    const out: Buffer[] = [];
    while (n > 0 && this.index < this.chunks.length) {
      const chunk = this.chunks[this.index]!;
      const take = Math.min(n, chunk.length - this.within);
      if (take > 0) out.push(chunk.subarray(this.within, this.within + take));
      this.within += take;
      n -= take;
      if (this.within === chunk.length) {
        this.index++;
        this.within = 0;
      }
    }
    return out;
  }

  /** The next `count` sectors. */
  nextSectors(count: number): Buffer[] {
    return this.next(count * SECTOR_SIZE);
  }
}
