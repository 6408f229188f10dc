import { IoError } from './errors.ts';

export const SECTOR_SIZE = 512;
export const SECTOR_SHIFT = 9;

/** What a device can do and how it wants to be addressed (ARCHITECTURE §3). */
export interface Limits {
  /** Smallest addressable unit, bytes (512 or 4096). Requests must align to it. */
  readonly logicalBlockSize: number;
  /** Unit the device writes atomically, bytes. */
  readonly physicalBlockSize: number;
  /** Preferred minimum I/O, bytes (striped: chunk). */
  readonly ioMin: number;
  /** Optimal I/O, bytes (striped: chunk × stripes); 0 when unknown. */
  readonly ioOpt: number;
  /** Largest single request, sectors. */
  readonly maxTransfer: number;
  readonly readOnly: boolean;
  /** The device has a volatile cache: flush means something. */
  readonly flush: boolean;
  readonly fua: boolean;
  readonly discard: boolean;
  readonly writeZeroes: boolean;
  /** A discarded range reads back as zeroes. */
  readonly discardZeroes: boolean;
}

export interface Extent {
  sector: number;
  count: number;
  /** Not allocated: reading it costs nothing and writing it allocates. */
  hole: boolean;
  /** Reads as zeroes. */
  zero: boolean;
}

/** What a write carries for the crash recorder (CRASH-TESTING §2.1); devices ignore it. */
export type IoTag = 'superblock' | 'metadata' | 'journal' | 'data' | 'bitmap' | 'log';

export interface WriteOptions {
  fua?: boolean;
  tag?: IoTag;
}

export interface WriteZeroesOptions {
  /** The device may deallocate the range instead of writing zeroes. */
  mayUnmap?: boolean;
  fua?: boolean;
  tag?: IoTag;
}

/**
 * The contract every device and every mapped device keeps (ARCHITECTURE §3).
 * Positions and lengths are 512-byte sectors; buffers are whole sectors.
 * Many requests may be in flight; no order among them is promised (§1).
 */
export interface BlockDevice {
  readonly name: string;
  readonly sectors: number;
  readonly limits: Limits;
  read(sector: number, into: Buffer): Promise<void>;
  write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void>;
  /**
   * A write whose data is `chunks` in order (vectored.ts): the same request
   * as `write` of their concatenation. The pieces may have any lengths;
   * only their total must be whole sectors. Devices that can take the
   * pieces without joining them implement it; callers go through
   * `writeChunks`, which joins them for every other device.
   */
  writev?(sector: number, chunks: readonly Buffer[], opts?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  discard(sector: number, count: number): Promise<void>;
  writeZeroes(sector: number, count: number, opts?: WriteZeroesOptions): Promise<void>;
  extents?(sector: number, count: number): Promise<Extent[]>;
  close(): Promise<void>;
}

export const DEFAULT_MAX_TRANSFER = 65536; // sectors: 32 MiB

export function makeLimits(over: Partial<Limits> = {}): Limits {
  const logicalBlockSize = over.logicalBlockSize ?? SECTOR_SIZE;
  return {
    logicalBlockSize,
    physicalBlockSize: over.physicalBlockSize ?? logicalBlockSize,
    ioMin: over.ioMin ?? logicalBlockSize,
    ioOpt: over.ioOpt ?? 0,
    maxTransfer: over.maxTransfer ?? DEFAULT_MAX_TRANSFER,
    readOnly: over.readOnly ?? false,
    flush: over.flush ?? true,
    fua: over.fua ?? true,
    discard: over.discard ?? false,
    writeZeroes: over.writeZeroes ?? true,
    discardZeroes: over.discardZeroes ?? false,
  };
}

export type IoOp = 'read' | 'write' | 'discard' | 'write-zeroes' | 'extents';

/**
 * Validates a request once, at the device boundary (ARCHITECTURE §3): aligned to
 * the logical block size, inside the device, length > 0, within maxTransfer for
 * data transfers, and not a modification of a read-only device.
 */
export function checkRequest(dev: BlockDevice, op: IoOp, sector: number, count: number): void {
  const where = { device: dev.name, sector };
  if (!Number.isSafeInteger(sector) || sector < 0) {
    throw new IoError('EINVAL', `${dev.name}: ${op} at invalid sector ${sector}`, where);
  }
  if (!Number.isSafeInteger(count) || count <= 0) {
    throw new IoError('EINVAL', `${dev.name}: ${op} at sector ${sector} has invalid length ${count} sectors`, where);
  }
  const lbs = dev.limits.logicalBlockSize >> SECTOR_SHIFT;
  if (lbs > 1 && (sector % lbs !== 0 || count % lbs !== 0)) {
    throw new IoError(
      'EINVAL',
      `${dev.name}: ${op} of ${count} sectors at sector ${sector} is not aligned to the ${dev.limits.logicalBlockSize}-byte logical block size`,
      where,
    );
  }
  if (sector + count > dev.sectors) {
    throw new IoError(
      'ENOSPC',
      `${dev.name}: ${op} of ${count} sectors at sector ${sector} goes past the end of the device (${dev.sectors} sectors)`,
      where,
    );
  }
  if ((op === 'read' || op === 'write') && count > dev.limits.maxTransfer) {
    throw new IoError(
      'EINVAL',
      `${dev.name}: ${op} of ${count} sectors at sector ${sector} exceeds the maximum transfer of ${dev.limits.maxTransfer} sectors`,
      where,
    );
  }
  if (dev.limits.readOnly && op !== 'read' && op !== 'extents') {
    throw new IoError('EPERM', `${dev.name}: ${op} at sector ${sector} on a read-only device`, where);
  }
}

/** checkRequest for a data buffer: also refuses a buffer that is not whole sectors. */
export function checkBuffer(dev: BlockDevice, op: 'read' | 'write', sector: number, buf: Buffer): void {
  checkLength(dev, op, sector, buf.length);
}

/** checkRequest for `length` bytes of data (one buffer or a chunk list): also refuses a length that is not whole sectors. */
export function checkLength(dev: BlockDevice, op: 'read' | 'write', sector: number, length: number): void {
  if (length === 0 || length % SECTOR_SIZE !== 0) {
    throw new IoError(
      'EINVAL',
      `${dev.name}: ${op} at sector ${sector} with a buffer of ${length} bytes, not a positive multiple of ${SECTOR_SIZE}`,
      { device: dev.name, sector },
    );
  }
  checkRequest(dev, op, sector, length / SECTOR_SIZE);
}

/** Byte length of `count` sectors. */
export function bytes(count: number): number {
  return count * SECTOR_SIZE;
}
