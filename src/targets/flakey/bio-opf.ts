/**
 * Linux's request word (`bio->bi_opf`) synthesised from a dmkit request, for
 * flakey's corrupt_bio_byte flags mask (flakey §4.4) and log-writes' METADATA
 * flag (log-writes §3.3). The operation sits in bits 0–7, flags above.
 *
 * dmkit models only the operation, FUA and the metadata hint; every other
 * Linux flag (SYNC, PRIO, RAHEAD, …) is never set, so a mask naming one of
 * them never matches a dmkit request.
 */
import type { WriteOptions } from '../../block/device.ts';

export const REQ_OP_READ = 0;
export const REQ_OP_WRITE = 1;
export const REQ_OP_DISCARD = 3;

/** REQ_META: filesystem metadata. */
export const REQ_META = 1 << 12;
/** REQ_FUA: forced unit access. */
export const REQ_FUA = 1 << 17;

/**
 * REQ_META for dmkit: a write tagged as anything a target keeps about its own
 * structure (superblock, metadata, journal, bitmap). `data` and `log` are not
 * metadata.
 */
export function isMetadataWrite(opts: WriteOptions): boolean {
  return opts.tag !== undefined && opts.tag !== 'data' && opts.tag !== 'log';
}

/** bi_opf of a write with data. */
export function writeOpf(opts: WriteOptions): number {
  return (REQ_OP_WRITE | (opts.fua ? REQ_FUA : 0) | (isMetadataWrite(opts) ? REQ_META : 0)) >>> 0;
}

/** bi_opf of a read: dmkit reads carry no flags. */
export const READ_OPF = REQ_OP_READ;

/** `(bi_opf & mask) == mask`, in unsigned 32-bit arithmetic. */
export function opfMatches(opf: number, mask: number): boolean {
  return ((opf & mask) >>> 0) === mask >>> 0;
}
