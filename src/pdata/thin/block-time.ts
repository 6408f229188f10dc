import { IoError } from '../../block/errors.ts';
import type { ValueType } from '../btree/value-type.ts';
import type { SpaceMap } from '../space-map/space-map.ts';

/*
 * Level-1 mapping value (spec/thin-metadata.md §7.3): le64
 * block_time = (data_block << 24) | time — 40 bits of data block, 24 of time.
 * Read through two le32 halves so that every 40-bit block number is exact.
 */

export const MAX_TIME = 0xffffff;
export const MAX_DATA_BLOCK = 2 ** 40 - 1;

export interface BlockTime {
  block: number;
  time: number;
}

export function decodeBlockTime(buf: Buffer, offset = 0): BlockTime {
  const lo = buf.readUInt32LE(offset);
  const hi = buf.readUInt32LE(offset + 4);
  return { block: hi * 256 + (lo >>> 24), time: lo & MAX_TIME };
}

export function encodeBlockTime(bt: BlockTime, buf: Buffer = Buffer.alloc(8), offset = 0): Buffer {
  if (!Number.isSafeInteger(bt.block) || bt.block < 0 || bt.block > MAX_DATA_BLOCK) {
    throw new IoError('EOVERFLOW', `data block ${bt.block} does not fit in 40 bits`);
  }
  if (bt.time < 0 || bt.time > MAX_TIME) throw new IoError('EOVERFLOW', `mapping time ${bt.time} does not fit in 24 bits`);
  buf.writeUInt32LE(((bt.block % 256) * 2 ** 24 + bt.time) >>> 0, offset);
  buf.writeUInt32LE(Math.floor(bt.block / 256), offset + 4);
  return buf;
}

/** Mapping values reference data blocks: counted in the data space map; equal = same data block (§4.6). */
export function blockTimeValue(dataSm: SpaceMap): ValueType {
  return {
    size: 8,
    inc: (v) => dataSm.inc(decodeBlockTime(v).block),
    dec: (v) => dataSm.dec(decodeBlockTime(v).block),
    equal: (a, b) => decodeBlockTime(a).block === decodeBlockTime(b).block,
  };
}
