/**
 * dm-integrity geometry (integrity.md §3.1, §3.3, §3.7, §3.9, §3.10): where
 * the journal, the tag runs and the data live, computed from the superblock
 * fields and the device sizes exactly as Linux's calculate_device_limits and
 * get_provided_data_sectors do.
 */
import { SB_FLAG_FIXED_PADDING, SB_FLAG_HAVE_JOURNAL_MAC, SB_SECTORS } from './superblock.ts';

/** Metadata runs are padded to this many sectors with FIXED_PADDING (4 KiB). */
export const METADATA_PADDING_SECTORS = 8;
/** Legacy padding of metadata runs: 128 KiB. */
const LEGACY_PADDING_BYTES = 512 << METADATA_PADDING_SECTORS;
export const JOURNAL_SECTOR_DATA = 496;
/** Bytes of a journal metadata sector usable for entries without a journal MAC. */
const JOURNAL_SECTOR_SPACE = 504;
export const JOURNAL_MAC_PER_SECTOR = 8;
export const JOURNAL_BLOCK_SECTORS = 8;
export const MIN_LOG2_INTERLEAVE = 3;
export const MAX_LOG2_INTERLEAVE = 31;
export const DEFAULT_INTERLEAVE_SECTORS = 32768;
export const DEFAULT_JOURNAL_SIZE_FACTOR = 7;
export const DEFAULT_MAX_JOURNAL_SECTORS = 131072;
/** 6.1's MAX_TAG_SIZE: 504 − 8 − (8 + 8·8). */
export const MAX_TAG_SIZE = 424;

/** Journal geometry from tag size, block size and the journal-MAC flag (§3.3). */
export interface JournalGeometry {
  readonly entrySize: number;
  readonly entriesPerSector: number;
  readonly sectionEntries: number;
  /** JSS: sectors per section (8 metadata sectors + data). */
  readonly sectionSectors: number;
}

export function journalGeometry(tagSize: number, spb: number, journalMac: boolean): JournalGeometry {
  const entrySize = roundUp(8 + 8 * spb + tagSize, 8);
  const space = JOURNAL_SECTOR_SPACE - (journalMac ? JOURNAL_MAC_PER_SECTOR : 0);
  const entriesPerSector = Math.floor(space / entrySize);
  const sectionEntries = JOURNAL_BLOCK_SECTORS * entriesPerSector;
  return { entrySize, entriesPerSector, sectionEntries, sectionSectors: sectionEntries * spb + JOURNAL_BLOCK_SECTORS };
}

/** Everything Linux derives from the superblock and the device sizes. */
export interface Layout {
  /** `<offset>`: reserved sectors at the start of the metadata device. */
  readonly start: number;
  readonly tagSize: number;
  readonly log2Spb: number;
  readonly spb: number;
  readonly journal: JournalGeometry;
  readonly journalSections: number;
  /** 8 + J·JSS. */
  readonly initialSectors: number;
  /** 0 with a metadata device. */
  readonly log2Interleave: number;
  readonly metaDevice: boolean;
  /** MR: tag sectors per interleave area (1 with a metadata device). */
  readonly metadataRun: number;
  readonly providedDataSectors: number;
}

export interface LayoutInput {
  readonly start: number;
  readonly tagSize: number;
  readonly log2Spb: number;
  readonly flags: number;
  readonly journalSections: number;
  readonly log2Interleave: number;
  readonly metaDevice: boolean;
  /** Metadata-device sectors (the data device without a metadata device). */
  readonly metaDeviceSectors: number;
  readonly log2BufferSectors: number;
  readonly providedDataSectors: number;
}

/**
 * Linux's calculate_device_limits: the layout, or undefined where it does not
 * fit the device ("The device is too small").
 */
export function calculateLayout(i: LayoutInput): Layout | undefined {
  const spb = 1 << i.log2Spb;
  const journal = journalGeometry(i.tagSize, spb, (i.flags & SB_FLAG_HAVE_JOURNAL_MAC) !== 0);
  const initialSectors = SB_SECTORS + journal.sectionSectors * i.journalSections;
  if (initialSectors + METADATA_PADDING_SECTORS >= i.metaDeviceSectors || initialSectors > 0xffffffff) return undefined;
  const base = {
    start: i.start, tagSize: i.tagSize, log2Spb: i.log2Spb, spb, journal, journalSections: i.journalSections,
    initialSectors, log2Interleave: i.log2Interleave, metaDevice: i.metaDevice, providedDataSectors: i.providedDataSectors,
  };
  if (!i.metaDevice) {
    const padding = i.flags & SB_FLAG_FIXED_PADDING ? METADATA_PADDING_SECTORS * 512 : LEGACY_PADDING_BYTES;
    const metadataRun = roundUp(i.tagSize * 2 ** (i.log2Interleave - i.log2Spb), padding) / 512;
    const layout: Layout = { ...base, metadataRun };
    if (i.providedDataSectors === 0) return layout;
    const last = dataSector(layout, i.providedDataSectors - 1);
    if (last < i.start || last >= i.metaDeviceSectors) return undefined;
    return layout;
  }
  const bufferBytes = 512 * 2 ** i.log2BufferSectors;
  const tagBytes = Math.floor(i.providedDataSectors / spb) * i.tagSize;
  const metaSize = Math.ceil(tagBytes / bufferBytes) * 2 ** i.log2BufferSectors;
  if (initialSectors + metaSize > i.metaDeviceSectors) return undefined;
  return { ...base, metadataRun: 1 };
}

/**
 * Linux's get_provided_data_sectors: without a metadata device the largest
 * multiple of 8 that fits, built bit by bit from the top; with one, the data
 * device rounded down to a block.
 */
export function providedDataSectors(i: Omit<LayoutInput, 'providedDataSectors'>, dataDeviceSectors: number): number {
  if (i.metaDevice) return dataDeviceSectors - (dataDeviceSectors % (1 << i.log2Spb));
  let provided = 0;
  for (let bit = floorLog2(i.metaDeviceSectors); bit >= 3; bit--) {
    const test = provided + 2 ** bit;
    if (calculateLayout({ ...i, providedDataSectors: test })) provided = test;
  }
  return provided;
}

/** Data-device sector of logical sector `l` (§3.7). */
export function dataSector(g: Layout, l: number): number {
  if (g.metaDevice) return l;
  const il = 2 ** g.log2Interleave;
  const area = Math.floor(l / il);
  const off = l - area * il;
  return g.start + g.initialSectors + area * il + (area + 1) * g.metadataRun + off;
}

/** Byte offset on the metadata device, relative to the start of the tag space (S + initial), of the tag of the block at `l`. */
export function tagByte(g: Layout, l: number): number {
  if (g.metaDevice) return Math.floor(l / g.spb) * g.tagSize;
  const il = 2 ** g.log2Interleave;
  const area = Math.floor(l / il);
  const off = l - area * il;
  return area * (il + g.metadataRun) * 512 + Math.floor(off / g.spb) * g.tagSize;
}

/** Sectors per interleave area: a request never crosses one (Linux's max_io_len), none with a metadata device. */
export function interleaveSectors(g: Layout): number | undefined {
  return g.metaDevice ? undefined : 2 ** g.log2Interleave;
}

/**
 * log2 of sectors per bitmap bit (§3.9): at least one block, then raised
 * until the bitmap fits in the journal area.
 */
export function log2SectorsPerBit(wanted: number, g: Layout): number {
  let l = Math.max(wanted, g.log2Spb);
  const bitsInJournal = Math.min(g.journalSections * g.journal.sectionSectors * 512 * 8, 0xffffffff);
  while (bitsInJournal < Math.ceil(g.providedDataSectors / 2 ** l)) l++;
  return l;
}

export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** floor(log2(n)) for n ≥ 1 (Linux __fls); 0 for 0. */
export function floorLog2(n: number): number {
  let l = 0;
  while (2 ** (l + 1) <= n) l++;
  return l;
}
