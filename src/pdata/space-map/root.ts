import { readU64, writeU64 } from '../endian.ts';

/*
 * Space-map root (spec/thin-metadata.md §5.1), the first 32 bytes of each
 * 128-byte space-map field of a superblock:
 *
 * | offset | size | field |
 * | 0  | 8 | le64 nr_blocks |
 * | 8  | 8 | le64 nr_allocated — blocks with count ≥ 1 |
 * | 16 | 8 | le64 bitmap_root — metadata: the index block; data: the index btree |
 * | 24 | 8 | le64 ref_count_root — the overflow ref-count btree |
 */

export const SPACE_MAP_ROOT_SIZE = 32;

export interface SpaceMapRoot {
  nrBlocks: number;
  nrAllocated: number;
  bitmapRoot: number;
  refCountRoot: number;
}

export function encodeSpaceMapRoot(r: SpaceMapRoot): Buffer {
  const buf = Buffer.alloc(SPACE_MAP_ROOT_SIZE);
  writeU64(buf, 0, r.nrBlocks);
  writeU64(buf, 8, r.nrAllocated);
  writeU64(buf, 16, r.bitmapRoot);
  writeU64(buf, 24, r.refCountRoot);
  return buf;
}

export function decodeSpaceMapRoot(buf: Buffer): SpaceMapRoot {
  return {
    nrBlocks: readU64(buf, 0),
    nrAllocated: readU64(buf, 8),
    bitmapRoot: readU64(buf, 16),
    refCountRoot: readU64(buf, 24),
  };
}
