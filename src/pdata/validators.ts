import { IoError } from '../block/errors.ts';
import { blockChecksum } from './checksum.ts';
import { writeU64 } from './endian.ts';

/**
 * A block type's validator (spec/thin-metadata.md §2): stamps checksum and
 * self-location when the block is written out, and checks both when it is
 * read. A block that fails is never handed to a caller.
 */
export interface BlockValidator {
  /** Block type, for messages: "btree node", "bitmap", … */
  readonly name: string;
  /** Stamp blocknr, then the checksum over everything after it (§13.3). */
  prepareForWrite(data: Buffer, blocknr: number): void;
  /** Throws IoError EILSEQ naming `where` (device) and blocknr on any mismatch. */
  check(data: Buffer, blocknr: number, where: string): void;
}

/** Every persistent-data block starts with a le32 checksum at byte 0. */
const CSUM_OFFSET = 0;

export interface ChecksummedLayout {
  name: string;
  salt: number;
  /** Byte offset of the le64 self-location field. */
  blocknrOffset: number;
  /** Type-specific checks after location and checksum passed. */
  checkMore?: (data: Buffer, blocknr: number, fail: (why: string) => never) => void;
}

export function checksummedValidator(layout: ChecksummedLayout): BlockValidator {
  const { name, salt, blocknrOffset, checkMore } = layout;
  return {
    name,
    prepareForWrite(data, blocknr) {
      writeU64(data, blocknrOffset, blocknr);
      data.writeUInt32LE(blockChecksum(data, salt), CSUM_OFFSET);
    },
    check(data, blocknr, where) {
      const fail = (why: string): never => {
        throw new IoError('EILSEQ', `${where}: ${name} at metadata block ${blocknr}: ${why}`, { device: where });
      };
      // Linux reports a wrong location as -ENOTBLK; dmkit uses EILSEQ for every
      // validation failure so callers treat all of them as corrupt metadata.
      const stored = data.readUInt32LE(blocknrOffset) + data.readUInt32LE(blocknrOffset + 4) * 0x100000000;
      if (stored !== blocknr) fail(`blocknr ${stored} != wanted ${blocknr}`);
      const want = blockChecksum(data, salt);
      const got = data.readUInt32LE(CSUM_OFFSET);
      if (got !== want) fail(`checksum 0x${got.toString(16)} != wanted 0x${want.toString(16)}`);
      checkMore?.(data, blocknr, fail);
    },
  };
}

/** Salts ("xor values") per block type, §2.2. */
export const SALT = {
  thinSuperblock: 160774,
  btreeNode: 121107,
  indexBlock: 160478,
  bitmap: 240779,
  array: 595846735,
} as const;

export const BTREE_FLAG_INTERNAL = 1;
export const BTREE_FLAG_LEAF = 2;
export const BTREE_HEADER_SIZE = 32;

export const btreeNodeValidator: BlockValidator = checksummedValidator({
  name: 'btree node',
  salt: SALT.btreeNode,
  blocknrOffset: 8,
  checkMore(data, _blocknr, fail) {
    const flags = data.readUInt32LE(4);
    const nr = data.readUInt32LE(16);
    const max = data.readUInt32LE(20);
    const valueSize = data.readUInt32LE(24);
    if (BTREE_HEADER_SIZE + (8 + valueSize) * max > data.length) fail(`max_entries ${max} too large for value size ${valueSize}`);
    if (nr > max) fail(`nr_entries ${nr} > max_entries ${max}`);
    if (!(flags & (BTREE_FLAG_INTERNAL | BTREE_FLAG_LEAF))) fail(`flags 0x${flags.toString(16)} neither internal nor leaf`);
  },
});

export const indexBlockValidator: BlockValidator = checksummedValidator({
  name: 'space map index block',
  salt: SALT.indexBlock,
  blocknrOffset: 8,
});

export const bitmapValidator: BlockValidator = checksummedValidator({
  name: 'space map bitmap',
  salt: SALT.bitmap,
  blocknrOffset: 8,
});

export const arrayBlockValidator: BlockValidator = checksummedValidator({
  name: 'array block',
  salt: SALT.array,
  blocknrOffset: 16,
});

