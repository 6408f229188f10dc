/**
 * The dm-integrity table line (integrity.md §2): positional arguments and the
 * option group, parsed in the order and with the texts of Linux's
 * dm_integrity_ctr. Checks that need the superblock live in validators.ts.
 *
 *   <dev> <offset> <tag size|-> <J|B|D|R> <#opt> [<opt>...]
 */
import { IoError } from '../../block/errors.ts';
import { parseSector, parseU32Wrapping, parseU64Big } from '../../mapper/args.ts';
import { ctrError } from '../common/dev-offset.ts';
import { DEFAULT_INTERLEAVE_SECTORS, MAX_TAG_SIZE, floorLog2 } from './geometry.ts';
import { DIGESTS } from './tags.ts';

export type Mode = 'J' | 'B' | 'D' | 'R';

/** Linux's HZ on Debian amd64: bitmap_flush_interval is kept in jiffies. */
export const HZ = 250;
const MAX_FEATURE_ARGS = 18;
const DIRECT_ARGUMENTS = 4;
const DEFAULT_BUFFER_SECTORS = 128;
const DEFAULT_JOURNAL_WATERMARK = 50;
const DEFAULT_SYNC_MSEC = 10000;
const DEFAULT_LOG2_SECTORS_PER_BIT = 15;
const DEFAULT_BITMAP_FLUSH_INTERVAL_MS = 10000;
const MAX_LOG2_BUFFER_SECTORS = 31 - 9;

/** `ALG[:HEXKEY]` as given (the table prints it back as given). */
export interface AlgSpec {
  readonly alg: string;
  readonly keyText?: string;
  readonly key?: Buffer;
}

export interface IntegrityArgs<Dev> {
  readonly dev: Dev;
  readonly offset: number;
  /** undefined: `-`, the digest size of internal_hash. */
  readonly tagSize: number | undefined;
  readonly mode: Mode;
  /** Journal size wanted when formatting; undefined: the default. */
  readonly journalSectors: number | undefined;
  readonly interleaveSectors: number;
  readonly log2BufferSectors: number;
  readonly journalWatermark: number;
  readonly commitTimeMs: number;
  readonly metaDevice: Dev | undefined;
  readonly log2Spb: number;
  readonly log2SectorsPerBit: number;
  /** Rounded up to whole jiffies, in jiffies. */
  readonly bitmapFlushJiffies: number;
  readonly internalHash: AlgSpec | undefined;
  readonly recalculate: boolean;
  readonly resetRecalculate: boolean;
  readonly allowDiscards: boolean;
  readonly fixPadding: boolean;
  readonly fixHmac: boolean;
  readonly legacyRecalculate: boolean;
  /** Test-only: the pre-9b5948267adc flush with a metadata device (integrity.md §6.3). Never set by a table. */
  readonly brokenFlushOrder?: boolean;
}

const MODES: readonly Mode[] = ['J', 'B', 'D', 'R'];

/** `keyword:%u%c`: the number after the keyword, or undefined when the word is not of that form. */
function keywordU32(word: string, keyword: string): number | undefined {
  return word.startsWith(keyword) ? parseU32Wrapping(word.slice(keyword.length)) : undefined;
}

function getAlgAndKey(word: string, invalid: string): AlgSpec {
  const rest = word.slice(word.indexOf(':') + 1);
  const colon = rest.indexOf(':');
  if (colon < 0) return { alg: rest };
  const keyText = rest.slice(colon + 1);
  if (keyText.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(keyText)) throw ctrError(invalid);
  return { alg: rest.slice(0, colon), keyText, key: Buffer.from(keyText, 'hex') };
}

/**
 * The positional arguments and option group (§2.1, §2.2), then the checks of
 * §2.3 #1–#8, in Linux's order; `lookup` is dm_get_device (it rejects with
 * the ctr's text), called for `<dev>` and for every `meta_device:`.
 */
export async function parseIntegrityArgs<Dev>(argv: readonly string[], lookup: (word: string) => Promise<Dev>): Promise<IntegrityArgs<Dev>> {
  if (argv.length <= DIRECT_ARGUMENTS) throw ctrError('Invalid argument count');
  const [devWord, offsetWord, tagWord, modeWord, countWord] = argv as [string, string, string, string, string | undefined];
  const dev = await lookup(devWord);
  const offset = parseSector(offsetWord);
  if (offset === undefined) throw ctrError('Invalid starting offset');
  let tagSize: number | undefined;
  if (tagWord !== '-') {
    tagSize = parseU32Wrapping(tagWord);
    if (!tagSize) throw ctrError('Invalid tag size');
  }
  const mode = MODES.find((m) => m === modeWord);
  if (!mode) throw ctrError('Invalid mode (expecting J, B, D, R)');

  const rest = argv.slice(DIRECT_ARGUMENTS);
  const count = countWord === undefined ? undefined : parseU32Wrapping(countWord);
  if (count === undefined || count > MAX_FEATURE_ARGS || count > rest.length - 1) throw ctrError('Invalid number of feature args');

  let journalSectors: number | undefined;
  let interleaveSectors = DEFAULT_INTERLEAVE_SECTORS;
  let bufferSectors = DEFAULT_BUFFER_SECTORS;
  let journalWatermark = DEFAULT_JOURNAL_WATERMARK;
  let commitTimeMs = DEFAULT_SYNC_MSEC;
  let metaDevice: Dev | undefined;
  let log2Spb = 0;
  let log2SectorsPerBit = DEFAULT_LOG2_SECTORS_PER_BIT;
  let bitmapFlushJiffies = msToJiffies(DEFAULT_BITMAP_FLUSH_INTERVAL_MS);
  let internalHash: AlgSpec | undefined;
  const flags = { recalculate: false, resetRecalculate: false, allowDiscards: false, fixPadding: false, fixHmac: false, legacyRecalculate: false };

  for (const word of rest.slice(1, 1 + count)) {
    let v: number | undefined;
    if ((v = keywordU32(word, 'journal_sectors:')) !== undefined) journalSectors = v || 1;
    else if ((v = keywordU32(word, 'interleave_sectors:')) !== undefined) interleaveSectors = v;
    else if ((v = keywordU32(word, 'buffer_sectors:')) !== undefined) bufferSectors = v;
    else if ((v = keywordU32(word, 'journal_watermark:')) !== undefined && v <= 100) journalWatermark = v;
    else if ((v = keywordU32(word, 'commit_time:')) !== undefined) commitTimeMs = v;
    else if (word.startsWith('meta_device:')) metaDevice = await lookup(word.slice('meta_device:'.length));
    else if ((v = keywordU32(word, 'block_size:')) !== undefined) {
      if (v < 512 || v > 4096 || (v & (v - 1)) !== 0) throw ctrError('Invalid block_size argument');
      log2Spb = floorLog2(v / 512);
    } else if (word.startsWith('sectors_per_bit:') && parseU64Big(word.slice('sectors_per_bit:'.length)) !== undefined) {
      const n = parseU64Big(word.slice('sectors_per_bit:'.length))!;
      log2SectorsPerBit = n === 0n ? 0 : n.toString(2).length - 1;
    } else if ((v = keywordU32(word, 'bitmap_flush_interval:')) !== undefined) {
      // UINT_MAX·1000/HZ cannot be reached by a u32 with HZ = 250; the check stays for other HZ.
      if (v >= (0xffffffff * 1000) / HZ) throw ctrError('Invalid bitmap_flush_interval argument');
      bitmapFlushJiffies = msToJiffies(v);
    } else if (word.startsWith('internal_hash:')) internalHash = getAlgAndKey(word, 'Invalid internal_hash argument');
    else if (word.startsWith('journal_crypt:')) {
      getAlgAndKey(word, 'Invalid journal_crypt argument');
      // integrity.md §3.6: dmkit refuses journal encryption rather than write a journal Linux could not read.
      throw ctrError('Invalid journal cipher', 'ENOENT');
    } else if (word.startsWith('journal_mac:')) {
      getAlgAndKey(word, 'Invalid journal_mac argument');
      // dmkit does not implement the journal MAC (integrity.md §3.6).
      throw ctrError('Invalid journal mac', 'ENOENT');
    } else if (word === 'recalculate') flags.recalculate = true;
    else if (word === 'reset_recalculate') flags.recalculate = flags.resetRecalculate = true;
    else if (word === 'allow_discards') flags.allowDiscards = true;
    else if (word === 'fix_padding') flags.fixPadding = true;
    else if (word === 'fix_hmac') flags.fixHmac = true;
    else if (word === 'legacy_recalculate') flags.legacyRecalculate = true;
    else throw ctrError('Invalid argument');
  }

  const log2BufferSectors = Math.min(floorLog2(bufferSectors), MAX_LOG2_BUFFER_SECTORS);
  if (internalHash) checkHash(internalHash);
  if (tagSize === undefined) {
    if (!internalHash) throw ctrError('Unknown tag size');
    tagSize = DIGESTS[internalHash.alg]!.size;
  }
  if (tagSize > MAX_TAG_SIZE) throw ctrError('Too big tag size');
  if (mode === 'B' && !internalHash) throw ctrError('Bitmap mode can be only used with internal hash');
  if (flags.allowDiscards && !internalHash) throw ctrError('Discard can be only used with internal hash');

  return {
    dev, offset, tagSize, mode, journalSectors, interleaveSectors, log2BufferSectors, journalWatermark, commitTimeMs,
    metaDevice, log2Spb, log2SectorsPerBit, bitmapFlushJiffies, internalHash, ...flags,
  };
}

/** §2.3 #1–#2: the algorithm exists and takes (or needs) the key given. */
function checkHash(spec: AlgSpec): void {
  const d = DIGESTS[spec.alg];
  if (!d) throw new IoError('ENOENT', 'Invalid internal hash');
  const keyed = spec.key !== undefined;
  // Linux answers a missing hmac key with ENOKEY, which dmkit's errno set lacks: EINVAL.
  if ((d.keyed === 'required' && !keyed) || (d.keyed === 'never' && keyed) || (keyed && d.size === 4 && spec.key!.length !== 4)) {
    throw ctrError('Error setting internal hash key');
  }
}

/** msecs_to_jiffies: rounded up. */
export function msToJiffies(ms: number): number {
  return Math.ceil((ms * HZ) / 1000);
}

export function jiffiesToMs(j: number): number {
  return (j * 1000) / HZ;
}
