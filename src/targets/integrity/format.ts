/**
 * Formatting (integrity.md §3.10): the superblock Linux's constructor builds
 * in memory on an all-zero superblock area, and the geometry search that
 * picks journal_sections and provided_data_sectors.
 */
import { randomBytes } from 'node:crypto';

import {
  DEFAULT_JOURNAL_SIZE_FACTOR, DEFAULT_MAX_JOURNAL_SECTORS, MAX_LOG2_INTERLEAVE, MIN_LOG2_INTERLEAVE, type LayoutInput,
  calculateLayout, floorLog2, journalGeometry, providedDataSectors,
} from './geometry.ts';
import { SALT_SIZE, SB_FLAG_FIXED_HMAC, SB_FLAG_FIXED_PADDING, type Superblock } from './superblock.ts';

export interface FormatInput {
  readonly start: number;
  readonly tagSize: number;
  readonly log2Spb: number;
  /** journal_sectors argument, if given. */
  readonly journalSectors: number | undefined;
  readonly interleaveSectors: number;
  readonly fixPadding: boolean;
  /** fix_hmac and an internal hash: FIXED_HMAC with a random salt. */
  readonly fixedHmac: boolean;
  readonly metaDevice: boolean;
  readonly dataDeviceSectors: number;
  /** Metadata-device sectors (= data device without a metadata device). */
  readonly metaDeviceSectors: number;
  readonly log2BufferSectors: number;
  /** Salt source (tests force zeroes for reproducible images). */
  readonly salt?: () => Buffer;
}

/**
 * The new superblock (version and log2_blocks_per_bitmap_bit are filled in by
 * the caller, step 6–7) and the buffer size the metadata-device search
 * settled on; undefined: "Could not initialize superblock".
 */
export function formatSuperblock(i: FormatInput): { sb: Superblock; log2BufferSectors: number } | undefined {
  let flags = 0;
  let salt: Buffer = Buffer.alloc(SALT_SIZE);
  const spb = 1 << i.log2Spb;
  const geo = journalGeometry(i.tagSize, spb, false);
  const wanted = i.journalSectors ?? Math.min(DEFAULT_MAX_JOURNAL_SECTORS, Math.floor(i.dataDeviceSectors / 2 ** DEFAULT_JOURNAL_SIZE_FACTOR));
  const sections = Math.max(1, Math.floor(wanted / geo.sectionSectors));
  if (i.fixedHmac) {
    flags |= SB_FLAG_FIXED_HMAC;
    salt = i.salt?.() ?? randomBytes(SALT_SIZE);
  }
  const base = {
    start: i.start, tagSize: i.tagSize, log2Spb: i.log2Spb, metaDevice: i.metaDevice, metaDeviceSectors: i.metaDeviceSectors,
  };
  let journalSections: number;
  let log2Interleave: number;
  let provided: number;
  let log2BufferSectors = i.log2BufferSectors;
  if (!i.metaDevice) {
    if (i.fixPadding) flags |= SB_FLAG_FIXED_PADDING;
    journalSections = sections;
    log2Interleave = Math.min(MAX_LOG2_INTERLEAVE, Math.max(MIN_LOG2_INTERLEAVE, floorLog2(i.interleaveSectors || 32768)));
    provided = providedDataSectors({ ...base, flags, journalSections, log2Interleave, log2BufferSectors }, i.dataDeviceSectors);
    if (provided === 0) return undefined;
  } else {
    log2Interleave = 0;
    provided = providedDataSectors({ ...base, flags, journalSections: 0, log2Interleave, log2BufferSectors }, i.dataDeviceSectors);
    if (provided === 0) return undefined;
    for (;;) {
      journalSections = 0;
      for (let bit = floorLog2(sections); bit >= 0; bit--) {
        const test = journalSections + 2 ** bit;
        if (test > sections) continue;
        const input: LayoutInput = { ...base, flags, journalSections: test, log2Interleave, log2BufferSectors, providedDataSectors: provided };
        if (calculateLayout(input)) journalSections = test;
      }
      if (journalSections > 0) break;
      if (log2BufferSectors <= 3) return undefined;
      log2BufferSectors--;
    }
  }
  return {
    sb: {
      version: 0, log2InterleaveSectors: log2Interleave, tagSize: i.tagSize, journalSections, providedDataSectors: provided,
      flags, log2SectorsPerBlock: i.log2Spb, log2BlocksPerBitmapBit: 0, recalcSector: 0, salt,
    },
    log2BufferSectors,
  };
}
