import { writeU64 } from '../endian.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { type InsertResult, type RemoveResult, emptyTree, insert, lookup, remove, updateLeaf } from './btree.ts';
import { type ValueType, metadataBlockValue } from './value-type.ts';

/*
 * Multi-level trees (spec/thin-metadata.md §4.2, §7.1): every level but the
 * last maps its key to the root of a next-level tree. The upper leaf slot is
 * patched in place when the subtree's root moves; the subtree's own
 * shadowing already moved the reference from the old root to the new one.
 */

export async function lookupMulti(tm: TransactionManager, root: number, keys: readonly number[]): Promise<Buffer | null> {
  let b = root;
  for (let level = 0; level < keys.length - 1; level++) {
    const v = await lookup(tm, b, keys[level]!);
    if (!v) return null;
    b = v.readUInt32LE(0) + v.readUInt32LE(4) * 0x100000000;
  }
  return lookup(tm, b, keys[keys.length - 1]!);
}

/**
 * Runs `change` on the subtree under `key` and links its new root back.
 * Null when `key` is absent (nothing is shadowed then).
 */
export async function updateSubtree(
  tm: TransactionManager,
  root: number,
  key: number,
  change: (subtree: number) => Promise<number>,
): Promise<number | null> {
  if ((await lookup(tm, root, key)) === null) return null;
  return updateLeaf(tm, root, key, metadataBlockValue(tm), false, async (leaf, i) => {
    leaf.setValueU64(i, await change(leaf.valueU64(i)));
  });
}

/** Inserts `value` under `keys` (one key per level), creating missing subtrees. */
export async function insertMulti(
  tm: TransactionManager,
  root: number,
  keys: readonly number[],
  value: Buffer,
  leafType: ValueType,
): Promise<InsertResult> {
  if (keys.length === 1) return insert(tm, root, keys[0]!, value, leafType);
  const rest = keys.slice(1);
  let inserted = false;
  const updated = await updateSubtree(tm, root, keys[0]!, async (subtree) => {
    const r = await insertMulti(tm, subtree, rest, value, leafType);
    inserted = r.inserted;
    return r.root;
  });
  if (updated !== null) return { root: updated, inserted };
  const upper = metadataBlockValue(tm);
  const fresh = await emptyTree(tm, rest.length === 1 ? leafType : upper);
  const sub = await insertMulti(tm, fresh, rest, value, leafType);
  const link = Buffer.alloc(8);
  writeU64(link, 0, sub.root);
  const top = await insert(tm, root, keys[0]!, link, upper);
  return { root: top.root, inserted: sub.inserted };
}

/** Removes the bottom-level entry under `keys`; empty subtrees stay (as in Linux). */
export async function removeMulti(
  tm: TransactionManager,
  root: number,
  keys: readonly number[],
  leafType: ValueType,
): Promise<RemoveResult> {
  if (keys.length === 1) return remove(tm, root, keys[0]!, leafType);
  const rest = keys.slice(1);
  let removed = false;
  const updated = await updateSubtree(tm, root, keys[0]!, async (subtree) => {
    const r = await removeMulti(tm, subtree, rest, leafType);
    removed = r.removed;
    return r.root;
  });
  return { root: updated ?? root, removed };
}
