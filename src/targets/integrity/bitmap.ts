/**
 * The B-mode dirty bitmap (integrity.md §3.9): at the start of the journal
 * area, 4 KiB blocks; bit b covers logical sectors [b·2^l, (b+1)·2^l) with
 * l = log2 sectors per bit, and is bit b mod 8 (LSB first) of byte b / 8 (the
 * little-endian `unsigned long` layout). Bit set: data and tags of the region
 * may disagree, recalculate after a crash.
 */
export const BITMAP_BLOCK_BYTES = 4096;
export const BITMAP_BLOCK_SECTORS = BITMAP_BLOCK_BYTES / 512;
export const BITS_PER_BITMAP_BLOCK = BITMAP_BLOCK_BYTES * 8;

export class Bitmap {
  readonly bytes: Buffer;
  readonly blocks: number;

  constructor(readonly nBits: number) {
    this.blocks = Math.ceil(nBits / BITS_PER_BITMAP_BLOCK);
    this.bytes = Buffer.alloc(this.blocks * BITMAP_BLOCK_BYTES);
  }

  test(b: number): boolean {
    return (this.bytes[b >> 3]! & (1 << (b & 7))) !== 0;
  }

  set(b: number): void {
    this.bytes[b >> 3]! |= 1 << (b & 7);
  }

  clear(b: number): void {
    this.bytes[b >> 3]! &= ~(1 << (b & 7));
  }

  /** Every bit of [first, last] is set. */
  allSet(first: number, last: number): boolean {
    for (let b = first; b <= last; b++) if (!this.test(b)) return false;
    return true;
  }

  anySet(first: number, last: number): boolean {
    for (let b = first; b <= last; b++) if (this.test(b)) return true;
    return false;
  }

  setRange(first: number, last: number): void {
    for (let b = first; b <= last; b++) this.set(b);
  }

  clearRange(first: number, last: number): void {
    for (let b = first; b <= last; b++) this.clear(b);
  }

  /** Any bit below nBits set (bits past nBits are don't-care on disk). */
  any(): boolean {
    return this.anySet(0, this.nBits - 1);
  }

  copyFrom(o: Bitmap): void {
    o.bytes.copy(this.bytes);
  }

  /** 4 KiB block k, a view. */
  block(k: number): Buffer {
    return this.bytes.subarray(k * BITMAP_BLOCK_BYTES, (k + 1) * BITMAP_BLOCK_BYTES);
  }
}
