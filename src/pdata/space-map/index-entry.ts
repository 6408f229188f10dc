import { readU64, writeU64 } from '../endian.ts';

/*
 * Space-map index entry (spec/thin-metadata.md §5.3), 16 bytes:
 *
 * | offset | size | field |
 * | 0  | 8 | le64 blocknr — the bitmap block |
 * | 8  | 4 | le32 nr_free — free entries in the bitmap (hint) |
 * | 12 | 4 | le32 none_free_before — entries below are all used (hint) |
 */

export const INDEX_ENTRY_SIZE = 16;

export interface IndexEntry {
  blocknr: number;
  nrFree: number;
  noneFreeBefore: number;
}

export function encodeIndexEntry(e: IndexEntry, buf: Buffer, offset: number): void {
  writeU64(buf, offset, e.blocknr);
  buf.writeUInt32LE(e.nrFree, offset + 8);
  buf.writeUInt32LE(e.noneFreeBefore, offset + 12);
}

export function decodeIndexEntry(buf: Buffer, offset: number): IndexEntry {
  return {
    blocknr: readU64(buf, offset),
    nrFree: buf.readUInt32LE(offset + 8),
    noneFreeBefore: buf.readUInt32LE(offset + 12),
  };
}

/** Where a space map keeps its index entries: one block (metadata) or a btree (data). */
export interface IndexStore {
  get(i: number): Promise<IndexEntry>;
  set(i: number, e: IndexEntry): void;
}
