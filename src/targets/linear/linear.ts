/**
 * linear (Linux dm-linear.c, target version 1.5.0): maps the target's sectors
 * one to one onto a contiguous area of one device (basic-targets §8.1).
 *
 *   table:  <dev> <offset>
 *   status: (empty)
 */
import type { Extent, WriteOptions, WriteZeroesOptions } from '../../block/device.ts';
import { writeChunks } from '../../block/vectored.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { ctrError, formatDevOffset, parseDevOffset, type DevOffset } from '../common/dev-offset.ts';
import { unsupported } from '../common/io.ts';

const TYPE = 'linear';

// ---- constructor -----------------------------------------------------------

async function linearCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  if (argv.length !== 2) throw ctrError('Invalid argument count');
  return new LinearTarget(ctx, await parseDevOffset(ctx, argv[0]!, argv[1]!));
}

// ---- I/O mapping -----------------------------------------------------------

class LinearTarget implements Target {
  /** Present only when the device can report its allocation map. */
  readonly extents?: (sector: number, count: number) => Promise<Extent[]>;

  constructor(
    private readonly ctx: TargetContext,
    private readonly dest: DevOffset,
  ) {
    const { device } = dest.ref;
    if (device.extents) {
      const deviceExtents = device.extents.bind(device);
      this.extents = async (sector, count) => {
        const extents = await deviceExtents(this.map(sector), count);
        return extents.map((e) => ({ ...e, sector: e.sector - dest.offset }));
      };
    }
  }

  /** linear_map_sector: offset + (S − T). */
  private map(sector: number): number {
    return this.dest.offset + sector;
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.dest.ref.device.read(this.map(sector), into);
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.dest.ref.device.write(this.map(sector), data, opts);
  }

  writev(sector: number, chunks: readonly Buffer[], opts: WriteOptions): Promise<void> {
    return writeChunks(this.dest.ref.device, this.map(sector), chunks, opts);
  }

  flush(): Promise<void> {
    return this.dest.ref.device.flush();
  }

  async discard(sector: number, count: number): Promise<void> {
    if (!this.dest.ref.device.limits.discard) throw unsupported(this.ctx, TYPE, 'discard', sector);
    await this.dest.ref.device.discard(this.map(sector), count);
  }

  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void> {
    if (!this.dest.ref.device.limits.writeZeroes) throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
    await this.dest.ref.device.writeZeroes(this.map(sector), count, opts);
  }

  limits(): TargetLimits {
    return inheritLimits([this.dest.ref]);
  }

  areas(): DeviceArea[] {
    return [{ ref: this.dest.ref, start: this.dest.offset, length: this.ctx.length }];
  }

  // ---- status --------------------------------------------------------------

  status(type: StatusType): string {
    return type === 'table' ? formatDevOffset(this.dest) : '';
  }

  async close(): Promise<void> {
    // Nothing to release: the mapper puts the device (dm_put_device).
  }
}

export const linearTarget: TargetType = {
  name: TYPE,
  version: [1, 5, 0],
  construct: linearCtr,
};
