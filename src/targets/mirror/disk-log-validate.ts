/**
 * What a header read from the log device means (Linux dm-log.c read_header;
 * mirror spec §5.3, §5.4 steps 2–4). The layout itself is in disk-log.ts.
 */
import { type DiskLogHeader, LOG_MAGIC, LOG_VERSION } from './disk-log.ts';

export type SyncMode = 'default' | 'nosync' | 'sync';

export type HeaderCheck =
  | { readonly ok: true; readonly header: DiskLogHeader }
  | { readonly ok: false; readonly header: DiskLogHeader; readonly reason: string };

/**
 * Steps 2–4: a `sync`/`nosync` table or a wrong magic means a new log
 * (nr_regions 0); version 1 is read as 2 (little-endian hosts); any other
 * version fails the read. A failed check keeps the version as read, so the
 * next write puts it back unchanged (§5.4 step 5 quirk).
 */
export function checkHeader(read: DiskLogHeader, mode: SyncMode): HeaderCheck {
  const header = mode !== 'default' || read.magic !== LOG_MAGIC
    ? { magic: LOG_MAGIC, version: LOG_VERSION, nrRegions: 0n }
    : { ...read };
  if (header.version === 1) header.version = LOG_VERSION;
  if (header.version !== LOG_VERSION) return { ok: false, header, reason: 'incompatible disk log version' };
  return { ok: true, header };
}
