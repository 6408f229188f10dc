/**
 * thin (Linux dm-thin.c thin target, version 1.22.0; spec/thin-metadata.md §9.4):
 *
 *   table:   <pool dev> <dev id> [<external origin dev>]
 *   status:  <mapped sectors> <highest mapped sector|->
 *
 * A thin volume of a pool: the pool device (`/dev/mapper/NAME` or 253:N)
 * must be a mapped device whose live table is a thin-pool. I/O is split at
 * data-block boundaries and handled by pool-io.ts.
 */
import { type Extent, type WriteOptions, type WriteZeroesOptions } from '../../block/device.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import { MappedDevice } from '../../mapper/mapped-device.ts';
import { RequeueRequest } from '../../mapper/requeue.ts';
import type {
  DeviceArea, DeviceRef, StatusType, SuspendOptions, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { ctrError, lookupDevice } from '../common/dev-offset.ts';
import { unsupported } from '../common/io.ts';
import { parseDevId } from './args.ts';
import { ActiveThin, type Pool, type ThinDevice } from './pool-core.ts';
import { ThinIo } from './pool-io.ts';
import { PoolTarget } from './pool.ts';

const TYPE = 'thin';

// ---- constructor ------------------------------------------------------------------

async function thinCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  if (argv.length !== 2 && argv.length !== 3) throw ctrError('Invalid argument count');
  let origin: DeviceRef | undefined;
  if (argv.length === 3) {
    if (argv[2] === argv[0]) throw ctrError('Error setting origin device');
    origin = await lookupDevice(ctx, argv[2]!, 'Error opening origin device');
  }
  const poolRef = await lookupDevice(ctx, argv[0]!, 'Error opening pool device');
  const id = parseDevId(argv[1]!);
  if (id === undefined) throw ctrError('Invalid device id');
  if (!(poolRef.device instanceof MappedDevice)) throw ctrError("Couldn't get pool mapped device");
  const poolTarget = poolRef.device.live?.entries[0]?.target;
  if (!(poolTarget instanceof PoolTarget)) throw ctrError("Couldn't find pool object");
  const pool = poolTarget.pool;
  if (pool.mode === 'fail') throw ctrError("Couldn't open thin device, Pool is in fail mode");
  const active = await activate(pool, id, ctx);
  if (pool.suspended) {
    deactivate(pool, active, ctx);
    throw ctrError('Unable to activate thin device while pool is suspended');
  }
  return new ThinTarget(ctx, poolRef, id, origin, new ThinIo(pool, active, origin));
}

/**
 * dm_pool_open_thin_device: the device must exist; thin targets of one id
 * share its I/O state. Each target is listed with its mapped device, which
 * a pool suspend holds.
 */
async function activate(pool: Pool, id: number, device: ThinDevice): Promise<ActiveThin> {
  const exists = await pool.withMetadata('open_thin_device', async (md) => (await md.deviceDetails(id)) !== null);
  if (!exists) throw ctrError("Couldn't open thin internal device", 'ENODATA');
  let active = pool.active.get(id);
  if (!active) {
    active = new ActiveThin(id);
    await pool.withMetadata('open_thin_device', async () => pool.loadActive(active!));
    pool.active.set(id, active);
  }
  active.targets.add(device);
  return active;
}

function deactivate(pool: Pool, active: ActiveThin, device: ThinDevice): void {
  active.targets.delete(device);
  if (active.targets.size === 0) pool.active.delete(active.id);
}

// ---- I/O mapping ------------------------------------------------------------------

export class ThinTarget implements Target {
  readonly maxIoSectors: number;

  constructor(
    private readonly ctx: TargetContext,
    private readonly poolRef: DeviceRef,
    private readonly id: number,
    private readonly origin: DeviceRef | undefined,
    private readonly io: ThinIo,
  ) {
    this.maxIoSectors = io.pool.blockSectors;
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.io.read(sector, into);
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.io.write(sector, [data], opts);
  }

  writev(sector: number, chunks: readonly Buffer[], opts: WriteOptions): Promise<void> {
    return this.io.write(sector, chunks, opts);
  }

  flush(): Promise<void> {
    return this.io.flush();
  }

  async discard(sector: number, count: number): Promise<void> {
    if (!this.io.pool.features.discardEnabled) throw unsupported(this.ctx, TYPE, 'discard', sector);
    await this.io.discard(sector, count);
  }

  writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void> {
    return this.io.writeZeroes(sector, count, opts);
  }

  extents(sector: number, count: number): Promise<Extent[]> {
    return this.io.extents(sector, count);
  }

  /**
   * Block sizes of the data device; discards iff the pool's are enabled,
   * in whole blocks only, so a discard is not promised to read back zeroes.
   * Write-zeroes (not in Linux's thin) unmaps whole blocks: it keeps
   * sparseness for NBD clients that zero instead of discarding.
   */
  limits(): TargetLimits {
    const l = inheritLimits([this.io.pool.dataRef]);
    return {
      ...l,
      flush: true,
      fua: true,
      discard: this.io.pool.features.discardEnabled,
      writeZeroes: true,
      discardZeroes: false,
    };
  }

  /** thin_iterate_devices: the pool device, over the pool's length. */
  areas(): DeviceArea[] {
    return [{ ref: this.poolRef, start: 0, length: this.poolRef.device.sectors }];
  }

  // ---- status and table ----------------------------------------------------------

  status(type: StatusType): string {
    if (type === 'table') return `${this.poolRef.id} ${this.id}${this.origin ? ` ${this.origin.id}` : ''}`;
    const pool = this.io.pool;
    if (pool.mode === 'fail') return 'Fail';
    const t = this.io.thin;
    const dbs = pool.blockSectors;
    return `${t.mappedBlocks * dbs} ${t.highest < 0 ? '-' : (t.highest + 1) * dbs - 1}`;
  }

  // ---- suspend / resume ------------------------------------------------------------

  /**
   * thin_presuspend: on a noflush suspend — a pool suspend holds its thin
   * devices with one — requests waiting for data space go back to the
   * mapper, which reissues them after resume.
   */
  async presuspend(opts: SuspendOptions): Promise<void> {
    if (opts.noflush) this.io.startRequeue(new RequeueRequest(this.ctx.deviceName));
  }

  async postsuspend(): Promise<void> {
    this.io.endRequeue();
  }

  async close(): Promise<void> {
    deactivate(this.io.pool, this.io.thin, this.ctx);
  }
}

export const thinTarget: TargetType = {
  name: TYPE,
  version: [1, 22, 0],
  construct: thinCtr,
};

