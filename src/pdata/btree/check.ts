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
  /** Called once per leaf entry, in key order, on the first visit of its leaf (the leaf's block number last). */
  onValue?: (key: number, value: Buffer, leaf: number) => void | Promise<void>;
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
  let children: number[] = [];
  const values: { key: number; value: Buffer }[] = [];
  try {
    const block = await c.tm.readLock(b, btreeNodeValidator);
    try {
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
  const want = node.isLeaf ? spec.valueSize : 8;
  if (node.valueSize !== want) return fail(`value size ${node.valueSize}, wanted ${want}`);
  if (node.max % 3 !== 0) return fail(`max_entries ${node.max} not divisible by 3`);
  if (!isRoot && node.nr < Math.floor(node.max / 3)) return fail(`too few entries in btree_node (${node.nr} < ${Math.floor(node.max / 3)})`);
  if (node.nr > 0 && node.key(0) < parentKey) return fail(`parent key mismatch: parent ${parentKey}, first key ${node.key(0)}`);
  for (let i = 0; i < node.nr; i++) {
    const k = node.key(i);
    if (k <= last.key && node.isLeaf) return fail(`keys out of order: ${k} after ${last.key}`);
    if (i > 0 && k <= node.key(i - 1)) return fail(`keys out of order: ${k} after ${node.key(i - 1)}`);
    if (node.isLeaf) {
      last.key = k;
      values.push({ key: k, value: Buffer.from(node.value(i)) });
    }
  }
  if (!node.isLeaf) children = Array.from({ length: node.nr }, (_, i) => node.valueU64(i));
  for (let i = 0; i < children.length; i++) await checkNode(c, children[i]!, spec, false, node.key(i), last);
  if (spec.onValue) for (const v of values) await spec.onValue(v.key, v.value, b);
}
