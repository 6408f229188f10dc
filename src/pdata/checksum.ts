import { crc32cRaw } from '../native/index.ts';

/**
 * The persistent-data block checksum (spec/thin-metadata.md §2.1,
 * Linux dm_bm_checksum): CRC-32C of bytes 4..end with initial register
 * 0xFFFFFFFF and no final inversion, XOR the block type's salt.
 */
export function blockChecksum(block: Uint8Array, salt: number): number {
  return (crc32cRaw(block.subarray(4), 0xffffffff) ^ salt) >>> 0;
}
