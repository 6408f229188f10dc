import { IoError } from '../../block/errors.ts';
import { METADATA_BLOCK_SIZE } from '../block-manager.ts';
import { readU64, writeU64 } from '../endian.ts';
import { BTREE_FLAG_INTERNAL, BTREE_FLAG_LEAF, BTREE_HEADER_SIZE } from '../validators.ts';

/*
 * Btree node (spec/thin-metadata.md §4.1):
 *
 * | offset | size | field |
 * | 0  | 4 | le32 csum (btree salt) |
 * | 4  | 4 | le32 flags: 1 = INTERNAL, 2 = LEAF |
 * | 8  | 8 | le64 blocknr |
 * | 16 | 4 | le32 nr_entries |
 * | 20 | 4 | le32 max_entries |
 * | 24 | 4 | le32 value_size |
 * | 28 | 4 | le32 padding |
 * | 32 | 8·max | le64 keys |
 * | 32 + 8·max | value_size·max | values |
 *
 * Internal nodes always have value_size 8 (child block numbers).
 */

const FLAGS = 4;
const NR_ENTRIES = 16;
const MAX_ENTRIES = 20;
const VALUE_SIZE = 24;

/** max_entries for a value size: a multiple of 3 so that a full node splits into thirds (§4.1). */
export function maxEntriesFor(valueSize: number): number {
  return 3 * Math.floor(Math.floor((METADATA_BLOCK_SIZE - BTREE_HEADER_SIZE) / (8 + valueSize)) / 3);
}

/** A view of one node's block data; all reads and writes go straight to the buffer. */
export class Node {
  readonly max: number;
  readonly valueSize: number;
  private readonly valuesAt: number;

  constructor(readonly data: Buffer) {
    this.max = data.readUInt32LE(MAX_ENTRIES);
    this.valueSize = data.readUInt32LE(VALUE_SIZE);
    this.valuesAt = BTREE_HEADER_SIZE + 8 * this.max;
  }

  /** Formats `data` (already zeroed) as an empty node. */
  static init(data: Buffer, leaf: boolean, valueSize: number): Node {
    data.writeUInt32LE(leaf ? BTREE_FLAG_LEAF : BTREE_FLAG_INTERNAL, FLAGS);
    data.writeUInt32LE(0, NR_ENTRIES);
    data.writeUInt32LE(maxEntriesFor(valueSize), MAX_ENTRIES);
    data.writeUInt32LE(valueSize, VALUE_SIZE);
    return new Node(data);
  }

  get isLeaf(): boolean {
    return (this.data.readUInt32LE(FLAGS) & BTREE_FLAG_LEAF) !== 0;
  }

  get nr(): number {
    return this.data.readUInt32LE(NR_ENTRIES);
  }

  set nr(n: number) {
    this.data.writeUInt32LE(n, NR_ENTRIES);
  }

  key(i: number): number {
    const at = BTREE_HEADER_SIZE + 8 * i;
    const hi = this.data.readUInt32LE(at + 4);
    return hi === 0 ? this.data.readUInt32LE(at) : readU64(this.data, at);
  }

  setKey(i: number, key: number): void {
    writeU64(this.data, BTREE_HEADER_SIZE + 8 * i, key);
  }

  /** Byte offset of value slot `i` in the block. */
  valueOffset(i: number): number {
    return this.valuesAt + this.valueSize * i;
  }

  /** The value slot `i`, as a view into the block. */
  value(i: number): Buffer {
    const at = this.valueOffset(i);
    return this.data.subarray(at, at + this.valueSize);
  }

  /** Child block of an internal node, or a le64 leaf value. */
  valueU64(i: number): number {
    return readU64(this.data, this.valuesAt + 8 * i);
  }

  setValueU64(i: number, v: number): void {
    writeU64(this.data, this.valuesAt + 8 * i, v);
  }

  /** Index of the largest key ≤ `key`, −1 if every key is larger (§4.2). */
  lowerBound(key: number): number {
    let lo = -1;
    let hi = this.nr;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (this.key(mid) <= key) lo = mid;
      else hi = mid;
    }
    return lo;
  }

  /** Index of `key` in this node, −1 if absent. */
  find(key: number): number {
    const i = this.lowerBound(key);
    return i >= 0 && this.key(i) === key ? i : -1;
  }

  insertAt(i: number, key: number, value: Buffer): void {
    const n = this.nr;
    if (n >= this.max) throw new IoError('EINVAL', `btree node full (${n} entries) at insert`);
    this.shift(i, n, 1);
    this.setKey(i, key);
    value.copy(this.data, this.valuesAt + this.valueSize * i, 0, this.valueSize);
    this.nr = n + 1;
  }

  /** Removes entry `i` and zeroes the vacated last slot (§4.1: dmkit keeps unused slots zero). */
  deleteAt(i: number): void {
    const n = this.nr;
    this.shift(i + 1, n, -1);
    this.clear(n - 1, n);
    this.nr = n - 1;
  }

  /** Moves `count` entries starting at `from` of `src` to the end of this node. */
  appendFrom(src: Node, from: number, count: number): void {
    const n = this.nr;
    src.data.copy(this.data, BTREE_HEADER_SIZE + 8 * n, BTREE_HEADER_SIZE + 8 * from, BTREE_HEADER_SIZE + 8 * (from + count));
    src.data.copy(
      this.data,
      this.valuesAt + this.valueSize * n,
      src.valuesAt + src.valueSize * from,
      src.valuesAt + src.valueSize * (from + count),
    );
    this.nr = n + count;
  }

  /** Moves the first `count` entries of `src` (its right neighbour) to the end of this node. */
  takeFromRight(src: Node, count: number): void {
    this.appendFrom(src, 0, count);
    const n = src.nr;
    src.shift(count, n, -count);
    src.clear(n - count, n);
    src.nr = n - count;
  }

  /** Moves the last `count` entries of `left` to the front of this node. */
  takeFromLeft(left: Node, count: number): void {
    const n = this.nr;
    const ln = left.nr;
    this.shift(0, n, count);
    left.data.copy(this.data, BTREE_HEADER_SIZE, BTREE_HEADER_SIZE + 8 * (ln - count), BTREE_HEADER_SIZE + 8 * ln);
    left.data.copy(this.data, this.valuesAt, left.valuesAt + left.valueSize * (ln - count), left.valuesAt + left.valueSize * ln);
    this.nr = n + count;
    left.clear(ln - count, ln);
    left.nr = ln - count;
  }

  /** Moves entries [from, n) by `delta` slots (keys and values). */
  private shift(from: number, n: number, delta: number): void {
    if (from >= n) return;
    this.data.copyWithin(BTREE_HEADER_SIZE + 8 * (from + delta), BTREE_HEADER_SIZE + 8 * from, BTREE_HEADER_SIZE + 8 * n);
    this.data.copyWithin(
      this.valuesAt + this.valueSize * (from + delta),
      this.valuesAt + this.valueSize * from,
      this.valuesAt + this.valueSize * n,
    );
  }

  private clear(from: number, to: number): void {
    this.data.fill(0, BTREE_HEADER_SIZE + 8 * from, BTREE_HEADER_SIZE + 8 * to);
    this.data.fill(0, this.valuesAt + this.valueSize * from, this.valuesAt + this.valueSize * to);
  }
}
