import { plainValue } from '../btree/value-type.ts';
import { readU64, writeU64 } from '../endian.ts';

/*
 * Device-details record (spec/thin-metadata.md §7.2), value of the details
 * tree keyed by thin device id, 24 bytes:
 *
 * | offset | size | field |
 * | 0  | 8 | le64 mapped_blocks |
 * | 8  | 8 | le64 transaction_id |
 * | 16 | 4 | le32 creation_time |
 * | 20 | 4 | le32 snapshotted_time |
 */

export const DEVICE_DETAILS_SIZE = 24;
export const deviceDetailsValue = plainValue(DEVICE_DETAILS_SIZE);

export interface DeviceDetails {
  mappedBlocks: number;
  transactionId: number;
  creationTime: number;
  snapshottedTime: number;
}

export function encodeDeviceDetails(d: DeviceDetails): Buffer {
  const buf = Buffer.alloc(DEVICE_DETAILS_SIZE);
  writeU64(buf, 0, d.mappedBlocks);
  writeU64(buf, 8, d.transactionId);
  buf.writeUInt32LE(d.creationTime, 16);
  buf.writeUInt32LE(d.snapshottedTime, 20);
  return buf;
}

export function decodeDeviceDetails(buf: Buffer): DeviceDetails {
  return {
    mappedBlocks: readU64(buf, 0),
    transactionId: readU64(buf, 8),
    creationTime: buf.readUInt32LE(16),
    snapshottedTime: buf.readUInt32LE(20),
  };
}
