import { readU64 } from '../endian.ts';
import type { TransactionManager } from '../transaction-manager.ts';

/**
 * How a tree's leaf values are reference counted (spec/thin-metadata.md §4.6):
 * `inc` when a shared leaf is copied, `dec` when a value is overwritten,
 * removed or its leaf deleted, `equal` to skip the dec of an identical overwrite.
 */
export interface ValueType {
  readonly size: number;
  inc?(value: Buffer): Promise<void>;
  dec?(value: Buffer): Promise<void>;
  equal?(a: Buffer, b: Buffer): boolean;
}

/** Plain values (device details, ref counts, index entries): no references. */
export function plainValue(size: number): ValueType {
  return { size };
}

/** A le64 metadata block number owned by the value (internal-node children, subtree roots, array blocks). */
export function metadataBlockValue(tm: TransactionManager): ValueType {
  return {
    size: 8,
    inc: (v) => tm.inc(readU64(v, 0)),
    dec: (v) => tm.dec(readU64(v, 0)),
    equal: (a, b) => a.equals(b),
  };
}
