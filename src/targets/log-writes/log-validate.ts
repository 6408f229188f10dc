/**
 * What a reader accepts of a log (log-writes §5.6), as fstests' replay-log
 * checks it. The texts are replay-log's.
 */
import { ENTRY_HEADER_SIZE, LOG_MAGIC, LOG_MARK_FLAG, LOG_VERSION, type LogEntry, type LogSuper } from './log-format.ts';

/** A super block problem, in replay-log's words, or undefined when the super block is usable. */
export function superProblem(s: LogSuper): string | undefined {
  if (s.magic !== LOG_MAGIC) return "Magic doesn't match";
  // replay-log prints the version through an int cast.
  if (s.version !== LOG_VERSION) return `Version mismatch, wanted 1, have ${BigInt.asIntN(32, s.version)}`;
  return undefined;
}

/**
 * log_entry_valid: an all-zero-looking header (no flags, no sectors) is the end
 * of a torn log, and every non-mark header must have a zero byte 32 (a MARK
 * must therefore have flags exactly 8).
 */
export function isValidEntry(e: LogEntry, block: Buffer): boolean {
  if (e.flags === 0n && e.nrSectors === 0n) return false;
  if (e.flags !== BigInt(LOG_MARK_FLAG) && block[ENTRY_HEADER_SIZE] !== 0) return false;
  return true;
}
