import { IoError } from '../block/errors.ts';

/**
 * le64 fields as JS numbers. Block numbers, keys and counts of real metadata
 * fit in 53 bits; a larger value can only come from a damaged block and is
 * refused rather than rounded.
 */
export function readU64(buf: Buffer, offset: number): number {
  const lo = buf.readUInt32LE(offset);
  const hi = buf.readUInt32LE(offset + 4);
  if (hi > 0x1fffff) {
    throw new IoError('EOVERFLOW', `le64 value at byte ${offset} exceeds 2^53 (high word 0x${hi.toString(16)})`);
  }
  return hi * 0x100000000 + lo;
}

export function writeU64(buf: Buffer, offset: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new IoError('EOVERFLOW', `cannot store ${value} as an le64 at byte ${offset}`);
  }
  buf.writeUInt32LE(value % 0x100000000, offset);
  buf.writeUInt32LE(Math.floor(value / 0x100000000), offset + 4);
}
