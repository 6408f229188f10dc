/**
 * The dm-integrity superblock (integrity.md §3.2): the first 64 bytes of the
 * 4 KiB area at `<offset>` on the metadata device. Encode/decode next to the
 * layout table; validation against a table lives in validators.ts.
 *
 *   0x00  8  magic "integrt\0"
 *   0x08  1  version (1..5 in Linux 6.1)
 *   0x09  1  log2_interleave_sectors (0 with a metadata device)
 *   0x0A  2  integrity_tag_size (le16)
 *   0x0C  4  journal_sections (le32)
 *   0x10  8  provided_data_sectors (le64)
 *   0x18  4  flags (le32)
 *   0x1C  1  log2_sectors_per_block
 *   0x1D  1  log2_blocks_per_bitmap_bit
 *   0x1E  2  pad
 *   0x20  8  recalc_sector (le64)
 *   0x28  8  pad2
 *   0x30 16  salt
 */
export const SB_SECTORS = 8;
export const SB_BYTES = SB_SECTORS * 512;
export const MAGIC = Buffer.from('integrt\0', 'latin1');
export const SALT_SIZE = 16;

export const SB_VERSION_MAX = 5;

export const SB_FLAG_HAVE_JOURNAL_MAC = 0x01;
export const SB_FLAG_RECALCULATING = 0x02;
export const SB_FLAG_DIRTY_BITMAP = 0x04;
export const SB_FLAG_FIXED_PADDING = 0x08;
export const SB_FLAG_FIXED_HMAC = 0x10;

const OFF = {
  magic: 0x00,
  version: 0x08,
  log2Interleave: 0x09,
  tagSize: 0x0a,
  journalSections: 0x0c,
  providedDataSectors: 0x10,
  flags: 0x18,
  log2SectorsPerBlock: 0x1c,
  log2BlocksPerBitmapBit: 0x1d,
  recalcSector: 0x20,
  salt: 0x30,
} as const;

export interface Superblock {
  version: number;
  /** Signed byte on disk; 3..31, or 0 with a metadata device. */
  log2InterleaveSectors: number;
  tagSize: number;
  journalSections: number;
  providedDataSectors: number;
  flags: number;
  log2SectorsPerBlock: number;
  log2BlocksPerBitmapBit: number;
  recalcSector: number;
  salt: Buffer;
}

export function hasMagic(area: Buffer): boolean {
  return area.subarray(OFF.magic, OFF.magic + MAGIC.length).equals(MAGIC);
}

export function decodeSuperblock(area: Buffer): Superblock {
  return {
    version: area[OFF.version]!,
    log2InterleaveSectors: area.readInt8(OFF.log2Interleave),
    tagSize: area.readUInt16LE(OFF.tagSize),
    journalSections: area.readUInt32LE(OFF.journalSections),
    providedDataSectors: Number(area.readBigUInt64LE(OFF.providedDataSectors)),
    flags: area.readUInt32LE(OFF.flags),
    log2SectorsPerBlock: area[OFF.log2SectorsPerBlock]!,
    log2BlocksPerBitmapBit: area[OFF.log2BlocksPerBitmapBit]!,
    recalcSector: Number(area.readBigUInt64LE(OFF.recalcSector)),
    salt: Buffer.from(area.subarray(OFF.salt, OFF.salt + SALT_SIZE)),
  };
}

/** The whole 4 KiB superblock area: the 64-byte header, zeroes after it. */
export function encodeSuperblock(sb: Superblock): Buffer {
  const area = Buffer.alloc(SB_BYTES);
  MAGIC.copy(area, OFF.magic);
  area[OFF.version] = sb.version;
  area.writeInt8(sb.log2InterleaveSectors, OFF.log2Interleave);
  area.writeUInt16LE(sb.tagSize, OFF.tagSize);
  area.writeUInt32LE(sb.journalSections, OFF.journalSections);
  area.writeBigUInt64LE(BigInt(sb.providedDataSectors), OFF.providedDataSectors);
  area.writeUInt32LE(sb.flags, OFF.flags);
  area[OFF.log2SectorsPerBlock] = sb.log2SectorsPerBlock;
  area[OFF.log2BlocksPerBitmapBit] = sb.log2BlocksPerBitmapBit;
  area.writeBigUInt64LE(BigInt(sb.recalcSector), OFF.recalcSector);
  sb.salt.copy(area, OFF.salt, 0, SALT_SIZE);
  return area;
}

/**
 * The version Linux writes, recomputed on every superblock write from the
 * current state, first match wins (§3.2). It can go down.
 */
export function superblockVersion(flags: number, opts: { bitmapMode: boolean; metaDevice: boolean }): number {
  if (flags & SB_FLAG_FIXED_HMAC) return 5;
  if (flags & SB_FLAG_FIXED_PADDING) return 4;
  if (opts.bitmapMode || flags & SB_FLAG_DIRTY_BITMAP) return 3;
  if (opts.metaDevice || flags & SB_FLAG_RECALCULATING) return 2;
  return 1;
}
