/**
 * The dm-integrity journal (integrity.md §3.3–§3.5, §4.7): the in-memory image
 * of all sections, entry encode/decode, commit ids, and the replay analysis
 * (which sections are intact and in what order they apply).
 *
 * Section layout (JSS sectors):
 *   sectors 0..7   metadata: entry slots (bytes 0..503), commit id (504..511);
 *                  entry n lives in sector n mod 8 at byte (n div 8)·entry_size
 *   sectors 8..    data: entry n owns sectors 8 + n·spb .. + spb − 1; each holds
 *                  bytes 0..503 of the block's sector, commit id at 504..511
 * Entry: sector_lo (le32), sector_hi (le32; 0xFFFFFFFF = unused),
 *        last_bytes[spb] (bytes 504..511 of each sector), tag, padding.
 */
import { SECTOR_SIZE } from '../../block/device.ts';
import { JOURNAL_BLOCK_SECTORS, type JournalGeometry } from './geometry.ts';

export const N_COMMIT_IDS = 4;
/** Bytes 504..511 of every journal sector hold its commit id. */
export const COMMIT_ID_OFFSET = 504;
const COMMIT_ID_WORD = 0x11111111;
const UNUSED_HI = 0xffffffff;
/** Bytes of a 512-byte sector the journal data sectors keep; the rest goes into last_bytes. */
export const SECTOR_DATA_BYTES = COMMIT_ID_OFFSET;

/** C[seq] XOR ((section << 32) XOR sector), as two le32 halves (§3.5). */
export function commitIdHalves(section: number, sector: number, seq: number): [lo: number, hi: number] {
  const c = COMMIT_ID_WORD * (seq + 1);
  return [(c ^ sector) >>> 0, (c ^ section) >>> 0];
}

export function nextSeq(seq: number): number {
  return (seq + 1) % N_COMMIT_IDS;
}

export function prevSeq(seq: number): number {
  return (seq + N_COMMIT_IDS - 1) % N_COMMIT_IDS;
}

/** The whole journal, as Linux keeps it in memory and writes it section by section. */
export class JournalImage {
  readonly buf: Buffer;
  readonly sectionBytes: number;

  constructor(readonly geo: JournalGeometry, readonly sections: number, readonly spb: number, readonly tagSize: number) {
    this.sectionBytes = geo.sectionSectors * SECTOR_SIZE;
    this.buf = Buffer.alloc(sections * this.sectionBytes);
  }

  /** Bytes of section `i` (a view). */
  section(i: number): Buffer {
    return this.buf.subarray(i * this.sectionBytes, (i + 1) * this.sectionBytes);
  }

  /** Byte offset of sector `j` of section `i`. */
  sectorOffset(i: number, j: number): number {
    return i * this.sectionBytes + j * SECTOR_SIZE;
  }

  entryOffset(i: number, n: number): number {
    return this.sectorOffset(i, n % JOURNAL_BLOCK_SECTORS) + Math.floor(n / JOURNAL_BLOCK_SECTORS) * this.geo.entrySize;
  }

  /** Byte offset of data sector `s` of entry `n` of section `i`. */
  dataOffset(i: number, n: number, s: number): number {
    return this.sectorOffset(i, JOURNAL_BLOCK_SECTORS + n * this.spb + s);
  }

  isUnused(i: number, n: number): boolean {
    return this.buf.readUInt32LE(this.entryOffset(i, n) + 4) === UNUSED_HI;
  }

  /** The logical sector of a used entry (sector_hi 0xFFFFFFFE, in progress, decodes past any device). */
  entrySector(i: number, n: number): number {
    const off = this.entryOffset(i, n);
    return this.buf.readUInt32LE(off + 4) * 2 ** 32 + this.buf.readUInt32LE(off);
  }

  setUnused(i: number, n: number): void {
    this.buf.writeUInt32LE(UNUSED_HI, this.entryOffset(i, n) + 4);
  }

  setSector(i: number, n: number, sector: number): void {
    const off = this.entryOffset(i, n);
    this.buf.writeUInt32LE(sector % 2 ** 32, off);
    this.buf.writeUInt32LE(Math.floor(sector / 2 ** 32), off + 4);
  }

  tag(i: number, n: number): Buffer {
    const off = this.entryOffset(i, n) + 8 + 8 * this.spb;
    return this.buf.subarray(off, off + this.tagSize);
  }

  /**
   * Puts one block into entry `n`: bytes 0..503 of each sector into the data
   * sectors, bytes 504..511 into last_bytes, then the tag. The sector number
   * is stored last by the caller (it publishes the entry).
   */
  storeBlock(i: number, n: number, block: Buffer, tag: Buffer): void {
    const lastBytes = this.entryOffset(i, n) + 8;
    for (let s = 0; s < this.spb; s++) {
      const src = block.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
      src.copy(this.buf, this.dataOffset(i, n, s), 0, SECTOR_DATA_BYTES);
      src.copy(this.buf, lastBytes + 8 * s, SECTOR_DATA_BYTES, SECTOR_SIZE);
    }
    tag.copy(this.buf, lastBytes + 8 * this.spb);
  }

  /** The block of entry `n` as it was written: data sectors with last_bytes restored. */
  loadBlock(i: number, n: number, into: Buffer): void {
    const lastBytes = this.entryOffset(i, n) + 8;
    for (let s = 0; s < this.spb; s++) {
      const d = this.dataOffset(i, n, s);
      this.buf.copy(into, s * SECTOR_SIZE, d, d + SECTOR_DATA_BYTES);
      this.buf.copy(into, s * SECTOR_SIZE + SECTOR_DATA_BYTES, lastBytes + 8 * s, lastBytes + 8 * s + 8);
    }
  }

  /** Stamps the commit id of `seq` into every sector of section `i` (the commit, §4.4 step 4). */
  stamp(i: number, seq: number): void {
    for (let j = 0; j < this.geo.sectionSectors; j++) {
      const [lo, hi] = commitIdHalves(i, j, seq);
      const off = this.sectorOffset(i, j) + COMMIT_ID_OFFSET;
      this.buf.writeUInt32LE(lo, off);
      this.buf.writeUInt32LE(hi, off + 4);
    }
  }

  /** Linux's init_journal for one section: zeroes, every entry unused, the ids of `seq`. */
  initSection(i: number, seq: number): void {
    this.section(i).fill(0);
    for (let n = 0; n < this.geo.sectionEntries; n++) this.setUnused(i, n);
    this.stamp(i, seq);
  }

  /** The seq whose id sector `j` of section `i` carries, or -1. */
  seqOf(i: number, j: number): number {
    const off = this.sectorOffset(i, j) + COMMIT_ID_OFFSET;
    const lo = this.buf.readUInt32LE(off);
    const hi = this.buf.readUInt32LE(off + 4);
    for (let k = 0; k < N_COMMIT_IDS; k++) {
      const [l, h] = commitIdHalves(i, j, k);
      if (l === lo && h === hi) return k;
    }
    return -1;
  }

  /** Every sector of section `i` carries the id of `seq`. */
  sectionIntact(i: number, seq: number): boolean {
    for (let j = 0; j < this.geo.sectionSectors; j++) if (this.seqOf(i, j) !== seq) return false;
    return true;
  }
}

/** What replay does with a journal read from disk (§4.7). */
export type ReplayPlan =
  | {
      readonly kind: 'replay';
      /** Apply `count` sections in ring order from `start` (0 when the journal is empty). */
      readonly start: number;
      readonly count: number;
      readonly empty: boolean;
      /** True: continue at `start` with `seq`; false: clear the ring with `erase` first. */
      readonly continues: boolean;
      readonly seq: number;
      readonly erase: number;
    }
  | { readonly kind: 'error'; readonly what: 'journal commit id' | 'journal commit ids'; readonly erase: number };

/**
 * Linux's replay_journal analysis (§4.7 steps 2–8). `journalMode`: the table
 * is in mode J (a fully walked ring of used sections is continued only then).
 */
export function planReplay(j: JournalImage, journalMode: boolean): ReplayPlan {
  const used = [false, false, false, false];
  const maxSection = [0, 0, 0, 0];
  let empty = true;
  for (let i = 0; i < j.sections; i++) {
    for (let s = 0; s < j.geo.sectionSectors; s++) {
      const k = j.seqOf(i, s);
      // Errors clear with last = 0 (erase = last − 2).
      if (k < 0) return { kind: 'error', what: 'journal commit id', erase: prevSeq(prevSeq(0)) };
      used[k] = true;
      maxSection[k] = i;
    }
    if (empty) for (let n = 0; n < j.geo.sectionEntries && empty; n++) if (!j.isUnused(i, n)) empty = false;
  }
  let unusedId: number;
  if (!used[N_COMMIT_IDS - 1]) {
    unusedId = N_COMMIT_IDS - 1;
    while (unusedId && !used[unusedId - 1]) unusedId--;
  } else {
    unusedId = used.indexOf(false);
    if (unusedId < 0) return { kind: 'error', what: 'journal commit ids', erase: prevSeq(prevSeq(0)) };
  }
  const last = prevSeq(unusedId);
  let want = prevSeq(last);
  if (!used[want] && used[prevSeq(want)]) empty = true;
  let start = maxSection[last]! + 1;
  if (start >= j.sections) {
    start = 0;
    want = nextSeq(want);
  }
  let count = 0;
  for (let i = start; count < j.sections; count++) {
    if (!j.sectionIntact(i, want)) break;
    if (++i >= j.sections) {
      i = 0;
      want = nextSeq(want);
    }
  }
  const continues = count === j.sections && (journalMode || empty);
  return {
    kind: 'replay', start, count: empty ? 0 : count, empty, continues,
    seq: continues ? want : nextSeq(prevSeq(prevSeq(last))), erase: prevSeq(prevSeq(last)),
  };
}
