/**
 * Little-endian bitmaps as dm-log keeps them (mirror spec §4): bit n lives in
 * byte n >> 3 with value 1 << (n & 7), the same on every architecture. The
 * bitmaps are sized in whole 64-bit words (§5.1).
 */

/** Bytes of a bitmap of `bits` bits rounded up to whole 64-bit words (dm-log's bitset_size). */
export function bitsetBytes(bits: number): number {
  return Math.ceil(bits / 64) * 8;
}

export function testBit(map: Uint8Array, n: number): boolean {
  return (map[n >>> 3]! & (1 << (n & 7))) !== 0;
}

export function setBit(map: Uint8Array, n: number): void {
  map[n >>> 3]! |= 1 << (n & 7);
}

export function clearBit(map: Uint8Array, n: number): void {
  map[n >>> 3]! &= ~(1 << (n & 7));
}

/** find_next_zero_bit_le: the lowest zero bit in [from, size), or `size` when there is none. */
export function findNextZeroBit(map: Uint8Array, size: number, from: number): number {
  let n = from;
  while (n < size) {
    const byte = map[n >>> 3]!;
    if (byte === 0xff && (n & 7) === 0) {
      n += 8;
      continue;
    }
    if ((byte & (1 << (n & 7))) === 0) return n;
    n++;
  }
  return size;
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, b) => {
  let c = 0;
  for (let v = b; v; v >>= 1) c += v & 1;
  return c;
});

/** memweight: the number of one bits in the whole map. */
export function popcount(map: Uint8Array): number {
  let c = 0;
  for (const b of map) c += POPCOUNT[b]!;
  return c;
}
