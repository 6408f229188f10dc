/**
 * thin-pool (Linux dm-thin.c pool target, version 1.22.0 as in Linux 6.1;
 * spec/thin-metadata.md §9):
 *
 *   table:   <metadata dev> <data dev> <data block size> <low water mark> [<#features> <feature>*]
 *   status:  <transaction id> <used>/<total metadata blocks> <used>/<total data blocks>
 *            <held root|-> rw|ro|out_of_data_space ignore_discard|discard_passdown|no_discard_passdown
 *            error_if_no_space|queue_if_no_space needs_check|- <metadata low watermark>
 *   messages: create_thin, create_snap, delete, set_transaction_id,
 *            reserve_metadata_snap, release_metadata_snap
 *
 * I/O to the pool device itself goes straight to the data device. The pool
 * object (pool-core.ts) is shared by every table built on the same
 * metadata device and bound to the table that resumes last.
 */
import type { BlockDevice, WriteOptions, WriteZeroesOptions } from '../../block/device.ts';
import { type Errno, type IoError, toIoError } from '../../block/errors.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, DeviceRef, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { MAX_TIME } from '../../pdata/thin/block-time.ts';
import { kstrtouint } from '../../mapper/args.ts';
import { ctrError, lookupDevice } from '../common/dev-offset.ts';
import { kstrtoull, parseDevId } from './args.ts';
import { type BrokenPool, Pool, type PoolFeatures, type PoolOwner, PoolRefusal } from './pool-core.ts';

const TYPE = 'thin-pool';
/** Data block size bounds, sectors: 64 KiB … 1 GiB in multiples of 64 KiB (spec §9.1). */
const MIN_BLOCK_SECTORS = 128;
const MAX_BLOCK_SECTORS = 2097152;
const MAX_FEATURES = 4;

/** Linux's __pool_table: pools by metadata device, and which data device each uses. */
const poolsByMetadata = new WeakMap<BlockDevice, Pool>();
const poolsByData = new WeakMap<BlockDevice, Pool>();

export interface ThinPoolOptions {
  /** Test-only broken variant (CRASH-TESTING §3). */
  broken?: BrokenPool;
}

// ---- constructor ------------------------------------------------------------------

function parseFeatures(args: readonly string[]): PoolFeatures {
  const f: PoolFeatures = { zeroNewBlocks: true, discardEnabled: true, discardPassdown: true, readOnly: false, errorIfNoSpace: false };
  if (args.length === 0) return f;
  const count = kstrtouint(args[0]!);
  if (count === undefined || count > MAX_FEATURES || count > args.length - 1) throw ctrError('Invalid number of pool feature arguments');
  for (const word of args.slice(1, 1 + count)) {
    switch (word.toLowerCase()) {
      case 'skip_block_zeroing': f.zeroNewBlocks = false; break;
      case 'ignore_discard': f.discardEnabled = false; break;
      case 'no_discard_passdown': f.discardPassdown = false; break;
      case 'read_only': f.readOnly = true; break;
      case 'error_if_no_space': f.errorIfNoSpace = true; break;
      default: throw ctrError('Unrecognised pool feature requested');
    }
  }
  return f;
}

/** The feature words of a table line, in Linux's emit order. */
function featureWords(f: PoolFeatures): string[] {
  return [
    !f.zeroNewBlocks && 'skip_block_zeroing',
    !f.discardEnabled && 'ignore_discard',
    !f.discardPassdown && 'no_discard_passdown',
    f.readOnly && 'read_only',
    f.errorIfNoSpace && 'error_if_no_space',
  ].filter((w): w is string => w !== false);
}

function parseBlockSize(word: string): number {
  const v = kstrtoull(word);
  if (v === undefined || v < MIN_BLOCK_SECTORS || v > MAX_BLOCK_SECTORS || v % MIN_BLOCK_SECTORS !== 0) throw ctrError('Invalid block size');
  return v;
}

async function poolCtr(ctx: TargetContext, argv: string[], opts: ThinPoolOptions): Promise<Target> {
  if (argv.length < 4) throw ctrError('Invalid argument count');
  if (argv[0] === argv[1]) throw ctrError('Error setting metadata or data device');
  const features = parseFeatures(argv.slice(4));
  const meta = await lookupDevice(ctx, argv[0]!, 'Error opening metadata block device');
  const data = await lookupDevice(ctx, argv[1]!, 'Error getting data device');
  const blockSectors = parseBlockSize(argv[2]!);
  const lowWater = kstrtoull(argv[3]!);
  if (lowWater === undefined) throw ctrError('Invalid low water mark');
  const { pool, created } = await findOrCreatePool(ctx, meta, data, blockSectors, features, opts);
  if (!created && features.discardEnabled !== pool.features.discardEnabled) {
    throw ctrError('Discard support cannot be disabled once enabled');
  }
  pool.users++;
  return new PoolTarget(ctx, pool, meta, data, lowWater, features);
}

/** __pool_find: the pool of this metadata device, or a new one on it (spec §9.1 step 7). */
async function findOrCreatePool(
  ctx: TargetContext, meta: DeviceRef, data: DeviceRef, blockSectors: number, features: PoolFeatures, opts: ThinPoolOptions,
): Promise<{ pool: Pool; created: boolean }> {
  const existing = poolsByMetadata.get(meta.device);
  if (existing) {
    if (existing.mdName !== ctx.md) throw ctrError('metadata device already in use by a pool', 'EBUSY');
    if (existing.dataRef.device !== data.device) throw ctrError('data device already in use by a pool', 'EBUSY');
    if (existing.blockSectors !== blockSectors) {
      ctx.log.error(`changing the data block size (from ${existing.blockSectors} to ${blockSectors}) is not supported`);
      throw ctrError('Error creating metadata object');
    }
    return { pool: existing, created: false };
  }
  if (poolsByData.has(data.device)) throw ctrError('data device already in use by a pool', 'EBUSY');
  let md;
  try {
    md = await Pool.openMetadata(meta.device, blockSectors, features.readOnly, ctx.log);
  } catch (err) {
    const e = toIoError(err);
    ctx.log.error(`${ctx.md}: could not open metadata on ${meta.diskName}: ${e.message}`);
    throw ctrError('Error creating metadata object', e.code === 'EPERM' ? 'EPERM' : 'EINVAL');
  }
  const pool = new Pool(md, meta, data, blockSectors, ctx.md, ctx.clock, ownerOf(ctx), features, opts.broken);
  poolsByMetadata.set(meta.device, pool);
  poolsByData.set(data.device, pool);
  return { pool, created: true };
}

function ownerOf(ctx: TargetContext): PoolOwner {
  return { log: ctx.log, raiseEvent: () => ctx.raiseEvent() };
}

// ---- I/O mapping: the pool device is the data device ---------------------------------

export class PoolTarget implements Target {
  /** The status commit just failed the pool: Linux's getters then fail and that one status prints `Error`. */
  private failedByStatusCommit = false;

  constructor(
    private readonly ctx: TargetContext,
    readonly pool: Pool,
    private readonly meta: DeviceRef,
    private readonly data: DeviceRef,
    private readonly lowWater: number,
    private readonly requested: PoolFeatures,
  ) {}

  read(sector: number, into: Buffer): Promise<void> {
    return this.data.device.read(sector, into);
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.data.device.write(sector, data, opts);
  }

  flush(): Promise<void> {
    return this.data.device.flush();
  }

  discard(sector: number, count: number): Promise<void> {
    return this.data.device.discard(sector, count);
  }

  writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void> {
    return this.data.device.writeZeroes(sector, count, opts);
  }

  /** pool_io_hints: io_min and io_opt are the data block size; no discards with ignore_discard. */
  limits(): TargetLimits {
    const l = inheritLimits([this.data]);
    const block = this.pool.blockSectors * 512;
    return { ...l, ioMin: block, ioOpt: block, discard: l.discard && this.requested.discardEnabled };
  }

  /** pool_iterate_devices: the data device, over the pool's length. */
  areas(): DeviceArea[] {
    return [{ ref: this.data, start: 0, length: this.ctx.length }];
  }

  // ---- status and table ----------------------------------------------------------

  /**
   * Commits so the figures are current unless the pool is suspended (spec
   * §9.3, pool_status); the commit path is Pool.commit unchanged (R1–R3). A
   * failed commit is reported by the status as Linux then prints it: `ro`
   * and needs_check after an abort; `Error` when it failed the pool (the
   * mode was read before the commit, the getters then fail), `Fail` after.
   */
  async prepareStatus(): Promise<void> {
    const pool = this.pool;
    const failed = () => pool.mode === 'fail';
    if (pool.suspended || failed()) return;
    await pool.commit().catch(() => undefined);
    this.failedByStatusCommit = failed();
  }

  status(type: StatusType): string {
    if (type === 'table') {
      const words = featureWords(this.requested);
      return `${this.meta.id} ${this.data.id} ${this.pool.blockSectors} ${this.lowWater} ${words.length} ${words.map((w) => `${w} `).join('')}`;
    }
    const pool = this.pool;
    if (this.failedByStatusCommit) {
      this.failedByStatusCommit = false;
      return 'Error';
    }
    if (pool.mode === 'fail') return 'Fail';
    try {
      const md = pool.metadata;
      const metaTotal = md.metadataSm.nrBlocks;
      const dataTotal = md.dataSm.nrBlocks;
      const mode = pool.mode === 'write' ? 'rw' : pool.mode === 'out-of-data-space' ? 'out_of_data_space' : 'ro';
      const f = pool.features;
      const discard = !f.discardEnabled ? 'ignore_discard' : f.discardPassdown && pool.data.limits.discard ? 'discard_passdown' : 'no_discard_passdown';
      return [
        md.transactionId,
        `${metaTotal - pool.freeMetadataBlocks()}/${metaTotal}`,
        `${dataTotal - md.dataSm.nrFree()}/${dataTotal}`,
        md.heldRoot === 0 ? '-' : md.heldRoot,
        mode,
        discard,
        pool.errorIfNoSpace ? 'error_if_no_space' : 'queue_if_no_space',
        pool.needsCheck ? 'needs_check' : '-',
        pool.metadataLowWater,
      ].map((t) => `${t} `).join('');
    } catch {
      return 'Error';
    }
  }

  // ---- messages (spec §9.5) ------------------------------------------------------

  async message(argv: string[]): Promise<string | undefined> {
    const pool = this.pool;
    if (!pool.writable) {
      throw this.refuse('EOPNOTSUPP', `${this.ctx.md}: unable to service pool target messages in READ_ONLY or FAIL mode`);
    }
    const name = argv[0]!.toLowerCase();
    const handler = MESSAGES[name];
    if (!handler) throw this.refuse('EINVAL', `${this.ctx.md}: Unrecognised thin pool target message received: ${argv[0]}`);
    if (argv.length !== handler.args) {
      throw this.refuse('EINVAL', `Message received with ${argv.length} arguments instead of ${handler.args}.`);
    }
    await handler.run(this, argv.slice(1));
    // Every successful message is followed by a commit (pool_message).
    await pool.commit();
    return undefined;
  }

  refuse(code: Errno, text: string): IoError {
    this.ctx.log.warn(text);
    return new PoolRefusal(code, text);
  }

  devId(word: string): number {
    const id = parseDevId(word);
    if (id === undefined) throw this.refuse('EINVAL', `Message received with invalid device id: ${word}`);
    return id;
  }

  // ---- suspend / resume ------------------------------------------------------------

  /** pool_presuspend: the active thin devices are held (suspended internally). */
  async presuspend(): Promise<void> {
    await this.pool.presuspend();
  }

  async postsuspend(): Promise<void> {
    await this.pool.suspend();
  }

  /** Binds this table to the pool: features, low water mark, data device size (spec §9.7). */
  async preresume(): Promise<void> {
    await this.pool.bind(ownerOf(this.ctx), this.requested, this.lowWater, Math.floor(this.ctx.length / this.pool.blockSectors));
  }

  /** pool_resume: the thin devices held since presuspend go on. */
  async resume(): Promise<void> {
    await this.pool.resume();
  }

  /** pool_dtr: the last table of the pool commits and closes the metadata. */
  async close(): Promise<void> {
    if (--this.pool.users > 0) return;
    poolsByMetadata.delete(this.meta.device);
    poolsByData.delete(this.data.device);
    await this.pool.destroy();
  }
}

interface MessageHandler {
  /** argc, the message name included (check_arg_count). */
  args: number;
  run(t: PoolTarget, args: string[]): Promise<void>;
}

/** Each handler refuses what the user got wrong (PoolRefusal) before touching the metadata: any other error is a metadata failure. */
const MESSAGES: Record<string, MessageHandler> = {
  create_thin: {
    args: 2,
    async run(t, [id]) {
      const dev = t.devId(id!);
      await t.pool.withMetadata('create_thin', async (md) => {
        if (await md.deviceDetails(dev)) throw t.refuse('EEXIST', `Creation of new thinly-provisioned device with id ${dev} failed.`);
        await md.createThin(dev);
        t.pool.changed();
      });
    },
  },
  create_snap: {
    args: 3,
    async run(t, [id, originId]) {
      const dev = t.devId(id!);
      const origin = t.devId(originId!);
      const snap = () => t.pool.withMetadata('create_snap', async (md) => {
        if (await md.deviceDetails(dev)) throw t.refuse('EEXIST', `Creation of new snapshot ${dev} of device ${origin} failed.`);
        if (!(await md.deviceDetails(origin))) throw t.refuse('ENODATA', `Creation of new snapshot ${dev} of device ${origin} failed.`);
        if (md.time >= MAX_TIME) throw t.refuse('EINVAL', `Creation of new snapshot ${dev}: the pool time would reach 2^24.`);
        await md.createSnap(dev, origin);
        t.pool.changed();
      });
      // The origin is quiesced: no write of it is in flight while its mappings become shared.
      const active = t.pool.active.get(origin);
      await (active ? active.gate.quiesce(snap) : snap());
    },
  },
  delete: {
    args: 2,
    async run(t, [id]) {
      const dev = t.devId(id!);
      if (t.pool.active.has(dev)) throw t.refuse('EBUSY', `Deletion of thin device ${dev} failed.`);
      await t.pool.withMetadata('delete', async (md) => {
        if (!(await md.deviceDetails(dev))) throw t.refuse('ENODATA', `Deletion of thin device ${dev} failed.`);
        await md.deleteDevice(dev);
        t.pool.changed();
      });
    },
  },
  set_transaction_id: {
    args: 3,
    async run(t, [current, next]) {
      const old = kstrtoull(current!);
      if (old === undefined) throw t.refuse('EINVAL', `set_transaction_id message: Unrecognised id ${current}.`);
      const id = kstrtoull(next!);
      if (id === undefined) throw t.refuse('EINVAL', `set_transaction_id message: Unrecognised new id ${next}.`);
      await t.pool.withMetadata('set_transaction_id', async (md) => {
        if (md.transactionId !== old) {
          throw t.refuse('EINVAL', `${t.pool.mdName}: error setting transaction id from ${old} to ${id}`);
        }
        md.setTransactionId(old, id);
        t.pool.changed();
      });
    },
  },
  reserve_metadata_snap: {
    args: 1,
    async run(t) {
      await t.pool.exclusive(async () => {
        if (t.pool.metadata.heldRoot !== 0) throw t.refuse('EBUSY', 'Pool metadata snapshot already exists: release this before taking another.');
        // The copy's own commit must not make unflushed data reachable: commit through the pool first (R1).
        t.pool.changed();
        await t.pool.commitLocked();
        await t.pool.metadataOp('reserve_metadata_snap', (m) => m.reserveMetadataSnap());
      });
    },
  },
  release_metadata_snap: {
    args: 1,
    async run(t) {
      await t.pool.exclusive(async () => {
        if (t.pool.metadata.heldRoot === 0) throw t.refuse('EINVAL', 'No pool metadata snapshot found: nothing to release.');
        t.pool.changed();
        await t.pool.commitLocked();
        await t.pool.metadataOp('release_metadata_snap', (m) => m.releaseMetadataSnap());
      });
    },
  },
};

export function makeThinPoolTarget(opts: ThinPoolOptions = {}): TargetType {
  return {
    name: TYPE,
    version: [1, 22, 0],
    features: { singleton: true, alwaysWriteable: true, immutable: true },
    construct: (ctx, argv) => poolCtr(ctx, argv, opts),
  };
}

export const thinPoolTarget: TargetType = makeThinPoolTarget();
