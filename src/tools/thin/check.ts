import { constants } from 'node:buffer';
import type { BlockDevice } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import { BlockManager, METADATA_BLOCK_SIZE } from '../../pdata/block-manager.ts';
import { type TreeCheck, checkTree } from '../../pdata/btree/check.ts';
import { blockChecksum } from '../../pdata/checksum.ts';
import { readU64 } from '../../pdata/endian.ts';
import { BITMAP_HEADER_SIZE, BITMAP_OVERFLOW, ENTRIES_PER_BITMAP, getEntry } from '../../pdata/space-map/bitmap.ts';
import { IndexBlockStore } from '../../pdata/space-map/index-block.ts';
import { type IndexEntry, decodeIndexEntry } from '../../pdata/space-map/index-entry.ts';
import { type SpaceMapRoot, decodeSpaceMapRoot } from '../../pdata/space-map/root.ts';
import { decodeBlockTime } from '../../pdata/thin/block-time.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import { NEEDS_CHECK_FLAG, type ThinSuperblock, decodeSuperblock, superblockValidator } from '../../pdata/thin/superblock.ts';
import { TransactionManager } from '../../pdata/transaction-manager.ts';
import { SALT, bitmapValidator } from '../../pdata/validators.ts';
import type { ToolIo } from './io.ts';
import { parseNumber, runTool } from './options.ts';

/** Space-map bitmaps read ahead of the comparison, 1 MiB at a time. */
const BITMAP_PREFETCH = 256;

/** The most elements of a typed array: the data reference counts take one per data block. */
const MAX_LENGTH = constants.MAX_LENGTH;

export interface CheckOptions {
  superBlockOnly?: boolean;
  skipMappings?: boolean;
  /** Check the held metadata snapshot's trees instead of the live ones, without space maps (`-m`). */
  metadataSnap?: boolean;
  /** Walk this block as the mapping tree's root instead of the superblock's (`--override-mapping-root`). */
  overrideMappingRoot?: number;
  /** Progress lines ("examining superblock", …), as thin_check prints them. */
  progress?: (line: string) => void;
}

export interface CheckReport {
  /** Damage: metadata that must not be used. */
  errors: string[];
  /** Harmless inconsistencies (leaked blocks), thin_check's non-fatal errors. */
  warnings: string[];
  transactionId: number;
  metadataFreeBlocks: number;
  /** The live superblock's flags (NEEDS_CHECK is bit 0). */
  flags: number;
  /** Among the warnings: blocks nothing references but counted 1 or 2, which `--auto-repair` frees. */
  leaks: Leak[];
}

export interface Leak {
  space: 'metadata' | 'data';
  block: number;
  /** The space map's count; the walk found no reference. */
  count: number;
}

/**
 * thin_check (spec/thin-metadata.md §11.3): the superblock checksum; every
 * node of the device-details and mapping trees (and of a held metadata
 * snapshot); then the reference count of every metadata block re-derived by
 * a full walk and compared with the metadata space map, and likewise every
 * data block's count (one per distinct leaf mapping it, §5.7) with the data
 * space map. Metadata counts live in one Uint32Array; mappings are streamed.
 */
export async function checkThinMetadata(device: BlockDevice, opts: CheckOptions = {}): Promise<CheckReport> {
  const report: CheckReport = { errors: [], warnings: [], transactionId: 0, metadataFreeBlocks: 0, flags: 0, leaks: [] };
  const progress = opts.progress ?? (() => {});
  if (device.sectors * 512 < METADATA_BLOCK_SIZE) {
    report.errors.push('Metadata device/file too small.  Is this binary metadata?');
    return report;
  }
  const bm = new BlockManager(device, { readOnly: true });
  try {
    progress('examining superblock');
    const raw = await bm.readRaw(0);
    const want = blockChecksum(raw, SALT.thinSuperblock);
    if (raw.readUInt32LE(0) !== want) {
      report.errors.push(`bad checksum in superblock, wanted ${want}`);
      if (raw.subarray(0, 16).toString('latin1').trimStart().startsWith('<')) {
        report.errors.push('This looks like XML.  thin_check only checks the binary metadata format.');
      }
      return report;
    }
    let sb = decodeSuperblock(raw);
    report.flags = sb.flags;
    const metaRoot = decodeSpaceMapRoot(sb.metadataSpaceMapRoot);
    report.metadataFreeBlocks = metaRoot.nrBlocks - metaRoot.nrAllocated;
    if (opts.metadataSnap) {
      const copy = await readHeldSuperblock(bm, sb.heldRoot, report);
      if (!copy) return report;
      sb = { ...copy, dataSpaceMapRoot: sb.dataSpaceMapRoot }; // the copy's are zero; mappings are bounded by the live one
    }
    if (opts.overrideMappingRoot !== undefined) sb = { ...sb, dataMappingRoot: opts.overrideMappingRoot };
    report.transactionId = sb.transactionId;
    if (opts.superBlockOnly) return report;
    if (metaRoot.nrBlocks > bm.nrBlocks) {
      report.errors.push(`metadata space map claims ${metaRoot.nrBlocks} blocks, the device has ${bm.nrBlocks}`);
      return report;
    }
    await new Checker(bm, sb, metaRoot, report, opts, progress).run();
    return report;
  } finally {
    await bm.close();
  }
}

/** The metadata snapshot's copy of the superblock (`-m`), or null with the error reported. */
async function readHeldSuperblock(bm: BlockManager, held: number, report: CheckReport): Promise<ThinSuperblock | null> {
  if (held === 0) {
    report.errors.push('No metadata snapshot found.');
    return null;
  }
  if (held >= bm.nrBlocks) {
    report.errors.push(`metadata snapshot superblock ${held} is outside the metadata device (${bm.nrBlocks} blocks)`);
    return null;
  }
  const raw = await bm.readRaw(held);
  const want = blockChecksum(raw, SALT.thinSuperblock);
  if (raw.readUInt32LE(0) !== want) {
    report.errors.push(`bad checksum in metadata snapshot superblock ${held}, wanted ${want}`);
    return null;
  }
  return decodeSuperblock(raw);
}

class Checker {
  private readonly tm: TransactionManager;
  private readonly c: TreeCheck;
  private readonly dataRoot: SpaceMapRoot;
  /** Data references found by the walk; null when they are not compared (-m, --skip-mappings) or cannot be. */
  private readonly dataRefs: RefCounts | null = null;

  constructor(
    bm: BlockManager,
    private readonly sb: ThinSuperblock,
    private readonly metaRoot: SpaceMapRoot,
    private readonly report: CheckReport,
    private readonly opts: CheckOptions,
    private readonly progress: (line: string) => void,
  ) {
    this.tm = TransactionManager.readOnly(bm);
    this.c = { tm: this.tm, refs: new Uint32Array(metaRoot.nrBlocks), errors: report.errors };
    this.dataRoot = decodeSpaceMapRoot(sb.dataSpaceMapRoot);
    if (opts.metadataSnap || opts.skipMappings) return;
    // The counts take a byte per data block: allocate only what bitmaps in this metadata device could describe.
    const mostDataBlocks = bm.nrBlocks * ENTRIES_PER_BITMAP;
    if (this.dataRoot.nrBlocks > mostDataBlocks) {
      report.errors.push(`data space map claims ${this.dataRoot.nrBlocks} blocks, more than the bitmaps ${bm.nrBlocks} metadata blocks can hold (${mostDataBlocks})`);
    } else if (this.dataRoot.nrBlocks > MAX_LENGTH) {
      report.errors.push(`data space map of ${this.dataRoot.nrBlocks} blocks: dmkit counts the references of at most ${MAX_LENGTH} data blocks`);
    } else {
      this.dataRefs = new RefCounts(new Uint8Array(this.dataRoot.nrBlocks));
    }
  }

  async run(): Promise<void> {
    this.ref(0, 'superblock');
    this.progress('examining devices tree');
    await this.checkThinTrees(this.sb, '');
    if (this.opts.metadataSnap) return; // the snapshot has no space maps of its own
    if (this.sb.heldRoot !== 0) await this.checkHeldRoot(this.sb.heldRoot);
    if (this.opts.skipMappings) return;
    this.progress('checking space map counts');
    const metaOverflow = await this.spaceMapStructures(this.metaRoot, 'metadata', true);
    if (!this.dataRefs) return; // the data space map's size was refused: an error already
    const dataOverflow = await this.spaceMapStructures(this.dataRoot, 'data', false);
    if (this.report.errors.length > 0) return; // counts of a damaged walk would only add noise
    await this.compareCounts('metadata', this.metaRoot, this.metaIndex, metaOverflow, new RefCounts(this.c.refs));
    await this.compareCounts('data', this.dataRoot, this.dataIndex, dataOverflow, this.dataRefs);
  }

  private metaIndex: IndexEntry[] = [];
  private dataIndex: IndexEntry[] = [];

  private ref(b: number, what: string): void {
    if (b < 0 || b >= this.c.refs.length) this.report.errors.push(`${what}: block ${b} outside the metadata device`);
    else this.c.refs[b]!++;
  }

  /** The details tree and the 2-level mapping tree of a superblock (live or held copy). */
  private async checkThinTrees(sb: ThinSuperblock, prefix: string): Promise<void> {
    const detailIds = new Set<number>();
    await checkTree(this.c, sb.deviceDetailsRoot, {
      name: `${prefix}device details tree`,
      valueSize: 24,
      onValue: (id) => {
        detailIds.add(id);
      },
    });
    if (prefix === '') this.progress(this.opts.skipMappings ? 'examining top level of mapping tree' : 'examining mapping tree');
    const subtrees: { id: number; root: number }[] = [];
    await checkTree(this.c, sb.dataMappingRoot, {
      name: `${prefix}mapping tree`,
      valueSize: 8,
      onValue: (id, leaf, at) => {
        // From a view of the value, as index entries below: EOVERFLOW (a root beyond 2^53) names the byte within the value.
        subtrees.push({ id, root: readU64(leaf.subarray(at, at + 8), 0) });
      },
    });
    for (const { id, root } of subtrees) {
      if (!detailIds.delete(id)) this.report.errors.push(`mappings present for device ${id}, but it isn't present in device tree`);
      if (this.opts.skipMappings) continue;
      await checkTree(this.c, root, {
        name: `${prefix}mapping tree of device ${id}`,
        valueSize: 8,
        onValue: (vblock, leaf, at) => {
          const { block } = decodeBlockTime(leaf, at);
          if (block >= this.dataRoot.nrBlocks) {
            this.report.errors.push(`device ${id} block ${vblock} maps data block ${block} beyond the data device (${this.dataRoot.nrBlocks} blocks)`);
          } else {
            this.dataRefs?.inc(block);
          }
        },
      });
    }
    if (detailIds.size > 0) this.report.errors.push(`missing all mappings for devices: ${[...detailIds].join(', ')}`);
  }

  private async checkHeldRoot(held: number): Promise<void> {
    this.ref(held, 'held metadata root');
    let copy: ThinSuperblock;
    try {
      const block = await this.tm.readLock(held, superblockValidator);
      copy = decodeSuperblock(block.data);
      this.tm.unlock(block);
    } catch (err) {
      if (!(err instanceof IoError)) throw err;
      this.report.errors.push(`held metadata root: ${err.message}`);
      return;
    }
    await this.checkThinTrees(copy, 'metadata snapshot ');
  }

  /**
   * Counts the space map's own blocks (index, bitmaps, ref-count tree) and
   * returns its overflow counts.
   */
  private async spaceMapStructures(root: SpaceMapRoot, kind: 'metadata' | 'data', indexBlock: boolean): Promise<Map<number, number>> {
    const nrBitmaps = Math.ceil(root.nrBlocks / ENTRIES_PER_BITMAP);
    let index: IndexEntry[] = [];
    if (indexBlock) {
      this.ref(root.bitmapRoot, 'metadata space map index');
      try {
        index = (await IndexBlockStore.read(this.tm, root.bitmapRoot, nrBitmaps)).entries;
      } catch (err) {
        if (!(err instanceof IoError)) throw err;
        this.report.errors.push(`metadata space map index: ${err.message}`);
      }
    } else {
      await checkTree(this.c, root.bitmapRoot, {
        name: 'data space map index',
        valueSize: 16,
        onValue: (i, leaf, at) => {
          index[i] = decodeIndexEntry(leaf.subarray(at, at + 16), 0);
        },
      });
    }
    for (let i = 0; i < nrBitmaps; i++) {
      const e = index[i];
      if (e) this.ref(e.blocknr, `${kind} space map bitmap ${i}`);
      else this.report.errors.push(`${kind} space map has no index entry for bitmap ${i}`);
    }
    if (indexBlock) this.metaIndex = index;
    else this.dataIndex = index;
    const overflow = new Map<number, number>();
    await checkTree(this.c, root.refCountRoot, {
      name: `${kind} space map ref-count tree`,
      valueSize: 4,
      onValue: (b, leaf, at) => {
        overflow.set(b, leaf.readUInt32LE(at));
      },
    });
    return overflow;
  }

  private async compareCounts(
    kind: 'metadata' | 'data',
    root: SpaceMapRoot,
    index: IndexEntry[],
    overflow: Map<number, number>,
    expected: RefCounts,
  ): Promise<void> {
    for (let i = 0; i * ENTRIES_PER_BITMAP < root.nrBlocks; i++) {
      if (i % BITMAP_PREFETCH === 0) this.tm.bm.prefetchAll(index.slice(i, i + BITMAP_PREFETCH).map((e) => e.blocknr));
      let block;
      try {
        block = await this.tm.readLock(index[i]!.blocknr, bitmapValidator);
      } catch (err) {
        if (!(err instanceof IoError)) throw err;
        this.report.errors.push(`${kind} space map bitmap ${i}: ${err.message}`);
        continue;
      }
      try {
        const data = block.data;
        const first = i * ENTRIES_PER_BITMAP;
        const end = Math.min(ENTRIES_PER_BITMAP, root.nrBlocks - first);
        // Most of a sparse pool: no block counted, none referenced.
        if (isZero(data.subarray(BITMAP_HEADER_SIZE, BITMAP_HEADER_SIZE + Math.ceil(end / 4))) && expected.noneIn(first, end)) continue;
        for (let k = 0; k < end; k++) {
          const b = first + k;
          const entry = getEntry(data, k);
          const actual = entry < BITMAP_OVERFLOW ? entry : overflow.get(b) ?? 0;
          if (entry === BITMAP_OVERFLOW && !overflow.has(b)) this.report.errors.push(`${kind} block ${b} has bitmap count 3 but no ref-count tree entry`);
          const want = expected.get(b);
          if (actual === want) continue;
          const msg = `${kind} reference counts differ for block ${b}, expected ${want}, but got ${actual}`;
          (actual > want ? this.report.warnings : this.report.errors).push(msg);
          if (want === 0 && actual < BITMAP_OVERFLOW) this.report.leaks.push({ space: kind, block: b, count: actual });
        }
      } finally {
        this.tm.unlock(block);
      }
    }
  }
}

const ZEROS = Buffer.alloc(ENTRIES_PER_BITMAP * Uint32Array.BYTES_PER_ELEMENT);

/** Whether every byte is 0 (a memcmp; `bytes` is at most a bitmap's worth of 32-bit counts). */
function isZero(bytes: Buffer): boolean {
  return bytes.equals(ZEROS.subarray(0, bytes.length));
}

/**
 * Reference counts found by the walk, one element per block: the metadata
 * walk's Uint32Array, a byte per data block (a pool's worth stays small).
 * A count that reaches the element's maximum goes on in `high`: a data block
 * referenced from 255 leaves (many snapshots) is rare.
 */
class RefCounts {
  private readonly max: number;
  private readonly high = new Map<number, number>();

  constructor(private readonly low: Uint8Array | Uint32Array) {
    this.max = 2 ** (8 * low.BYTES_PER_ELEMENT) - 1;
  }

  inc(b: number): void {
    const n = this.low[b]!;
    if (n < this.max) this.low[b] = n + 1;
    else this.high.set(b, (this.high.get(b) ?? n) + 1);
  }

  get(b: number): number {
    const n = this.low[b]!;
    return n < this.max ? n : (this.high.get(b) ?? n);
  }

  /** Whether no block of [b, b + n) is referenced. */
  noneIn(b: number, n: number): boolean {
    const size = this.low.BYTES_PER_ELEMENT;
    return isZero(Buffer.from(this.low.buffer, this.low.byteOffset + b * size, n * size));
  }
}

/**
 * thin_check's fixes (§11.3), after a full check found no damage: leaked
 * blocks (counted 1 or 2, referenced by nothing) freed in their space map,
 * and NEEDS_CHECK cleared, in one metadata commit. Only the space maps'
 * shadowed bitmaps, index and the superblock are written; the trees are not
 * touched. Data leaks are freed too: dmkit's check counts data references,
 * which 0.9.0's does not.
 */
export async function fixThinMetadata(device: BlockDevice, fix: { leaks: readonly Leak[]; clearNeedsCheck: boolean }): Promise<void> {
  const md = await ThinMetadata.open(device);
  try {
    for (const leak of fix.leaks) {
      const sm = leak.space === 'metadata' ? md.metadataSm : md.dataSm;
      for (let i = 0; i < leak.count; i++) await sm.dec(leak.block);
    }
    if (fix.clearNeedsCheck) md.restoreSuperblock({ flags: md.superblock.flags & ~NEEDS_CHECK_FLAG });
    // R2: the commit writes and flushes the new bitmaps and index before the superblock that points at them.
    await md.commit();
  } finally {
    await md.close();
  }
}

const USAGE = `Usage: thin check [options] {device|file}
Options:
  {-q|--quiet}
  {-h|--help}
  {-m|--metadata-snap}
  {--auto-repair}
  {--override-mapping-root} <block>
  {--clear-needs-check-flag}
  {--ignore-non-fatal-errors}
  {--skip-mappings}
  {--super-block-only}
`;

/** Why a fix cannot go with the other options (0.9.0's texts); null when it can. */
function fixRefusal(options: ReadonlyMap<string, string[]>): string | null {
  if (!options.has('auto-repair') && !options.has('clear-needs-check-flag')) return null;
  if (options.has('ignore-non-fatal-errors')) return 'cannot perform fix by ignoring non-fatal errors';
  if (options.has('metadata-snap')) return 'cannot perform fix within metadata snap';
  if (options.has('override-mapping-root')) return 'cannot perform fix with an overridden mapping root';
  if (options.has('super-block-only') || options.has('skip-mappings')) return 'cannot perform fix without a full examination';
  return null;
}

/**
 * `dmkit thin check META`: exit 0 when clean (or only non-fatal errors are
 * ignored), else 1, as thin_check. `--auto-repair` frees leaked blocks when
 * leaks are the only problem; it and `--clear-needs-check-flag` then clear
 * NEEDS_CHECK; the check then counts as clean.
 */
export function thinCheck(argv: readonly string[], io: ToolIo): Promise<number> {
  const spec = {
    flags: {
      quiet: false, 'metadata-snap': false, 'super-block-only': false, 'skip-mappings': false, 'ignore-non-fatal-errors': false,
      'auto-repair': false, 'clear-needs-check-flag': false, 'override-mapping-root': true,
    },
    aliases: { q: 'quiet', m: 'metadata-snap' },
  };
  return runTool(argv, io, USAGE, spec, async ({ options, positional, closeAtEnd }) => {
    const refusal = fixRefusal(options);
    if (refusal) throw new IoError('EINVAL', refusal);
    if (positional.length !== 1) {
      io.stderr.write(`No input file provided.\n${USAGE}`);
      return 1;
    }
    const quiet = options.has('quiet');
    const say = (line: string): void => {
      if (!quiet) io.stderr.write(`${line}\n`);
    };
    const path = positional[0]!;
    const root = options.get('override-mapping-root')?.at(-1);
    const reader = await FileDevice.open(path, { readOnly: true });
    const report = await checkThinMetadata(reader, {
      superBlockOnly: options.has('super-block-only'),
      skipMappings: options.has('skip-mappings'),
      metadataSnap: options.has('metadata-snap'),
      ...(root !== undefined && { overrideMappingRoot: parseNumber(root, 'override-mapping-root') }),
      progress: say,
    }).finally(() => reader.close()); // closed before a fix opens the file for writing
    for (const e of report.errors) say(e);
    for (const w of report.warnings) say(w);
    if (report.errors.length > 0) return 1;
    if (!quiet) io.stdout.write(`TRANSACTION_ID=${report.transactionId}\nMETADATA_FREE_BLOCKS=${report.metadataFreeBlocks}\n`);
    const fixLeaks = options.has('auto-repair') && report.warnings.length > 0 && report.leaks.length === report.warnings.length;
    const clean = report.warnings.length === 0 || fixLeaks;
    const clearNeedsCheck = clean && (options.has('auto-repair') || options.has('clear-needs-check-flag')) && (report.flags & NEEDS_CHECK_FLAG) !== 0;
    if (fixLeaks || clearNeedsCheck) {
      const writer = closeAtEnd(await FileDevice.open(path));
      await fixThinMetadata(writer, { leaks: fixLeaks ? report.leaks : [], clearNeedsCheck });
      if (fixLeaks) say('fixed metadata leaks');
      if (clearNeedsCheck) say('cleared needs_check flag');
    }
    return clean || options.has('ignore-non-fatal-errors') ? 0 : 1;
  });
}
