/**
 * The native helpers (native/addon.c, built by node-gyp into build/Release
 * during `npm ci`): hole punching and SEEK_DATA/SEEK_HOLE on libuv's thread
 * pool, page-cache reads that never wait, and CRC-32C with SSE4.2 when the
 * CPU has it.
 */
import { createRequire } from 'node:module';

interface NativeAddon {
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  seekData(fd: number, offset: number): Promise<number>;
  seekHole(fd: number, offset: number): Promise<number>;
  readNowait(fd: number, buf: Uint8Array, position: number): number;
  crc32cRaw(buf: Uint8Array, register: number, useTable: boolean): number;
  readonly crc32cHardware: boolean;
}

const ADDON_PATH = '../../build/Release/dmkit_native.node';

function load(): NativeAddon {
  try {
    return createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (err) {
    throw new Error(`dmkit native addon ${ADDON_PATH} could not be loaded (build it with \`npm ci\` or \`npx node-gyp rebuild\`)`, { cause: err });
  }
}

const addon = load();

/**
 * fallocate(fd, PUNCH_HOLE | KEEP_SIZE, offset, length), on the thread pool.
 * Afterwards the byte range reads as zeroes and (on a file) holds no blocks.
 * Rejects with a Node-style system error whose `code` is the errno name:
 * EOPNOTSUPP where the file system or block device cannot, so callers fall
 * back to writing zeroes.
 */
export function punchHole(fd: number, offset: number, length: number): Promise<void> {
  return addon.punchHole(fd, offset, length);
}

/** lseek(fd, offset, SEEK_DATA): the first data byte at or after offset; ENXIO when there is none. */
export function seekData(fd: number, offset: number): Promise<number> {
  return addon.seekData(fd, offset);
}

/** lseek(fd, offset, SEEK_HOLE): the first hole byte at or after offset (end of file counts as a hole). */
export function seekHole(fd: number, offset: number): Promise<number> {
  return addon.seekHole(fd, offset);
}

/**
 * preadv2(fd, buf, position, RWF_NOWAIT), synchronously on the calling thread:
 * reads what the page cache already holds without ever waiting for I/O.
 * Returns the bytes read, fewer than asked (even 0) when only a prefix is
 * cached or at end of file, or a negative errno: -EAGAIN when the first page
 * is not cached, -EOPNOTSUPP where the file system does not support it.
 */
export function readNowait(fd: number, buf: Uint8Array, position: number): number {
  return addon.readNowait(fd, buf, position);
}

/**
 * Standard CRC-32C (Castagnoli, as iSCSI, ext4 and the kernel crypto API
 * "crc32c" give it): initial register ~seed, final inversion. With the default
 * seed 0, crc32c("123456789") = 0xE3069283. Chains like zlib's crc32:
 * crc32c(b, crc32c(a)) === crc32c(a ‖ b). Synchronous; returns an unsigned
 * 32-bit number.
 *
 * A dm-integrity `internal_hash:crc32c:KEY` tag (integrity.md §3.8: initial
 * register = le32 of the key, final XOR 0xFFFFFFFF) is crc32c(data, ~key).
 */
export function crc32c(buf: Uint8Array, seed = 0): number {
  return ~addon.crc32cRaw(buf, ~seed, false) >>> 0;
}

/**
 * The bare register update of Linux's lib/crc32c `crc32c(crc, data, len)`: no
 * initial or final inversion. persistent-data's block checksum
 * (thin-metadata.md §2.1, dm_bm_checksum) is
 * `crc32cRaw(block.subarray(4), 0xFFFFFFFF) ^ salt`;
 * crc32cRaw("123456789", 0xFFFFFFFF) = 0x1CF96D7C.
 */
export function crc32cRaw(buf: Uint8Array, register: number): number {
  return addon.crc32cRaw(buf, register, false);
}

/** crc32cRaw computed with the portable slicing-by-8 tables even where SSE4.2 exists (tests, benchmarks). */
export function crc32cRawTable(buf: Uint8Array, register: number): number {
  return addon.crc32cRaw(buf, register, true);
}

/** True when crc32c uses the SSE4.2 crc32 instruction on this CPU. */
export const crc32cHardware: boolean = addon.crc32cHardware;
