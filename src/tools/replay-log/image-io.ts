/**
 * Byte-addressed reads and writes on a BlockDevice, with the semantics
 * replay-log gets from read(2)/pwrite(2) on a file: a read past the end is
 * short, not an error. Requests are split at the device's maximum transfer.
 */
import { SECTOR_SIZE, type BlockDevice } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';

/**
 * Reads `into.length` bytes from byte `offset`; returns how many were there
 * (fewer at the end of the device). Unaligned ranges go through one bounce
 * buffer covering the enclosing sectors.
 */
export async function readAt(dev: BlockDevice, offset: number, into: Buffer): Promise<number> {
  const end = Math.min(offset + into.length, dev.sectors * SECTOR_SIZE);
  if (end <= offset) return 0;
  const first = Math.floor(offset / SECTOR_SIZE);
  const last = Math.ceil(end / SECTOR_SIZE);
  const aligned = offset === first * SECTOR_SIZE && end === last * SECTOR_SIZE;
  const target = aligned ? into.subarray(0, end - offset) : Buffer.alloc((last - first) * SECTOR_SIZE);
  await transfer(dev, first, target, (s, b) => dev.read(s, b));
  if (!aligned) target.copy(into, 0, offset - first * SECTOR_SIZE, end - first * SECTOR_SIZE);
  return end - offset;
}

/** Writes whole sectors at byte `offset` (a multiple of 512). */
export async function writeAt(dev: BlockDevice, offset: number, data: Buffer): Promise<void> {
  if (offset % SECTOR_SIZE !== 0 || data.length % SECTOR_SIZE !== 0) {
    throw new IoError('EINVAL', `${dev.name}: write of ${data.length} bytes at byte ${offset} is not sector aligned`);
  }
  await transfer(dev, offset / SECTOR_SIZE, data, (s, b) => dev.write(s, b));
}

async function transfer(
  dev: BlockDevice, sector: number, buf: Buffer, op: (sector: number, piece: Buffer) => Promise<void>,
): Promise<void> {
  const max = dev.limits.maxTransfer * SECTOR_SIZE;
  for (let off = 0; off < buf.length; off += max) {
    await op(sector + off / SECTOR_SIZE, buf.subarray(off, off + max));
  }
}
