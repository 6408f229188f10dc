/**
 * Range queries on one thin device's mapping subtree that ThinMetadata does
 * not offer itself: the next mapped block at or after a virtual block (for
 * extents and discards) and the highest mapped block (for the thin status).
 * Read-only; the caller holds the pool's metadata lock.
 */
import { lookup, lookupNext } from '../../pdata/btree/btree.ts';
import { Node } from '../../pdata/btree/node.ts';
import { readU64 } from '../../pdata/endian.ts';
import { type BlockTime, decodeBlockTime } from '../../pdata/thin/block-time.ts';
import type { ThinMetadata } from '../../pdata/thin/metadata.ts';
import { btreeNodeValidator } from '../../pdata/validators.ts';

export interface Mapping extends BlockTime {
  vblock: number;
}

async function subtreeRoot(md: ThinMetadata, id: number): Promise<number | null> {
  const v = await lookup(md.tm, md.superblock.dataMappingRoot, id);
  return v ? readU64(v, 0) : null;
}

/** The first mapping of device `id` at or after `vblock`, or null. */
export async function nextMapping(md: ThinMetadata, id: number, vblock: number): Promise<Mapping | null> {
  const root = await subtreeRoot(md, id);
  if (root === null) return null;
  const e = await lookupNext(md.tm, root, vblock);
  return e ? { vblock: e.key, ...decodeBlockTime(e.value) } : null;
}

/** Every mapping of device `id` in [begin, end), ascending. */
export async function mappingsIn(md: ThinMetadata, id: number, begin: number, end: number): Promise<Mapping[]> {
  const out: Mapping[] = [];
  for (let m = await nextMapping(md, id, begin); m && m.vblock < end; m = await nextMapping(md, id, m.vblock + 1)) out.push(m);
  return out;
}

/** The highest mapped virtual block of device `id`, or -1: the rightmost key of its subtree. */
export async function highestMapped(md: ThinMetadata, id: number): Promise<number> {
  let b = await subtreeRoot(md, id);
  while (b !== null) {
    const block = await md.tm.readLock(b, btreeNodeValidator);
    try {
      const node = new Node(block.data);
      if (node.nr === 0) return -1;
      if (node.isLeaf) return node.key(node.nr - 1);
      b = node.valueU64(node.nr - 1);
    } finally {
      md.tm.unlock(block);
    }
  }
  return -1;
}
