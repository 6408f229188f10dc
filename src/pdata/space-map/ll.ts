import { IoError } from '../../block/errors.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { bitmapValidator } from '../validators.ts';
import { BITMAP_OVERFLOW, ENTRIES_PER_BITMAP, findFreeEntry, getEntry, setEntry } from './bitmap.ts';
import type { IndexStore } from './index-entry.ts';
import { overflowCount, removeOverflowCount, setOverflowCount } from './ref-count-tree.ts';
import { encodeSpaceMapRoot } from './root.ts';

/** A space map's state as of the last commit: its index, and how many blocks it covered. */
export interface CommittedIndex {
  index: IndexStore;
  nrBlocks: number;
}

/**
 * The low-level count store shared by both space maps (Linux's
 * dm-space-map-common): 2-bit entries in bitmaps found through an index,
 * counts ≥ 3 in the overflow ref-count tree. Every change shadows the bitmap
 * and tree nodes it touches, so the committed state stays readable (§5.8).
 */
export class LowLevel {
  constructor(
    private readonly tm: TransactionManager,
    readonly index: IndexStore,
    public nrBlocks: number,
    public nrAllocated: number,
    public refCountRoot: number,
  ) {}

  get nrBitmaps(): number {
    return Math.ceil(this.nrBlocks / ENTRIES_PER_BITMAP);
  }

  /** Throws EINVAL unless `b` is one of the counted blocks; `what` names them ("data", "metadata"). */
  checkBlock(b: number, what: string): void {
    if (!Number.isSafeInteger(b) || b < 0 || b >= this.nrBlocks) {
      throw new IoError('EINVAL', `${this.tm.bm.name}: ${what} block ${b} outside the space map (${this.nrBlocks} blocks)`);
    }
  }

  /**
   * The 32-byte space-map root (§5.1) of these counts under the index at
   * `bitmapRoot`; `nrAllocated` is the caller's when it holds counts not yet
   * in the bitmaps.
   */
  encodeRoot(bitmapRoot: number, nrAllocated = this.nrAllocated): Buffer {
    return encodeSpaceMapRoot({ nrBlocks: this.nrBlocks, nrAllocated, bitmapRoot, refCountRoot: this.refCountRoot });
  }

  async count(b: number): Promise<number> {
    const e = await this.index.get(Math.floor(b / ENTRIES_PER_BITMAP));
    const block = await this.tm.readLock(e.blocknr, bitmapValidator);
    const v = getEntry(block.data, b % ENTRIES_PER_BITMAP);
    this.tm.unlock(block);
    return v < BITMAP_OVERFLOW ? v : overflowCount(this.tm, this.refCountRoot, b);
  }

  async setCount(b: number, count: number): Promise<void> {
    const i = Math.floor(b / ENTRIES_PER_BITMAP);
    const k = b % ENTRIES_PER_BITMAP;
    const e = await this.index.get(i);
    const { block } = await this.tm.shadow(e.blocknr, bitmapValidator);
    const old = getEntry(block.data, k);
    setEntry(block.data, k, Math.min(count, BITMAP_OVERFLOW));
    this.tm.unlock(block);
    // Index first, before anything else can allocate and search this bitmap (§5.3 maintenance).
    const next = { ...e, blocknr: block.nr };
    if (old === 0 && count > 0) {
      next.nrFree--;
      if (next.noneFreeBefore === k) next.noneFreeBefore = k + 1;
      this.nrAllocated++;
    } else if (old > 0 && count === 0) {
      next.nrFree++;
      next.noneFreeBefore = Math.min(next.noneFreeBefore, k);
      this.nrAllocated--;
    }
    this.index.set(i, next);
    if (count >= BITMAP_OVERFLOW) this.refCountRoot = await setOverflowCount(this.tm, this.refCountRoot, b, count);
    else if (old === BITMAP_OVERFLOW) this.refCountRoot = await removeOverflowCount(this.tm, this.refCountRoot, b);
  }

  /**
   * The first block in [begin, end) free both here and in `committed` (§5.8:
   * a block freed in this transaction may still be referenced by the
   * committed metadata) and accepted by `freeNow`; −1 if none.
   */
  async findFree(begin: number, end: number, committed: CommittedIndex, freeNow: (b: number) => boolean): Promise<number> {
    end = Math.min(end, this.nrBlocks);
    for (let i = Math.floor(begin / ENTRIES_PER_BITMAP); i * ENTRIES_PER_BITMAP < end; i++) {
      const base = i * ENTRIES_PER_BITMAP;
      const e = await this.index.get(i);
      if (e.nrFree === 0) continue;
      const from = Math.max(begin - base, e.noneFreeBefore);
      const to = Math.min(ENTRIES_PER_BITMAP, end - base);
      if (from >= to) continue;
      const oldLimit = committed.nrBlocks - base; // entries at or past it did not exist at the commit
      const old = oldLimit > 0 ? await committed.index.get(i) : null;
      const cur = await this.tm.readLock(e.blocknr, bitmapValidator);
      const oldBlock = old && old.blocknr !== e.blocknr ? await this.tm.readLock(old.blocknr, bitmapValidator) : null;
      try {
        const oldData = (oldBlock ?? cur).data;
        for (let k = findFreeEntry(cur.data, from, to); k >= 0; k = findFreeEntry(cur.data, k + 1, to)) {
          if (k < oldLimit && getEntry(oldData, k) !== 0) continue;
          if (freeNow(base + k)) return base + k;
        }
      } finally {
        this.tm.unlock(cur);
        if (oldBlock) this.tm.unlock(oldBlock);
      }
    }
    return -1;
  }

  /** As findFree, searching from `cursor` to the end, then wrapping round to the first block. */
  async findFreeFrom(cursor: number, committed: CommittedIndex, freeNow: (b: number) => boolean): Promise<number> {
    const b = await this.findFree(cursor, this.nrBlocks, committed, freeNow);
    return b >= 0 ? b : this.findFree(0, cursor, committed, freeNow);
  }
}
