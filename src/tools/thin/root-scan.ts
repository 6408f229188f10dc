import type { BlockManager } from '../../pdata/block-manager.ts';
import { checkTree } from '../../pdata/btree/check.ts';
import { Node } from '../../pdata/btree/node.ts';
import { blockChecksum } from '../../pdata/checksum.ts';
import { decodeBlockTime } from '../../pdata/thin/block-time.ts';
import { DEVICE_DETAILS_SIZE, decodeDeviceDetails } from '../../pdata/thin/device-details.ts';
import type { TransactionManager } from '../../pdata/transaction-manager.ts';
import { BTREE_FLAG_INTERNAL, BTREE_HEADER_SIZE, SALT } from '../../pdata/validators.ts';

/*
 * thin_dump --repair's search for the trees when the superblock's roots are
 * unusable (thin-provisioning-tools 0.9.0, metadata_dumper.cc "gatherer";
 * spec/thin-metadata.md §11.2): every metadata block with a good btree
 * checksum is summarised, bottom-up, as one of the three trees a thin pool
 * has; a block no good node references is a candidate root; a details root
 * and a mapping root that agree on the number of devices and of mappings
 * (the details' mapped_blocks summed) form a candidate pair, and the first
 * pair whose two trees walk without damage wins.
 */

/** What a node can be part of: the mapping tree's top level, a device's mappings, the details tree. */
type TreeKind = 'top' | 'bottom' | 'details';

interface NodeSummary {
  kind: TreeKind;
  /** Entries in the tree below: devices for a top-level or details tree, mappings for a bottom one. */
  values: number;
  /** Key range of a leaf; 0 for an internal node (0.9.0 does not propagate it). */
  keyLow: number;
  keyHigh: number;
  /** Newest time seen: mapping times, or details' creation and snapshot times. */
  age: number;
  /** Mappings below, or mapped_blocks summed for details. */
  nrMappings: number;
}

export interface FoundRoots {
  detailsRoot: number;
  mappingRoot: number;
  /** The newer age of the two trees: the pool time to restore. */
  time: number;
}

/** Whether a single-level tree walks without any damage (thin_check's node checks). */
export async function walksCleanly(tm: TransactionManager, nrBlocks: number, root: number, valueSize: number): Promise<boolean> {
  const c = { tm, refs: new Uint32Array(nrBlocks), errors: [] as string[] };
  await checkTree(c, root, { name: 'tree', valueSize });
  return c.errors.length === 0;
}

export async function findBestRoots(bm: BlockManager, tm: TransactionManager): Promise<FoundRoots | null> {
  const scan = new RootScan(bm);
  for (let b = 0; b < bm.nrBlocks; b++) await scan.summary(b);
  const details: [number, NodeSummary][] = [];
  const mappings: [number, NodeSummary][] = [];
  for (let b = 0; b < bm.nrBlocks; b++) {
    const s = scan.candidate(b);
    if (s?.kind === 'details') details.push([b, s]);
    else if (s?.kind === 'top') mappings.push([b, s]);
  }
  const pairs: [number, NodeSummary, number, NodeSummary][] = [];
  for (const [d, ds] of details) {
    for (const [m, ms] of mappings) if (ds.values === ms.values && ds.nrMappings === ms.nrMappings) pairs.push([d, ds, m, ms]);
  }
  // 0.9.0 sorts the pairs by the details root's mapping-time counts, which it
  // never fills in for details nodes: its comparator always answers "before",
  // so std::sort's insertion sort leaves up to 16 pairs reversed. With more,
  // its sort runs out of bounds (thin_dump segfaults; seen with 20 pairs);
  // dmkit reverses them all the same.
  pairs.reverse();
  for (const [d, ds, m, ms] of pairs) {
    if ((await walksCleanly(tm, bm.nrBlocks, d, DEVICE_DETAILS_SIZE)) && (await walksCleanly(tm, bm.nrBlocks, m, 8))) {
      return { detailsRoot: d, mappingRoot: m, time: Math.max(ds.age, ms.age) };
    }
  }
  return null;
}

class RootScan {
  private readonly summaries = new Map<number, NodeSummary>();
  private readonly examined = new Set<number>();
  private readonly referenced = new Set<number>();

  constructor(private readonly bm: BlockManager) {}

  /** A good node no good node references. */
  candidate(b: number): NodeSummary | null {
    return this.referenced.has(b) ? null : this.summaries.get(b) ?? null;
  }

  /** The block's summary, or null if it is no node or a bad one; each block is read once. */
  async summary(b: number): Promise<NodeSummary | null> {
    if (this.examined.has(b)) return this.summaries.get(b) ?? null; // also ends a cycle
    this.examined.add(b);
    const s = await this.summarise(b);
    if (s) this.summaries.set(b, s);
    return s;
  }

  private async summarise(b: number): Promise<NodeSummary | null> {
    if (!Number.isSafeInteger(b) || b < 0 || b >= this.bm.nrBlocks) return null;
    const raw = await this.bm.readRaw(b);
    // The checksum alone decides what is a node here, as in 0.9.0 (the location is not checked).
    if (raw.readUInt32LE(0) !== blockChecksum(raw, SALT.btreeNode)) return null;
    const node = new Node(raw);
    if (node.nr > node.max || BTREE_HEADER_SIZE + (8 + node.valueSize) * node.max > raw.length) return null;
    return raw.readUInt32LE(4) & BTREE_FLAG_INTERNAL ? this.internal(node) : this.leaf(node);
  }

  /** An internal node is of its children's kind; they must agree and their key ranges ascend. */
  private async internal(node: Node): Promise<NodeSummary | null> {
    if (node.valueSize !== 8) return null;
    const s: NodeSummary = { kind: 'top', values: 0, keyLow: 0, keyHigh: 0, age: 0, nrMappings: 0 };
    let keyLow = 0;
    for (let i = 0; i < node.nr; i++) {
      const child = await this.childSummary(node, i);
      if (!child) return null;
      if (i === 0) s.kind = child.kind;
      else if (child.kind !== s.kind) return null;
      if (keyLow !== 0 && child.keyLow <= keyLow) return null;
      keyLow = child.keyHigh;
      s.values += child.values;
      s.age = Math.max(s.age, child.age);
      s.nrMappings += child.nrMappings;
    }
    this.markChildren(node);
    return s;
  }

  /**
   * Value size 24 is a details leaf. Value size 8 is a top-level leaf if
   * every value is a block of this device (its children must then be good
   * bottom-level trees), else a bottom-level leaf of block_time values.
   * Any other value size counts as top level, as in 0.9.0.
   */
  private async leaf(node: Node): Promise<NodeSummary | null> {
    const s: NodeSummary = { kind: 'top', values: node.nr, keyLow: 0, keyHigh: 0, age: 0, nrMappings: 0 };
    if (node.valueSize !== DEVICE_DETAILS_SIZE && node.valueSize !== 8) return s;
    if (node.nr > 0) {
      s.keyLow = node.key(0);
      s.keyHigh = node.key(node.nr - 1);
    }
    if (node.valueSize === DEVICE_DETAILS_SIZE) {
      s.kind = 'details';
      for (let i = 0; i < node.nr; i++) {
        const d = decodeDeviceDetails(node.value(i));
        s.age = Math.max(s.age, d.creationTime, d.snapshottedTime);
        s.nrMappings += d.mappedBlocks;
      }
      return s;
    }
    if (!this.allBlocksOfDevice(node)) {
      s.kind = 'bottom';
      for (let i = 0; i < node.nr; i++) s.age = Math.max(s.age, decodeBlockTime(node.value(i)).time);
      s.nrMappings = node.nr;
      return s;
    }
    for (let i = 0; i < node.nr; i++) {
      const child = await this.childSummary(node, i);
      if (child?.kind !== 'bottom') return null;
      s.age = Math.max(s.age, child.age);
      s.nrMappings += child.nrMappings;
    }
    this.markChildren(node);
    return s;
  }

  /** Every le64 value below the device's block count (block_time values of real mappings are not, but for data block 0). */
  private allBlocksOfDevice(node: Node): boolean {
    for (let i = 0; i < node.nr; i++) {
      const v = node.value(i);
      if (v.readUInt32LE(4) !== 0 || v.readUInt32LE(0) >= this.bm.nrBlocks) return false;
    }
    return true;
  }

  private childSummary(node: Node, i: number): Promise<NodeSummary | null> {
    const v = node.value(i);
    return v.readUInt32LE(4) === 0 ? this.summary(v.readUInt32LE(0)) : Promise.resolve(null);
  }

  private markChildren(node: Node): void {
    for (let i = 0; i < node.nr; i++) this.referenced.add(node.value(i).readUInt32LE(0));
  }
}
