/**
 * The pool object of dm-thin (Linux's `struct pool`): the metadata, the data
 * device, the pool mode, commits, data-block allocation with the
 * out-of-space policy, and the events. It outlives table reloads: every
 * thin-pool target built on the same metadata device binds to the same pool
 * (Linux's __pool_table), and thin targets reach it through the pool device.
 *
 * Metadata is touched only under `lock` (ThinMetadata is not re-entrant).
 * Any metadata failure aborts the transaction, sets NEEDS_CHECK and leaves
 * the pool read-only (spec §9.6); the disk stays at the last commit.
 */
import type { BlockDevice } from '../../block/device.ts';
import { type Errno, IoError, toIoError } from '../../block/errors.ts';
import type { Clock, DeviceRef, Logger } from '../../mapper/target.ts';
import { MAX_METADATA_BLOCKS } from '../../pdata/space-map/index-block.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import { METADATA_BLOCK_SECTORS } from '../../pdata/thin/superblock.ts';
import { highestMapped } from './mappings.ts';
import { BlockPrison, IoGate, Mutex } from './prison.ts';

/** NEEDS_CHECK, bit 0 of the superblock flags (spec §3.2). */
export const NEEDS_CHECK = 1;
/** COMMIT_PERIOD: a changed transaction is committed within a second (spec §9.8). */
export const COMMIT_PERIOD_MS = 1000;
/** The module parameter no_space_timeout, default 60 s (spec §9.6). */
export const NO_SPACE_TIMEOUT_MS = 60_000;

export type PoolMode = 'write' | 'out-of-data-space' | 'out-of-metadata-space' | 'read-only' | 'fail';

/** What a pool table asks for; bound to the pool when that table resumes. */
export interface PoolFeatures {
  zeroNewBlocks: boolean;
  discardEnabled: boolean;
  discardPassdown: boolean;
  readOnly: boolean;
  errorIfNoSpace: boolean;
}

/**
 * Test-only broken variant (CRASH-TESTING §3): commit the metadata before
 * flushing the data device, so a mapping can become durable before the data
 * it points at (the bug fixed by "dm thin: Flush data device before
 * committing metadata").
 */
export type BrokenPool = 'mapping-before-data-flush';

/** The context of the pool target currently bound: where events and log lines go. */
export interface PoolOwner {
  readonly log: Logger;
  raiseEvent(): void;
}

/** A request the user got wrong (EEXIST, ENODATA, …): passed through as is, never a metadata failure. */
export class PoolRefusal extends IoError {}

/**
 * What a thin target holds of its mapped device (Linux's tc->thin_md): a
 * pool suspend holds the device's I/O through it.
 */
export interface ThinDevice {
  internalSuspend(): Promise<void>;
  internalResume(): Promise<void>;
}

/** A thin device with at least one active thin target: its I/O state and status figures. */
export class ActiveThin {
  /** One entry per thin target open on this device (Linux's active_thins). */
  readonly targets = new Set<ThinDevice>();
  mappedBlocks = 0;
  /** Highest mapped virtual block, -1 when none. */
  highest = -1;
  /** Changed in the transaction being built. */
  changed = false;
  /** Changes were lost by an abort: flushes of this device fail from now on (pool-io.ts ThinIo.flush). */
  lost = false;
  readonly prison = new BlockPrison();
  readonly gate = new IoGate();
  constructor(readonly id: number) {}
}

export class Pool {
  mode: PoolMode = 'write';
  features: PoolFeatures;
  /** The current no-space policy: the table's, until the timeout switches it to erroring. */
  errorIfNoSpace: boolean;
  lowWater = 0;
  suspended = true;
  /** Pool targets built on this pool (Linux's pool->ref). */
  users = 0;
  readonly active = new Map<number, ActiveThin>();
  readonly lock = new Mutex();
  owner: PoolOwner;
  private dirty = false;
  /** Allocations whose mapping is not inserted yet (see exclusive()). */
  private provisioning = 0;
  private exclusiveWaiting = 0;
  private drained: (() => void)[] = [];
  private unblocked: (() => void)[] = [];
  /** Bumped by every abort: a block allocated before it belongs to a dropped transaction. */
  generation = 0;
  private commitTimer: AbortController | undefined;
  private noSpaceTimer: AbortController | undefined;
  private spaceWaiters: { wake: () => void; fail: (err: IoError) => void }[] = [];
  /** The thin devices the last presuspend held, for the resume to let go. */
  private heldThins: ThinDevice[] = [];
  private lowWaterRaised = false;
  private metadataLowRaised = false;

  constructor(
    private md: ThinMetadata | undefined,
    readonly metaRef: DeviceRef,
    readonly dataRef: DeviceRef,
    readonly blockSectors: number,
    readonly mdName: string,
    private readonly clock: Clock,
    owner: PoolOwner,
    features: PoolFeatures,
    private readonly broken?: BrokenPool,
  ) {
    this.owner = owner;
    this.features = features;
    this.errorIfNoSpace = features.errorIfNoSpace;
  }

  /**
   * Opens the metadata, formatting an all-zero superblock (spec §3.3). The
   * data space map starts empty and is sized at the first resume (§8.1).
   */
  static async openMetadata(meta: BlockDevice, blockSectors: number, readOnly: boolean, log: Logger): Promise<ThinMetadata> {
    if (await ThinMetadata.isBlank(meta)) {
      if (readOnly) throw new IoError('EPERM', `${meta.name}: cannot format metadata on a read-only pool`);
      return ThinMetadata.format(meta, { dataBlockSize: blockSectors, nrDataBlocks: 0 });
    }
    const md = await ThinMetadata.open(meta, { readOnly });
    if (md.dataBlockSize !== blockSectors) {
      await md.close();
      throw new IoError('EINVAL', `changing the data block size (from ${md.dataBlockSize} to ${blockSectors}) is not supported`);
    }
    log.info(`opened metadata on ${meta.name}: ${md.superblock.dataBlockSize}-sector blocks, transaction ${md.transactionId}`);
    return md;
  }

  get data(): BlockDevice {
    return this.dataRef.device;
  }

  /** The metadata, or EIO in fail mode. */
  get metadata(): ThinMetadata {
    if (!this.md || this.mode === 'fail') throw this.ioError('EIO', 'pool is in fail mode');
    return this.md;
  }

  get needsCheck(): boolean {
    return this.md !== undefined && (this.md.superblock.flags & NEEDS_CHECK) !== 0;
  }

  /** Metadata blocks kept back so commits stay possible when full: min(4096, nr_blocks / 10) (spec §9.3). */
  get metadataReserve(): number {
    return Math.min(4096, Math.floor(this.metadata.metadataSm.nrBlocks / 10));
  }

  /** Free metadata blocks as the status and the mode decisions count them. */
  freeMetadataBlocks(): number {
    return Math.max(0, this.metadata.metadataSm.nrFree() - this.metadataReserve);
  }

  /** The metadata low watermark: min(1024, metadata device blocks / 4) (spec §9.3). */
  get metadataLowWater(): number {
    const blocks = Math.min(Math.floor(this.metaRef.device.sectors / METADATA_BLOCK_SECTORS), MAX_METADATA_BLOCKS);
    return Math.min(1024, Math.floor(blocks / 4));
  }

  get writable(): boolean {
    return this.mode === 'write' || this.mode === 'out-of-data-space';
  }

  // ---- metadata operations ---------------------------------------------------

  /**
   * Runs `fn` on the metadata under the lock. A failure is a metadata
   * operation failure (spec §9.6): abort, NEEDS_CHECK, read-only; the
   * caller gets EIO. Callers check user errors (EEXIST, ENODATA, …) first.
   */
  withMetadata<T>(op: string, fn: (md: ThinMetadata) => Promise<T>): Promise<T> {
    return this.lock.run(() => this.metadataOp(op, fn));
  }

  /** As withMetadata, for a caller that already holds the lock. */
  async metadataOp<T>(op: string, fn: (md: ThinMetadata) => Promise<T>): Promise<T> {
    const md = this.metadata;
    try {
      return await fn(md);
    } catch (err) {
      if (err instanceof PoolRefusal) throw err;
      await this.metadataFailed(op, err);
      throw this.ioError('EIO', `metadata operation '${op}' failed: ${toIoError(err).message}`);
    }
  }

  /** A change was made in this transaction: commit within COMMIT_PERIOD (spec §9.8). */
  changed(thin?: ActiveThin): void {
    this.dirty = true;
    if (thin) thin.changed = true;
    if (this.commitTimer || this.suspended) return;
    const timer = new AbortController();
    this.commitTimer = timer;
    this.clock.sleep(COMMIT_PERIOD_MS, timer.signal).then(
      async () => {
        if (timer.signal.aborted) return;
        this.commitTimer = undefined;
        await this.commit().catch((err) => this.owner.log.error(`periodic commit failed: ${toIoError(err).message}`));
      },
      () => undefined,
    );
  }

  commit(): Promise<void> {
    return this.exclusive(() => this.commitLocked());
  }

  /**
   * Runs `fn` under the lock with no provisioning in flight, new ones held
   * back meanwhile. Every commit goes through here: a commit between a
   * block's allocation and its mapping's insertion would make the
   * allocation durable without the mapping, a block leaked by a crash.
   * `fn` must not call exclusive() again.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.exclusiveWaiting++;
    try {
      while (this.provisioning > 0) await new Promise<void>((wake) => this.drained.push(wake));
      return await this.lock.run(fn);
    } finally {
      if (--this.exclusiveWaiting === 0) for (const wake of this.unblocked.splice(0)) wake();
    }
  }

  /** Ends the provisioning that allocate() began, once its mapping is inserted or its block released. */
  endProvision(): void {
    if (--this.provisioning === 0) for (const wake of this.drained.splice(0)) wake();
  }

  /**
   * A thin device's flush (R6): with changes in this transaction, a commit
   * (which flushes the data device first); otherwise a data-device flush.
   * Either runs after taking the lock, so it is issued after every write
   * that completed before this call.
   */
  flush(): Promise<void> {
    return this.exclusive(async () => {
      if (this.mode === 'fail') throw this.ioError('EIO', 'flush: pool is in fail mode');
      if (this.dirty && this.writable) await this.commitLocked();
      else await this.data.flush();
    });
  }

  /**
   * Commits the transaction (dm-thin commit → __commit_transaction, §8.2).
   *
   * R1 and R3: the data device is flushed, and that flush has completed,
   * before the metadata commit starts. Every zeroing, copy and write that a
   * new mapping depends on completed before the mapping was inserted, so
   * this flush makes all of them durable before any superblock can point at
   * them. R2 and R5: ThinMetadata.commit then writes only shadows, flushes,
   * and writes the superblock last. R6: thin flushes and FUA writes
   * complete only after this returns. Nothing changed: nothing is written.
   */
  async commitLocked(): Promise<void> {
    if (!this.dirty || !this.writable) return;
    const md = this.metadata;
    if (this.broken === 'mapping-before-data-flush') {
      await this.metadataOp('commit', () => md.commit());
      await this.data.flush();
    } else {
      await this.data.flush();
      await this.metadataOp('commit', () => md.commit());
    }
    this.dirty = false;
    this.commitTimer?.abort();
    this.commitTimer = undefined;
    for (const t of this.active.values()) t.changed = false;
    this.checkMetadataSpace();
    if (this.mode === 'out-of-data-space' && md.dataSm.nrFree() > 0) this.leaveNoSpace();
  }

  /**
   * A new data block, count 1 (spec §9.8 provisioning), and a provisioning
   * in flight that the caller ends with endProvision(). With none free,
   * commit first (blocks freed in this transaction become reusable); then
   * out-of-data-space: wait for space or fail with ENOSPC (spec §9.6).
   * Once `requeue` aborts (a noflush suspend of the thin device), the wait
   * for space ends with its reason instead.
   */
  async allocate(thin: ActiveThin, requeue: AbortSignal): Promise<number> {
    for (;;) {
      while (this.exclusiveWaiting > 0) await new Promise<void>((wake) => this.unblocked.push(wake));
      this.provisioning++;
      let block: number | undefined;
      try {
        block = await this.lock.run(async () => {
          this.checkWritable('allocation of a data block');
          const md = this.metadata;
          if (md.dataSm.nrFree() === 0) return undefined;
          const b = await this.metadataOp('alloc_data_block', () => md.allocDataBlock());
          this.changed(thin);
          this.checkLowWater(md.dataSm.nrFree());
          this.checkMetadataSpace();
          return b;
        });
      } catch (err) {
        this.endProvision();
        throw err;
      }
      if (block !== undefined) return block;
      this.endProvision();
      await this.commit();
      if (this.metadata.dataSm.nrFree() === 0) await this.waitForSpace(requeue);
    }
  }

  /** Gives back a block whose data write failed before any mapping pointed at it. */
  async release(block: number): Promise<void> {
    await this.withMetadata('release_data_block', (md) => md.dataSm.dec(block));
  }

  // ---- modes -------------------------------------------------------------------

  setMode(mode: PoolMode, why: string): void {
    if (this.mode === mode) return;
    this.mode = mode;
    this.owner.log.warn(`${this.mdName}: switching pool to ${why} mode`);
    this.owner.raiseEvent();
    if (mode !== 'write' && mode !== 'out-of-data-space') this.failSpaceWaiters(this.ioError('EIO', `pool is in ${mode} mode`));
  }

  checkWritable(what: string): void {
    if (this.mode === 'fail') throw this.ioError('EIO', `${what}: pool is in fail mode`);
    if (!this.writable) throw this.ioError('EIO', `${what}: pool is read-only`);
  }

  /**
   * metadata_operation_failed (spec §9.6): abort the transaction (reopen at
   * the last commit; failing that, fail mode), set NEEDS_CHECK (failing
   * that, fail mode), then read-only. Active thin devices whose changes were
   * dropped fail their next flush. The caller holds the lock.
   */
  async metadataFailed(op: string, err: unknown): Promise<void> {
    const log = this.owner.log;
    log.error(`${this.mdName}: metadata operation '${op}' failed: error = -${toIoError(err).errno}`);
    if (!this.md || this.mode === 'fail') return;
    log.error(`${this.mdName}: aborting current metadata transaction`);
    this.commitTimer?.abort();
    this.commitTimer = undefined;
    const old = this.md;
    this.md = undefined;
    this.generation++;
    await old.bm.discardAll().catch(() => undefined);
    await old.close().catch(() => undefined);
    for (const t of this.active.values()) if (t.changed) t.lost = true;
    this.dirty = false;
    try {
      const md = await ThinMetadata.open(this.metaRef.device);
      this.md = md;
      if (!(md.superblock.flags & NEEDS_CHECK)) {
        // dm_pool_metadata_set_needs_check: the flag alone, committed on the reopened metadata. No
        // data flush first: this transaction maps nothing new, so there is nothing for R1 to order.
        md.restoreSuperblock({ flags: md.superblock.flags | NEEDS_CHECK });
        await md.commit();
      }
      await this.refreshActive();
    } catch (again) {
      log.error(`${this.mdName}: couldn't set needs_check flag / reopen metadata: ${toIoError(again).message}`);
      this.setMode('fail', 'failure');
      return;
    }
    this.setMode('read-only', 'read-only');
  }

  /** Recomputes the status figures of the active thin devices from the metadata. */
  async refreshActive(): Promise<void> {
    for (const t of this.active.values()) await this.loadActive(t);
  }

  async loadActive(t: ActiveThin): Promise<void> {
    const md = this.metadata;
    const details = await md.deviceDetails(t.id);
    t.mappedBlocks = details?.mappedBlocks ?? 0;
    t.highest = await highestMapped(md, t.id);
  }

  // ---- data space --------------------------------------------------------------

  private async waitForSpace(requeue: AbortSignal): Promise<void> {
    if (this.mode !== 'out-of-data-space') {
      this.setMode('out-of-data-space', `out-of-data-space (${this.errorIfNoSpace ? 'error' : 'queue'} IO)`);
      if (!this.errorIfNoSpace) this.armNoSpaceTimeout();
    }
    if (this.errorIfNoSpace) throw this.ioError('ENOSPC', 'no free data block (error_if_no_space)');
    requeue.throwIfAborted();
    await new Promise<void>((wake, fail) => {
      const handBack = (): void => {
        this.spaceWaiters = this.spaceWaiters.filter((w) => w !== waiter);
        fail(requeue.reason);
      };
      const settled = (end: () => void): void => {
        requeue.removeEventListener('abort', handBack);
        end();
      };
      const waiter = { wake: () => settled(wake), fail: (err: IoError) => settled(() => fail(err)) };
      this.spaceWaiters.push(waiter);
      requeue.addEventListener('abort', handBack, { once: true });
    });
  }

  /** After no_space_timeout, queued and future I/O needing space fails with ENOSPC (spec §9.6). */
  private armNoSpaceTimeout(): void {
    if (this.noSpaceTimer) return;
    const timer = new AbortController();
    this.noSpaceTimer = timer;
    this.clock.sleep(NO_SPACE_TIMEOUT_MS, timer.signal).then(
      () => {
        if (timer.signal.aborted) return;
        this.noSpaceTimer = undefined;
        this.owner.log.warn(`${this.mdName}: switching pool to out-of-data-space (error IO) mode`);
        this.errorIfNoSpace = true;
        this.owner.raiseEvent();
        this.failSpaceWaiters(this.ioError('ENOSPC', 'no free data block (no_space_timeout expired)'));
      },
      () => undefined,
    );
  }

  /** Space came back (a commit freed blocks, or the data device grew): retry the queued I/O. */
  leaveNoSpace(): void {
    if (this.mode !== 'out-of-data-space') return;
    this.noSpaceTimer?.abort();
    this.noSpaceTimer = undefined;
    this.errorIfNoSpace = this.features.errorIfNoSpace;
    this.setMode('write', 'write');
    for (const w of this.spaceWaiters.splice(0)) w.wake();
  }

  private failSpaceWaiters(err: IoError): void {
    for (const w of this.spaceWaiters.splice(0)) w.fail(err);
  }

  /** The data low-water event, once per resume (spec §9.8). */
  private checkLowWater(free: number): void {
    if (this.lowWaterRaised || free > this.lowWater) return;
    this.lowWaterRaised = true;
    this.owner.log.warn(`${this.mdName}: reached low water mark for data device: sending event.`);
    this.owner.raiseEvent();
  }

  /** Metadata low watermark (edge-triggered) and out-of-metadata-space (spec §9.6, §9.8). */
  private checkMetadataSpace(): void {
    const free = this.freeMetadataBlocks();
    if (free <= this.metadataLowWater) {
      if (!this.metadataLowRaised) {
        this.metadataLowRaised = true;
        this.owner.log.warn(`${this.mdName}: reached low water mark for metadata device: sending event.`);
        this.owner.raiseEvent();
      }
    } else {
      this.metadataLowRaised = false;
    }
    if (free === 0 && this.writable) this.setMode('out-of-metadata-space', 'out-of-metadata-space');
  }

  // ---- suspend / resume ----------------------------------------------------------

  /** Pool preresume: bind the table, size the data space map from it, re-arm the events, retry queued I/O (spec §9.7). */
  async bind(owner: PoolOwner, features: PoolFeatures, lowWater: number, dataBlocks: number): Promise<void> {
    await this.exclusive(async () => {
      if (this.mode !== 'fail' && !features.readOnly && this.metadata.bm.readOnly) await this.reopenWritable();
      const have = this.mode === 'fail' ? dataBlocks : this.metadata.dataSm.nrBlocks;
      if (dataBlocks < have) throw this.ioError('EINVAL', `pool target (${dataBlocks} blocks) too small: expected ${have}`);
      this.owner = owner;
      this.features = features;
      if (this.mode !== 'out-of-data-space') this.errorIfNoSpace = features.errorIfNoSpace;
      this.lowWater = lowWater;
      this.lowWaterRaised = false;
      if (this.mode === 'fail') return;
      await this.growMetadata();
      this.enterTableMode();
      if (dataBlocks > have) {
        if (!this.writable) {
          owner.log.error(`${this.mdName}: unable to grow the data device until repaired.`);
        } else {
          owner.log.info(`${this.mdName}: growing the data device from ${have} to ${dataBlocks} blocks`);
          await this.metadataOp('resize_data_dev', (md) => md.dataSm.extend(dataBlocks - have));
          this.dirty = true;
        }
      }
      await this.commitLocked();
      if (this.mode === 'out-of-data-space' && this.metadata.dataSm.nrFree() > 0) this.leaveNoSpace();
    });
  }

  /** A metadata device larger than its space map is grown into; a smaller one is refused (spec §9.7). */
  private async growMetadata(): Promise<void> {
    const md = this.metadata;
    const have = md.metadataSm.nrBlocks;
    const blocks = Math.min(Math.floor(this.metaRef.device.sectors / METADATA_BLOCK_SECTORS), MAX_METADATA_BLOCKS);
    if (blocks < have) throw this.ioError('EINVAL', `metadata device (${blocks} blocks) too small: expected ${have}`);
    if (blocks === have || md.bm.readOnly) return;
    if (this.needsCheck) return this.owner.log.error(`${this.mdName}: unable to grow the metadata device until repaired.`);
    this.owner.log.info(`${this.mdName}: growing the metadata device from ${have} to ${blocks} blocks`);
    await this.metadataOp('resize_metadata_dev', (m) => m.metadataSm.extend(blocks - have));
    this.dirty = true;
  }

  /**
   * read_only sets read-only; without it, write mode unless NEEDS_CHECK
   * (spec §9.6). As Linux's set_pool_mode: refused write mode keeps the old
   * mode, or becomes read-only when the pool was in write mode already —
   * the case of metadata opened with NEEDS_CHECK set.
   */
  private enterTableMode(): void {
    if (this.mode === 'fail') return;
    if (this.features.readOnly) return this.setMode('read-only', 'read-only');
    if (this.needsCheck) {
      this.owner.log.error(`${this.mdName}: unable to switch pool to write mode until repaired.`);
      if (this.mode === 'write') this.setMode('read-only', 'read-only');
      return;
    }
    if (this.mode === 'read-only' || this.mode === 'out-of-metadata-space') {
      if (this.freeMetadataBlocks() > 0) this.setMode('write', 'write');
    }
  }

  /** The metadata was opened read-only (a read_only table) and a reload dropped read_only. */
  private async reopenWritable(): Promise<void> {
    const old = this.metadata;
    this.md = undefined;
    await old.close();
    this.md = await ThinMetadata.open(this.metaRef.device);
  }

  /**
   * Pool presuspend (spec §9.7, Linux's pool_suspend_active_thins): every
   * thin target's device is suspended internally — no flush; its requests
   * waiting for data space are handed back, to be reissued after resume —
   * so no thin I/O is in flight at the postsuspend commit, and none starts
   * until resume.
   */
  async presuspend(): Promise<void> {
    this.suspended = true;
    for (const thin of [...this.active.values()]) {
      for (const device of [...thin.targets]) {
        this.heldThins.push(device); // first: a hook that fails still counts the suspend, which resume then undoes
        await device.internalSuspend();
      }
    }
  }

  /**
   * Pool resume, after the preresume bound the table (Linux's pool_resume):
   * the thin devices the presuspend held go on — one removed meanwhile has
   * nothing left to resume — then the commit timer runs again.
   */
  async resume(): Promise<void> {
    for (const device of this.heldThins.splice(0)) {
      await device.internalResume().catch((err) => this.owner.log.error(`${this.mdName}: a thin device did not resume: ${toIoError(err).message}`));
    }
    this.suspended = false;
    if (this.dirty) this.changed();
  }

  /**
   * Pool postsuspend: stop the timers and commit (spec §9.7). A failed
   * commit does not fail the suspend (Linux's pool_postsuspend ignores it):
   * it already switched the mode, and a suspend left half done would keep
   * the thin devices held with no resume to let them go.
   */
  async suspend(): Promise<void> {
    this.commitTimer?.abort();
    this.commitTimer = undefined;
    if (this.mode === 'fail') return;
    await this.commit().catch((err) => this.owner.log.error(`${this.mdName}: commit at suspend failed: ${toIoError(err).message}`));
  }

  /** Last pool target gone: commit unless read-only or failed, close the metadata. */
  async destroy(): Promise<void> {
    this.suspended = true;
    this.commitTimer?.abort();
    this.noSpaceTimer?.abort();
    this.failSpaceWaiters(this.ioError('EIO', 'pool was destroyed'));
    await this.exclusive(async () => {
      if (this.md && this.mode !== 'fail') await this.commitLocked().catch(() => undefined);
      await this.md?.close();
      this.md = undefined;
    });
  }

  ioError(code: Errno, why: string): IoError {
    return new IoError(code, `${this.mdName}: ${why}`, { device: this.mdName });
  }
}
