/**
 * The on-disk format of the `disk` dirty-region log (Linux dm-log.c; mirror
 * spec §5.1). One buffer of buf_size bytes from byte 0 of the log device is
 * read and written whole; it is the disk image:
 *
 *   byte offset   size            field
 *   0             4               magic 0x4D695272 ("MiRr"), little-endian: 72 52 69 4D
 *   4             4               version, 2 (1: old native-endian format)
 *   8             8               nr_regions the bitmap was last written for
 *   16            1008            not interpreted: written back as read
 *   1024          bitset_bytes    clean bitmap: bit n = region n clean
 *   1024+bitset   to buf_size     padding: written back as read
 *
 * bitset_bytes = ceil(region_count / 64) × 8; buf_size = that plus 1024,
 * rounded up to the log device's logical block size. No checksum, nothing
 * per leg. Validation (what a header read means) is in disk-log-validate.ts.
 */
import { bitsetBytes } from './bits.ts';

export const LOG_MAGIC = 0x4d695272;
export const LOG_VERSION = 2;
/** The bitmap starts at sector 2 whatever the block size (LOG_OFFSET). */
export const BITMAP_OFFSET = 1024;
export const HEADER_BYTES = 16;

export interface DiskLogHeader {
  magic: number;
  version: number;
  /** 64-bit on disk; Linux uses it truncated to 32 bits (§5.4 step 6). */
  nrRegions: bigint;
}

/** buf_size: header sector(s) plus the bitmap, rounded up to the log device's logical block. */
export function logBufferSize(regionCount: number, logicalBlockSize: number): number {
  const raw = BITMAP_OFFSET + bitsetBytes(regionCount);
  return Math.ceil(raw / logicalBlockSize) * logicalBlockSize;
}

/** The clean bitmap inside a log buffer (a view: changes go to the buffer). */
export function cleanBitmap(buf: Buffer, regionCount: number): Buffer {
  return buf.subarray(BITMAP_OFFSET, BITMAP_OFFSET + bitsetBytes(regionCount));
}

/** header_from_disk */
export function decodeHeader(buf: Buffer): DiskLogHeader {
  return { magic: buf.readUInt32LE(0), version: buf.readUInt32LE(4), nrRegions: buf.readBigUInt64LE(8) };
}

/** header_to_disk: bytes 0–15 only; the rest of the buffer is left as it is. */
export function encodeHeader(buf: Buffer, h: DiskLogHeader): void {
  buf.writeUInt32LE(h.magic >>> 0, 0);
  buf.writeUInt32LE(h.version >>> 0, 4);
  buf.writeBigUInt64LE(BigInt.asUintN(64, h.nrRegions), 8);
}
