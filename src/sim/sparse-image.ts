import { forEachChunkPiece } from '../block/chunks.ts';
import { SECTOR_SIZE } from '../block/device.ts';

/** Allocation unit of an image: 4 KiB keeps a crash overlay that touches a few sectors small. */
export const CHUNK_BYTES = 4096;
export const CHUNK_SECTORS = CHUNK_BYTES / SECTOR_SIZE;

/** A chunk is its bytes, or `null`: explicitly zero, hiding whatever the base holds there. */
type Chunk = Buffer | null;

/**
 * A sparse disk image in 4 KiB chunks, optionally layered over a base image it
 * reads through (copy-on-write). Crash states are overlays on a frozen durable
 * image, so thousands of them cost only the chunks they change.
 *
 * A base must not change while overlays read through it unless that is what
 * the overlay wants (SimulatedDisk's read view over its own durable image).
 */
export class SparseImage {
  readonly sectors: number;
  readonly base: SparseImage | undefined;
  private chunks: Map<number, Chunk>;
  /** Chunks whose buffer belongs to this image alone and may change in place. */
  private readonly owned = new Set<number>();

  constructor(sectors: number, base?: SparseImage) {
    if (base && base.sectors !== sectors) {
      throw new RangeError(`image of ${sectors} sectors cannot overlay an image of ${base.sectors} sectors`);
    }
    this.sectors = sectors;
    this.base = base;
    this.chunks = new Map();
  }

  /** A child image that starts equal to this one and keeps its changes to itself. */
  overlay(): SparseImage {
    return new SparseImage(this.sectors, this);
  }

  /**
   * A frozen copy of this image's current content: chunk buffers are shared and
   * copied by whichever side writes first.
   */
  snapshot(): SparseImage {
    const copy = new SparseImage(this.sectors, this.base);
    copy.chunks = new Map(this.chunks);
    this.owned.clear();
    return copy;
  }

  /** Bytes of chunk buffers this layer holds (shared or not), for tests of sparseness. */
  get layerBytes(): number {
    let n = 0;
    for (const c of this.chunks.values()) if (c) n += CHUNK_BYTES;
    return n;
  }

  read(sector: number, into: Buffer): void {
    forEachChunkPiece(sector * SECTOR_SIZE, into.length, CHUNK_BYTES, (chunk, within, done, n) => {
      const buf = this.lookup(chunk);
      if (buf) buf.copy(into, done, within, within + n);
      else into.fill(0, done, done + n);
    });
  }

  write(sector: number, data: Buffer): void {
    forEachChunkPiece(sector * SECTOR_SIZE, data.length, CHUNK_BYTES, (chunk, within, done, n) => {
      data.copy(this.writable(chunk, n === CHUNK_BYTES), within, done, done + n);
    });
  }

  zero(sector: number, count: number): void {
    forEachChunkPiece(sector * SECTOR_SIZE, count * SECTOR_SIZE, CHUNK_BYTES, (chunk, within, _done, n) => {
      if (n === CHUNK_BYTES) {
        // A whole zero chunk frees its buffer; only an overlay needs the marker.
        if (this.base) this.chunks.set(chunk, null);
        else this.chunks.delete(chunk);
        this.owned.delete(chunk);
      } else if (this.lookup(chunk)) {
        this.writable(chunk, false).fill(0, within, within + n);
      }
    });
  }

  /** True when the chunk holding `sector` was never written or is known zero (an extents hole). */
  isHole(sector: number): boolean {
    return this.lookup(Math.floor(sector / CHUNK_SECTORS)) === null;
  }

  private lookup(chunk: number): Buffer | null {
    for (let img: SparseImage | undefined = this; img; img = img.base) {
      const c = img.chunks.get(chunk);
      if (c !== undefined) return c;
    }
    return null;
  }

  /** The chunk's buffer, owned by this layer; `whole`: the caller overwrites all of it. */
  private writable(chunk: number, whole: boolean): Buffer {
    const mine = this.chunks.get(chunk);
    if (mine && this.owned.has(chunk)) return mine;
    const buf = Buffer.alloc(CHUNK_BYTES);
    if (!whole) this.lookup(chunk)?.copy(buf);
    this.chunks.set(chunk, buf);
    this.owned.add(chunk);
    return buf;
  }
}
