import { IoError } from '../../block/errors.ts';
import { insert, lookup, remove } from '../btree/btree.ts';
import { plainValue } from '../btree/value-type.ts';
import type { TransactionManager } from '../transaction-manager.ts';

/*
 * The overflow ref-count btree (spec/thin-metadata.md §5.6): key = block
 * number, value = le32 count, holding exactly the blocks whose bitmap entry
 * is 3 (count ≥ 3). Empty = one empty leaf (value_size 4, max 336).
 */

export const refCountValue = plainValue(4);

export async function overflowCount(tm: TransactionManager, root: number, b: number): Promise<number> {
  const v = await lookup(tm, root, b);
  if (!v) throw new IoError('EILSEQ', `${tm.bm.name}: block ${b} has bitmap count 3 but no entry in ref-count tree ${root}`);
  return v.readUInt32LE(0);
}

export async function setOverflowCount(tm: TransactionManager, root: number, b: number, count: number): Promise<number> {
  if (count > 0xffffffff) throw new IoError('EOVERFLOW', `${tm.bm.name}: reference count of block ${b} exceeds 2^32 − 1`);
  const v = Buffer.alloc(4);
  v.writeUInt32LE(count, 0);
  return (await insert(tm, root, b, v, refCountValue)).root;
}

export async function removeOverflowCount(tm: TransactionManager, root: number, b: number): Promise<number> {
  return (await remove(tm, root, b, refCountValue)).root;
}
