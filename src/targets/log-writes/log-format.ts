/**
 * The dm-log-writes on-disk log, format version 1 (log-writes §3). All
 * integers little-endian. A "block" is the data device's logical block size
 * (`sectorsize`, recorded in the super block); every structure starts on a
 * block boundary:
 *
 *   block 0        super block
 *   block 1        header of entry 0
 *   block 2..      payload of entry 0 (nr_sectors blocks; none for discards)
 *   next block     header of entry 1, and so on — sequential, no index
 */

/** `0x006A736677736872`: "rhswfsj\0" on disk. */
export const LOG_MAGIC = 0x6a736677736872n;
export const LOG_VERSION = 1n;
/** The super block lives at the first block of the log device. */
export const LOG_SUPER_SECTOR = 0;

// ---- super block (log-writes §3.1) -------------------------------------------
//
// | offset | size | field      |
// |      0 |    8 | magic      |
// |      8 |    8 | version    |
// |     16 |    8 | nr_entries |
// |     24 |    4 | sectorsize |
// |     28 |    4 | padding (Linux copies uninitialised bytes; readers ignore; dmkit writes 0) |
// |     32 |  ... | zero up to sectorsize |

export const SUPER_SIZE = 32;

export interface LogSuper {
  magic: bigint;
  version: bigint;
  nrEntries: bigint;
  sectorSize: number;
}

/** One super block, zero-filled to `blockSize` bytes. */
export function encodeSuper(s: LogSuper, blockSize: number): Buffer {
  const buf = Buffer.alloc(blockSize);
  buf.writeBigUInt64LE(s.magic, 0);
  buf.writeBigUInt64LE(s.version, 8);
  buf.writeBigUInt64LE(s.nrEntries, 16);
  buf.writeUInt32LE(s.sectorSize, 24);
  return buf;
}

/** Decodes the first SUPER_SIZE bytes of `buf` (no validation: log-validate.ts). */
export function decodeSuper(buf: Buffer): LogSuper {
  return {
    magic: buf.readBigUInt64LE(0),
    version: buf.readBigUInt64LE(8),
    nrEntries: buf.readBigUInt64LE(16),
    sectorSize: buf.readUInt32LE(24),
  };
}

// ---- entry header (log-writes §3.2) ------------------------------------------
//
// | offset | size     | field      |
// |      0 |        8 | sector     | first data block, in units of sectorsize |
// |      8 |        8 | nr_sectors | length in blocks of sectorsize |
// |     16 |        8 | flags      | LOG_*_FLAG |
// |     24 |        8 | data_len   | MARK: name length; otherwise 0 |
// |     32 | data_len | mark name  | MARK only |
// |   rest |          | zero       | must be zero |

export const ENTRY_HEADER_SIZE = 32;

export const LOG_FLUSH_FLAG = 1;
export const LOG_FUA_FLAG = 2;
export const LOG_DISCARD_FLAG = 4;
export const LOG_MARK_FLAG = 8;
export const LOG_METADATA_FLAG = 16;

export interface LogEntry {
  sector: bigint;
  nrSectors: bigint;
  flags: bigint;
  dataLen: bigint;
}

/** Writes one header block into `block` (which must be zero): fields, then the mark name for MARK entries. */
export function encodeEntry(e: LogEntry, block: Buffer, mark?: Buffer): void {
  block.writeBigUInt64LE(e.sector, 0);
  block.writeBigUInt64LE(e.nrSectors, 8);
  block.writeBigUInt64LE(e.flags, 16);
  block.writeBigUInt64LE(e.dataLen, 24);
  mark?.copy(block, ENTRY_HEADER_SIZE);
}

/** Decodes the first ENTRY_HEADER_SIZE bytes of a header block (no validation). */
export function decodeEntry(block: Buffer): LogEntry {
  return {
    sector: block.readBigUInt64LE(0),
    nrSectors: block.readBigUInt64LE(8),
    flags: block.readBigUInt64LE(16),
    dataLen: block.readBigUInt64LE(24),
  };
}

/** The longest mark name a log of this block size holds: sectorsize − 32 − 1 bytes (a zero must follow). */
export function maxMarkLength(sectorSize: number): number {
  return sectorSize - ENTRY_HEADER_SIZE - 1;
}

/** Payload blocks that follow an entry's header: none for discards (§3.4). */
export function payloadBlocks(e: LogEntry): bigint {
  return e.flags & BigInt(LOG_DISCARD_FLAG) ? 0n : e.nrSectors;
}
