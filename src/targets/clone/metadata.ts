/**
 * dm-clone metadata (Linux dm-clone-metadata.c, spec/clone.md §11–§12): the
 * superblock, the metadata space map and the region bitmap as a dm-bitset,
 * plus the in-core region map and the two per-transaction dirty maps the
 * commit protocol works with.
 */
import type { BlockDevice } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { PersistentArray } from '../../pdata/array.ts';
import { PersistentBitset } from '../../pdata/bitset.ts';
import { BlockManager } from '../../pdata/block-manager.ts';
import { plainValue } from '../../pdata/btree/value-type.ts';
import { readU64, writeU64 } from '../../pdata/endian.ts';
import { MAX_METADATA_BLOCKS } from '../../pdata/space-map/index-block.ts';
import { MetadataSpaceMap } from '../../pdata/space-map/metadata.ts';
import { SPACE_MAP_ROOT_SIZE } from '../../pdata/space-map/root.ts';
import { TransactionManager } from '../../pdata/transaction-manager.ts';
import { checksummedValidator } from '../../pdata/validators.ts';

/*
 * The superblock, block 0 (spec/clone.md §11.2):
 *
 * | offset | size | field |
 * | 0   | 4   | le32 csum (salt 257649492) |
 * | 4   | 4   | le32 flags (0) |
 * | 8   | 8   | le64 blocknr (0) |
 * | 16  | 16  | uuid (zero, unused) |
 * | 32  | 8   | le64 magic 0x8AF27F64 |
 * | 40  | 4   | le32 version (1) |
 * | 44  | 128 | metadata space-map root (first 32 bytes used) |
 * | 172 | 8   | le64 region_size (sectors) |
 * | 180 | 8   | le64 target_size (sectors) |
 * | 188 | 8   | le64 bitset_root |
 * | 196 | …   | zero |
 */
const SB_FLAGS = 4;
const SB_MAGIC = 32;
const SB_VERSION = 40;
const SB_SM_ROOT = 44;
const SB_REGION_SIZE = 172;
const SB_TARGET_SIZE = 180;
const SB_BITSET_ROOT = 188;

export const CLONE_MAGIC = 0x8af27f64;
export const CLONE_VERSION = 1;
const CLONE_SALT = 257649492;
export const METADATA_BLOCK_SECTORS = 8;

export interface CloneSuperblock {
  flags: number;
  version: number;
  /** The 32-byte metadata space-map root. */
  spaceMapRoot: Buffer;
  regionSize: number;
  targetSize: number;
  bitsetRoot: number;
}

/*
 * Linux checks blocknr (ENOTBLK), then the magic, then the checksum; the
 * shared validator checks blocknr and checksum first and the magic last,
 * all as EILSEQ. Only the errno of a corrupt superblock differs.
 */
export const superblockValidator = checksummedValidator({
  name: 'clone superblock',
  salt: CLONE_SALT,
  blocknrOffset: 8,
  checkMore(data, _blocknr, fail) {
    const magic = readU64(data, SB_MAGIC);
    if (magic !== CLONE_MAGIC) fail(`magic ${magic} != ${CLONE_MAGIC}`);
  },
});

export function decodeSuperblock(data: Buffer): CloneSuperblock {
  return {
    flags: data.readUInt32LE(SB_FLAGS),
    version: data.readUInt32LE(SB_VERSION),
    spaceMapRoot: Buffer.from(data.subarray(SB_SM_ROOT, SB_SM_ROOT + SPACE_MAP_ROOT_SIZE)),
    regionSize: readU64(data, SB_REGION_SIZE),
    targetSize: readU64(data, SB_TARGET_SIZE),
    bitsetRoot: readU64(data, SB_BITSET_ROOT),
  };
}

/** Fills a zeroed block; csum and blocknr are stamped by the validator when it is written. */
export function encodeSuperblock(sb: CloneSuperblock, data: Buffer): void {
  data.writeUInt32LE(sb.flags, SB_FLAGS);
  writeU64(data, SB_MAGIC, CLONE_MAGIC);
  data.writeUInt32LE(sb.version, SB_VERSION);
  sb.spaceMapRoot.copy(data, SB_SM_ROOT, 0, SPACE_MAP_ROOT_SIZE);
  writeU64(data, SB_REGION_SIZE, sb.regionSize);
  writeU64(data, SB_TARGET_SIZE, sb.targetSize);
  writeU64(data, SB_BITSET_ROOT, sb.bitsetRoot);
}

// ---- in-core bitmaps ----------------------------------------------------------

/** A bitmap of `n` bits in 32-bit words (the in-core region map and dirty maps). */
export class Bitmap {
  readonly words: Uint32Array;
  constructor(readonly n: number) {
    this.words = new Uint32Array(Math.ceil(n / 32));
  }
  test(i: number): boolean {
    return (this.words[i >>> 5]! & (1 << (i & 31))) !== 0;
  }
  set(i: number): void {
    this.words[i >>> 5]! |= 1 << (i & 31);
  }
  clear(i: number): void {
    this.words[i >>> 5]! &= ~(1 << (i & 31));
  }
  /** The first clear bit ≥ `from` for which `skip` is false, or -1. */
  nextClear(from: number, skip: (i: number) => boolean): number {
    for (let i = from; i < this.n; ) {
      if (this.words[i >>> 5] === 0xffffffff) {
        i = ((i >>> 5) + 1) << 5;
        continue;
      }
      if (!this.test(i) && !skip(i)) return i;
      i++;
    }
    return -1;
  }
}

/**
 * One transaction's changes (§12.1): the regions marked, the 64-region
 * on-disk words they fall in, and whether anything changed.
 */
class DirtyMap {
  readonly regions: Bitmap;
  readonly words: Uint8Array;
  changed = false;
  constructor(nrRegions: number) {
    this.regions = new Bitmap(nrRegions);
    this.words = new Uint8Array(Math.ceil(nrRegions / 64));
  }
  mark(r: number): void {
    this.regions.set(r);
    this.words[Math.floor(r / 64)] = 1;
    this.changed = true;
  }
  get clean(): boolean {
    return !this.changed;
  }
}

// ---- the metadata -----------------------------------------------------------------

export interface CloneMetadataOptions {
  regionSize: number;
  targetSize: number;
  readOnly?: boolean;
}

interface Opened {
  bm: BlockManager;
  tm: TransactionManager;
  sm: MetadataSpaceMap;
  sb: CloneSuperblock;
}

const WORD_BYTES = 8;

/**
 * dm_clone_metadata. Only one metadata operation (open, commit, abort) runs
 * at a time: the target serialises them. Marking regions is synchronous and
 * touches only the in-core maps.
 */
export class CloneMetadata {
  readonly nrRegions: number;
  /** The in-core region map (§12.1); replaced whole when reloaded, never half-filled. */
  private regionMap: Bitmap;
  private hydrated = 0;
  private readonly dmap: [DirtyMap, DirtyMap];
  private current = 0;
  /** The map frozen by preCommit and not yet committed, if any. */
  private committing: DirtyMap | null = null;
  private o: Opened;

  private constructor(readonly device: BlockDevice, private readonly opts: CloneMetadataOptions, o: Opened) {
    this.nrRegions = Math.ceil(opts.targetSize / opts.regionSize);
    this.regionMap = new Bitmap(this.nrRegions);
    this.dmap = [new DirtyMap(this.nrRegions), new DirtyMap(this.nrRegions)];
    this.o = o;
  }

  /**
   * dm_clone_metadata_open (§11.2): formats a device whose block 0 is all
   * zeroes, otherwise opens it and refuses a region size or target size
   * other than the table's. Then loads the region map.
   */
  static async open(device: BlockDevice, opts: CloneMetadataOptions): Promise<CloneMetadata> {
    const bm = new BlockManager(device, { readOnly: opts.readOnly ?? false });
    try {
      const blank = !(await bm.readRaw(0)).some((b) => b !== 0);
      if (blank && bm.readOnly) throw new IoError('EINVAL', `${device.name}: clone metadata is blank and the device is read-only`);
      const o = blank ? await format(bm, opts) : await openExisting(bm, opts);
      const md = new CloneMetadata(device, opts, o);
      await md.loadRegionMap();
      return md;
    } catch (err) {
      await bm.close();
      throw err;
    }
  }

  get readOnly(): boolean {
    return this.o.bm.readOnly;
  }

  // ---- in-core region state ----

  isHydrated(r: number): boolean {
    return this.regionMap.test(r);
  }

  /** The first region ≥ from that is not hydrated and for which `skip` is false, or -1. */
  nextUnhydrated(from: number, skip: (r: number) => boolean): number {
    return this.regionMap.nextClear(from, skip);
  }

  get nrHydrated(): number {
    return this.hydrated;
  }

  get allHydrated(): boolean {
    return this.hydrated === this.nrRegions;
  }

  /** Metadata changed this transaction: D0.changed OR D1.changed (§12.1). */
  get changed(): boolean {
    return this.dmap[0].changed || this.dmap[1].changed;
  }

  /** dm_clone_set_region_hydrated: in-core map and the current dirty map; never blocks. */
  markHydrated(r: number): void {
    if (this.regionMap.test(r)) return;
    this.regionMap.set(r);
    this.hydrated++;
    this.dmap[this.current]!.mark(r);
  }

  /** dm_clone_cond_set_range: marks every region of [start, start+n) not yet set. */
  markRange(start: number, n: number): void {
    if (start < 0 || n < 0 || start + n > this.nrRegions) {
      throw new IoError('EINVAL', `${this.device.name}: region range ${start}+${n} outside ${this.nrRegions} regions`);
    }
    for (let r = start; r < start + n; r++) this.markHydrated(r);
  }

  // ---- space ----

  /** Blocks the metadata space map manages (fixed at format). */
  get totalBlocks(): number {
    return this.o.sm.nrBlocks;
  }

  get usedBlocks(): number {
    return this.o.sm.nrBlocks - this.o.sm.nrFree();
  }

  // ---- the two-phase commit (§12.2) ----

  /**
   * dm_clone_metadata_pre_commit: the current dirty map is frozen as the
   * committing one and the free one becomes current, so every region marked
   * from now on belongs to the next transaction (§13.1 rule 2).
   */
  preCommit(): void {
    const next = 1 - this.current;
    if (this.committing || !this.dmap[next]!.clean) {
      throw new IoError('EINVAL', `${this.device.name}: clone metadata pre-commit while a commit is pending`);
    }
    this.committing = this.dmap[this.current]!;
    this.current = next;
  }

  /**
   * dm_clone_metadata_commit: writes the committing map's bits (and only
   * those, never the live region map's) into the on-disk bitset, one
   * 64-region word at a time, then runs the transaction commit (R2). The
   * caller flushed the destination between preCommit and this (R1).
   */
  async commit(): Promise<void> {
    const dirty = this.committing;
    if (!dirty) throw new IoError('EINVAL', `${this.device.name}: clone metadata commit without pre-commit`);
    const { tm, sm } = this.o;
    const array = new PersistentArray(tm, plainValue(WORD_BYTES));
    let root = this.o.sb.bitsetRoot;
    const word = Buffer.alloc(WORD_BYTES);
    for (let w = 0; w < dirty.words.length; w++) {
      if (!dirty.words[w]) continue;
      const lo = dirty.regions.words[2 * w]!;
      const hi = dirty.regions.words[2 * w + 1] ?? 0;
      const old = await array.get(root, w);
      word.writeUInt32LE((old.readUInt32LE(0) | lo) >>> 0, 0);
      word.writeUInt32LE((old.readUInt32LE(4) | hi) >>> 0, 4);
      if (!word.equals(old)) root = await array.set(root, w, word);
    }
    const sb: CloneSuperblock = { ...this.o.sb, bitsetRoot: root };
    await tm.commit(superblockValidator, (data) => encodeSuperblock({ ...sb, spaceMapRoot: sm.root() }, data));
    this.o.sb = { ...sb, spaceMapRoot: sm.root() };
    dirty.regions.words.fill(0);
    dirty.words.fill(0);
    dirty.changed = false;
    this.committing = null;
  }

  /**
   * dm_clone_metadata_abort + dm_clone_reload_in_core_bitset: throws away
   * every uncommitted change and reopens from the last committed
   * superblock; the region map is reloaded from disk (§7, §13.1 rule 8).
   */
  async abort(): Promise<void> {
    await this.o.bm.discardAll();
    this.o = await openExisting(this.o.bm, this.opts);
    for (const d of this.dmap) {
      d.regions.words.fill(0);
      d.words.fill(0);
      d.changed = false;
    }
    this.committing = null;
    await this.loadRegionMap();
  }

  async close(): Promise<void> {
    await this.o.bm.close();
  }

  /** Reads the on-disk bitset into the in-core region map; bits ≥ nr_regions are ignored (§11.6). */
  private async loadRegionMap(): Promise<void> {
    const array = new PersistentArray(this.o.tm, plainValue(WORD_BYTES));
    const map = new Bitmap(this.nrRegions);
    const words = map.words;
    await array.walk(this.o.sb.bitsetRoot, (w, v) => {
      if (2 * w < words.length) words[2 * w] = v.readUInt32LE(0);
      if (2 * w + 1 < words.length) words[2 * w + 1] = v.readUInt32LE(4);
    });
    const tail = this.nrRegions % 32;
    if (tail !== 0) words[words.length - 1]! &= (1 << tail) - 1;
    let n = 0;
    for (const x of words) n += popcount(x);
    this.regionMap = map;
    this.hydrated = n;
  }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/**
 * Fresh metadata (§11.7): the space map over min(device blocks, 4161600),
 * an empty bitset resized to nr_regions zero bits, then the first commit
 * (every other block written and flushed before the superblock, R2).
 */
async function format(bm: BlockManager, opts: CloneMetadataOptions): Promise<Opened> {
  const tm = new TransactionManager(bm);
  const sm = await MetadataSpaceMap.format(tm, Math.min(bm.nrBlocks, MAX_METADATA_BLOCKS));
  const bitset = new PersistentBitset(tm);
  const nrRegions = Math.ceil(opts.targetSize / opts.regionSize);
  const bitsetRoot = await bitset.resize(await bitset.empty(), 0, nrRegions, false);
  const sb: CloneSuperblock = {
    flags: 0, version: CLONE_VERSION, spaceMapRoot: Buffer.alloc(SPACE_MAP_ROOT_SIZE),
    regionSize: opts.regionSize, targetSize: opts.targetSize, bitsetRoot,
  };
  await tm.commit(superblockValidator, (data) => encodeSuperblock({ ...sb, spaceMapRoot: sm.root() }, data));
  return { bm, tm, sm, sb: { ...sb, spaceMapRoot: sm.root() } };
}

/** Opens committed metadata and checks it against the table (§11.2). */
async function openExisting(bm: BlockManager, opts: CloneMetadataOptions): Promise<Opened> {
  const block = await bm.readLock(0, superblockValidator);
  const sb = decodeSuperblock(block.data);
  bm.unlock(block);
  if (sb.version < CLONE_VERSION || sb.version > CLONE_VERSION) {
    throw new IoError('EINVAL', `Clone metadata version ${sb.version} found, but only versions between 1 and 1 supported.`);
  }
  if (sb.regionSize !== opts.regionSize || sb.targetSize !== opts.targetSize) {
    throw new IoError('EINVAL',
      `${bm.name}: Region and/or target size don't match the ones in metadata ` +
      `(metadata: region size ${sb.regionSize}, target size ${sb.targetSize}; table: ${opts.regionSize}, ${opts.targetSize})`);
  }
  const tm = new TransactionManager(bm);
  const sm = await MetadataSpaceMap.open(tm, sb.spaceMapRoot);
  return { bm, tm, sm, sb };
}
