import type { BlockDevice } from '../block/device.ts';
import { IoError } from '../block/errors.ts';
import { BufferCache, type CachedBlock } from '../bufio/bufio.ts';
import type { Clock } from '../mapper/target.ts';
import type { BlockValidator } from './validators.ts';

/** Metadata block size of every persistent-data format (spec/thin-metadata.md §1). */
export const METADATA_BLOCK_SIZE = 4096;

/** A locked metadata block. `data` may be changed only under a write lock. */
export interface Block {
  readonly nr: number;
  readonly data: Buffer;
}

class LockedBlock implements Block {
  constructor(readonly cached: CachedBlock, readonly write: boolean) {}
  get nr(): number {
    return this.cached.block;
  }
  get data(): Buffer {
    return this.cached.data;
  }
}

export interface BlockManagerOptions {
  readOnly?: boolean;
  /** bufio memory bound, bytes. */
  cacheBytes?: number;
  /** bufio background write-back period, ms of `clock`. */
  writebackMs?: number;
  clock?: Clock;
}

/**
 * Linux's dm-block-manager: metadata blocks over bufio, each checked by its
 * type's validator when first read and stamped (checksum, location) when
 * written out. A block that fails validation is an IoError EILSEQ and is
 * dropped from the cache, never used.
 */
export class BlockManager {
  readonly readOnly: boolean;
  readonly nrBlocks: number;
  readonly cache: BufferCache;

  constructor(readonly device: BlockDevice, opts: BlockManagerOptions = {}) {
    this.readOnly = opts.readOnly ?? device.limits.readOnly;
    this.cache = new BufferCache(device, {
      blockSize: METADATA_BLOCK_SIZE,
      ...(opts.cacheBytes !== undefined && { maxBytes: opts.cacheBytes }),
      ...(opts.writebackMs !== undefined && { writebackMs: opts.writebackMs }),
      ...(opts.clock !== undefined && { clock: opts.clock }),
      beforeWrite: (blocknr, data, aux) => {
        (aux as BlockValidator).prepareForWrite(data, blocknr);
        return blocknr === 0 ? 'superblock' : 'metadata';
      },
    });
    this.nrBlocks = this.cache.nrBlocks;
  }

  get name(): string {
    return this.device.name;
  }

  async readLock(b: number, v: BlockValidator): Promise<Block> {
    const cached = await this.cache.read(b);
    this.validate(cached, v);
    return new LockedBlock(cached, false);
  }

  async writeLock(b: number, v: BlockValidator): Promise<Block> {
    this.checkWritable(b);
    const cached = await this.cache.read(b);
    this.validate(cached, v);
    return new LockedBlock(cached, true);
  }

  /** A write-locked zeroed block, not read from disk. */
  async writeLockZero(b: number, v: BlockValidator): Promise<Block> {
    this.checkWritable(b);
    const cached = await this.cache.new(b);
    cached.data.fill(0);
    cached.aux = v;
    return new LockedBlock(cached, true);
  }

  /** Reads a block without validation (the format/open decision reads block 0 raw). */
  async readRaw(b: number): Promise<Buffer> {
    const cached = await this.cache.read(b);
    const copy = Buffer.from(cached.data);
    this.cache.release(cached);
    return copy;
  }

  /**
   * A write lock marks the block dirty when it is released: marking it at lock
   * time would let a write-back that copies the old contents clean it early.
   */
  unlock(block: Block): void {
    const locked = block as LockedBlock;
    if (locked.write) this.cache.markDirty(locked.cached);
    this.cache.release(locked.cached);
  }

  prefetch(b: number): void {
    this.cache.prefetch(b, 1);
  }

  /** Starts reading the uncached ones of `blocks`, which a walk is about to visit: a read per run of adjacent blocks. */
  prefetchAll(blocks: readonly number[]): void {
    const sorted = [...blocks].sort((x, y) => x - y);
    for (let i = 0; i < sorted.length; ) {
      let n = 1;
      while (i + n < sorted.length && sorted[i + n] === sorted[i]! + n) n++;
      this.cache.prefetch(sorted[i]!, n);
      i += n;
    }
  }

  /** Writes every dirty block, waits, and flushes the device (dm_bm_flush). */
  async flush(): Promise<void> {
    await this.cache.flush();
  }

  /** Abort: drops every cached block, dirty ones included. */
  async discardAll(): Promise<void> {
    await this.cache.discardAll();
  }

  async close(): Promise<void> {
    await this.cache.close();
  }

  private checkWritable(b: number): void {
    if (this.readOnly) throw new IoError('EPERM', `${this.name}: write lock of metadata block ${b} on read-only metadata`, { device: this.name });
  }

  private validate(cached: CachedBlock, v: BlockValidator): void {
    if (cached.aux === v) return;
    if (cached.aux !== undefined) {
      this.cache.release(cached);
      throw new IoError(
        'EINVAL',
        `${this.name}: metadata block ${cached.block} read as ${v.name} but cached as ${(cached.aux as BlockValidator).name} (validator mismatch)`,
        { device: this.name },
      );
    }
    try {
      v.check(cached.data, cached.block, this.name);
    } catch (err) {
      this.cache.release(cached);
      this.cache.forget(cached.block);
      throw err;
    }
    cached.aux = v;
  }
}
