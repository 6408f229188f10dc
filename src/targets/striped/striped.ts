/**
 * striped (Linux dm-stripe.c, target version 1.7.0): RAID-0 over n areas in
 * chunks of c sectors, chunk i on stripe i mod n (basic-targets §8.2).
 *
 *   table:  <#stripes> <chunk> <dev_1> <offset_1> … <dev_n> <offset_n>
 *   status: <#stripes> <dev_1> … <dev_n> 1 <A|D>…
 */
import {
  SECTOR_SIZE, type BlockDevice, type WriteOptions, type WriteZeroesOptions,
} from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { chunksLength, writeChunks } from '../../block/vectored.ts';
import { kstrtouint } from '../../mapper/args.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, DeviceRef, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import {
  ctrError, formatDevOffset, parseDevOffset, type DevOffset, type DevOffsetMessages,
} from '../common/dev-offset.ts';
import { completeAll, isNotSupported, unsupported, type TargetOp } from '../common/io.ts';

const TYPE = 'striped';
const U32_MAX = 0xffffffff;

/** DM_IO_ERROR_THRESHOLD: errors of a stripe beyond this many raise no more events. */
const IO_ERROR_THRESHOLD = 15;

/**
 * kmalloc's ceiling for `struct stripe_c` with its flexible stripe array
 * (x86-64: 4 KiB pages, MAX_PAGE_ORDER 10), and the sizes that fill it: a
 * 64-byte header plus 24 bytes per stripe. Stripe counts past it make the
 * kernel's allocation fail, which dmkit reproduces so that the same tables
 * are refused.
 */
const KMALLOC_MAX_SIZE = 4 * 1024 * 1024;
const STRIPE_C_HEADER_BYTES = 64;
const STRIPE_BYTES = 24;

// ---- mapping (pure; exact for every position below 2^53) -------------------

export interface StripeGeometry {
  /** n, the number of stripes. */
  readonly stripes: number;
  /** c, the chunk size in sectors (any non-zero 32-bit value, not only powers of two). */
  readonly chunk: number;
}

export interface StripeLocation {
  readonly stripe: number;
  /** Sector relative to the stripe's offset on its device. */
  readonly sector: number;
}

/**
 * stripe_map_sector (§8.2.2): target-relative sector x → stripe and sector
 * within it. Remainders come from `%`, which is exact on doubles, and the
 * quotients divide exact multiples, so no step rounds even near 2^53 (a
 * floor of x / chunk could).
 */
export function stripeMapSector({ stripes, chunk }: StripeGeometry, x: number): StripeLocation {
  const inChunk = x % chunk;
  const chunkNr = (x - inChunk) / chunk;
  const stripe = chunkNr % stripes;
  const row = (chunkNr - stripe) / stripes;
  return { stripe, sector: row * chunk + inChunk };
}

/**
 * stripe_map_range_sector (§8.2.5): the boundary p mapped onto stripe t. A
 * boundary on another stripe rounds down to its chunk row, and one row further
 * when stripe t has already passed that row.
 */
function stripeMapBoundary(g: StripeGeometry, p: number, t: number): number {
  const { stripe, sector } = stripeMapSector(g, p);
  if (stripe === t) return sector;
  const rowStart = sector - (sector % g.chunk);
  return t < stripe ? rowStart + g.chunk : rowStart;
}

/**
 * The one contiguous range of stripe t holding exactly the sectors of the
 * target range [a, e) that live on stripe t, as [begin, end) relative to the
 * stripe's offset; begin >= end means none do.
 */
export function stripeMapRange(g: StripeGeometry, a: number, e: number, t: number): [number, number] {
  return [stripeMapBoundary(g, a, t), stripeMapBoundary(g, e, t)];
}

// ---- constructor -----------------------------------------------------------

const STRIPE_MESSAGES: DevOffsetMessages = {
  badOffset: "Couldn't parse stripe destination",
  lookupFailed: "Couldn't parse stripe destination",
};

async function stripeCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  if (argv.length < 2) throw ctrError('Not enough arguments');
  const stripes = kstrtouint(argv[0]!);
  if (!stripes) throw ctrError('Invalid stripe count');
  const chunk = kstrtouint(argv[1]!);
  if (!chunk) throw ctrError('Invalid chunk_size');
  if (ctx.length % stripes !== 0) throw ctrError('Target length not divisible by number of stripes');
  const width = ctx.length / stripes;
  if (width % chunk !== 0) throw ctrError('Target length not divisible by chunk size');
  // Linux computes 2 + 2 × stripes in unsigned 32-bit arithmetic: it wraps for
  // stripes >= 2^31, and the allocation below then refuses the table.
  if (argv.length !== (2 + 2 * stripes) % 2 ** 32) throw ctrError('Not enough destinations specified');
  if (STRIPE_C_HEADER_BYTES + STRIPE_BYTES * stripes > KMALLOC_MAX_SIZE) {
    throw ctrError('Memory allocation for striped context failed', 'ENOMEM');
  }
  // dm_set_target_max_io_len(chunk) refuses lengths above UINT_MAX ("Maximum
  // size of target IO is too large"); a chunk parsed by kstrtouint never is.
  const dests: DevOffset[] = [];
  for (let k = 0; k < stripes; k++) {
    dests.push(await parseDevOffset(ctx, argv[2 + 2 * k]!, argv[3 + 2 * k]!, STRIPE_MESSAGES));
  }
  return new StripedTarget(ctx, { stripes, chunk }, width, dests);
}

// ---- I/O mapping -----------------------------------------------------------

interface Stripe extends DevOffset {
  /** Errors seen on this stripe's device (§8.2.6); never reset. */
  errors: number;
}

class StripedTarget implements Target {
  readonly maxIoSectors: number;
  private readonly stripes: Stripe[];

  constructor(
    private readonly ctx: TargetContext,
    private readonly geometry: StripeGeometry,
    /** Sectors per stripe: target length / #stripes. */
    private readonly width: number,
    dests: readonly DevOffset[],
  ) {
    this.maxIoSectors = geometry.chunk;
    this.stripes = dests.map((d) => ({ ...d, errors: 0 }));
  }

  /**
   * The stripe and device sector of a read/write piece. The mapper splits at
   * multiples of the chunk size (maxIoSectors), so a piece lies in one chunk.
   */
  private mapPiece(op: TargetOp, sector: number, length: number): { stripe: Stripe; at: number } {
    const { chunk } = this.geometry;
    const loc = stripeMapSector(this.geometry, sector);
    const count = length / SECTOR_SIZE;
    if ((loc.sector % chunk) + count > chunk) {
      const at = this.ctx.begin + sector;
      throw new IoError(
        'EINVAL',
        `${this.ctx.deviceName}: ${op} of ${count} sectors at sector ${at} crosses a ${chunk}-sector stripe chunk`,
        { device: this.ctx.deviceName, sector: at },
      );
    }
    const stripe = this.stripes[loc.stripe]!;
    return { stripe, at: stripe.offset + loc.sector };
  }

  async read(sector: number, into: Buffer): Promise<void> {
    const { stripe, at } = this.mapPiece('read', sector, into.length);
    await this.accounted(stripe, stripe.ref.device.read(at, into));
  }

  async write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    const { stripe, at } = this.mapPiece('write', sector, data.length);
    await this.accounted(stripe, stripe.ref.device.write(at, data, opts));
  }

  async writev(sector: number, chunks: readonly Buffer[], opts: WriteOptions): Promise<void> {
    const { stripe, at } = this.mapPiece('write', sector, chunksLength(chunks));
    await this.accounted(stripe, writeChunks(stripe.ref.device, at, chunks, opts));
  }

  /** Per-target flush path (§8.2.4): copy k goes to stripe k's device. */
  flush(): Promise<void> {
    return completeAll(this.stripes.map((s) => this.accounted(s, s.ref.device.flush())));
  }

  async discard(sector: number, count: number): Promise<void> {
    if (!this.stripes.every((s) => s.ref.device.limits.discard)) throw unsupported(this.ctx, TYPE, 'discard', sector);
    await this.eachStripeRange(sector, count, (dev, at, n) => dev.discard(at, n));
  }

  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void> {
    if (!this.stripes.every((s) => s.ref.device.limits.writeZeroes)) {
      throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
    }
    await this.eachStripeRange(sector, count, (dev, at, n) => dev.writeZeroes(at, n, opts));
  }

  /** One copy per stripe, each one contiguous range, not split at chunks (§8.2.5). */
  private eachStripeRange(
    sector: number,
    count: number,
    issue: (dev: BlockDevice, at: number, count: number) => Promise<void>,
  ): Promise<void> {
    const pieces: Promise<void>[] = [];
    this.stripes.forEach((stripe, t) => {
      const [begin, end] = stripeMapRange(this.geometry, sector, sector + count, t);
      if (begin < end) pieces.push(this.accounted(stripe, issue(stripe.ref.device, stripe.offset + begin, end - begin)));
    });
    return completeAll(pieces);
  }

  // ---- errors and events (§8.2.6) --------------------------------------------

  /** stripe_end_io: counts a failure of `stripe`'s device, then passes the error on. */
  private accounted(stripe: Stripe, piece: Promise<void>): Promise<void> {
    return piece.catch((err: unknown) => {
      if (!isNotSupported(err)) this.countError(stripe.ref);
      throw err;
    });
  }

  /** Every stripe entry on the failing device counts it; the first 14 raise an event. */
  private countError(failed: DeviceRef): void {
    for (const s of this.stripes) {
      if (s.ref.id !== failed.id) continue;
      s.errors++;
      if (s.errors < IO_ERROR_THRESHOLD) this.ctx.raiseEvent();
    }
  }

  limits(): TargetLimits {
    const limits = inheritLimits(this.stripes.map((s) => s.ref));
    // stripe_io_hints: io_min = chunk × 512, io_opt = io_min × #stripes, both
    // left as inherited when they do not fit Linux's 32-bit fields (§10.2
    // bug 5). io_min < 2^41 is exact; io_opt may round past 2^53, but only
    // where it is far beyond 2^32, so the comparison is still right.
    const ioMin = this.geometry.chunk * SECTOR_SIZE;
    const ioOpt = ioMin * this.geometry.stripes;
    if (ioMin <= U32_MAX && ioOpt <= U32_MAX) {
      limits.ioMin = ioMin;
      limits.ioOpt = ioOpt;
    }
    return limits;
  }

  areas(): DeviceArea[] {
    return this.stripes.map((s) => ({ ref: s.ref, start: s.offset, length: this.width }));
  }

  // ---- status ----------------------------------------------------------------

  status(type: StatusType): string {
    const n = this.geometry.stripes;
    if (type === 'table') {
      return `${n} ${this.geometry.chunk}${this.stripes.map((s) => ` ${formatDevOffset(s)}`).join('')}`;
    }
    const devices = this.stripes.map((s) => `${s.ref.id} `).join('');
    const health = this.stripes.map((s) => (s.errors > 0 ? 'D' : 'A')).join('');
    return `${n} ${devices}1 ${health}`;
  }

  async close(): Promise<void> {
    // Nothing to release: the mapper puts the devices.
  }
}

export const stripedTarget: TargetType = {
  name: TYPE,
  version: [1, 7, 0],
  construct: stripeCtr,
};
