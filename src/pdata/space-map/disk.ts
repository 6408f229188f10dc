import { IoError } from '../../block/errors.ts';
import { emptyTree, insert, lookup } from '../btree/btree.ts';
import { plainValue } from '../btree/value-type.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { bitmapValidator } from '../validators.ts';
import { ENTRIES_PER_BITMAP } from './bitmap.ts';
import { INDEX_ENTRY_SIZE, type IndexEntry, type IndexStore, decodeIndexEntry, encodeIndexEntry } from './index-entry.ts';
import { type CommittedIndex, LowLevel } from './ll.ts';
import { refCountValue } from './ref-count-tree.ts';
import { decodeSpaceMapRoot } from './root.ts';
import type { SpaceMap } from './space-map.ts';

/** Data space-map index btree leaves hold 16-byte index entries (§5.5). */
export const indexEntryValue = plainValue(INDEX_ENTRY_SIZE);

/**
 * The data space map's index (§5.5): a btree keyed by bitmap number. Entries
 * used in this transaction are cached; changed ones go into the tree at commit.
 */
class IndexTreeStore implements IndexStore {
  private readonly cache = new Map<number, IndexEntry>();
  private readonly dirty = new Set<number>();
  constructor(private readonly tm: TransactionManager, public root: number) {}

  async get(i: number): Promise<IndexEntry> {
    const cached = this.cache.get(i);
    if (cached) return cached;
    const v = await lookup(this.tm, this.root, i);
    if (!v) throw new IoError('EILSEQ', `${this.tm.bm.name}: data space map index tree ${this.root} has no bitmap ${i}`);
    const e = decodeIndexEntry(v, 0);
    this.cache.set(i, e);
    return e;
  }

  set(i: number, e: IndexEntry): void {
    this.cache.set(i, e);
    this.dirty.add(i);
  }

  async writeBack(): Promise<void> {
    const v = Buffer.alloc(INDEX_ENTRY_SIZE);
    for (const i of [...this.dirty].sort((x, y) => x - y)) {
      encodeIndexEntry(this.cache.get(i)!, v, 0);
      this.root = (await insert(this.tm, this.root, i, v, indexEntryValue)).root;
    }
    this.dirty.clear();
    this.cache.clear();
  }
}

/**
 * The data space map (Linux dm-space-map-disk): bitmaps and ref-count tree
 * live in metadata blocks, so every change is written through at once
 * (shadowed); allocation also consults the committed index (§5.8).
 */
export class DiskSpaceMap implements SpaceMap {
  private cursor = 0;
  private committed: CommittedIndex;
  private allocatedSinceCommit = 0;
  private committedFree: number;
  private lastRoot: Buffer;

  private constructor(private readonly tm: TransactionManager, private readonly ll: LowLevel, private readonly index: IndexTreeStore) {
    this.committed = { index: new IndexTreeStore(tm, index.root), nrBlocks: ll.nrBlocks };
    this.committedFree = ll.nrBlocks - ll.nrAllocated;
    this.lastRoot = ll.encodeRoot(index.root);
  }

  /** A data space map of `nrBlocks` (§8.1: index root then ref-count root, then the bitmaps). */
  static async create(tm: TransactionManager, nrBlocks: number): Promise<DiskSpaceMap> {
    const index = new IndexTreeStore(tm, await emptyTree(tm, indexEntryValue));
    const ll = new LowLevel(tm, index, 0, 0, await emptyTree(tm, refCountValue));
    const sm = new DiskSpaceMap(tm, ll, index);
    await sm.extend(nrBlocks);
    return sm;
  }

  static open(tm: TransactionManager, root: Buffer): DiskSpaceMap {
    const r = decodeSpaceMapRoot(root);
    const index = new IndexTreeStore(tm, r.bitmapRoot);
    return new DiskSpaceMap(tm, new LowLevel(tm, index, r.nrBlocks, r.nrAllocated, r.refCountRoot), index);
  }

  get nrBlocks(): number {
    return this.ll.nrBlocks;
  }

  /** §5.8: committed free blocks minus this transaction's allocations. */
  nrFree(): number {
    return this.committedFree + (this.ll.nrBlocks - this.committed.nrBlocks) - this.allocatedSinceCommit;
  }

  count(b: number): Promise<number> {
    this.ll.checkBlock(b, 'data');
    return this.ll.count(b);
  }

  async inc(b: number): Promise<void> {
    await this.ll.setCount(b, (await this.count(b)) + 1);
  }

  async dec(b: number): Promise<void> {
    const c = await this.count(b);
    if (c === 0) throw new IoError('EINVAL', `${this.tm.bm.name}: reference count of free data block ${b} decremented`);
    await this.ll.setCount(b, c - 1);
  }

  async newBlock(): Promise<number> {
    const b = await this.ll.findFreeFrom(this.cursor, this.committed, () => true);
    if (b < 0) throw new IoError('ENOSPC', `${this.tm.bm.name}: no free data block`, { device: this.tm.bm.name });
    this.cursor = b + 1;
    await this.ll.setCount(b, 1);
    this.allocatedSinceCommit++;
    return b;
  }

  /** New bitmaps are fresh metadata blocks; Linux counts a partial last bitmap as 16320 free (§5.3). */
  async extend(extra: number): Promise<void> {
    const oldBitmaps = this.ll.nrBitmaps;
    this.ll.nrBlocks += extra;
    for (let i = oldBitmaps; i < this.ll.nrBitmaps; i++) {
      const block = await this.tm.newBlock(bitmapValidator);
      this.tm.unlock(block);
      this.index.set(i, { blocknr: block.nr, nrFree: ENTRIES_PER_BITMAP, noneFreeBefore: 0 });
    }
  }

  async commit(): Promise<void> {
    await this.index.writeBack();
    this.committed = { index: new IndexTreeStore(this.tm, this.index.root), nrBlocks: this.ll.nrBlocks };
    this.committedFree = this.ll.nrBlocks - this.ll.nrAllocated;
    this.allocatedSinceCommit = 0;
    this.lastRoot = this.ll.encodeRoot(this.index.root);
  }

  root(): Buffer {
    return Buffer.from(this.lastRoot);
  }
}
