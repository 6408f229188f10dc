import { IoError } from '../block/errors.ts';
import { deleteTree, emptyTree, insert, lookup, remove, updateLeaf, walk } from './btree/btree.ts';
import type { ValueType } from './btree/value-type.ts';
import { readU64, writeU64 } from './endian.ts';
import type { TransactionManager } from './transaction-manager.ts';
import { arrayBlockValidator } from './validators.ts';

/*
 * dm-array (spec/clone.md §11.5, thin-metadata.md §10): N fixed-size values
 * in array blocks, found through a 1-level btree keyed by array-block index
 * (dense keys 0 … ceil(N/M) − 1). All blocks but the last are full.
 *
 * Array block:
 * | offset | size | field |
 * | 0  | 4 | le32 csum (array salt) |
 * | 4  | 4 | le32 max_entries M = floor(4072 / value_size) |
 * | 8  | 4 | le32 nr_entries |
 * | 12 | 4 | le32 value_size |
 * | 16 | 8 | le64 blocknr |
 * | 24 | value_size·M | values; unused slots zero |
 */

const MAX_ENTRIES = 4;
const NR_ENTRIES = 8;
const VALUE_SIZE = 12;
const VALUES_AT = 24;

export function arrayMaxEntries(valueSize: number): number {
  return Math.floor((4096 - VALUES_AT) / valueSize);
}

/** A view of one array block. */
class ArrayBlock {
  constructor(readonly data: Buffer) {}
  static init(data: Buffer, valueSize: number): ArrayBlock {
    data.writeUInt32LE(arrayMaxEntries(valueSize), MAX_ENTRIES);
    data.writeUInt32LE(0, NR_ENTRIES);
    data.writeUInt32LE(valueSize, VALUE_SIZE);
    return new ArrayBlock(data);
  }
  get max(): number {
    return this.data.readUInt32LE(MAX_ENTRIES);
  }
  get nr(): number {
    return this.data.readUInt32LE(NR_ENTRIES);
  }
  set nr(n: number) {
    this.data.writeUInt32LE(n, NR_ENTRIES);
  }
  get valueSize(): number {
    return this.data.readUInt32LE(VALUE_SIZE);
  }
  value(i: number): Buffer {
    const at = VALUES_AT + this.valueSize * i;
    return this.data.subarray(at, at + this.valueSize);
  }
}

/**
 * The array's btree values: le64 array-block numbers. Dropping the last
 * reference to an array block releases its values first.
 */
function arrayBlockValue(tm: TransactionManager, vt: ValueType): ValueType {
  return {
    size: 8,
    inc: (v) => tm.inc(readU64(v, 0)),
    dec: async (v) => {
      const b = readU64(v, 0);
      if (vt.dec && (await tm.count(b)) === 1) {
        const block = await tm.readLock(b, arrayBlockValidator);
        const ab = new ArrayBlock(block.data);
        const values = Array.from({ length: ab.nr }, (_, i) => Buffer.from(ab.value(i)));
        tm.unlock(block);
        for (const x of values) await vt.dec(x);
      }
      await tm.dec(b);
    },
    equal: (a, b) => a.equals(b),
  };
}

/** A dm-array of values of type `vt`, rooted at a btree that every change returns anew. */
export class PersistentArray {
  readonly maxEntries: number;
  private readonly blockValue: ValueType;

  constructor(readonly tm: TransactionManager, readonly vt: ValueType) {
    this.maxEntries = arrayMaxEntries(vt.size);
    this.blockValue = arrayBlockValue(tm, vt);
  }

  empty(): Promise<number> {
    return emptyTree(this.tm, this.blockValue);
  }

  async get(root: number, index: number): Promise<Buffer> {
    const v = await lookup(this.tm, root, Math.floor(index / this.maxEntries));
    if (!v) throw new IoError('ENODATA', `${this.tm.bm.name}: array index ${index} out of bounds`);
    const block = await this.tm.readLock(readU64(v, 0), arrayBlockValidator);
    try {
      const ab = new ArrayBlock(block.data);
      const slot = index % this.maxEntries;
      if (slot >= ab.nr) throw new IoError('ENODATA', `${this.tm.bm.name}: array index ${index} out of bounds`);
      return Buffer.from(ab.value(slot));
    } finally {
      this.tm.unlock(block);
    }
  }

  /** Sets one value; the old one is released with vt.dec. Returns the new root. */
  async set(root: number, index: number, value: Buffer): Promise<number> {
    return this.edit(root, Math.floor(index / this.maxEntries), async (ab) => {
      const slot = index % this.maxEntries;
      if (slot >= ab.nr) throw new IoError('ENODATA', `${this.tm.bm.name}: array index ${index} out of bounds`);
      const old = ab.value(slot);
      if (!(this.vt.equal?.(old, value) ?? false)) await this.vt.dec?.(Buffer.from(old));
      value.copy(old, 0, 0, this.vt.size);
    });
  }

  /**
   * Grows or shrinks from `oldSize` to `newSize` values (§11.5): growing fills
   * the tail block, then appends full blocks and a partial tail, all with
   * `fill`; shrinking drops trailing blocks and trims the new tail.
   */
  async resize(root: number, oldSize: number, newSize: number, fill: Buffer): Promise<number> {
    const M = this.maxEntries;
    const oldBlocks = Math.ceil(oldSize / M);
    const newBlocks = Math.ceil(newSize / M);
    if (newSize > oldSize) {
      if (oldSize % M !== 0) {
        root = await this.edit(root, oldBlocks - 1, async (ab) => this.fillTo(ab, Math.min(M, newSize - (oldBlocks - 1) * M), fill));
      }
      for (let j = oldBlocks; j < newBlocks; j++) {
        const block = await this.tm.newBlock(arrayBlockValidator);
        const ab = ArrayBlock.init(block.data, this.vt.size);
        await this.fillTo(ab, Math.min(M, newSize - j * M), fill);
        this.tm.unlock(block);
        const link = Buffer.alloc(8);
        writeU64(link, 0, block.nr);
        root = (await insert(this.tm, root, j, link, this.blockValue)).root;
      }
    } else if (newSize < oldSize) {
      for (let j = oldBlocks - 1; j >= newBlocks; j--) root = (await remove(this.tm, root, j, this.blockValue)).root;
      if (newSize % M !== 0) {
        root = await this.edit(root, newBlocks - 1, async (ab) => {
          const keep = newSize - (newBlocks - 1) * M;
          for (let i = keep; i < ab.nr; i++) {
            await this.vt.dec?.(Buffer.from(ab.value(i)));
            ab.value(i).fill(0);
          }
          ab.nr = keep;
        });
      }
    }
    return root;
  }

  /** Visits values 0 … size−1 in order, one array block in memory at a time. */
  async walk(root: number, visit: (index: number, value: Buffer) => void | Promise<void>): Promise<void> {
    await walk(this.tm, root, async (j, v) => {
      const block = await this.tm.readLock(readU64(v, 0), arrayBlockValidator);
      const ab = new ArrayBlock(block.data);
      const values = Array.from({ length: ab.nr }, (_, i) => Buffer.from(ab.value(i)));
      this.tm.unlock(block);
      for (let i = 0; i < values.length; i++) await visit(j * this.maxEntries + i, values[i]!);
    });
  }

  /** Deletes the whole array. */
  async destroy(root: number): Promise<void> {
    await deleteTree(this.tm, root, this.blockValue);
  }

  private async fillTo(ab: ArrayBlock, n: number, fill: Buffer): Promise<void> {
    for (let i = ab.nr; i < n; i++) {
      fill.copy(ab.value(i), 0, 0, this.vt.size);
      await this.vt.inc?.(fill);
    }
    ab.nr = n;
  }

  /**
   * Shadows the btree path to array block `j` first (so a shared leaf's copy
   * re-references the block before the block's own sharing is judged), then
   * the block, and lets `change` edit it. The block's shadow already moved
   * its reference to the copy, so the leaf slot is patched in place rather
   * than overwritten (which would release the old block a second time).
   */
  private edit(root: number, j: number, change: (ab: ArrayBlock) => Promise<void>): Promise<number> {
    return updateLeaf(this.tm, root, j, this.blockValue, false, async (leaf, i) => {
      if (i < 0) throw new IoError('ENODATA', `${this.tm.bm.name}: array has no block ${j}`);
      const { block, incChildren } = await this.tm.shadow(leaf.valueU64(i), arrayBlockValidator);
      try {
        const ab = new ArrayBlock(block.data);
        if (incChildren && this.vt.inc) for (let k = 0; k < ab.nr; k++) await this.vt.inc(ab.value(k));
        await change(ab);
      } finally {
        this.tm.unlock(block);
      }
      leaf.setValueU64(i, block.nr);
    });
  }
}
