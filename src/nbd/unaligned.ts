/**
 * Requests whose byte range is not aligned to the device's logical block size
 * (spec §8.2 item 9): the server turns them into whole-block device requests,
 * as nbdkit's blocksize filter does. Reads read the covering blocks and copy
 * out; modifications read the partly covered head and tail blocks, patch them
 * and write them back, and hand the aligned middle to the device as it is.
 *
 * Ordering. Every read-modify-write of an export holds that export's lock
 * for its whole request, so two unaligned writes into one block never lose
 * each other's bytes, whatever connection they came on. Aligned requests do
 * not take the lock: an aligned write overlapping the head or tail block of
 * an unaligned one in flight may be undone in the bytes of that block outside
 * the unaligned range (the read-modify-write can read the block before the
 * aligned write lands and write it back after). Both requests then overlap
 * in bytes and were in flight together, and NBD orders no such pair (spec
 * §8.4); a client that waits for one reply before sending the other request,
 * as every file system over a block device does, sees them in order.
 */
import type { BlockDevice } from '../block/device.ts';

/** Where an unaligned byte range falls: partial blocks at either end, and the whole blocks between. */
export interface UnalignedSplit {
  /** Byte offset of a partly covered first block, if any. */
  head: number | undefined;
  /** Whole blocks in the middle, bytes [start, end); empty when start === end. */
  start: number;
  end: number;
  /** Byte offset of a partly covered last block, if any (never the head block). */
  tail: number | undefined;
}

export function isAligned(offset: number, length: number, align: number): boolean {
  return offset % align === 0 && length % align === 0;
}

/** The smallest aligned byte range [start, end) that covers [offset, offset+length). */
export function alignedCover(offset: number, length: number, align: number): { start: number; end: number } {
  return { start: Math.floor(offset / align) * align, end: Math.ceil((offset + length) / align) * align };
}

/** Splits a non-empty byte range into partial head and tail blocks and an aligned middle. */
export function splitUnaligned(offset: number, length: number, align: number): UnalignedSplit {
  const end = offset + length;
  const first = Math.floor(offset / align) * align;
  const last = Math.floor((end - 1) / align) * align;
  if (first === last && !isAligned(offset, length, align)) {
    return { head: first, start: first, end: first, tail: undefined };
  }
  return {
    head: offset % align !== 0 ? first : undefined,
    start: Math.ceil(offset / align) * align,
    end: Math.floor(end / align) * align,
    tail: end % align !== 0 ? last : undefined,
  };
}

/** Runs async sections one at a time, in the order they asked. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(section: () => Promise<T>): Promise<T> {
    const result = this.tail.then(section);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/** One lock per device: every connection to an export shares its device object. */
const locks = new WeakMap<BlockDevice, Mutex>();

/** The read-modify-write lock of the export served from `dev`. */
export function rmwLock(dev: BlockDevice): Mutex {
  let lock = locks.get(dev);
  if (!lock) {
    lock = new Mutex();
    locks.set(dev, lock);
  }
  return lock;
}
