/**
 * replay-log's command line, parsed as fstests' replay-log parses it with
 * glibc's getopt_long (log-writes §5.1): long options in table order, unique
 * or first-matching prefixes, `--name=value` or `--name value`, `-v` stacked,
 * non-options ignored, numbers through strtoull(…, 0). Errors and usage go to
 * stderr with exit status 1, at the point of the command line where
 * replay-log would stop.
 *
 * dmkit extensions (`--explore`, `--explore-state N`, `--seed S`) must be
 * spelled out in full, so every abbreviation replay-log accepts still means
 * what it means there.
 */
import { LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG } from '../../targets/log-writes/log-format.ts';

export const PROGRAM = 'replay-log';

export type CheckMode = 'number' | 'fua' | 'flush' | 'discard';

export interface ReplayLogOptions {
  log?: string;
  replay?: string;
  /** LOG_*_FLAG bits that stop a replay or find (should_stop). */
  stopFlags: number;
  startEntry: bigint;
  startMark?: Buffer;
  endMark?: Buffer;
  limit: bigint;
  find: boolean;
  numEntries: boolean;
  discard: boolean;
  fsck?: string;
  check?: CheckMode;
  checkNumber: bigint;
  startSector: bigint;
  endSector: bigint;
  verbose: number;
  explore: boolean;
  exploreState?: bigint;
  seed: number;
}

/** A parse that ended the program: what to print and the exit status. */
export interface ParseExit {
  exit: number;
}

export interface Output {
  write(s: string): unknown;
}

type OptionName =
  | 'next-flush' | 'next-fua' | 'start-entry' | 'end-mark' | 'log' | 'replay' | 'limit' | 'verbose'
  | 'find' | 'num-entries' | 'no-discard' | 'fsck' | 'check' | 'start-mark' | 'start-sector' | 'end-sector'
  | 'explore' | 'explore-state' | 'seed';

interface LongOption {
  name: OptionName;
  arg: boolean;
  /** getopt's `val`: 'v' for --verbose, 0 for the rest (matters for ambiguity). */
  val: string;
}

/** replay-log's long_options, in its order: abbreviations resolve against this list only. */
const REPLAY_LOG_OPTIONS: readonly LongOption[] = [
  { name: 'next-flush', arg: false, val: '' },
  { name: 'next-fua', arg: false, val: '' },
  { name: 'start-entry', arg: true, val: '' },
  { name: 'end-mark', arg: true, val: '' },
  { name: 'log', arg: true, val: '' },
  { name: 'replay', arg: true, val: '' },
  { name: 'limit', arg: true, val: '' },
  { name: 'verbose', arg: false, val: 'v' },
  { name: 'find', arg: false, val: '' },
  { name: 'num-entries', arg: false, val: '' },
  { name: 'no-discard', arg: false, val: '' },
  { name: 'fsck', arg: true, val: '' },
  { name: 'check', arg: true, val: '' },
  { name: 'start-mark', arg: true, val: '' },
  { name: 'start-sector', arg: true, val: '' },
  { name: 'end-sector', arg: true, val: '' },
];

const DMKIT_OPTIONS: readonly LongOption[] = [
  { name: 'explore', arg: false, val: '' },
  { name: 'explore-state', arg: true, val: '' },
  { name: 'seed', arg: true, val: '' },
];

/** Marks are cut to 4097 − sizeof(struct log_write_entry) = 4057 bytes (strndup). */
const MARK_MAX = 4057;

export function usage(err: Output): ParseExit {
  err.write(
    'Usage: replay-log --log <logfile> [options]\n' +
      '\t--replay <device> - replay onto a specific device\n' +
      '\t--limit <number> - number of entries to replay\n' +
      '\t--next-flush - replay to/find the next flush\n' +
      '\t--next-fua - replay to/find the next fua\n' +
      '\t--start-entry <entry> - start at the given entry #\n' +
      '\t--start-mark <mark> - mark to start from\n' +
      '\t--end-mark <mark> - replay to/find the given mark\n' +
      '\t--find - put replay-log in find mode, will search based on the other options\n' +
      '\t--number-entries - print the number of entries in the log\n' +
      "\t--no-discard - don't process discard entries\n" +
      '\t--fsck - the fsck command to run, must specify --check\n' +
      '\t--check [<number>|flush|fua|discard] when to check the file system, mush specify --fsck\n' +
      '\t--start-sector <sector> - replay ops on region from <sector> onto <device>\n' +
      '\t--end-sector <sector> - replay ops on region to <sector> onto <device>\n' +
      '\t-v or --verbose - print replayed ops\n' +
      '\t-vv - print also skipped ops\n' +
      'dmkit extensions (spell them out in full):\n' +
      '\t--explore - with --replay and --fsck: check every flush/FUA point and subsets of the writes still volatile there\n' +
      '\t--explore-state <n> - materialise only state <n> of an exploration (implies --explore)\n' +
      '\t--seed <s> - seed of the exploration\'s random subsets (default 0)\n',
  );
  return { exit: 1 };
}

const U64_MAX = (1n << 64n) - 1n;

/**
 * glibc strtoull(s, &end, 0): leading white space, an optional sign, `0x` hex,
 * `0` octal or decimal; saturates on overflow; a minus wraps. Returns the value
 * and whether the whole string was consumed (`*end == '\0'`).
 */
export function strtoull(s: string): { value: bigint; whole: boolean } {
  let i = 0;
  while (i < s.length && ' \t\n\v\f\r'.includes(s[i]!)) i++;
  let negative = false;
  if (s[i] === '+' || s[i] === '-') negative = s[i++] === '-';
  let base = 10;
  if (s[i] === '0' && (s[i + 1] === 'x' || s[i + 1] === 'X') && /[0-9a-fA-F]/.test(s[i + 2] ?? '')) {
    base = 16;
    i += 2;
  } else if (s[i] === '0') {
    base = 8;
  }
  const digits = base === 16 ? /[0-9a-fA-F]/ : base === 8 ? /[0-7]/ : /[0-9]/;
  const start = i;
  let value = 0n;
  let overflow = false;
  for (; i < s.length && digits.test(s[i]!); i++) {
    value = value * BigInt(base) + BigInt(parseInt(s[i]!, base));
    if (value > U64_MAX) overflow = true;
  }
  if (i === start) return { value: 0n, whole: s.length === 0 };
  if (overflow) value = U64_MAX;
  else if (negative) value = BigInt.asUintN(64, -value);
  return { value, whole: i === s.length };
}

/** strndup of a mark name, in bytes. */
function markBytes(s: string): Buffer {
  return Buffer.from(s, 'utf8').subarray(0, MARK_MAX);
}

/** Parses argv (without the program name). */
export function parseOptions(argv: readonly string[], err: Output): ReplayLogOptions | ParseExit {
  const o: ReplayLogOptions = {
    stopFlags: 0,
    startEntry: 0n,
    limit: 0n,
    find: false,
    numEntries: false,
    discard: true,
    checkNumber: 0n,
    startSector: 0n,
    endSector: U64_MAX,
    verbose: 0,
    explore: false,
    seed: 0,
  };

  const number = (arg: string, message: string): bigint | ParseExit => {
    const n = strtoull(arg);
    if (!n.whole) {
      err.write(`${message}\n`);
      return { exit: 1 };
    }
    return n.value;
  };

  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') break;
    if (word.startsWith('--')) {
      const body = word.slice(2);
      const eq = body.indexOf('=');
      const name = eq >= 0 ? body.slice(0, eq) : body;
      const found = findLong(name, body, err);
      if ('exit' in found) return found;
      let arg: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
      if (found.arg && arg === undefined) {
        if (i + 1 >= argv.length) {
          err.write(`${PROGRAM}: option '--${found.name}' requires an argument\n`);
          return usage(err);
        }
        arg = argv[++i]!;
      } else if (!found.arg && arg !== undefined) {
        err.write(`${PROGRAM}: option '--${found.name}' doesn't allow an argument\n`);
        return usage(err);
      }
      const r = apply(o, found.name, arg ?? '', number, err);
      if (r) return r;
    } else if (word.startsWith('-') && word.length > 1) {
      for (const ch of word.slice(1)) {
        if (ch !== 'v') {
          err.write(`${PROGRAM}: invalid option -- '${ch}'\n`);
          return usage(err);
        }
        o.verbose++;
      }
    }
    // Anything else is a non-option argument: ignored.
  }
  return o;
}

/** getopt_long's lookup: exact name, else prefixes of replay-log's own options. */
function findLong(name: string, body: string, err: Output): LongOption | ParseExit {
  const exact = [...REPLAY_LOG_OPTIONS, ...DMKIT_OPTIONS].find((opt) => opt.name === name);
  if (exact) return exact;
  const matches = name === '' ? [] : REPLAY_LOG_OPTIONS.filter((opt) => opt.name.startsWith(name));
  if (matches.length === 0) {
    err.write(`${PROGRAM}: unrecognized option '--${body}'\n`);
    return usage(err);
  }
  const first = matches[0]!;
  // glibc reports ambiguity only between candidates that differ in has_arg or val.
  if (matches.some((m) => m.arg !== first.arg || m.val !== first.val)) {
    err.write(`${PROGRAM}: option '--${body}' is ambiguous; possibilities:${matches.map((m) => ` '--${m.name}'`).join('')}\n`);
    return usage(err);
  }
  return first;
}

function apply(
  o: ReplayLogOptions,
  name: OptionName,
  arg: string,
  number: (arg: string, message: string) => bigint | ParseExit,
  err: Output,
): ParseExit | undefined {
  const setNumber = (message: string, set: (v: bigint) => void): ParseExit | undefined => {
    const v = number(arg, message);
    if (typeof v !== 'bigint') return v;
    set(v);
    return undefined;
  };
  switch (name) {
    case 'next-flush': o.stopFlags |= LOG_FLUSH_FLAG; return undefined;
    case 'next-fua': o.stopFlags |= LOG_FUA_FLAG; return undefined;
    case 'start-entry': return setNumber('Invalid entry number', (v) => (o.startEntry = v));
    case 'start-mark': o.startMark = markBytes(arg); return undefined;
    case 'end-mark':
      o.endMark = markBytes(arg);
      o.stopFlags |= LOG_MARK_FLAG;
      return undefined;
    case 'log': o.log = arg; return undefined;
    case 'replay': o.replay = arg; return undefined;
    case 'limit': return setNumber('Invalid entry number', (v) => (o.limit = v));
    case 'verbose': o.verbose++; return undefined;
    case 'find': o.find = true; return undefined;
    case 'num-entries': o.numEntries = true; return undefined;
    case 'no-discard': o.discard = false; return undefined;
    case 'fsck': o.fsck = arg; return undefined;
    case 'check':
      if (arg === 'flush' || arg === 'fua' || arg === 'discard') {
        o.check = arg;
        return undefined;
      }
      o.check = 'number';
      return setNumber('Invalid entry number', (v) => {
        o.checkNumber = v;
      }) ?? (o.checkNumber === 0n ? invalid(err, 'Invalid entry number') : undefined);
    case 'start-sector': return setNumber('Invalid sector number', (v) => (o.startSector = v));
    case 'end-sector': return setNumber('Invalid sector number', (v) => (o.endSector = v));
    case 'explore': o.explore = true; return undefined;
    case 'explore-state':
      o.explore = true;
      return setNumber('Invalid state number', (v) => (o.exploreState = v));
    case 'seed':
      return setNumber('Invalid seed', (v) => (o.seed = Number(BigInt.asUintN(32, v))));
  }
}

function invalid(err: Output, message: string): ParseExit {
  err.write(`${message}\n`);
  return { exit: 1 };
}
