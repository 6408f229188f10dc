import type { Block } from '../block-manager.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { btreeNodeValidator as V } from '../validators.ts';
import { Node } from './node.ts';
import type { ValueType } from './value-type.ts';

/*
 * Single-level persistent btree operations (spec/thin-metadata.md §4), all
 * copy-on-write through the transaction manager: every node on a modified
 * path is shadowed and the new root returned. Multi-level trees (thin's
 * mapping tree) are built from these in multi-level.ts.
 *
 * Insert splits full nodes on the way down (a full root splits beneath
 * itself and keeps its location); remove rebalances a child with a sibling
 * before entering it unless it can spare an entry. Both keep every non-root
 * node at ≥ max_entries/3 entries, as thin_check demands.
 */

export async function emptyTree(tm: TransactionManager, vt: ValueType): Promise<number> {
  return initEmpty(tm, await tm.newBlock(V), vt);
}

/** An empty tree at a block the caller has already counted (space-map bootstrap). */
export async function emptyTreeAt(tm: TransactionManager, b: number, vt: ValueType): Promise<number> {
  return initEmpty(tm, await tm.newBlockAt(b, V), vt);
}

function initEmpty(tm: TransactionManager, block: Block, vt: ValueType): number {
  Node.init(block.data, true, vt.size);
  tm.unlock(block);
  return block.nr;
}

/** The value stored under `key`, copied out, or null. */
export async function lookup(tm: TransactionManager, root: number, key: number): Promise<Buffer | null> {
  let b = root;
  for (;;) {
    const block = await tm.readLock(b, V);
    try {
      const node = new Node(block.data);
      const i = node.lowerBound(key);
      if (node.isLeaf) return i >= 0 && node.key(i) === key ? Buffer.from(node.value(i)) : null;
      if (i < 0) return null;
      b = node.valueU64(i);
    } finally {
      tm.unlock(block);
    }
  }
}

export interface Entry {
  key: number;
  value: Buffer;
}

/** The entry with the smallest key ≥ `key`, or null (dm_btree_lookup_next). */
export async function lookupNext(tm: TransactionManager, root: number, key: number): Promise<Entry | null> {
  const block = await tm.readLock(root, V);
  try {
    const node = new Node(block.data);
    let i = node.lowerBound(key);
    if (node.isLeaf) {
      if (i < 0 || node.key(i) < key) i++;
      return i < node.nr ? { key: node.key(i), value: Buffer.from(node.value(i)) } : null;
    }
    for (i = Math.max(i, 0); i < node.nr; i++) {
      const found = await lookupNext(tm, node.valueU64(i), key);
      if (found) return found;
    }
    return null;
  } finally {
    tm.unlock(block);
  }
}

/** Visits every entry in key order; `visit` may be async (streaming dumps). */
export async function walk(
  tm: TransactionManager,
  root: number,
  visit: (key: number, value: Buffer) => void | Promise<void>,
): Promise<void> {
  const block = await tm.readLock(root, V);
  const node = new Node(block.data);
  if (node.isLeaf) {
    // Copy the leaf out so that the visitor may do I/O without the block held.
    const entries: Entry[] = [];
    for (let i = 0; i < node.nr; i++) entries.push({ key: node.key(i), value: Buffer.from(node.value(i)) });
    tm.unlock(block);
    for (const e of entries) await visit(e.key, e.value);
    return;
  }
  const children: number[] = [];
  for (let i = 0; i < node.nr; i++) children.push(node.valueU64(i));
  tm.unlock(block);
  for (const child of children) await walk(tm, child, visit);
}

/** Shadows `b` as child `index` of `parent` (or as the root), re-referencing what a copy of a shared node shares. */
async function shadowNode(tm: TransactionManager, b: number, vt: ValueType, parent: Node | null, index: number): Promise<Block> {
  const { block, incChildren } = await tm.shadow(b, V);
  if (incChildren) await incNodeReferences(tm, new Node(block.data), vt);
  parent?.setValueU64(index, block.nr);
  return block;
}

/** Both the original and a copy now reference the node's children (internal) or values (leaf). */
async function incNodeReferences(tm: TransactionManager, node: Node, vt: ValueType): Promise<void> {
  for (let i = 0; i < node.nr; i++) {
    if (!node.isLeaf) await tm.inc(node.valueU64(i));
    else if (vt.inc) await vt.inc(node.value(i));
  }
}

export interface InsertResult {
  root: number;
  /** The key was new (not an overwrite). */
  inserted: boolean;
}

/**
 * Inserts or overwrites `key` (§4.3). An overwrite releases the old value
 * with vt.dec unless vt.equal says it is the same.
 */
export async function insert(tm: TransactionManager, root: number, key: number, value: Buffer, vt: ValueType): Promise<InsertResult> {
  let inserted = false;
  const newRoot = await updateLeaf(tm, root, key, vt, true, async (node, i) => {
    if (i >= 0) {
      const old = node.value(i);
      if (!(vt.equal?.(old, value) ?? false)) {
        await vt.dec?.(Buffer.from(old));
      }
      value.copy(old, 0, 0, vt.size);
    } else {
      node.insertAt(node.lowerBound(key) + 1, key, value);
      inserted = true;
    }
  });
  return { root: newRoot, inserted };
}

/**
 * Shadows the path to the leaf where `key` is or would go and lets `change`
 * edit that leaf in place (index of `key` or −1). With `makeRoom`, full
 * nodes on the way are split so the leaf can take one more entry; the leaf's
 * owner may then insert. Returns the new root.
 */
export async function updateLeaf(
  tm: TransactionManager,
  root: number,
  key: number,
  vt: ValueType,
  makeRoom: boolean,
  change: (leaf: Node, index: number) => Promise<void>,
): Promise<number> {
  let block = await shadowNode(tm, root, vt, null, 0);
  const newRoot = block.nr;
  try {
    if (makeRoom && needsSplit(new Node(block.data), key)) await splitBeneath(tm, block);
    for (;;) {
      const node = new Node(block.data);
      if (node.isLeaf) {
        await change(node, node.find(key));
        return newRoot;
      }
      let i = node.lowerBound(key);
      if (i < 0) {
        i = 0;
        if (makeRoom) node.setKey(0, key); // key 0 stays a lower bound of its subtree (§4.3 step 3)
      }
      let child = await shadowNode(tm, node.valueU64(i), vt, node, i);
      const c = new Node(child.data);
      if (makeRoom && needsSplit(c, key)) {
        const right = await splitOff(tm, child, node, i);
        if (key >= new Node(right.data).key(0)) {
          tm.unlock(child);
          child = right;
        } else {
          tm.unlock(right);
        }
      }
      tm.unlock(block);
      block = child;
    }
  } finally {
    tm.unlock(block);
  }
}

/** Full, unless it is a leaf that already holds the key (an overwrite needs no room). */
function needsSplit(node: Node, key: number): boolean {
  return node.nr === node.max && !(node.isLeaf && node.find(key) >= 0);
}

/** Splits the root into two new children; the root keeps its location and becomes internal (§4.3). */
async function splitBeneath(tm: TransactionManager, rootBlock: Block): Promise<void> {
  const root = new Node(rootBlock.data);
  const leftBlock = await tm.newBlock(V);
  const rightBlock = await tm.newBlock(V);
  try {
    const left = Node.init(leftBlock.data, root.isLeaf, root.valueSize);
    const right = Node.init(rightBlock.data, root.isLeaf, root.valueSize);
    const half = Math.floor(root.nr / 2);
    left.appendFrom(root, 0, half);
    right.appendFrom(root, half, root.nr - half);
    rootBlock.data.fill(0, 4);
    const top = Node.init(rootBlock.data, false, 8);
    top.nr = 2;
    top.setKey(0, left.key(0));
    top.setValueU64(0, leftBlock.nr);
    top.setKey(1, right.key(0));
    top.setValueU64(1, rightBlock.nr);
  } finally {
    tm.unlock(leftBlock);
    tm.unlock(rightBlock);
  }
}

/** Moves the upper half of child `i` into a new right sibling, linked into `parent` (which has room). */
async function splitOff(tm: TransactionManager, childBlock: Block, parent: Node, i: number): Promise<Block> {
  const child = new Node(childBlock.data);
  const rightBlock = await tm.newBlock(V);
  const right = Node.init(rightBlock.data, child.isLeaf, child.valueSize);
  right.takeFromLeft(child, child.nr - Math.floor(child.nr / 2));
  parent.insertAt(i + 1, right.key(0), Buffer.alloc(8));
  parent.setValueU64(i + 1, rightBlock.nr);
  return rightBlock;
}

export interface RemoveResult {
  root: number;
  removed: boolean;
}

/** Removes `key` (§4.4), releasing its value with vt.dec. An absent key changes nothing. */
export async function remove(tm: TransactionManager, root: number, key: number, vt: ValueType): Promise<RemoveResult> {
  if ((await lookup(tm, root, key)) === null) return { root, removed: false };
  let block = await shadowNode(tm, root, vt, null, 0);
  const newRoot = block.nr;
  let isRoot = true;
  try {
    for (;;) {
      const node = new Node(block.data);
      if (node.isLeaf) {
        const i = node.find(key);
        const old = Buffer.from(node.value(i));
        node.deleteAt(i);
        await vt.dec?.(old);
        return { root: newRoot, removed: true };
      }
      const child = await rebalanceChild(tm, node, Math.max(node.lowerBound(key), 0), key, vt);
      if (isRoot && node.nr === 1) {
        // The root has one child left: pull it up (the tree gets shallower, the root keeps its location).
        child.data.copy(block.data);
        await tm.dec(child.nr);
        tm.unlock(child);
        continue;
      }
      tm.unlock(block);
      block = child;
      isRoot = false;
    }
  } finally {
    tm.unlock(block);
  }
}

/** Removes every key in [begin, end) (dm_btree_remove_leaves); returns the new root and how many went. */
export async function removeRange(
  tm: TransactionManager,
  root: number,
  begin: number,
  end: number,
  vt: ValueType,
): Promise<{ root: number; removed: number }> {
  let removed = 0;
  for (let next = await lookupNext(tm, root, begin); next && next.key < end; next = await lookupNext(tm, root, next.key + 1)) {
    root = (await remove(tm, root, next.key, vt)).root;
    removed++;
  }
  return { root, removed };
}

/**
 * Shadows child `i` of `parent` and makes sure it can lose an entry while
 * staying at ≥ max/3: if it is at the minimum, merge it with a sibling or
 * share the sibling's entries evenly. Returns the held block that now
 * covers `key`.
 */
async function rebalanceChild(tm: TransactionManager, parent: Node, i: number, key: number, vt: ValueType): Promise<Block> {
  const child = await shadowNode(tm, parent.valueU64(i), vt, parent, i);
  const c = new Node(child.data);
  const min = Math.floor(c.max / 3);
  if (c.nr > min || parent.nr === 1) return child;
  const j = i + 1 < parent.nr ? i + 1 : i - 1;
  const sibling = await shadowNode(tm, parent.valueU64(j), vt, parent, j);
  const [leftBlock, rightBlock, li] = j > i ? [child, sibling, i] : [sibling, child, j];
  const left = new Node(leftBlock.data);
  const right = new Node(rightBlock.data);
  const total = left.nr + right.nr;
  if (total < 2 * (min + 1)) {
    // Merge: the right node's entries move left and the right node is released.
    left.appendFrom(right, 0, right.nr);
    parent.deleteAt(li + 1);
    await tm.dec(rightBlock.nr);
    tm.unlock(rightBlock);
    return leftBlock;
  }
  const wantLeft = Math.floor(total / 2);
  if (left.nr < wantLeft) left.takeFromRight(right, wantLeft - left.nr);
  else if (left.nr > wantLeft) right.takeFromLeft(left, left.nr - wantLeft);
  parent.setKey(li + 1, right.key(0));
  if (key >= right.key(0)) {
    tm.unlock(leftBlock);
    return rightBlock;
  }
  tm.unlock(rightBlock);
  return leftBlock;
}

/**
 * Deletes a whole tree (§4.5): a shared node only loses one reference; an
 * unshared one releases its children or values, then itself.
 */
export async function deleteTree(tm: TransactionManager, root: number, vt: ValueType): Promise<void> {
  const stack = [root];
  while (stack.length > 0) {
    const b = stack.pop()!;
    if ((await tm.count(b)) > 1) {
      await tm.dec(b);
      continue;
    }
    const block = await tm.readLock(b, V);
    const node = new Node(block.data);
    const values: Buffer[] = [];
    for (let i = 0; i < node.nr; i++) {
      if (node.isLeaf) values.push(Buffer.from(node.value(i)));
      else stack.push(node.valueU64(i));
    }
    tm.unlock(block);
    if (vt.dec) for (const v of values) await vt.dec(v);
    await tm.dec(b);
  }
}

/** Every block number of a tree's nodes, with how often it is reached (each reference counted once, children walked on first visit). */
export async function countNodeReferences(
  tm: TransactionManager,
  root: number,
  seen: Map<number, number>,
  onLeafValue?: (value: Buffer) => void | Promise<void>,
): Promise<void> {
  const n = seen.get(root) ?? 0;
  seen.set(root, n + 1);
  if (n > 0) return;
  const block = await tm.readLock(root, V);
  const node = new Node(block.data);
  const children: number[] = [];
  const values: Buffer[] = [];
  for (let i = 0; i < node.nr; i++) {
    if (node.isLeaf) values.push(Buffer.from(node.value(i)));
    else children.push(node.valueU64(i));
  }
  tm.unlock(block);
  for (const c of children) await countNodeReferences(tm, c, seen, onLeafValue);
  if (onLeafValue) for (const v of values) await onLeafValue(v);
}
