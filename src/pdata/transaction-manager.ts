import { IoError, toIoError } from '../block/errors.ts';
import type { Block, BlockManager } from './block-manager.ts';
import type { SpaceMap } from './space-map/space-map.ts';
import type { BlockValidator } from './validators.ts';

/**
 * Test-only deliberately broken commits, kept as regression targets for the
 * crash tests (CRASH-TESTING §3). Never set outside tests.
 */
export type BrokenCommit =
  /** write the superblock together with the other dirty blocks, before the flush */
  | 'superblock-before-flush'
  /** go on to the superblock although writing the metadata or the flush failed */
  | 'ignore-flush-error'
  /** no shadowing: change committed blocks in place (the dm-bufio seed bug, R5) */
  | 'update-in-place';

export interface TransactionManagerOptions {
  brokenCommit?: BrokenCommit;
}

/** Result of shadowing: the writable copy, and whether the caller must increment what it references. */
export interface Shadow {
  block: Block;
  /** The original was shared (count > 1): the copy's children/values gained a reference (§6.2). */
  incChildren: boolean;
}

/**
 * Linux's dm-transaction-manager: copy-on-write over the block manager and
 * the metadata space map. No block reachable from the last committed
 * superblock is ever written (R2): a change goes to a shadow copy, allocated
 * among blocks free both now and at the last commit.
 */
export class TransactionManager {
  private spaceMap: SpaceMap | null = null;
  /** Blocks allocated or shadowed in this transaction: writable in place (§6.1). */
  private readonly shadows = new Set<number>();
  private failure: IoError | null = null;

  constructor(readonly bm: BlockManager, private readonly opts: TransactionManagerOptions = {}) {}

  /** The metadata space map; set once it is opened (it needs this manager to store itself). */
  get sm(): SpaceMap {
    if (!this.spaceMap) throw new IoError('EROFS', `${this.bm.name}: read-only transaction manager has no space map`);
    return this.spaceMap;
  }

  set sm(sm: SpaceMap) {
    this.spaceMap = sm;
  }

  /** A read-only view, e.g. of a held metadata snapshot: reads only, no space map. */
  static readOnly(bm: BlockManager): TransactionManager {
    return new TransactionManager(bm);
  }

  readLock(b: number, v: BlockValidator): Promise<Block> {
    return this.bm.readLock(b, v);
  }

  unlock(block: Block): void {
    this.bm.unlock(block);
  }

  isShadow(b: number): boolean {
    return this.shadows.has(b);
  }

  async newBlock(v: BlockValidator): Promise<Block> {
    const b = await this.sm.newBlock();
    return this.newBlockAt(b, v);
  }

  /** A zeroed writable block at a location the caller has already counted (space-map bootstrap). */
  newBlockAt(b: number, v: BlockValidator): Promise<Block> {
    this.shadows.add(b);
    return this.bm.writeLockZero(b, v);
  }

  /** A writable version of `orig` (§6.2): in place if it is this transaction's and unshared, else a copy. */
  async shadow(orig: number, v: BlockValidator): Promise<Shadow> {
    const count = await this.sm.count(orig);
    if (count === 0) throw new IoError('EINVAL', `${this.bm.name}: shadow of free metadata block ${orig}`);
    const shared = count > 1;
    const inPlace = this.shadows.has(orig) || this.opts.brokenCommit === 'update-in-place';
    if (inPlace && !shared) return { block: await this.bm.writeLock(orig, v), incChildren: false };
    const source = await this.bm.readLock(orig, v);
    try {
      const b = await this.sm.newBlock();
      await this.sm.dec(orig);
      const copy = await this.newBlockAt(b, v);
      source.data.copy(copy.data);
      return { block: copy, incChildren: shared };
    } finally {
      this.bm.unlock(source);
    }
  }

  inc(b: number): Promise<void> {
    return this.sm.inc(b);
  }

  dec(b: number): Promise<void> {
    return this.sm.dec(b);
  }

  count(b: number): Promise<number> {
    return this.sm.count(b);
  }

  /** Set once a commit failed: nothing more may be committed until the metadata is reopened. */
  get failed(): IoError | null {
    return this.failure;
  }

  /**
   * Commits the transaction (spec/thin-metadata.md §6.3, §8.2).
   *
   * R2 (commit = shadow, flush, superblock last) and R5 (bufio may write any
   * dirty block at any time, in any order): every block this transaction
   * wrote is a shadow the committed superblock cannot reach, so early or
   * partial write-back is harmless. Phase 1 commits the metadata space map,
   * writes every dirty block and flushes; only if every write and the flush
   * succeeded does phase 2 write the superblock (built by `fill` on a zeroed
   * block: its meaningful bytes lie in the first sector, so a torn write
   * cannot mix two versions) and flush again. Any error aborts: the disk
   * stays at the last commit and this manager refuses further commits (EIO)
   * until the metadata is reopened.
   *
   * The caller commits its own structures (trees, data space map) first, and
   * reads `sm.root()` inside `fill`.
   */
  async commit(superblock: BlockValidator, fill: (data: Buffer) => void): Promise<void> {
    if (this.failure) {
      throw new IoError('EIO', `${this.bm.name}: metadata commit refused after an earlier failure (${this.failure.message})`, {
        device: this.bm.name,
        cause: this.failure,
      });
    }
    try {
      await this.sm.commit();
      if (this.opts.brokenCommit === 'superblock-before-flush') {
        await this.writeSuperblock(superblock, fill);
        await this.bm.flush();
      } else {
        try {
          await this.bm.flush();
        } catch (err) {
          if (this.opts.brokenCommit !== 'ignore-flush-error') throw err;
        }
        await this.writeSuperblock(superblock, fill);
        await this.bm.flush();
      }
      this.shadows.clear();
    } catch (err) {
      this.failure = toIoError(err, { device: this.bm.name });
      throw this.failure;
    }
  }

  private async writeSuperblock(superblock: BlockValidator, fill: (data: Buffer) => void): Promise<void> {
    const sb = await this.bm.writeLockZero(0, superblock);
    try {
      fill(sb.data);
    } finally {
      this.bm.unlock(sb);
    }
  }
}
