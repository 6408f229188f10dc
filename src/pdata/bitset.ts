import { PersistentArray } from './array.ts';
import { plainValue } from './btree/value-type.ts';
import type { TransactionManager } from './transaction-manager.ts';

/*
 * dm-bitset (spec/clone.md §11.6): a dm-array of le64 words; bit i is bit
 * i mod 64 of word i / 64, the word read little-endian — byte (i mod 64)/8,
 * bit i mod 8 from the least significant. Bits past the size stay 0.
 */

const WORD = 8;
const ZERO_WORD = Buffer.alloc(WORD);
const ONES_WORD = Buffer.alloc(WORD, 0xff);

export class PersistentBitset {
  private readonly array: PersistentArray;

  constructor(readonly tm: TransactionManager) {
    this.array = new PersistentArray(tm, plainValue(WORD));
  }

  empty(): Promise<number> {
    return this.array.empty();
  }

  async test(root: number, bit: number): Promise<boolean> {
    const word = await this.array.get(root, Math.floor(bit / 64));
    return (word[(bit % 64) >> 3]! & (1 << (bit % 8))) !== 0;
  }

  set(root: number, bit: number): Promise<number> {
    return this.update(root, bit, true);
  }

  clear(root: number, bit: number): Promise<number> {
    return this.update(root, bit, false);
  }

  /** Grows or shrinks from `oldBits` to `newBits`; new bits take `value`, bits past the end stay 0. */
  async resize(root: number, oldBits: number, newBits: number, value: boolean): Promise<number> {
    const oldWords = Math.ceil(oldBits / 64);
    const newWords = Math.ceil(newBits / 64);
    if (newBits > oldBits && value && oldBits % 64 !== 0) {
      root = await this.setBits(root, oldWords - 1, oldBits % 64, Math.min(64, newBits - (oldWords - 1) * 64), true);
    }
    root = await this.array.resize(root, oldWords, newWords, value ? ONES_WORD : ZERO_WORD);
    if (newBits % 64 !== 0 && (value || newBits < oldBits)) root = await this.setBits(root, newWords - 1, newBits % 64, 64, false);
    return root;
  }

  /** Visits every set bit below `nrBits`, ascending. */
  async walkSet(root: number, nrBits: number, visit: (bit: number) => void | Promise<void>): Promise<void> {
    await this.array.walk(root, async (w, word) => {
      for (let i = 0; i < 64 && w * 64 + i < nrBits; i++) if (word[i >> 3]! & (1 << (i & 7))) await visit(w * 64 + i);
    });
  }

  private update(root: number, bit: number, on: boolean): Promise<number> {
    return this.setBits(root, Math.floor(bit / 64), bit % 64, (bit % 64) + 1, on);
  }

  /** Sets or clears bits [from, to) of word `w`; writes only if something changes. */
  private async setBits(root: number, w: number, from: number, to: number, on: boolean): Promise<number> {
    const word = await this.array.get(root, w);
    const before = Buffer.from(word);
    for (let i = from; i < to; i++) {
      const mask = 1 << (i & 7);
      word[i >> 3] = on ? word[i >> 3]! | mask : word[i >> 3]! & ~mask;
    }
    return word.equals(before) ? root : this.array.set(root, w, word);
  }
}
