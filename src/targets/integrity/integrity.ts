/**
 * integrity (Linux dm-integrity.c, target version 1.10.0 as in Linux 6.1):
 * a block device whose every block carries a tag (a checksum) in a metadata
 * area; a read whose tag does not match fails with EILSEQ (integrity.md).
 *
 *   table:  <dev> <offset> <tag size|-> <J|B|D|R> <#opt> [<opt>...]
 *   status: <mismatches> <provided data sectors> <recalc sector|->
 *
 * Modes:
 *  J  journal: data and tags go to the journal first, committed with commit
 *     ids, then copied in place by the writer; replayed at activation.
 *  B  bitmap: a region's bit is made durable before it is written; dirty
 *     regions are recalculated after a crash.
 *  D  direct: data and tags written in parallel. NO crash consistency: after
 *     a crash a block written since the last flush may read as EILSEQ until
 *     `recalculate`/`reset_recalculate` rebuilds its tag (documented Linux
 *     behaviour, integrity.md §6.4).
 *  R  recovery: read-only, no journal replay, no tag checks, nothing written.
 */
import { type WriteOptions, SECTOR_SIZE } from '../../block/device.ts';
import { type Errno, IoError, toIoError } from '../../block/errors.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, DeviceRef, StatusType, SuspendOptions, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { ctrError, lookupDevice } from '../common/dev-offset.ts';
import { targetIoError, unsupported } from '../common/io.ts';
import { type IntegrityArgs, jiffiesToMs, parseIntegrityArgs } from './args.ts';
import { BITMAP_BLOCK_SECTORS, BITS_PER_BITMAP_BLOCK, Bitmap } from './bitmap.ts';
import { formatSuperblock } from './format.ts';
import {
  type Layout, type LayoutInput, calculateLayout, dataSector, interleaveSectors, log2SectorsPerBit, providedDataSectors,
} from './geometry.ts';
import { JournalImage, nextSeq, planReplay } from './journal.ts';
import { RangeLocks } from './range-lock.ts';
import {
  SB_BYTES, SB_FLAG_DIRTY_BITMAP, SB_FLAG_FIXED_HMAC, SB_FLAG_FIXED_PADDING, SB_FLAG_RECALCULATING, SB_SECTORS,
  type Superblock, decodeSuperblock, encodeSuperblock, hasMagic, superblockVersion,
} from './superblock.ts';
import { DIGESTS, DISCARD_FILLER, TagHasher, TagStore } from './tags.ts';
import { validateSuperblock } from './validators.ts';

const TYPE = 'integrity';
/** Sectors per recalculation chunk (64-bit kernels), never crossing an interleave area. */
const RECALC_SECTORS = 32768;
/** Recalculation writes its position to the superblock every this many chunks. */
const RECALC_WRITE_SUPER = 16;

/** Test-only knobs: never reachable from a table line. */
export interface IntegrityTestOptions {
  /**
   * The seed bug of integrity.md §6.3 / CRASH-TESTING §3: with meta_device,
   * "flush buffers with data" flushes the metadata device and only starts the
   * data-device flush, relying on order instead of waiting for it (R3).
   */
  readonly brokenFlushOrder?: boolean;
  /** Salt source at format (reproducible images in tests). */
  readonly salt?: () => Buffer;
}

export function integrityTargetType(test: IntegrityTestOptions = {}): TargetType {
  return {
    name: TYPE,
    version: [1, 10, 0],
    features: { singleton: true },
    async construct(ctx, argv) {
      const args = await parseIntegrityArgs(argv, (word) => lookupDevice(ctx, word, 'Device lookup failed'));
      return Integrity.construct(ctx, args, test);
    },
  };
}

export const integrityTarget: TargetType = integrityTargetType();

/** A pending journal entry position: section and entry within it. */
interface Slot {
  readonly section: number;
  readonly entry: number;
}

class Integrity implements Target {
  readonly maxIoSectors: number | undefined;
  private readonly meta: DeviceRef;
  private readonly hasher: TagHasher | undefined;
  private readonly tags: TagStore;
  private readonly locks = new RangeLocks();
  private mismatches = 0;
  /** The first internal error: every later request fails with it (§4.12). */
  private failed: IoError | undefined;
  private readonly stop = new AbortController();
  private autocommitArmed = false;
  /** Between postsuspend and resume: timers do nothing (Linux cancels them). */
  private suspended = false;
  private closed = false;

  // ---- journal (J; replay in every mode but R) ----
  private readonly journal: JournalImage | undefined;
  private readonly threshold: number;
  /** The journal on disk and in memory agree and hold nothing to replay (after postsuspend). */
  private journalUptodate = false;
  /** The journal was just initialized by format: replay analyses the in-memory copy without reading it. */
  private justFormatted: boolean;
  private wroteToJournal = false;
  private commitSeq = 0;
  private freeSection = 0;
  private freeSectionEntry = 0;
  private freeEntries = 0;
  private uncommittedSection = 0;
  private nUncommitted = 0;
  private committedSection = 0;
  private nCommitted = 0;
  /** Newest journal entry (global id) of each block, committed or not (§4.2.1). */
  private readonly index = new Map<number, number>();
  private commits: Promise<void> = Promise.resolve();
  private writerRun: Promise<void> | undefined;
  private entryWaiters: (() => void)[] = [];

  // ---- bitmap (B) ----
  private readonly log2SectorsPerBit: number;
  private readonly bitmap: { disk: Bitmap; mayWrite: Bitmap; recalc: Bitmap } | undefined;
  /** The last write of each bitmap block: writes of one block never overlap (§1 item 7 would let an older copy land last). */
  private readonly bitmapBlockWrites = new Map<number, Promise<void>>();
  private bitmapFlushArmed = false;
  private bitmapFlushRun: Promise<void> | undefined;

  // ---- recalculation ----
  private recalcRun: Promise<void> | undefined;

  private constructor(
    private readonly ctx: TargetContext,
    private readonly args: IntegrityArgs<DeviceRef>,
    private readonly test: IntegrityTestOptions,
    private readonly sb: Superblock,
    private readonly layout: Layout,
    private readonly log2BufferSectors: number,
    justFormatted: boolean,
  ) {
    this.meta = args.metaDevice ?? args.dev;
    const ih = args.internalHash;
    if (ih) {
      const salt = sb.flags & SB_FLAG_FIXED_HMAC ? sb.salt : undefined;
      this.hasher = new TagHasher(DIGESTS[ih.alg]!.make(ih.key), layout.tagSize, salt, layout.spb * SECTOR_SIZE);
    }
    this.tags = new TagStore(this.meta.device, layout, 2 ** log2BufferSectors);
    this.justFormatted = justFormatted;
    this.log2SectorsPerBit = log2SectorsPerBit(args.log2SectorsPerBit, layout);
    const journalEntries = layout.journal.sectionEntries * layout.journalSections;
    this.threshold = Math.floor((journalEntries * (100 - args.journalWatermark) + 50) / 100);
    if (args.mode !== 'R') this.journal = new JournalImage(layout.journal, layout.journalSections, layout.spb, layout.tagSize);
    if (args.mode === 'B') {
      const nBits = this.bitOf(layout.providedDataSectors - 1) + 1;
      this.bitmap = { disk: new Bitmap(nBits), mayWrite: new Bitmap(nBits), recalc: new Bitmap(nBits) };
    }
    let max = interleaveSectors(layout);
    if (args.mode === 'B') {
      const span = Math.min(2 ** this.log2SectorsPerBit * BITS_PER_BITMAP_BLOCK, 2 ** 31);
      max = Math.min(max ?? span, span);
    }
    this.maxIoSectors = max;
  }

  // ---- constructor -------------------------------------------------------

  static async construct(ctx: TargetContext, args: IntegrityArgs<DeviceRef>, test: IntegrityTestOptions): Promise<Integrity> {
    const meta = (args.metaDevice ?? args.dev).device;
    const tagSize = args.tagSize!;
    const area = Buffer.alloc(SB_BYTES);
    try {
      await meta.read(args.offset, area);
    } catch (err) {
      throw new IoError(toIoError(err).code, 'Error reading superblock', { cause: err });
    }
    const metaDevice = args.metaDevice !== undefined;
    let log2BufferSectors = args.log2BufferSectors;
    let sb: Superblock;
    let formatted = false;
    if (!hasMagic(area)) {
      if (args.mode !== 'R' && area.some((b) => b !== 0)) throw ctrError('The device is not initialized');
      const f = formatSuperblock({
        start: args.offset, tagSize, log2Spb: args.log2Spb, journalSectors: args.journalSectors,
        interleaveSectors: args.interleaveSectors, fixPadding: args.fixPadding,
        fixedHmac: args.fixHmac && args.internalHash !== undefined, metaDevice,
        dataDeviceSectors: args.dev.device.sectors, metaDeviceSectors: meta.sectors,
        log2BufferSectors, ...(test.salt ? { salt: test.salt } : {}),
      });
      if (!f) throw ctrError('Could not initialize superblock');
      sb = f.sb;
      log2BufferSectors = f.log2BufferSectors;
      sb.version = superblockVersion(sb.flags, { bitmapMode: args.mode === 'B', metaDevice });
      formatted = true;
    } else {
      sb = decodeSuperblock(area);
    }
    validateSuperblock(sb, { tagSize, log2Spb: args.log2Spb, metaDevice });

    // §7.2: provided_data_sectors is recomputed from the current device sizes.
    const input: Omit<LayoutInput, 'providedDataSectors' | 'log2BufferSectors'> = {
      start: args.offset, tagSize, log2Spb: args.log2Spb, flags: sb.flags, journalSections: sb.journalSections,
      log2Interleave: sb.log2InterleaveSectors, metaDevice, metaDeviceSectors: meta.sectors,
    };
    let layout: Layout | undefined;
    for (;;) {
      const provided = providedDataSectors({ ...input, log2BufferSectors }, args.dev.device.sectors);
      layout = provided === 0 ? undefined : calculateLayout({ ...input, log2BufferSectors, providedDataSectors: provided });
      if (layout || !metaDevice || log2BufferSectors <= 3) break;
      log2BufferSectors--;
    }
    if (!layout) throw ctrError('The device is too small');
    // Without a metadata device a tag buffer never straddles a metadata run (Linux: ≤ the largest power of two dividing MR).
    if (!metaDevice) log2BufferSectors = Math.min(log2BufferSectors, ctz(layout.metadataRun), layout.log2Interleave);
    if (ctx.length > layout.providedDataSectors) throw ctrError('Not enough provided sectors for requested mapping size');

    if (args.recalculate && !(sb.flags & SB_FLAG_RECALCULATING)) {
      sb.flags |= SB_FLAG_RECALCULATING;
      sb.recalcSector = 0;
    }
    if (sb.flags & SB_FLAG_RECALCULATING && !args.internalHash) throw ctrError('Recalculate can only be specified with internal_hash');
    if (sb.flags & SB_FLAG_RECALCULATING && sb.recalcSector < layout.providedDataSectors && args.internalHash?.key && !args.legacyRecalculate) {
      // §4.10 (5c02406428d5): with no journal_mac, a keyed internal hash refuses pending recalculation either way.
      throw ctrError('Recalculating with HMAC is disabled for security reasons - if you really need it, use the argument "legacy_recalculate"', 'EOPNOTSUPP');
    }

    const target = new Integrity(ctx, args, test, sb, layout, log2BufferSectors, formatted);
    if (formatted) {
      sb.log2BlocksPerBitmapBit = target.log2SectorsPerBit - args.log2Spb;
      if (args.mode !== 'R') await target.writeFormat();
    }
    return target;
  }

  /**
   * Format (§3.10 step 8). Rules: R2 (the superblock is the commit: written
   * last, after the journal's FUA writes completed, itself with FUA). A crash
   * in between leaves a zero superblock: the next activation formats again.
   */
  private async writeFormat(): Promise<void> {
    const j = this.journal!;
    for (let i = 0; i < j.sections; i++) j.initSection(i, 0);
    try {
      await this.writeJournalSections(0, j.sections);
    } catch (err) {
      throw new IoError(toIoError(err).code, 'Error initializing journal', { cause: err });
    }
    try {
      await this.writeSuperblock(true);
    } catch (err) {
      throw new IoError(toIoError(err).code, 'Error initializing superblock', { cause: err });
    }
  }

  // ---- on-disk helpers ---------------------------------------------------

  private get journalStart(): number {
    return this.layout.start + SB_SECTORS;
  }

  private async writeSuperblock(fua: boolean): Promise<void> {
    this.sb.version = superblockVersion(this.sb.flags, { bitmapMode: this.args.mode === 'B', metaDevice: this.layout.metaDevice });
    await this.meta.device.write(this.layout.start, encodeSuperblock(this.sb), { fua, tag: 'superblock' });
  }

  /** Writes `n` sections from `start` (wrapping) with FUA: at most two writes. */
  private async writeJournalSections(start: number, n: number): Promise<void> {
    const j = this.journal!;
    const jss = this.layout.journal.sectionSectors;
    const first = Math.min(n, j.sections - start);
    const writes = [this.writeSpan(this.journalStart + start * jss, j.buf.subarray(start * j.sectionBytes, (start + first) * j.sectionBytes))];
    if (n > first) writes.push(this.writeSpan(this.journalStart, j.buf.subarray(0, (n - first) * j.sectionBytes)));
    await Promise.all(writes);
  }

  /** A FUA write of journal bytes, split at the metadata device's maxTransfer. */
  private async writeSpan(sector: number, data: Buffer): Promise<void> {
    const step = this.meta.device.limits.maxTransfer * SECTOR_SIZE;
    const parts: Promise<void>[] = [];
    for (let off = 0; off < data.length; off += step) {
      parts.push(this.meta.device.write(sector + off / SECTOR_SIZE, data.subarray(off, Math.min(data.length, off + step)), { fua: true, tag: 'journal' }));
    }
    await Promise.all(parts);
  }

  /**
   * "Flush buffers with data" (§6.3): dirty tags written and the metadata
   * device flushed, and the data device flushed when it is another device.
   * Rules: R3 (the two flushes run in parallel, neither depends on the
   * other, and the caller declares anything clean only after BOTH
   * completed), R6 (a user flush in D/B is exactly this).
   */
  private async flushBuffersWithData(): Promise<void> {
    if (!this.args.metaDevice) {
      await this.tags.flush();
      return;
    }
    if (this.test.brokenFlushOrder) {
      // Broken on purpose (the pre-5.11 bug): relies on the data flush being "after" the metadata flush.
      const metaDone = this.tags.flush();
      void this.args.dev.device.flush().catch(() => undefined);
      await metaDone;
      return;
    }
    const both = [this.tags.flush(), this.args.dev.device.flush()];
    await Promise.all(both);
  }

  /** Records the first internal error (§4.12) and returns it. */
  private fail(what: string, err: unknown): IoError {
    const e = toIoError(err);
    if (!this.failed) {
      this.ctx.log.error(`${this.ctx.deviceName}: Error on ${what}: -${e.errno}`);
      this.failed = new IoError(e.code, `${this.ctx.deviceName}: integrity target failed: error on ${what}: ${e.message}`, {
        device: this.ctx.deviceName, cause: err,
      });
      if (e.code === 'EILSEQ') this.mismatches++;
    }
    return this.failed;
  }

  private ioError(code: Errno, op: 'read' | 'write' | 'discard' | 'flush', sector: number, why: string): IoError {
    return targetIoError(this.ctx, TYPE, code, op, sector, why);
  }

  private checkRange(op: 'read' | 'write' | 'discard', sector: number, count: number): void {
    if (this.failed) throw this.failed;
    const p = this.layout.providedDataSectors;
    if (sector + count > p) {
      const hex = (n: number) => `0x${n.toString(16)}`;
      throw this.ioError('EIO', op, sector, `Too big sector number: ${hex(sector)} + ${hex(count)} > ${hex(p)}`);
    }
    if (sector % this.layout.spb || count % this.layout.spb) {
      throw this.ioError('EIO', op, sector, `Bio not aligned on ${this.layout.spb} sectors: 0x${sector.toString(16)}, 0x${count.toString(16)}`);
    }
  }

  // ---- read --------------------------------------------------------------

  async read(sector: number, into: Buffer): Promise<void> {
    const count = into.length / SECTOR_SIZE;
    this.checkRange('read', sector, count);
    const unlock = await this.locks.lock(sector, sector + count);
    try {
      if (!this.journal || this.index.size === 0) return await this.readFinal(sector, into);
      // §4.2.1: blocks still in the journal are served from it, the runs between from their final location.
      const spb = this.layout.spb;
      const reads: Promise<void>[] = [];
      let runStart = -1;
      for (let s = sector; s <= sector + count; s += spb) {
        const entry = s < sector + count ? this.index.get(s) : undefined;
        if (entry === undefined && s < sector + count) {
          if (runStart < 0) runStart = s;
          continue;
        }
        if (runStart >= 0) {
          reads.push(this.readFinal(runStart, into.subarray((runStart - sector) * SECTOR_SIZE, (s - sector) * SECTOR_SIZE)));
          runStart = -1;
        }
        if (entry !== undefined) this.loadEntry(entry, into.subarray((s - sector) * SECTOR_SIZE, (s - sector + spb) * SECTOR_SIZE));
      }
      await completeAllOrZero(reads, into);
    } finally {
      unlock();
    }
  }

  private loadEntry(entry: number, into: Buffer): void {
    const se = this.layout.journal.sectionEntries;
    this.journal!.loadBlock(Math.floor(entry / se), entry % se, into);
  }

  /** Reads from the final location and checks every tag (§4.2.2, §4.2.3); never returns data whose tag mismatches. */
  private async readFinal(sector: number, into: Buffer): Promise<void> {
    const count = into.length / SECTOR_SIZE;
    await this.args.dev.device.read(dataSector(this.layout, sector), into);
    if (!this.hasher || !this.checksTags(sector, count)) return;
    const blocks = count / this.layout.spb;
    const ts = this.layout.tagSize;
    const stored = Buffer.allocUnsafe(blocks * ts);
    const computed = Buffer.allocUnsafe(blocks * ts);
    await this.tags.read(sector, blocks, stored);
    this.hasher.compute(sector, into, computed);
    for (let b = 0; b < blocks; b++) {
      const want = stored.subarray(b * ts, (b + 1) * ts);
      if (want.equals(computed.subarray(b * ts, (b + 1) * ts))) continue;
      if (this.args.allowDiscards && want.every((x) => x === DISCARD_FILLER)) continue;
      const bad = sector + b * this.layout.spb;
      this.mismatches++;
      this.ctx.log.error(`${this.ctx.deviceName}: Checksum failed at sector 0x${bad.toString(16)}`);
      into.fill(0);
      throw this.ioError('EILSEQ', 'read', bad, 'integrity tag mismatch');
    }
  }

  /** Whether reads of the range verify tags (§4.2.2 skips). */
  private checksTags(sector: number, count: number): boolean {
    if (this.args.mode === 'R') return false;
    if (this.sb.flags & SB_FLAG_RECALCULATING && sector + count > this.sb.recalcSector) return false;
    if (this.bitmap && this.bitmap.recalc.anySet(this.bitOf(sector), this.bitOf(sector + count - 1))) return false;
    return true;
  }

  // ---- write -------------------------------------------------------------

  async write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    const count = data.length / SECTOR_SIZE;
    this.checkRange('write', sector, count);
    if (this.args.mode === 'R') throw this.ioError('EIO', 'write', sector, 'the target is in recovery mode (R)');
    if (this.args.mode === 'J') await this.journalWrite(sector, data);
    else await this.directWrite(sector, data);
    if (opts.fua) await this.flush();
  }

  /**
   * Modes D and B (§4.3.2). B first makes the region's bitmap bits durable
   * (R7 of integrity.md §6.2: bit set before any data or tag is written).
   * Then data and tags go out in parallel with no order between them: in D
   * a crash may leave them disagreeing (documented), in B the dirty bit
   * makes the region be recalculated. R12: the tag is computed from the very
   * buffer that is written, and the range lock keeps other requests off it.
   */
  private async directWrite(sector: number, data: Buffer): Promise<void> {
    const count = data.length / SECTOR_SIZE;
    const unlock = await this.locks.lock(sector, sector + count);
    try {
      if (this.bitmap) await this.markDirty(sector, count);
      const writes = [this.args.dev.device.write(dataSector(this.layout, sector), data, { tag: 'data' })];
      if (this.hasher) {
        const tags = Buffer.allocUnsafe((count / this.layout.spb) * this.layout.tagSize);
        this.hasher.compute(sector, data, tags);
        writes.push(this.tags.write(sector, count / this.layout.spb, tags));
      }
      await Promise.all(writes);
    } finally {
      unlock();
    }
    this.armAutocommit();
  }

  /**
   * Mode J (§4.3.1): each block into a free journal entry (data sectors,
   * last_bytes, tag, then the sector number, which publishes it). Completes
   * at once; durability comes from the next commit.
   */
  private async journalWrite(sector: number, data: Buffer): Promise<void> {
    const j = this.journal!;
    const spb = this.layout.spb;
    const blockBytes = spb * SECTOR_SIZE;
    const tag = Buffer.allocUnsafe(this.layout.tagSize);
    for (let off = 0; off < data.length; off += blockBytes) {
      let slot = this.reserveEntry();
      while (!slot) {
        await this.waitForEntries();
        if (this.failed) throw this.failed;
        slot = this.reserveEntry();
      }
      const l = sector + off / SECTOR_SIZE;
      const block = data.subarray(off, off + blockBytes);
      if (this.hasher) this.hasher.tagOf(l, block, tag);
      else tag.fill(0);
      j.storeBlock(slot.section, slot.entry, block, tag);
      j.setSector(slot.section, slot.entry, l);
      this.index.set(l, slot.section * this.layout.journal.sectionEntries + slot.entry);
    }
    this.wroteToJournal = true;
    if (this.freeEntries <= this.threshold) void this.commit().catch(() => undefined);
    else this.armAutocommit();
  }

  private reserveEntry(): Slot | undefined {
    if (this.freeEntries === 0) return undefined;
    const slot = { section: this.freeSection, entry: this.freeSectionEntry };
    this.freeEntries--;
    if (++this.freeSectionEntry === this.layout.journal.sectionEntries) this.closeFreeSection();
    return slot;
  }

  /** The section being filled becomes uncommitted; filling moves to the next one. */
  private closeFreeSection(): void {
    this.freeSectionEntry = 0;
    this.nUncommitted++;
    this.freeSection = (this.freeSection + 1) % this.layout.journalSections;
  }

  /** No free entry: commit what is there, write it back, and wait until sections are free again. */
  private async waitForEntries(): Promise<void> {
    const freed = new Promise<void>((wake) => this.entryWaiters.push(wake));
    await this.commit();
    await this.writeBack();
    if (this.freeEntries === 0) await freed;
  }

  // ---- flush and commit --------------------------------------------------

  /** R6: completes once every write completed before it is durable on every device. */
  async flush(): Promise<void> {
    if (this.failed) throw this.failed;
    if (this.args.mode === 'R') return;
    if (this.args.mode === 'J') return this.commit();
    try {
      await this.flushBuffersWithData();
    } catch (err) {
      throw this.fail('flushing disk cache', err);
    }
  }

  /**
   * The journal commit (§4.4), one at a time. Rules: R2 (the FUA write of
   * whole sections, every sector stamped with the lap's commit id, is the
   * commit point; a torn one is not intact and is not replayed; any error
   * fails the target), R6 (a flush or FUA write completes only after that
   * write completed). Ids are stamped on finished entries only: entries are
   * filled synchronously, so none is ever in progress here.
   */
  private commit(): Promise<void> {
    const run = this.commits.then(async () => {
      if (this.failed) throw this.failed;
      if (this.freeSectionEntry > 0) {
        this.freeEntries -= this.layout.journal.sectionEntries - this.freeSectionEntry;
        this.closeFreeSection();
      }
      const n = this.nUncommitted;
      if (n === 0) return;
      const start = this.uncommittedSection;
      const J = this.layout.journalSections;
      for (let k = 0; k < n; k++) {
        const i = (start + k) % J;
        this.journal!.stamp(i, this.commitSeq);
        if (i === J - 1) this.commitSeq = nextSeq(this.commitSeq);
      }
      try {
        await this.writeJournalSections(start, n);
      } catch (err) {
        throw this.fail('writing journal', err);
      }
      this.nUncommitted -= n;
      this.uncommittedSection = (start + n) % J;
      this.nCommitted += n;
      if (this.freeEntries <= this.threshold) void this.writeBack().catch(() => undefined);
    });
    this.commits = run.catch(() => undefined);
    return run;
  }

  /** Autocommit (§4.3): every write arms a commit (J) or a flush (D/B) `commit_time` ms later. */
  private armAutocommit(): void {
    if (this.autocommitArmed || this.closed) return;
    this.autocommitArmed = true;
    this.ctx.clock.sleep(this.args.commitTimeMs, this.stop.signal).then(() => {
      this.autocommitArmed = false;
      if (this.closed || this.suspended || this.failed) return;
      void (this.args.mode === 'J' ? this.commit() : this.flush()).catch(() => undefined);
    }, () => undefined);
  }

  // ---- writer (J) --------------------------------------------------------

  /** Runs the writer; a request made while one runs waits for it and runs again. */
  private writeBack(): Promise<void> {
    const run = (this.writerRun ?? Promise.resolve()).then(() => this.writeCommitted());
    this.writerRun = run.catch(() => undefined);
    return run;
  }

  /**
   * The writer (§4.6): copies the newest committed entry of each block to its
   * final location with its tag, then flushes buffers with data, and only
   * then frees the sections. Rules: R1 (data and tags durable before the
   * journal that holds their only other copy may be overwritten), R3 (both
   * devices' flushes must have completed, not merely been issued), R5 (tag
   * buffers written back early are harmless: the journal still replays).
   */
  private async writeCommitted(): Promise<void> {
    if (this.failed) throw this.failed;
    const n = this.nCommitted;
    if (n === 0) return;
    const start = this.committedSection;
    try {
      await this.copyEntries(start, n, false);
      await this.flushBuffersWithData();
    } catch (err) {
      throw this.fail('writing journal data', err);
    }
    // The freed sections' entries are done: a lap that fills a section only in part must not find old ones used.
    for (let k = 0; k < n; k++) {
      const i = (start + k) % this.layout.journalSections;
      for (let e = 0; e < this.layout.journal.sectionEntries; e++) this.journal!.setUnused(i, e);
    }
    this.committedSection = (start + n) % this.layout.journalSections;
    this.nCommitted -= n;
    this.freeEntries += n * this.layout.journal.sectionEntries;
    for (const wake of this.entryWaiters.splice(0)) wake();
  }

  /**
   * Copies the newest entry of each block in sections [start, start + n)
   * (ring order = commit order) to the final location, in runs of
   * consecutive blocks of one interleave area. `replay`: entries come from
   * disk and are checked (§4.7 step 7).
   */
  private async copyEntries(start: number, n: number, replay: boolean): Promise<void> {
    const j = this.journal!;
    const { spb, journal: geo, providedDataSectors: provided } = this.layout;
    const newest = new Map<number, number>();
    for (let k = 0; k < n; k++) {
      const i = (start + k) % this.layout.journalSections;
      for (let e = 0; e < geo.sectionEntries; e++) {
        if (j.isUnused(i, e)) continue;
        let l = j.entrySector(i, e);
        if (l >= provided) continue; // past the end (device shrank) or in progress: dropped
        if (l % spb) {
          this.ctx.log.error(`${this.ctx.deviceName}: Error on invalid sector in journal: -5`);
          l -= l % spb;
        }
        newest.set(l, i * geo.sectionEntries + e);
      }
    }
    const sectors = [...newest.keys()].sort((a, b) => a - b);
    const il = interleaveSectors(this.layout) ?? Infinity;
    const runs: number[][] = [];
    for (const l of sectors) {
      const run = runs[runs.length - 1];
      const prev = run?.[run.length - 1];
      if (run && prev! + spb === l && Math.floor(prev! / il) === Math.floor(l / il)) run.push(l);
      else runs.push([l]);
    }
    await Promise.all(runs.map((run) => this.copyRun(run, newest, replay)));
  }

  private async copyRun(run: number[], newest: Map<number, number>, replay: boolean): Promise<void> {
    const { spb, tagSize, journal: geo } = this.layout;
    const first = run[0]!;
    const count = run.length * spb;
    const data = Buffer.allocUnsafe(count * SECTOR_SIZE);
    const tags = Buffer.allocUnsafe(run.length * tagSize);
    const check = Buffer.allocUnsafe(tagSize);
    run.forEach((l, b) => {
      const entry = newest.get(l)!;
      const i = Math.floor(entry / geo.sectionEntries);
      const e = entry % geo.sectionEntries;
      const block = data.subarray(b * spb * SECTOR_SIZE, (b + 1) * spb * SECTOR_SIZE);
      this.journal!.loadBlock(i, e, block);
      const tag = this.journal!.tag(i, e);
      tag.copy(tags, b * tagSize);
      if (replay && this.hasher) {
        this.hasher.tagOf(l, block, check);
        // The data is still copied (Linux does), but the device fails.
        if (!check.equals(tag)) this.fail('tag mismatch when replaying journal', new IoError('EILSEQ', `journal tag mismatch at sector ${l}`));
      }
    });
    const unlock = await this.locks.lock(first, first + count);
    try {
      await Promise.all([
        this.args.dev.device.write(dataSector(this.layout, first), data, { tag: 'data' }),
        this.tags.write(first, run.length, tags),
      ]);
      // Reads of these blocks now go to the final location, unless a newer entry replaced them meanwhile.
      for (const l of run) if (this.index.get(l) === newest.get(l)) this.index.delete(l);
    } finally {
      unlock();
    }
  }

  // ---- replay (resume) ---------------------------------------------------

  /**
   * Journal replay (§4.7). Rules: R1 (replayed data and tags are flushed on
   * both devices before the ring is cleared or reused), R7 (the intact
   * sections apply oldest first and the clear is written first section
   * first, so a crash during replay and a second replay give the same data).
   */
  private async replayJournal(): Promise<void> {
    const j = this.journal!;
    const J = this.layout.journalSections;
    if (this.journalUptodate) return;
    if (!this.justFormatted) {
      try {
        await this.readJournal();
      } catch (err) {
        throw this.fail('reading journal', err);
      }
    }
    this.justFormatted = false;
    const plan = planReplay(j, this.args.mode === 'J');
    let cont: number;
    if (plan.kind === 'error') {
      this.fail(plan.what, new IoError('EIO', plan.what));
    } else if (plan.count > 0) {
      try {
        await this.copyEntries(plan.start, plan.count, true);
        await this.flushBuffersWithData();
      } catch (err) {
        throw this.fail('writing journal data', err);
      }
    }
    if (plan.kind === 'replay' && plan.continues) {
      cont = plan.start;
      this.commitSeq = plan.seq;
    } else {
      const start = plan.kind === 'replay' ? plan.start : 0;
      // Cleared in Linux's order: the first section, the J − 2 following, then the last.
      const order = J >= 2 ? [[start, 1], [(start + 1) % J, J - 2], [(start + J - 1) % J, 1]] : [[start, 1]];
      try {
        for (const [s, n] of order) {
          if (n === 0) continue;
          for (let k = 0; k < n!; k++) j.initSection((s! + k) % J, plan.erase);
          await this.writeJournalSections(s!, n!);
        }
      } catch (err) {
        throw this.fail('writing journal', err);
      }
      cont = 0;
      this.commitSeq = nextSeq(plan.erase);
    }
    this.resetJournalPointers(cont);
    this.journalUptodate = true;
  }

  private resetJournalPointers(section: number): void {
    this.committedSection = this.uncommittedSection = this.freeSection = section;
    this.nCommitted = this.nUncommitted = 0;
    this.freeSectionEntry = 0;
    this.freeEntries = this.layout.journal.sectionEntries * this.layout.journalSections;
    this.index.clear();
  }

  private async readJournal(): Promise<void> {
    const j = this.journal!;
    const step = this.meta.device.limits.maxTransfer * SECTOR_SIZE;
    const reads: Promise<void>[] = [];
    for (let off = 0; off < j.buf.length; off += step) {
      reads.push(this.meta.device.read(this.journalStart + off / SECTOR_SIZE, j.buf.subarray(off, Math.min(j.buf.length, off + step))));
    }
    await Promise.all(reads);
  }

  // ---- bitmap (B) --------------------------------------------------------

  private bitOf(sector: number): number {
    return Math.floor(sector / 2 ** this.log2SectorsPerBit);
  }

  /**
   * B mode before a write or discard (§4.3.2). Rules: R1 (the bitmap block
   * with the region's bits set is durable, FUA completed, before any data or
   * tag of the region is written; integrity.md §6.2 R7).
   */
  private async markDirty(sector: number, count: number): Promise<void> {
    const bm = this.bitmap!;
    const first = this.bitOf(sector);
    const last = this.bitOf(sector + count - 1);
    if (!bm.mayWrite.allSet(first, last)) {
      bm.disk.setRange(first, last);
      const firstBlock = Math.floor(first / BITS_PER_BITMAP_BLOCK);
      const lastBlock = Math.floor(last / BITS_PER_BITMAP_BLOCK);
      const writes: Promise<void>[] = [];
      for (let k = firstBlock; k <= lastBlock; k++) writes.push(this.writeBitmapBlock(k));
      try {
        await Promise.all(writes);
      } catch (err) {
        throw this.fail('writing bitmap', err);
      }
      bm.mayWrite.setRange(first, last);
    }
    this.armBitmapFlush();
  }

  /** Writes bitmap block k with FUA, after any earlier write of it; the copy is taken when this write starts. */
  private writeBitmapBlock(k: number): Promise<void> {
    const write = (this.bitmapBlockWrites.get(k) ?? Promise.resolve()).catch(() => undefined).then(() => {
      const copy = Buffer.from(this.bitmap!.disk.block(k));
      return this.meta.device.write(this.journalStart + k * BITMAP_BLOCK_SECTORS, copy, { fua: true, tag: 'bitmap' });
    });
    this.bitmapBlockWrites.set(k, write);
    return write;
  }

  private async writeWholeBitmap(): Promise<void> {
    const bm = this.bitmap!;
    await Promise.all(Array.from({ length: bm.disk.blocks }, (_, k) => this.writeBitmapBlock(k)));
  }

  private armBitmapFlush(): void {
    if (this.bitmapFlushArmed || this.closed) return;
    this.bitmapFlushArmed = true;
    this.ctx.clock.sleep(jiffiesToMs(this.args.bitmapFlushJiffies), this.stop.signal).then(() => {
      this.bitmapFlushArmed = false;
      if (this.closed || this.suspended || this.failed) return;
      const run = this.bitmapFlush().catch(() => undefined);
      this.bitmapFlushRun = run;
      void run.finally(() => {
        if (this.bitmapFlushRun === run) this.bitmapFlushRun = undefined;
      });
    }, () => undefined);
  }

  /**
   * The bitmap flush (§4.9). Rules: R4 (a bit is cleared only by the act
   * that made its region consistent: every write to it completed, under the
   * whole-device lock, and flushed), R3 (the data and the metadata flushes
   * both completed before the cleared bitmap is written, with FUA).
   */
  private async bitmapFlush(): Promise<void> {
    const bm = this.bitmap!;
    try {
      await this.tags.flush();
      const unlock = await this.locks.lock(0, this.layout.providedDataSectors);
      try {
        await this.flushBuffersWithData();
        const keep = this.sb.flags & SB_FLAG_RECALCULATING ? this.bitOf(this.sb.recalcSector) : bm.disk.nBits;
        bm.disk.clearRange(0, Math.min(keep, bm.disk.nBits) - 1);
        bm.mayWrite.clearRange(0, Math.min(keep, bm.disk.nBits) - 1);
        await this.writeWholeBitmap();
      } finally {
        unlock();
      }
    } catch (err) {
      throw this.fail('bitmap flush', err);
    }
  }

  // ---- discard -----------------------------------------------------------

  /**
   * Discard (§4.5). Rules, J/B: R1 and R3 (the filler tags are durable on
   * the metadata device, flush completed, before the discard reaches the
   * data device; a crash in between leaves filler + old data, which reads
   * fine). D: in parallel, no crash consistency.
   */
  async discard(sector: number, count: number): Promise<void> {
    if (!this.args.allowDiscards) throw unsupported(this.ctx, TYPE, 'discard', sector);
    this.checkRange('discard', sector, count);
    if (this.args.mode === 'R') throw this.ioError('EIO', 'discard', sector, 'the target is in recovery mode (R)');
    const il = interleaveSectors(this.layout) ?? count;
    const pieces: Promise<void>[] = [];
    for (let s = sector; s < sector + count;) {
      const end = Math.min(sector + count, (Math.floor(s / il) + 1) * il);
      pieces.push(this.discardPiece(s, end - s));
      s = end;
    }
    await Promise.all(pieces);
  }

  private async discardPiece(sector: number, count: number): Promise<void> {
    if (this.journal && this.args.mode === 'J') {
      let inJournal = false;
      for (let s = sector; s < sector + count && !inJournal; s += this.layout.spb) inJournal = this.index.has(s);
      if (inJournal) {
        await this.commit();
        await this.writeBack();
      }
    }
    const unlock = await this.locks.lock(sector, sector + count);
    try {
      if (this.bitmap) await this.markDirty(sector, count);
      const blocks = count / this.layout.spb;
      const data = this.args.dev.device;
      const discardData = () => (data.limits.discard ? data.discard(dataSector(this.layout, sector), count) : Promise.resolve());
      await this.tags.fill(sector, blocks, DISCARD_FILLER);
      if (this.args.mode === 'D') {
        await discardData();
      } else {
        try {
          await this.tags.flush();
        } catch (err) {
          throw this.fail('writing tags', err);
        }
        await discardData();
      }
    } finally {
      unlock();
    }
    this.armAutocommit();
  }

  async writeZeroes(sector: number): Promise<void> {
    // Linux's integrity device declares no write-zeroes (§1).
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  // ---- recalculation -----------------------------------------------------

  private startRecalculation(): void {
    if (this.recalcRun || !(this.sb.flags & SB_FLAG_RECALCULATING) || this.sb.recalcSector >= this.layout.providedDataSectors) return;
    this.recalcRun = this.recalculate().catch(() => undefined).finally(() => (this.recalcRun = undefined));
  }

  /**
   * Recalculation (§4.10). Rules: R1 (tags up to the new position written
   * and the metadata device flushed before the superblock records it; a
   * stale, smaller position is safe), R4 (the position advances only after
   * the tags of the chunk were computed from the data), R7 (it restarts from
   * the recorded position).
   */
  private async recalculate(): Promise<void> {
    const provided = this.layout.providedDataSectors;
    const il = interleaveSectors(this.layout) ?? RECALC_SECTORS;
    let chunks = 0;
    while (this.sb.recalcSector < provided && !this.closed && !this.suspended && !this.failed) {
      const start = this.sb.recalcSector;
      const end = Math.min(provided, start + RECALC_SECTORS, (Math.floor(start / il) + 1) * il);
      const bm = this.bitmap;
      if (!bm || bm.recalc.anySet(this.bitOf(start), this.bitOf(end - 1))) await this.recalcChunk(start, end);
      this.sb.recalcSector = end;
      if (++chunks % RECALC_WRITE_SUPER === 0 || end === provided) await this.recalcCheckpoint();
    }
    if (this.bitmap && this.sb.recalcSector >= provided) this.bitmap.recalc.clearRange(0, this.bitmap.recalc.nBits - 1);
  }

  private async recalcChunk(start: number, end: number): Promise<void> {
    const unlock = await this.locks.lock(start, end);
    try {
      const count = end - start;
      const data = Buffer.allocUnsafe(count * SECTOR_SIZE);
      const tags = Buffer.allocUnsafe((count / this.layout.spb) * this.layout.tagSize);
      await this.args.dev.device.read(dataSector(this.layout, start), data);
      this.hasher!.compute(start, data, tags);
      await this.tags.write(start, count / this.layout.spb, tags);
      const bm = this.bitmap;
      if (bm) {
        // Clear the recalc bits this chunk covers completely.
        const per = 2 ** this.log2SectorsPerBit;
        const first = Math.ceil(start / per);
        const last = Math.floor(end / per) - 1;
        if (last >= first) bm.recalc.clearRange(first, last);
      }
    } catch (err) {
      throw this.fail('recalculating', err);
    } finally {
      unlock();
    }
  }

  private async recalcCheckpoint(): Promise<void> {
    try {
      await this.tags.flush();
      await this.writeSuperblock(false);
    } catch (err) {
      throw this.fail('writing superblock', err);
    }
    if (this.bitmap) this.armBitmapFlush();
  }

  // ---- suspend / resume --------------------------------------------------

  /**
   * Resume (§4.8). Replays the journal (all modes but R), sets up or reads
   * the B-mode bitmap, and starts recalculation. Errors put the target in
   * the failed state (Linux's resume cannot fail).
   */
  async resume(): Promise<void> {
    this.suspended = false;
    if (this.args.mode === 'R') return;
    try {
      if (this.sb.providedDataSectors !== this.layout.providedDataSectors) {
        this.sb.providedDataSectors = this.layout.providedDataSectors;
        await this.writeSuperblock(true);
      }
      if (this.sb.flags & SB_FLAG_DIRTY_BITMAP) await this.resumeFromBitmap();
      else await this.resumeFromJournal();
    } catch (err) {
      this.fail('resume', err);
      return;
    }
    this.startRecalculation();
  }

  private get log2BlocksPerBit(): number {
    return this.log2SectorsPerBit - this.layout.log2Spb;
  }

  /** §4.8 step 2: the area holds a bitmap from a B-mode run that did not suspend cleanly. */
  private async resumeFromBitmap(): Promise<void> {
    const j = this.journal!;
    const sameGranularity = this.sb.log2BlocksPerBitmapBit === this.log2BlocksPerBit && !this.args.resetRecalculate;
    const bm = this.bitmap;
    if (bm) {
      const read = Buffer.alloc(bm.disk.bytes.length);
      await this.meta.device.read(this.journalStart, read);
      if (sameGranularity) {
        read.copy(bm.disk.bytes);
        if (bm.disk.any()) this.startRecalculatingFrom0();
      } else {
        this.sb.log2BlocksPerBitmapBit = this.log2BlocksPerBit;
        bm.disk.setRange(0, bm.disk.nBits - 1);
        await this.writeWholeBitmap();
        this.startRecalculatingFrom0();
      }
      bm.mayWrite.copyFrom(bm.disk);
      bm.recalc.copyFrom(bm.disk);
    } else {
      // Leaving B mode: a dirty region (or a different granularity) must be recalculated (R11).
      const disk = new Bitmap(Math.ceil(this.layout.providedDataSectors / 2 ** (this.sb.log2BlocksPerBitmapBit + this.layout.log2Spb)));
      await this.meta.device.read(this.journalStart, disk.bytes);
      if (!sameGranularity || disk.any()) this.startRecalculatingFrom0();
      // R11: the journal is re-initialized and replayed before DIRTY_BITMAP is cleared.
      for (let i = 0; i < j.sections; i++) j.initSection(i, 0);
      await this.writeJournalSections(0, j.sections);
      this.journalUptodate = false;
      this.justFormatted = true;
      await this.replayJournal();
      this.sb.flags &= ~SB_FLAG_DIRTY_BITMAP;
    }
    await this.writeSuperblock(true);
  }

  private startRecalculatingFrom0(): void {
    this.sb.flags |= SB_FLAG_RECALCULATING;
    this.sb.recalcSector = 0;
  }

  /** §4.8 step 3: the area holds a journal. */
  private async resumeFromJournal(): Promise<void> {
    await this.replayJournal();
    if (this.args.resetRecalculate) this.startRecalculatingFrom0();
    const bm = this.bitmap;
    if (!bm) return;
    // R11: DIRTY_BITMAP durable before the journal area is overwritten with a bitmap.
    this.sb.flags |= SB_FLAG_DIRTY_BITMAP;
    this.sb.log2BlocksPerBitmapBit = this.log2BlocksPerBit;
    await this.writeSuperblock(true);
    bm.disk.clearRange(0, bm.disk.nBits - 1);
    if (this.sb.flags & SB_FLAG_RECALCULATING && this.sb.recalcSector < this.layout.providedDataSectors) {
      bm.disk.setRange(this.bitOf(this.sb.recalcSector), bm.disk.nBits - 1);
    }
    bm.mayWrite.copyFrom(bm.disk);
    bm.recalc.copyFrom(bm.disk);
    await this.writeWholeBitmap();
  }

  /**
   * Postsuspend (§4.9): after it the image is fully consistent: data and
   * tags in place, journal empty, no dirty bitmap.
   */
  async postsuspend(_opts: SuspendOptions): Promise<void> {
    this.suspended = true;
    if (this.args.mode === 'R' || this.failed) return;
    await this.recalcRun;
    await this.bitmapFlushRun;
    try {
      if (this.args.mode === 'J') {
        await this.commit();
        while (this.nCommitted > 0) await this.writeBack();
        if (this.wroteToJournal) await this.reinitJournalAfterWriteBack();
      } else {
        await this.flushBuffersWithData();
      }
      if (this.bitmap) {
        // R11: the journal replaces the bitmap before DIRTY_BITMAP is cleared.
        const j = this.journal!;
        for (let i = 0; i < j.sections; i++) j.initSection(i, 0);
        await this.writeJournalSections(0, j.sections);
        this.sb.flags &= ~SB_FLAG_DIRTY_BITMAP;
        await this.writeSuperblock(true);
        this.resetJournalPointers(0);
        this.commitSeq = nextSeq(0);
      }
      this.journalUptodate = true;
    } catch (err) {
      this.fail('suspend', err);
    }
  }

  /** §4.9 step 3: sections free_section..J−1 with the current seq, 0..free_section−1 with the next. */
  private async reinitJournalAfterWriteBack(): Promise<void> {
    const j = this.journal!;
    const J = this.layout.journalSections;
    // The commit before this padded the last partly filled section: free_section starts a clean section.
    const free = this.freeSection;
    for (let i = free; i < J; i++) j.initSection(i, this.commitSeq);
    await this.writeJournalSections(free, J - free);
    if (free > 0) {
      for (let i = 0; i < free; i++) j.initSection(i, nextSeq(this.commitSeq));
      await this.writeJournalSections(0, free);
    }
    this.resetJournalPointers(free);
    this.wroteToJournal = false;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stop.abort();
    await this.recalcRun;
    await this.bitmapFlushRun;
    await this.commits;
    await this.writerRun;
    await this.tags.close();
  }

  // ---- status ------------------------------------------------------------

  status(type: StatusType): string {
    if (type === 'info') {
      const recalc = this.sb.flags & SB_FLAG_RECALCULATING ? String(this.sb.recalcSector) : '-';
      return `${this.mismatches} ${this.layout.providedDataSectors} ${recalc}`;
    }
    const a = this.args;
    const words: string[] = [];
    if (a.metaDevice) words.push(`meta_device:${a.metaDevice.id}`);
    if (this.layout.spb !== 1) words.push(`block_size:${this.layout.spb * SECTOR_SIZE}`);
    if (this.sb.flags & SB_FLAG_RECALCULATING) words.push('recalculate');
    if (a.resetRecalculate) words.push('reset_recalculate');
    if (a.allowDiscards) words.push('allow_discards');
    words.push(`journal_sectors:${this.layout.initialSectors - SB_SECTORS}`);
    words.push(`interleave_sectors:${2 ** this.sb.log2InterleaveSectors}`);
    words.push(`buffer_sectors:${2 ** this.log2BufferSectors}`);
    if (a.mode === 'J') {
      const entries = this.layout.journal.sectionEntries * this.layout.journalSections;
      const pct = Math.floor(((entries - this.threshold) * 100 + Math.floor(entries / 2)) / entries);
      words.push(`journal_watermark:${pct}`, `commit_time:${a.commitTimeMs}`);
    }
    if (a.mode === 'B') {
      words.push(`sectors_per_bit:${2 ** this.log2SectorsPerBit}`, `bitmap_flush_interval:${jiffiesToMs(a.bitmapFlushJiffies)}`);
    }
    if (this.sb.flags & SB_FLAG_FIXED_PADDING) words.push('fix_padding');
    if (this.sb.flags & SB_FLAG_FIXED_HMAC) words.push('fix_hmac');
    if (a.legacyRecalculate) words.push('legacy_recalculate');
    if (a.internalHash) words.push(`internal_hash:${a.internalHash.alg}${a.internalHash.keyText !== undefined ? `:${a.internalHash.keyText}` : ''}`);
    return [`${a.dev.id} ${a.offset} ${this.layout.tagSize} ${a.mode} ${words.length}`, ...words].join(' ');
  }

  limits(): TargetLimits {
    const bs = this.layout.spb * SECTOR_SIZE;
    const inherited = inheritLimits([this.args.dev, ...(this.args.metaDevice ? [this.args.metaDevice] : [])]);
    return {
      logicalBlockSize: Math.max(bs, inherited.logicalBlockSize),
      physicalBlockSize: Math.max(bs, inherited.physicalBlockSize),
      ioMin: Math.max(bs, inherited.ioMin),
      ioOpt: inherited.ioOpt,
      flush: true,
      fua: true,
      discard: this.args.allowDiscards,
      writeZeroes: false,
      discardZeroes: false,
    };
  }

  areas(): DeviceArea[] {
    const a = this.args;
    if (!a.metaDevice) return [{ ref: a.dev, start: 0, length: a.dev.device.sectors }];
    return [{ ref: a.dev, start: 0, length: a.dev.device.sectors }, { ref: a.metaDevice, start: 0, length: a.metaDevice.device.sectors }];
  }
}

/** Waits for every read; if any failed, zeroes the whole buffer and fails (no mismatching data leaves the target). */
async function completeAllOrZero(reads: Promise<void>[], into: Buffer): Promise<void> {
  const results = await Promise.allSettled(reads);
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) {
    into.fill(0);
    throw bad.reason;
  }
}

/** Count of trailing zero bits (the largest power of two dividing n), n ≥ 1. */
function ctz(n: number): number {
  let k = 0;
  while (n % 2 ** (k + 1) === 0) k++;
  return k;
}
