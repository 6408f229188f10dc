/**
 * error (Linux dm-target.c io_err, target version 1.7.0): every read, write
 * and discard fails with EIO; flushes are never sent to it and succeed
 * (basic-targets §8.4, §10.1 rule 8). A wildcard type: an error table may
 * replace an immutable target's table.
 *
 *   table:  [<dev> <offset>]   (exactly two arguments: a device whose limits
 *                               it inherits; any other count is ignored)
 *   status: (empty), even with a device
 */
import type { WriteZeroesOptions } from '../../block/device.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { parseDevOffset, type DevOffset } from '../common/dev-offset.ts';
import { targetIoError, unsupported, type TargetOp } from '../common/io.ts';

const TYPE = 'error';

// ---- constructor -----------------------------------------------------------

async function ioErrCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  // Mainline: exactly two arguments are `<dev> <offset>` parsed as linear does;
  // every other argument count (1, 3, …) is accepted and ignored.
  const dest = argv.length === 2 ? await parseDevOffset(ctx, argv[0]!, argv[1]!) : undefined;
  return new ErrorTarget(ctx, dest);
}

// ---- I/O -------------------------------------------------------------------

class ErrorTarget implements Target {
  constructor(
    private readonly ctx: TargetContext,
    private readonly dest: DevOffset | undefined,
  ) {}

  private fail(op: TargetOp, sector: number): Promise<never> {
    return Promise.reject(targetIoError(this.ctx, TYPE, 'EIO', op, sector, 'I/O error'));
  }

  read(sector: number): Promise<void> {
    return this.fail('read', sector);
  }

  write(sector: number): Promise<void> {
    return this.fail('write', sector);
  }

  async flush(): Promise<void> {
    // num_flush_bios = 0: the core never sends the target a flush; it succeeds.
  }

  discard(sector: number): Promise<void> {
    // Mainline declares discard support so that discards fail with EIO, not EOPNOTSUPP.
    return this.fail('discard', sector);
  }

  async writeZeroes(sector: number, _count: number, _opts: WriteZeroesOptions): Promise<void> {
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  limits(): TargetLimits {
    const inherited = inheritLimits(this.dest ? [this.dest.ref] : []);
    return { ...inherited, discard: true, discardZeroes: false, writeZeroes: false };
  }

  areas(): DeviceArea[] {
    return this.dest ? [{ ref: this.dest.ref, start: this.dest.offset, length: this.ctx.length }] : [];
  }

  // ---- status --------------------------------------------------------------

  status(_type: StatusType): string {
    return '';
  }

  async close(): Promise<void> {}
}

export const errorTarget: TargetType = {
  name: TYPE,
  version: [1, 7, 0],
  features: { wildcard: true },
  construct: ioErrCtr,
};
