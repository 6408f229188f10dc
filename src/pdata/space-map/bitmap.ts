/*
 * Space-map bitmap block (spec/thin-metadata.md §5.2):
 *
 * | offset | size | field |
 * | 0  | 4    | le32 csum (bitmap salt) |
 * | 4  | 4    | le32 not_used (0) |
 * | 8  | 8    | le64 blocknr |
 * | 16 | 4080 | 2-bit entries, 16320 per bitmap |
 *
 * Entry k lives in byte 16 + k/4; its HIGH bit is bit 2·(k mod 4) and its
 * low bit the next one up: value = 2·high + low. 0 free, 1 and 2 counts,
 * 3 = "three or more", the real count in the ref-count btree.
 */

export const BITMAP_HEADER_SIZE = 16;
export const ENTRIES_PER_BITMAP = 16320;
/** The largest count a bitmap entry holds itself. */
export const BITMAP_OVERFLOW = 3;

export function getEntry(data: Buffer, k: number): number {
  const byte = data[BITMAP_HEADER_SIZE + (k >> 2)]!;
  const shift = 2 * (k & 3);
  return (((byte >> shift) & 1) << 1) | ((byte >> (shift + 1)) & 1);
}

export function setEntry(data: Buffer, k: number, value: number): void {
  const at = BITMAP_HEADER_SIZE + (k >> 2);
  const shift = 2 * (k & 3);
  const bits = ((value >> 1) & 1) | ((value & 1) << 1);
  data[at] = (data[at]! & ~(3 << shift)) | (bits << shift);
}

/** The first free entry in [from, to), −1 if none. Skips fully used bytes. */
export function findFreeEntry(data: Buffer, from: number, to: number): number {
  let k = from;
  while (k < to) {
    if ((k & 3) === 0 && k + 4 <= to) {
      const byte = data[BITMAP_HEADER_SIZE + (k >> 2)]!;
      // a byte has a free entry iff some 2-bit pair is 00
      if (((byte | (byte >> 1)) & 0x55) === 0x55) {
        k += 4;
        continue;
      }
    }
    if (getEntry(data, k) === 0) return k;
    k++;
  }
  return -1;
}
