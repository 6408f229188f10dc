/** Number parsing of the thin targets' constructors and messages (Linux kstrto*). */
import { MAX_DEVICE_ID } from '../../pdata/thin/metadata.ts';

/**
 * kstrtoull(s, 10): optional '+', digits, one trailing newline tolerated;
 * undefined past 2^64 − 1. dmkit also refuses values past 2^53 (numbers are
 * doubles): no block count, id or transaction of a real pool gets there.
 */
export function kstrtoull(word: string): number | undefined {
  let s = word.endsWith('\n') ? word.slice(0, -1) : word;
  if (s.startsWith('+')) s = s.slice(1);
  if (!/^[0-9]+$/.test(s)) return undefined;
  const v = BigInt(s);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
}

/** read_dev_id: a decimal thin device id, at most 2^24 − 1. */
export function parseDevId(word: string): number | undefined {
  const id = kstrtoull(word);
  return id !== undefined && id <= MAX_DEVICE_ID ? id : undefined;
}
