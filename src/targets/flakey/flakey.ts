/**
 * flakey (Linux dm-flakey.c, target version 1.5.0, mainline behaviour): a
 * linear mapping that is "up" for <up interval> seconds and then "down" for
 * <down interval> seconds, over and over, counted from table load. While down,
 * the configured features fail, drop or corrupt I/O (flakey.md).
 *
 *   table:  <dev> <offset> <up interval> <down interval>
 *           [<num_features> [<feature arguments>...]]
 *   status: (empty)
 */
import type { WriteOptions, WriteZeroesOptions } from '../../block/device.ts';
import { parseU32Wrapping } from '../../mapper/args.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, DeviceRef, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { ctrError, lookupDevice, parseOffset } from '../common/dev-offset.ts';
import { targetIoError, unsupported, type TargetOp } from '../common/io.ts';
import { READ_OPF, opfMatches, writeOpf } from './bio-opf.ts';
import { BufferPool } from './buffer-pool.ts';
import { cryptoRandom, randomU64, type RandomSource } from './random.ts';

const TYPE = 'flakey';

/** Probabilities are parts per 10^9 (PROBABILITY_BASE). */
const PROBABILITY_BASE = 1_000_000_000;
/** dm_read_arg_group maximum for the feature group (mainline; 6 on Linux 6.1). */
const MAX_FEATURE_ARGS = 11;

interface CorruptBioByte {
  /** 1-based byte of the payload. */
  readonly nthByte: number;
  readonly direction: 'r' | 'w';
  readonly value: number;
  /** Mask over bi_opf (flakey §4.4). */
  readonly flags: number;
}

interface FlakeyConfig {
  readonly offset: number;
  readonly up: number;
  readonly down: number;
  readonly errorReads: boolean;
  readonly dropWrites: boolean;
  readonly errorWrites: boolean;
  readonly corrupt: CorruptBioByte | undefined;
  readonly randomReadCorrupt: number;
  readonly randomWriteCorrupt: number;
}

// ---- constructor -----------------------------------------------------------

/** dm_arg_set: the argument vector and a cursor, as Linux's ctr helpers consume it. */
class ArgSet {
  private next = 0;
  constructor(private readonly argv: readonly string[]) {}
  get remaining(): number {
    return this.argv.length - this.next;
  }
  shift(): string | undefined {
    return this.next < this.argv.length ? this.argv[this.next++] : undefined;
  }
}

/** dm_read_arg: `%u%c` in [min, max], else the argument's own error text. */
function readArg(as: ArgSet, min: number, max: number, error: string): number {
  const word = as.shift();
  const v = word === undefined ? undefined : parseU32Wrapping(word);
  if (v === undefined || v < min || v > max) throw ctrError(error);
  return v;
}

/** dm_read_arg_group: as readArg, and the count may not exceed the words left. */
function readArgGroup(as: ArgSet, max: number, error: string): number {
  const n = readArg(as, 0, max, error);
  if (as.remaining < n) throw ctrError(error);
  return n;
}

const same = (a: string, b: string): boolean => a.toLowerCase() === b;

/** parse_features, in Linux's order and with its texts (flakey §2.1, §2.2). */
function parseFeatures(as: ArgSet): Omit<FlakeyConfig, 'offset' | 'up' | 'down'> {
  let errorReads = false;
  let dropWrites = false;
  let errorWrites = false;
  let corrupt: CorruptBioByte | undefined;
  let randomReadCorrupt = 0;
  let randomWriteCorrupt = 0;

  let argc = as.remaining > 0 ? readArgGroup(as, MAX_FEATURE_ARGS, 'Invalid number of feature args') : 0;
  while (argc > 0) {
    const name = as.shift();
    argc--;
    if (name === undefined) throw ctrError('Insufficient feature arguments');

    if (same(name, 'error_reads')) {
      if (errorReads) throw ctrError('Feature error_reads duplicated');
      errorReads = true;
    } else if (same(name, 'drop_writes')) {
      if (dropWrites) throw ctrError('Feature drop_writes duplicated');
      if (errorWrites) throw ctrError('Feature drop_writes conflicts with feature error_writes');
      dropWrites = true;
    } else if (same(name, 'error_writes')) {
      if (errorWrites) throw ctrError('Feature error_writes duplicated');
      if (dropWrites) throw ctrError('Feature error_writes conflicts with feature drop_writes');
      errorWrites = true;
    } else if (same(name, 'corrupt_bio_byte')) {
      if (corrupt) throw ctrError('Feature corrupt_bio_byte duplicated');
      if (argc < 4) throw ctrError('Feature corrupt_bio_byte requires 4 parameters');
      const nthByte = readArg(as, 1, 0xffffffff, 'Invalid corrupt bio byte');
      const dir = as.shift();
      if (dir === undefined || (!same(dir, 'r') && !same(dir, 'w'))) {
        throw ctrError('Invalid corrupt bio direction (r or w)');
      }
      const value = readArg(as, 0, 255, 'Invalid corrupt value to write into bio byte (0-255)');
      const flags = readArg(as, 0, 0xffffffff, 'Invalid corrupt bio flags mask');
      corrupt = { nthByte, direction: same(dir, 'w') ? 'w' : 'r', value, flags };
      argc -= 4;
    } else if (same(name, 'random_read_corrupt') || same(name, 'random_write_corrupt')) {
      const read = same(name, 'random_read_corrupt');
      const canonical = read ? 'random_read_corrupt' : 'random_write_corrupt';
      // Linux tests the stored value, so a first `0` counts as absent (flakey §2.1).
      if ((read ? randomReadCorrupt : randomWriteCorrupt) !== 0) throw ctrError(`Feature ${canonical} duplicated`);
      if (argc === 0) throw ctrError(`Feature ${canonical} requires a parameter`);
      const p = readArg(as, 0, PROBABILITY_BASE, 'Invalid random corrupt argument');
      if (read) randomReadCorrupt = p;
      else randomWriteCorrupt = p;
      argc--;
    } else {
      throw ctrError('Unrecognised flakey feature requested');
    }
  }

  const corruptsWrites = corrupt?.direction === 'w' || randomWriteCorrupt > 0;
  const corruptsReads = corrupt?.direction === 'r' || randomReadCorrupt > 0;
  if (dropWrites && corruptsWrites) {
    throw ctrError('drop_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set');
  }
  if (errorWrites && corruptsWrites) {
    throw ctrError('error_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set');
  }
  if (errorReads && corruptsReads) {
    throw ctrError('error_reads is incompatible with random_read_corrupt or corrupt_bio_byte with the READ flag set');
  }

  // No effective feature: error everything, and say so in the table (§2.2).
  if (!corrupt && !errorReads && !dropWrites && !errorWrites && !randomReadCorrupt && !randomWriteCorrupt) {
    errorReads = true;
    errorWrites = true;
  }
  return { errorReads, dropWrites, errorWrites, corrupt, randomReadCorrupt, randomWriteCorrupt };
}

/** flakey_ctr: the device is looked up last, after everything else parsed. */
async function flakeyCtr(ctx: TargetContext, argv: string[], random: RandomSource): Promise<Target> {
  if (argv.length < 4) throw ctrError('Invalid argument count');
  // Linux captures start_time at the top of the ctr (jiffies), before parsing.
  const startTime = ctx.clock.now();
  const as = new ArgSet(argv);
  const devWord = as.shift()!;
  const offset = parseOffset(as.shift()!, 'Invalid device sector');
  const up = readArg(as, 0, 0xffffffff, 'Invalid up interval');
  const down = readArg(as, 0, 0xffffffff, 'Invalid down interval');
  // Both checks on the unsigned 32-bit sum, as Linux computes it: a sum that
  // wraps to exactly 0 is reported as zero, not as an overflow.
  const total = (up + down) % 2 ** 32;
  if (total === 0) throw ctrError('Total (up + down) interval is zero');
  if (total < up) throw ctrError('Interval overflow');
  const features = parseFeatures(as);
  // Leftover words after the feature group are ignored, as in Linux.
  const ref = await lookupDevice(ctx, devWord, 'Device lookup failed');
  return new FlakeyTarget(ctx, ref, { offset, up, down, ...features }, startTime, random);
}

// ---- I/O mapping -----------------------------------------------------------

class FlakeyTarget implements Target {
  private readonly copies = new BufferPool();

  constructor(
    private readonly ctx: TargetContext,
    private readonly ref: DeviceRef,
    private readonly cfg: FlakeyConfig,
    private readonly startTime: number,
    private readonly random: RandomSource,
  ) {}

  /**
   * Decided once per request, at submission (flakey §3, §8 rule 1): whole
   * seconds since table load, as an unsigned 32-bit count.
   */
  private isDown(): boolean {
    const elapsed = Math.floor((this.ctx.clock.now() - this.startTime) / 1000) % 2 ** 32;
    return elapsed % (this.cfg.up + this.cfg.down) >= this.cfg.up;
  }

  private map(sector: number): number {
    return this.cfg.offset + sector;
  }

  private downError(op: TargetOp, sector: number, feature: string): Error {
    return targetIoError(this.ctx, TYPE, 'EIO', op, sector, `failed in the down interval (${feature})`);
  }

  async read(sector: number, into: Buffer): Promise<void> {
    const down = this.isDown();
    if (down && this.cfg.errorReads) throw this.downError('read', sector, 'error_reads');
    await this.ref.device.read(this.map(sector), into);
    // flakey_end_io: only successful reads submitted while down are corrupted.
    if (!down) return;
    const { corrupt } = this.cfg;
    if (corrupt?.direction === 'r' && opfMatches(READ_OPF, corrupt.flags)) corruptByte(into, corrupt);
    if (this.randomHit(this.cfg.randomReadCorrupt)) this.corruptRandom(into);
  }

  async write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    if (this.isDown()) {
      if (this.cfg.dropWrites) return;
      if (this.cfg.errorWrites) throw this.downError('write', sector, 'error_writes');
      const { corrupt } = this.cfg;
      const fixed = corrupt?.direction === 'w' && opfMatches(writeOpf(opts), corrupt.flags);
      const random = this.randomHit(this.cfg.randomWriteCorrupt);
      if (fixed || random) return this.writeCorrupted(sector, data, opts, fixed ? corrupt : undefined, random);
    }
    await this.ref.device.write(this.map(sector), data, opts);
  }

  /**
   * The caller's buffer is never modified (flakey §8 rule 5; Linux bug
   * "clone pages on write bio before corrupting them"): corrupt a pooled copy.
   */
  private async writeCorrupted(
    sector: number, data: Buffer, opts: WriteOptions, fixed: CorruptBioByte | undefined, random: boolean,
  ): Promise<void> {
    const whole = this.copies.acquire(data.length);
    const copy = whole.subarray(0, data.length);
    data.copy(copy);
    if (fixed) corruptByte(copy, fixed);
    if (random) this.corruptRandom(copy);
    try {
      await this.ref.device.write(this.map(sector), copy, opts);
    } finally {
      this.copies.release(whole);
    }
  }

  /** An empty flush is a write without data: dropped, failed or passed (flakey §4.3). */
  async flush(): Promise<void> {
    if (this.isDown()) {
      if (this.cfg.dropWrites) return;
      if (this.cfg.errorWrites) throw this.downError('flush', 0, 'error_writes');
    }
    await this.ref.device.flush();
  }

  async discard(sector: number, count: number): Promise<void> {
    if (!this.ref.device.limits.discard) throw unsupported(this.ctx, TYPE, 'discard', sector);
    if (this.isDown()) {
      if (this.cfg.dropWrites) return;
      if (this.cfg.errorWrites) throw this.downError('discard', sector, 'error_writes');
    }
    await this.ref.device.discard(this.map(sector), count);
  }

  /** flakey declares no write-zeroes bios, so the core never offers it (flakey §1). */
  async writeZeroes(sector: number, _count: number, _opts: WriteZeroesOptions): Promise<void> {
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  /** get_random_u64() mod 10^9 < P. */
  private randomHit(probability: number): boolean {
    return probability > 0 && randomU64(this.random) % BigInt(PROBABILITY_BASE) < BigInt(probability);
  }

  /** corrupt_bio_random: one byte at a random offset gets a random value. */
  private corruptRandom(buf: Buffer): void {
    const at = this.random.u32() % buf.length;
    buf[at] = this.random.u32() & 0xff;
  }

  limits(): TargetLimits {
    return { ...inheritLimits([this.ref]), writeZeroes: false };
  }

  areas(): DeviceArea[] {
    return [{ ref: this.ref, start: this.cfg.offset, length: this.ctx.length }];
  }

  // ---- status --------------------------------------------------------------

  /** flakey_status (flakey §5): table text from fixed pieces; info is empty. */
  status(type: StatusType): string {
    if (type === 'info') return '';
    const c = this.cfg;
    const count = +c.errorReads + +c.dropWrites + +c.errorWrites + (c.corrupt ? 5 : 0) +
      (c.randomReadCorrupt > 0 ? 2 : 0) + (c.randomWriteCorrupt > 0 ? 2 : 0);
    let out = `${this.ref.id} ${c.offset} ${c.up} ${c.down} ${count}`;
    if (c.errorReads) out += ' error_reads';
    if (c.dropWrites) out += ' drop_writes';
    else if (c.errorWrites) out += ' error_writes';
    if (c.corrupt) {
      out += ` corrupt_bio_byte ${c.corrupt.nthByte} ${c.corrupt.direction} ${c.corrupt.value} ${c.corrupt.flags}`;
    }
    if (c.randomReadCorrupt > 0) out += ` random_read_corrupt ${c.randomReadCorrupt}`;
    if (c.randomWriteCorrupt > 0) out += ` random_write_corrupt ${c.randomWriteCorrupt}`;
    return out;
  }

  async close(): Promise<void> {
    // Nothing to release: the mapper puts the device.
  }
}

/** corrupt_bio_data: byte Nth_byte − 1 of the payload, if the payload is that long (flakey §8 rule 6). */
function corruptByte(buf: Buffer, c: CorruptBioByte): void {
  if (c.nthByte <= buf.length) buf[c.nthByte - 1] = c.value;
}

/**
 * A flakey type drawing its corruption randomness from `random`. Linux has no
 * seed; tests and the crash explorer register a seeded source to make runs
 * reproducible.
 */
export function makeFlakeyTarget(random: RandomSource = cryptoRandom()): TargetType {
  return {
    name: TYPE,
    version: [1, 5, 0],
    construct: (ctx, argv) => flakeyCtr(ctx, argv, random),
  };
}

export const flakeyTarget: TargetType = makeFlakeyTarget();
