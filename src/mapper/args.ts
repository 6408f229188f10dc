/**
 * Argument parsing exactly as Linux's targets do it (basic-targets §2.3, §2.4).
 * Every parser returns undefined on failure; the caller owns the error text,
 * because Linux's texts differ per target and per argument.
 */
import { IoError } from '../block/errors.ts';

const U64_MAX = (1n << 64n) - 1n;

/** Kernel isspace: space, \t, \n, \v, \f, \r and 0xA0. */
function isKernelSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\v' || ch === '\f' || ch === '\r' || ch === '\u00a0';
}

/**
 * dm_split_args: white-space separated words; a backslash makes the next
 * character literal (a trailing lone backslash stays).
 */
export function splitArgs(params: string): string[] {
  const out: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < params.length; i++) {
    const ch = params[i]!;
    if (ch === '\\' && i + 1 < params.length) {
      word = (word ?? '') + params[++i];
    } else if (isKernelSpace(ch)) {
      if (word !== undefined) out.push(word);
      word = undefined;
    } else {
      word = (word ?? '') + ch;
    }
  }
  if (word !== undefined) out.push(word);
  return out;
}

const DIGITS = /^[0-9]+$/;

/** Kernel `sscanf("%llu%c")`: digits only, no sign; overflow saturates. As bigint. */
export function parseU64Big(word: string): bigint | undefined {
  if (!DIGITS.test(word)) return undefined;
  const v = BigInt(word);
  return v > U64_MAX ? U64_MAX : v;
}

/**
 * Kernel `sscanf("%llu%c")` for a sector or count: as parseU64Big, and
 * undefined when the value is beyond 2^53 (dmkit's positions are numbers;
 * no device of that size can exist, so such an argument is out of range anyway).
 */
export function parseSector(word: string): number | undefined {
  const v = parseU64Big(word);
  if (v === undefined || v > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return Number(v);
}

/** Kernel `sscanf("%u%c")`: digits only; computed as 64-bit, then truncated to 32 bits. */
export function parseU32Wrapping(word: string): number | undefined {
  const v = parseU64Big(word);
  if (v === undefined) return undefined;
  return Number(BigInt.asUintN(32, v));
}

/** kstrtouint(s, 10): optional '+', digits, one trailing newline tolerated; > 2^32-1 fails. */
export function kstrtouint(word: string): number | undefined {
  let s = word.endsWith('\n') ? word.slice(0, -1) : word;
  if (s.startsWith('+')) s = s.slice(1);
  if (!DIGITS.test(s)) return undefined;
  const v = BigInt(s);
  return v > 0xffffffffn ? undefined : Number(v);
}

/** glibc strtoull-style `%llu` as dmsetup reads start/length: optional sign, negatives wrap. */
export function parseTableNumber(word: string): bigint | undefined {
  const m = /^([+-]?)([0-9]+)$/.exec(word);
  if (!m) return undefined;
  let v = BigInt(m[2]!);
  if (v > U64_MAX) v = U64_MAX;
  return m[1] === '-' ? BigInt.asUintN(64, -v) : v;
}

export interface DevT {
  major: number;
  minor: number;
}

/**
 * `major:minor` as dm_get_device reads it (`"%u:%u%c"`). Returns undefined when
 * the word is not of that form (it is then a path); throws EOVERFLOW when it is
 * but does not fit a Linux dev_t.
 */
export function parseDevT(word: string): DevT | undefined {
  const m = /^([0-9]+):([0-9]+)$/.exec(word);
  if (!m) return undefined;
  const major = parseU32Wrapping(m[1]!)!;
  const minor = parseU32Wrapping(m[2]!)!;
  if (major >= 4096 || minor >= 1 << 20) {
    throw new IoError('EOVERFLOW', `device number ${word} does not fit a dev_t (major < 4096, minor < 2^20)`);
  }
  return { major, minor };
}
