import {
  type BlockDevice, type Extent, type Limits, type WriteOptions, type WriteZeroesOptions,
  SECTOR_SHIFT, SECTOR_SIZE, checkBuffer, checkRequest, makeLimits,
} from './device.ts';
import { IoError } from './errors.ts';
import { chunkExtents, forEachChunkPiece } from './chunks.ts';
import { checkChunks } from './vectored.ts';

const CHUNK_SHIFT = 16; // 64 KiB chunks: allocation is per chunk, never per sector
const CHUNK_BYTES = 1 << CHUNK_SHIFT;
const CHUNK_SECTORS = CHUNK_BYTES >> SECTOR_SHIFT;

export interface MemoryDeviceOptions {
  name?: string;
  limits?: Partial<Limits>;
}

/**
 * A sparse in-memory disk with no volatile cache: every completed write is
 * "durable" (there is nothing to lose). For tests and the embedded default's
 * scratch devices; SimulatedDisk is the one that models power loss.
 */
export class MemoryDevice implements BlockDevice {
  readonly name: string;
  readonly sectors: number;
  readonly limits: Limits;
  private readonly chunks = new Map<number, Buffer>();
  private closed = false;

  constructor(sectors: number, opts: MemoryDeviceOptions = {}) {
    if (!Number.isSafeInteger(sectors) || sectors < 0) {
      throw new IoError('EINVAL', `memory device size ${sectors} is not a whole number of sectors`);
    }
    this.name = opts.name ?? 'memory';
    this.sectors = sectors;
    this.limits = makeLimits({ discard: true, discardZeroes: true, writeZeroes: true, ...opts.limits });
  }

  /** Bytes actually allocated (for tests of sparseness). */
  get allocatedBytes(): number {
    return this.chunks.size * CHUNK_BYTES;
  }

  async read(sector: number, into: Buffer): Promise<void> {
    this.checkOpen(sector);
    checkBuffer(this, 'read', sector, into);
    this.copyOut(sector * SECTOR_SIZE, into);
  }

  async write(sector: number, data: Buffer, _opts?: WriteOptions): Promise<void> {
    this.checkOpen(sector);
    checkBuffer(this, 'write', sector, data);
    this.copyIn(sector * SECTOR_SIZE, data);
  }

  /** Each piece is copied straight into the image, never joined first. */
  async writev(sector: number, chunks: readonly Buffer[], _opts?: WriteOptions): Promise<void> {
    this.checkOpen(sector);
    checkChunks(this, sector, chunks);
    let offset = sector * SECTOR_SIZE;
    for (const c of chunks) {
      this.copyIn(offset, c);
      offset += c.length;
    }
  }

  async flush(): Promise<void> {
    this.checkOpen(0);
  }

  async discard(sector: number, count: number): Promise<void> {
    this.checkOpen(sector);
    checkRequest(this, 'discard', sector, count);
    this.zeroRange(sector, count, true);
  }

  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions = {}): Promise<void> {
    this.checkOpen(sector);
    checkRequest(this, 'write-zeroes', sector, count);
    this.zeroRange(sector, count, opts.mayUnmap ?? false);
  }

  async extents(sector: number, count: number): Promise<Extent[]> {
    this.checkOpen(sector);
    checkRequest(this, 'extents', sector, count);
    return chunkExtents(sector, count, CHUNK_SECTORS, (chunk) => !this.chunks.has(chunk));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Direct copy of a byte range, for tests that inspect the image. */
  peek(byteOffset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    this.copyOut(byteOffset, out);
    return out;
  }

  private checkOpen(sector: number): void {
    if (this.closed) throw new IoError('ESHUTDOWN', `${this.name}: device is closed`, { device: this.name, sector });
  }

  private copyOut(offset: number, into: Buffer): void {
    forEachChunkPiece(offset, into.length, CHUNK_BYTES, (chunk, within, done, n) => {
      const buf = this.chunks.get(chunk);
      if (buf) buf.copy(into, done, within, within + n);
      else into.fill(0, done, done + n);
    });
  }

  private copyIn(offset: number, data: Buffer): void {
    forEachChunkPiece(offset, data.length, CHUNK_BYTES, (chunk, within, done, n) => {
      let buf = this.chunks.get(chunk);
      if (!buf) {
        buf = Buffer.alloc(CHUNK_BYTES);
        this.chunks.set(chunk, buf);
      }
      data.copy(buf, within, done, done + n);
    });
  }

  private zeroRange(sector: number, count: number, unmap: boolean): void {
    forEachChunkPiece(sector * SECTOR_SIZE, count * SECTOR_SIZE, CHUNK_BYTES, (chunk, within, _done, n) => {
      const buf = this.chunks.get(chunk);
      if (!buf) return;
      if (unmap && n === CHUNK_BYTES) this.chunks.delete(chunk);
      else buf.fill(0, within, within + n);
    });
  }
}
