import { IoError } from '../../block/errors.ts';
import type { TransactionManager } from '../transaction-manager.ts';
import { btreeNodeValidator } from '../validators.ts';
import { Node } from './node.ts';

/**
 * A full, checked walk of one btree for checkers (thin_check's
 * btree_node_checker, spec/thin-metadata.md §11.3 step 3): every node is
 * validated (checksum, location, value size, max_entries, fill of non-root
 * nodes, key order, parent key ≤ first key) and every reference to a node is
 * counted in `refs`; a node's children are walked on its first visit only,
 * so shared subtrees are counted once per reference and read once.
 */
export interface TreeCheck {
  readonly tm: TransactionManager;
  /** Reference count per metadata block, accumulated over every walk. */
  readonly refs: Uint32Array;
  /** Problems found; a damaged subtree is reported and skipped. */
  readonly errors: string[];
}

export interface TreeSpec {
  /** What the tree is, for messages: "device details tree". */
  name: string;
  valueSize: number;
  /**
   * Called once per leaf entry, in key order, on the first visit of its leaf
   * (the leaf's block number last). The value is `data[at, at + valueSize)`,
   * in a private copy of the leaf: handing out offsets instead of a Buffer
   * per value keeps a walk of millions of mappings free of allocations.
   */
  onValue?: (key: number, data: Buffer, at: number, leaf: number) => void | Promise<void>;
}

export async function checkTree(c: TreeCheck, root: number, spec: TreeSpec): Promise<void> {
  const last = { key: -1 };
  await checkNode(c, root, spec, true, -1, last);
}

async function checkNode(c: TreeCheck, b: number, spec: TreeSpec, isRoot: boolean, parentKey: number, last: { key: number }): Promise<void> {
  if (b <= 0 || b >= c.refs.length) {
    c.errors.push(`${spec.name}: reference to block ${b} outside the metadata device`);
    return;
  }
  c.refs[b]!++;
  if (c.refs[b]! > 1) return;
  let node: Node;
  try {
    const block = await c.tm.readLock(b, btreeNodeValidator);
    try {
      // A private copy: the leaf's values are handed out as views of it, and the walk below may evict the block.
      node = new Node(Buffer.from(block.data));
    } finally {
      c.tm.unlock(block);
    }
  } catch (err) {
    if (!(err instanceof IoError)) throw err;
    c.errors.push(`${spec.name}: ${err.message}`);
    return;
  }
  const fail = (why: string): void => {
    c.errors.push(`${spec.name}: node ${b}: ${why}`);
  };
  const isLeaf = node.isLeaf;
  const nr = node.nr;
  const want = isLeaf ? spec.valueSize : 8;
  if (node.valueSize !== want) return fail(`value size ${node.valueSize}, wanted ${want}`);
  if (node.max % 3 !== 0) return fail(`max_entries ${node.max} not divisible by 3`);
  if (!isRoot && nr < Math.floor(node.max / 3)) return fail(`too few entries in btree_node (${nr} < ${Math.floor(node.max / 3)})`);
  if (nr > 0 && node.key(0) < parentKey) return fail(`parent key mismatch: parent ${parentKey}, first key ${node.key(0)}`);
  let prev = -1;
  for (let i = 0; i < nr; i++) {
    const k = node.key(i);
    if (k <= last.key && isLeaf) return fail(`keys out of order: ${k} after ${last.key}`);
    if (i > 0 && k <= prev) return fail(`keys out of order: ${k} after ${prev}`);
    if (isLeaf) last.key = k;
    prev = k;
  }
  if (isLeaf) {
    if (!spec.onValue) return;
    for (let i = 0; i < nr; i++) {
      const pending = spec.onValue(node.key(i), node.data, node.valueOffset(i), b);
      if (pending) await pending; // a synchronous visitor costs no microtask per entry
    }
    return;
  }
  const children = Array.from({ length: nr }, (_, i) => node.valueU64(i));
  // Linux's dm_btree_del prefetches children alike: the reads of a node's unvisited children overlap.
  c.tm.bm.prefetchAll(children.filter((child) => child > 0 && child < c.refs.length && c.refs[child] === 0));
  for (let i = 0; i < nr; i++) await checkNode(c, children[i]!, spec, false, node.key(i), last);
}
