import { IoError } from '../../block/errors.ts';
import { readU64, writeU64 } from '../endian.ts';
import { SPACE_MAP_ROOT_SIZE } from '../space-map/root.ts';
import { SALT, checksummedValidator } from '../validators.ts';

/*
 * The thin superblock, block 0 (spec/thin-metadata.md §3.1), 364 bytes:
 *
 * | offset | size | field |
 * | 0   | 4   | le32 csum (salt 160774) |
 * | 4   | 4   | le32 flags (bit 0 NEEDS_CHECK) |
 * | 8   | 8   | le64 blocknr (0, or H for a metadata-snapshot copy) |
 * | 16  | 16  | uuid (never interpreted) |
 * | 32  | 8   | le64 magic 27022010 |
 * | 40  | 4   | le32 version (1 or 2; dmkit writes 2) |
 * | 44  | 4   | le32 time (snapshot counter) |
 * | 48  | 8   | le64 trans_id |
 * | 56  | 8   | le64 held_root |
 * | 64  | 128 | data space-map root (first 32 bytes used) |
 * | 192 | 128 | metadata space-map root (first 32 bytes used) |
 * | 320 | 8   | le64 data_mapping_root |
 * | 328 | 8   | le64 device_details_root |
 * | 336 | 4   | le32 data_block_size (sectors) |
 * | 340 | 4   | le32 metadata_block_size (8) |
 * | 344 | 8   | le64 metadata_nr_blocks (at format time) |
 * | 352 | 4   | le32 compat_flags |
 * | 356 | 4   | le32 compat_ro_flags |
 * | 360 | 4   | le32 incompat_flags |
 */

export const THIN_MAGIC = 27022010;
export const THIN_VERSION = 2;
export const NEEDS_CHECK_FLAG = 1;
export const METADATA_BLOCK_SECTORS = 8;

export interface ThinSuperblock {
  flags: number;
  uuid: Buffer;
  version: number;
  time: number;
  transactionId: number;
  heldRoot: number;
  /** 32-byte space-map roots (bytes 32..127 of each field are ignored on read, zero on write, §3.1). */
  dataSpaceMapRoot: Buffer;
  metadataSpaceMapRoot: Buffer;
  dataMappingRoot: number;
  deviceDetailsRoot: number;
  dataBlockSize: number;
  metadataBlockSize: number;
  metadataNrBlocks: number;
  compatFlags: number;
  compatRoFlags: number;
  incompatFlags: number;
}

export const superblockValidator = checksummedValidator({
  name: 'superblock',
  salt: SALT.thinSuperblock,
  blocknrOffset: 8,
  checkMore(data, _blocknr, fail) {
    const magic = readU64(data, 32);
    if (magic !== THIN_MAGIC) fail(`magic ${magic} != ${THIN_MAGIC}`);
  },
});

export function decodeSuperblock(data: Buffer): ThinSuperblock {
  return {
    flags: data.readUInt32LE(4),
    uuid: Buffer.from(data.subarray(16, 32)),
    version: data.readUInt32LE(40),
    time: data.readUInt32LE(44),
    transactionId: readU64(data, 48),
    heldRoot: readU64(data, 56),
    dataSpaceMapRoot: Buffer.from(data.subarray(64, 64 + SPACE_MAP_ROOT_SIZE)),
    metadataSpaceMapRoot: Buffer.from(data.subarray(192, 192 + SPACE_MAP_ROOT_SIZE)),
    dataMappingRoot: readU64(data, 320),
    deviceDetailsRoot: readU64(data, 328),
    dataBlockSize: data.readUInt32LE(336),
    metadataBlockSize: data.readUInt32LE(340),
    metadataNrBlocks: readU64(data, 344),
    compatFlags: data.readUInt32LE(352),
    compatRoFlags: data.readUInt32LE(356),
    incompatFlags: data.readUInt32LE(360),
  };
}

/** Fills a zeroed block; checksum and blocknr are stamped when it is written out. */
export function encodeSuperblock(sb: ThinSuperblock, data: Buffer): void {
  data.writeUInt32LE(sb.flags, 4);
  sb.uuid.copy(data, 16, 0, 16);
  writeU64(data, 32, THIN_MAGIC);
  data.writeUInt32LE(sb.version, 40);
  data.writeUInt32LE(sb.time, 44);
  writeU64(data, 48, sb.transactionId);
  writeU64(data, 56, sb.heldRoot);
  sb.dataSpaceMapRoot.copy(data, 64, 0, SPACE_MAP_ROOT_SIZE);
  sb.metadataSpaceMapRoot.copy(data, 192, 0, SPACE_MAP_ROOT_SIZE);
  writeU64(data, 320, sb.dataMappingRoot);
  writeU64(data, 328, sb.deviceDetailsRoot);
  data.writeUInt32LE(sb.dataBlockSize, 336);
  data.writeUInt32LE(sb.metadataBlockSize, 340);
  writeU64(data, 344, sb.metadataNrBlocks);
  data.writeUInt32LE(sb.compatFlags, 352);
  data.writeUInt32LE(sb.compatRoFlags, 356);
  data.writeUInt32LE(sb.incompatFlags, 360);
}

/** Linux refuses unknown feature bits (§3.2): every supported mask is 0. */
export function checkFeatures(sb: ThinSuperblock, where: string, writable: boolean): void {
  if (sb.incompatFlags !== 0) {
    throw new IoError('EINVAL', `${where}: could not access metadata due to unsupported optional features (${sb.incompatFlags.toString(16)}).`);
  }
  if (writable && sb.compatRoFlags !== 0) {
    throw new IoError('EINVAL', `${where}: could not access metadata RDWR due to unsupported optional features (${sb.compatRoFlags.toString(16)}).`);
  }
}
