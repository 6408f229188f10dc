import { IoError } from '../../block/errors.ts';
import { emptyTreeAt } from '../btree/btree.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { bitmapValidator, indexBlockValidator } from '../validators.ts';
import { ENTRIES_PER_BITMAP } from './bitmap.ts';
import { IndexBlockStore, MAX_METADATA_BLOCKS } from './index-block.ts';
import { type CommittedIndex, LowLevel } from './ll.ts';
import { refCountValue } from './ref-count-tree.ts';
import { decodeSpaceMapRoot } from './root.ts';
import type { SpaceMap } from './space-map.ts';

/**
 * The metadata space map (spec/thin-metadata.md §5.4, §5.9). It stores
 * itself in the blocks it counts, so changing a count can need a new block.
 * Linux breaks that recursion with a queue of pending operations; dmkit
 * keeps every count changed in the transaction in `pending` and writes them
 * into the bitmaps only at commit, repeating until writing them needs no
 * further change. During the transaction the bitmaps are therefore exactly
 * the committed ones.
 */
export class MetadataSpaceMap implements SpaceMap {
  /** Counts changed in this transaction and not yet written to the bitmaps. */
  private readonly pending = new Map<number, number>();
  /** nr_allocated of `pending` over the bitmaps' own. */
  private pendingAllocated = 0;
  private freedSinceCommit = 0;
  private cursor = 0;
  private committed: CommittedIndex;
  private lastRoot: Buffer;

  private constructor(
    private readonly tm: TransactionManager,
    private readonly ll: LowLevel,
    private readonly index: IndexBlockStore,
    private indexBlocknr: number,
    committed: CommittedIndex,
  ) {
    this.committed = committed;
    this.lastRoot = this.encodeRoot();
  }

  /**
   * Creates the space map on fresh metadata (§5.9, §8.1): block 0 is left for
   * the superblock, block 1 is the index, block 2 the ref-count root, blocks
   * 3 … 2+B the bitmaps, all counted once.
   */
  static async format(tm: TransactionManager, nrBlocks: number): Promise<MetadataSpaceMap> {
    const n = Math.min(nrBlocks, MAX_METADATA_BLOCKS);
    const nrBitmaps = Math.ceil(n / ENTRIES_PER_BITMAP);
    if (n < 3 + nrBitmaps) throw new IoError('ENOSPC', `${tm.bm.name}: ${n} metadata blocks are too few to format`);
    const index = new IndexBlockStore([]);
    for (let i = 0; i < nrBitmaps; i++) index.set(i, { blocknr: 3 + i, nrFree: ENTRIES_PER_BITMAP, noneFreeBefore: 0 });
    const ll = new LowLevel(tm, index, n, 0, 2);
    const sm = new MetadataSpaceMap(tm, ll, index, 1, { index: new IndexBlockStore([]), nrBlocks: 0 });
    tm.sm = sm;
    tm.unlock(await tm.newBlockAt(1, indexBlockValidator));
    await emptyTreeAt(tm, 2, refCountValue);
    for (let i = 0; i < nrBitmaps; i++) tm.unlock(await tm.newBlockAt(3 + i, bitmapValidator));
    for (let b = 0; b < 3 + nrBitmaps; b++) await sm.setPending(b, 1);
    sm.cursor = 3 + nrBitmaps;
    return sm;
  }

  /** Opens the space map described by a 32-byte root (§5.1). */
  static async open(tm: TransactionManager, root: Buffer): Promise<MetadataSpaceMap> {
    const r = decodeSpaceMapRoot(root);
    if (r.nrBlocks > MAX_METADATA_BLOCKS || r.nrBlocks > tm.bm.nrBlocks) {
      throw new IoError('EILSEQ', `${tm.bm.name}: metadata space map of ${r.nrBlocks} blocks does not fit the ${tm.bm.nrBlocks}-block device`);
    }
    const index = await IndexBlockStore.read(tm, r.bitmapRoot, Math.ceil(r.nrBlocks / ENTRIES_PER_BITMAP));
    const ll = new LowLevel(tm, index, r.nrBlocks, r.nrAllocated, r.refCountRoot);
    const sm = new MetadataSpaceMap(tm, ll, index, r.bitmapRoot, { index: index.copy(), nrBlocks: r.nrBlocks });
    tm.sm = sm;
    return sm;
  }

  get nrBlocks(): number {
    return this.ll.nrBlocks;
  }

  /** Never more than can really be allocated: blocks freed in this transaction are not counted (§5.8). */
  nrFree(): number {
    return this.ll.nrBlocks - this.ll.nrAllocated - this.pendingAllocated - this.freedSinceCommit;
  }

  async count(b: number): Promise<number> {
    this.ll.checkBlock(b, 'metadata');
    return this.pending.get(b) ?? this.ll.count(b);
  }

  async inc(b: number): Promise<void> {
    await this.setPending(b, (await this.count(b)) + 1);
  }

  async dec(b: number): Promise<void> {
    const c = await this.count(b);
    if (c === 0) throw new IoError('EINVAL', `${this.tm.bm.name}: reference count of free metadata block ${b} decremented`);
    await this.setPending(b, c - 1);
    if (c === 1) this.freedSinceCommit++;
  }

  async newBlock(): Promise<number> {
    const freeNow = (b: number): boolean => !((this.pending.get(b) ?? 0) > 0);
    const b = await this.ll.findFreeFrom(this.cursor, this.committed, freeNow);
    if (b < 0) throw new IoError('ENOSPC', `${this.tm.bm.name}: no free metadata block`, { device: this.tm.bm.name });
    this.cursor = b + 1;
    await this.setPending(b, 1);
    return b;
  }

  /**
   * Grows the map (§5.9): new bitmaps take the first new blocks, linearly
   * from the old end, and count themselves. Clamped to 4,161,600 blocks.
   */
  async extend(extra: number): Promise<void> {
    const oldBlocks = this.ll.nrBlocks;
    const newBlocks = Math.min(oldBlocks + extra, MAX_METADATA_BLOCKS, this.tm.bm.nrBlocks);
    const oldBitmaps = this.ll.nrBitmaps;
    const newBitmaps = Math.ceil(newBlocks / ENTRIES_PER_BITMAP);
    if (newBlocks - oldBlocks < newBitmaps - oldBitmaps) {
      throw new IoError('ENOSPC', `${this.tm.bm.name}: cannot extend the metadata space map by ${extra} blocks`);
    }
    this.ll.nrBlocks = newBlocks;
    const bitmaps: number[] = [];
    for (let i = oldBitmaps; i < newBitmaps; i++) {
      const b = oldBlocks + (i - oldBitmaps);
      bitmaps.push(b);
      this.index.set(i, { blocknr: b, nrFree: ENTRIES_PER_BITMAP, noneFreeBefore: 0 });
    }
    for (const b of bitmaps) this.tm.unlock(await this.tm.newBlockAt(b, bitmapValidator));
    for (const b of bitmaps) await this.setPending(b, 1);
  }

  /**
   * Writes the pending counts into the bitmaps and the ref-count tree, then
   * the index into a shadow of the index block; both may allocate or free
   * blocks, so repeat until nothing is pending and the index is written.
   */
  async commit(): Promise<void> {
    for (;;) {
      if (this.pending.size > 0) {
        for (const b of [...this.pending.keys()].sort((x, y) => x - y)) {
          const count = this.pending.get(b)!;
          const before = await this.ll.count(b);
          await this.ll.setCount(b, count);
          this.pendingAllocated -= Number(count > 0) - Number(before > 0);
          if (this.pending.get(b) === count) this.pending.delete(b);
        }
        continue;
      }
      if (!this.index.dirty) break;
      this.index.dirty = false;
      const { block } = await this.tm.shadow(this.indexBlocknr, indexBlockValidator);
      this.indexBlocknr = block.nr;
      this.index.encode(block.data);
      this.tm.unlock(block);
    }
    this.committed = { index: this.index.copy(), nrBlocks: this.ll.nrBlocks };
    this.freedSinceCommit = 0;
    this.lastRoot = this.encodeRoot();
  }

  root(): Buffer {
    return Buffer.from(this.lastRoot);
  }

  private encodeRoot(): Buffer {
    return this.ll.encodeRoot(this.indexBlocknr, this.ll.nrAllocated + this.pendingAllocated);
  }

  private async setPending(b: number, count: number): Promise<void> {
    const before = await this.count(b);
    this.pending.set(b, count);
    this.pendingAllocated += Number(count > 0) - Number(before > 0);
  }
}
