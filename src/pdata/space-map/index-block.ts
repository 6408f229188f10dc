import { IoError } from '../../block/errors.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { indexBlockValidator } from '../validators.ts';
import { ENTRIES_PER_BITMAP } from './bitmap.ts';
import { INDEX_ENTRY_SIZE, type IndexEntry, type IndexStore, decodeIndexEntry, encodeIndexEntry } from './index-entry.ts';

/*
 * Metadata space-map index block (spec/thin-metadata.md §5.4):
 *
 * | offset | size | field |
 * | 0  | 4 | le32 csum (index salt) |
 * | 4  | 4 | le32 padding (0) |
 * | 8  | 8 | le64 blocknr |
 * | 16 + 16·i | 16 | index entry i, i = 0 … 254 (unused entries zero) |
 */

const INDEX_ENTRIES_AT = 16;
export const MAX_METADATA_BITMAPS = 255;
/** 255 · 16320: a larger metadata device is clamped (§5.4). */
export const MAX_METADATA_BLOCKS = MAX_METADATA_BITMAPS * ENTRIES_PER_BITMAP;

/** The metadata space map's index: all entries in memory, written as one block at commit. */
export class IndexBlockStore implements IndexStore {
  dirty = false;
  constructor(readonly entries: IndexEntry[]) {}

  static async read(tm: TransactionManager, blocknr: number, nrBitmaps: number): Promise<IndexBlockStore> {
    if (nrBitmaps > MAX_METADATA_BITMAPS) {
      throw new IoError('EILSEQ', `${tm.bm.name}: metadata space map needs ${nrBitmaps} bitmaps, more than ${MAX_METADATA_BITMAPS}`);
    }
    const block = await tm.readLock(blocknr, indexBlockValidator);
    try {
      const entries: IndexEntry[] = [];
      for (let i = 0; i < nrBitmaps; i++) entries.push(decodeIndexEntry(block.data, INDEX_ENTRIES_AT + INDEX_ENTRY_SIZE * i));
      return new IndexBlockStore(entries);
    } finally {
      tm.unlock(block);
    }
  }

  async get(i: number): Promise<IndexEntry> {
    const e = this.entries[i];
    if (!e) throw new IoError('EINVAL', `metadata space map has no bitmap ${i}`);
    return e;
  }

  set(i: number, e: IndexEntry): void {
    this.entries[i] = e;
    this.dirty = true;
  }

  copy(): IndexBlockStore {
    return new IndexBlockStore(this.entries.map((e) => ({ ...e })));
  }

  encode(data: Buffer): void {
    this.entries.forEach((e, i) => encodeIndexEntry(e, data, INDEX_ENTRIES_AT + INDEX_ENTRY_SIZE * i));
  }
}
