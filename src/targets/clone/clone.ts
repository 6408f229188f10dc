/**
 * clone (Linux dm-clone-target.c, target version 1.0.0, spec/clone.md):
 * presents the source device while copying it, region by region, to the
 * destination. Reads of regions not yet copied ("hydrated") go to the
 * source; writes go to the destination, hydrating their region first. A
 * persistent bitmap on the metadata device records the hydrated regions.
 *
 *   table:  <metadata dev> <destination dev> <source dev> <region size>
 *           [<#feature args> [<feature arg>]* [<#core args> [<core arg>]*]]
 *   status: 8 <used>/<total metadata blocks> <region size>
 *           <hydrated>/<total regions> <hydrating regions>
 *           <#features> [no_hydration] [no_discard_passdown]
 *           4 hydration_threshold <n> hydration_batch_size <n> rw|ro    (or: Fail)
 */
import { type BlockDevice, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions } from '../../block/device.ts';
import { IoError, toIoError } from '../../block/errors.ts';
import { kstrtouint } from '../../mapper/args.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, DeviceRef, StatusType, SuspendOptions, Target, TargetContext, TargetLimits, TargetProgress, TargetType,
} from '../../mapper/target.ts';
import { ctrError, lookupDevice } from '../common/dev-offset.ts';
import { targetIoError, unsupported } from '../common/io.ts';
import { type HydrationHost, Hydrations, type RegionHydration } from './hydration.ts';
import { CloneMetadata, METADATA_BLOCK_SECTORS } from './metadata.ts';

const TYPE = 'clone';
const MIN_REGION_SECTORS = 8;
const MAX_REGION_SECTORS = 2097152;
const MAX_REGIONS = 2 ** 31;
/** Linux warns above 16 GiB of metadata device; only 33292800 sectors are used. */
const METADATA_WARN_SECTORS = 33554432;
/** COMMIT_PERIOD: the worker commits changed metadata and restarts hydration every second (§9.3). */
const COMMIT_PERIOD_MS = 1000;

/** Test-only deliberately broken variants (CRASH-TESTING §3). Never set outside tests. */
export interface CloneTestOptions {
  /** The seed bug: commit the metadata, then flush the destination (Linux before 8b3fd1f53af3). */
  commitBeforeDestinationFlush?: boolean;
}

type Mode = 'write' | 'read-only' | 'fail';

interface CloneArgs {
  regionSize: number;
  hydration: boolean;
  discardPassdown: boolean;
  threshold: number;
  batchSize: number;
}

// ---- constructor -----------------------------------------------------------

/** parse_feature_args and parse_core_args (§3.1 steps 8–9); groups are optional from the right. */
function parseOptionalArgs(words: string[], out: CloneArgs): void {
  let i = 0;
  if (i >= words.length) return;
  const nf = kstrtouint(words[i++]!);
  if (nf === undefined || nf > 2 || nf > words.length - i) throw ctrError('Invalid number of feature arguments');
  for (const f of words.slice(i, i + nf)) {
    const name = f.toLowerCase();
    if (name === 'no_hydration') out.hydration = false;
    else if (name === 'no_discard_passdown') out.discardPassdown = false;
    else throw ctrError('Invalid feature argument');
  }
  i += nf;
  if (i >= words.length) return;
  const nc = kstrtouint(words[i++]!);
  if (nc === undefined || nc > 4 || nc > words.length - i) throw ctrError('Invalid number of core arguments');
  if (nc % 2 !== 0) throw ctrError('Number of core arguments must be even');
  for (let end = i + nc; i < end; i += 2) {
    const key = words[i]!.toLowerCase();
    if (key !== 'hydration_threshold' && key !== 'hydration_batch_size') throw ctrError('Invalid core argument');
    const value = kstrtouint(words[i + 1]!);
    if (value === undefined) throw ctrError(`Invalid value for argument \`${key}'`);
    if (key === 'hydration_threshold') out.threshold = value;
    else out.batchSize = value;
  }
  // Tokens after the core group are ignored (but echoed by the table line).
}

async function cloneCtr(ctx: TargetContext, argv: string[], test: CloneTestOptions): Promise<Target> {
  if (argv.length < 4) throw ctrError('Invalid number of arguments');
  const meta = await lookupDevice(ctx, argv[0]!, 'Error opening metadata device');
  if (meta.device.sectors > METADATA_WARN_SECTORS) {
    ctx.log.warn(`Metadata device ${meta.diskName} is larger than 33292800 sectors: excess space will not be used.`);
  }
  const dest = await lookupDevice(ctx, argv[1]!, 'Error opening destination device');
  if (dest.device.sectors < ctx.length) throw ctrError('Device size larger than destination device');
  const source = await lookupDevice(ctx, argv[2]!, 'Error opening source device');
  if (source.device.sectors < ctx.length) throw ctrError('Device size larger than source device');

  const regionSize = kstrtouint(argv[3]!);
  if (regionSize === undefined || regionSize < MIN_REGION_SECTORS || regionSize > MAX_REGION_SECTORS) throw ctrError('Invalid region size');
  if ((regionSize & (regionSize - 1)) !== 0) throw ctrError('Region size is not a power of 2');
  for (const ref of [source, dest]) {
    if ((regionSize * SECTOR_SIZE) % ref.device.limits.logicalBlockSize !== 0) {
      throw ctrError('Region size is not a multiple of device logical block size');
    }
  }
  if (Math.ceil(ctx.length / regionSize) > MAX_REGIONS) throw ctrError('Too many regions. Consider increasing the region size');

  const args: CloneArgs = { regionSize, hydration: true, discardPassdown: true, threshold: 1, batchSize: 1 };
  parseOptionalArgs(argv.slice(4), args);

  let md: CloneMetadata;
  try {
    md = await CloneMetadata.open(meta.device, { regionSize, targetSize: ctx.length });
  } catch (err) {
    const e = toIoError(err);
    ctx.log.error(`clone metadata: ${e.message}`);
    throw new IoError(e.code, 'Failed to load metadata', { cause: err });
  }
  if (md.readOnly) {
    await md.close();
    throw ctrError('Unable to get write access to metadata, please check/repair metadata', 'EPERM');
  }
  return new CloneTarget(ctx, { meta, dest, source }, argv.slice(3), args, md, test);
}

/** The clone target type; `makeCloneTarget` builds the test-only broken variants. */
export function makeCloneTarget(test: CloneTestOptions = {}): TargetType {
  return {
    name: TYPE,
    version: [1, 0, 0],
    construct: (ctx, argv) => cloneCtr(ctx, argv, test),
  };
}

export const cloneTarget: TargetType = makeCloneTarget();

// ---- the target ------------------------------------------------------------

interface CloneDevices {
  meta: DeviceRef;
  dest: DeviceRef;
  source: DeviceRef;
}

export class CloneTarget implements Target, HydrationHost {
  readonly maxIoSectors: number;
  readonly regionSize: number;
  readonly length: number;
  readonly nrRegions: number;
  private mode: Mode = 'write';
  private discardPassdown: boolean;
  /** Set at construction and after a commit that found every region hydrated (§9.4). */
  private hydrationDone: boolean;
  /** The device starts suspended: background hydration begins at the first resume (§3.1). */
  private suspended = true;
  private closed = false;
  /** User bios mapped and not yet completed: background hydration waits while any is (§8.1). */
  private userInflight = 0;
  private readonly hydrations: Hydrations;
  /** Commits run one at a time (the commit mutex); `queuedCommit` is the next one, not yet started. */
  private commitChain: Promise<void> = Promise.resolve();
  private queuedCommit: Promise<boolean> | null = null;
  private lastCommit: number;
  /** The armed periodic wake-up (§9.3). */
  private timer: AbortController | null = null;

  constructor(
    private readonly ctx: TargetContext,
    private readonly devs: CloneDevices,
    /** argv from the region size on, echoed verbatim by the table line (§3.3). */
    private readonly tableArgs: readonly string[],
    args: CloneArgs,
    private readonly md: CloneMetadata,
    private readonly test: CloneTestOptions,
  ) {
    this.regionSize = args.regionSize;
    this.maxIoSectors = args.regionSize;
    this.length = ctx.length;
    this.nrRegions = md.nrRegions;
    this.discardPassdown = args.discardPassdown;
    this.hydrationDone = md.allHydrated;
    this.lastCommit = ctx.clock.now();
    this.hydrations = new Hydrations(this);
    this.hydrations.enabled = args.hydration;
    this.hydrations.threshold = args.threshold;
    this.hydrations.batchSize = args.batchSize;
  }

  get source(): BlockDevice {
    return this.devs.source.device;
  }

  get dest(): BlockDevice {
    return this.devs.dest.device;
  }

  private regionOf(sector: number): number {
    return Math.floor(sector / this.regionSize);
  }

  private isHydrated(r: number): boolean {
    return this.hydrationDone || this.md.isHydrated(r);
  }

  /** A bio that carries FUA/PREFLUSH needs a commit when the metadata changed (§8.1). */
  private get needsCommit(): boolean {
    return this.md.changed;
  }

  // ---- I/O mapping (§8) -----------------------------------------------------

  read(sector: number, into: Buffer): Promise<void> {
    return this.userBio(async () => {
      this.checkNotFailed('read', sector);
      // §8.4: a region being copied is still read from the source until its bit is set.
      const dev = this.isHydrated(this.regionOf(sector)) ? this.dest : this.source;
      await dev.read(sector, into);
    });
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.userBio(() => this.mapWrite(sector, data, opts.fua ?? false));
  }

  /** An empty PREFLUSH (§8.1, §8.6, R6): commit when the metadata changed, else flush the destination. */
  flush(): Promise<void> {
    return this.userBio(async () => {
      this.checkNotFailed('flush', 0);
      this.checkDurable('flush', 0);
      if (this.needsCommit) {
        // The commit flushed the destination when it wrote anything; a flush is not sent twice.
        if (await this.commitForBio('flush', 0)) return;
      }
      await this.dest.flush();
    });
  }

  /** §8.5: only whole regions are affected; partial regions at either end are left alone. */
  discard(sector: number, count: number): Promise<void> {
    return this.userBio(async () => {
      this.checkNotFailed('discard', sector);
      const rs = Math.ceil(sector / this.regionSize);
      const re = Math.floor((sector + count) / this.regionSize);
      const n = Math.max(0, re - rs);
      if (n === 0) return;
      let all = true;
      for (let r = rs; r < re && all; r++) all = this.isHydrated(r);
      if (!all) {
        if (this.mode !== 'write') return;
        // The regions count as hydrated without a copy; the marking is committed
        // later, and a crash before that reverts them to the source (§13.1 rule 7).
        this.md.markRange(rs, n);
        this.armTimer();
      }
      if (this.discardPassdown) await this.dest.discard(rs * this.regionSize, n * this.regionSize);
    });
  }

  /** clone declares no write-zeroes bios (§1). */
  async writeZeroes(sector: number, _count: number, _opts: WriteZeroesOptions): Promise<void> {
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  /** Counts a user bio in flight; background hydration resumes when none is left. */
  private async userBio(io: () => Promise<void>): Promise<void> {
    this.userInflight++;
    try {
      await io();
    } finally {
      // Linux restarts background hydration from its 1 s timer; dmkit restarts
      // it as soon as the device is idle, which only makes it finish sooner.
      if (--this.userInflight === 0) this.hydrations.run();
    }
  }

  /** The write rows of §8.1 and §8.2: hydrated → destination; else hydrate the region first. */
  private async mapWrite(sector: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkNotFailed('write', sector);
    const r = this.regionOf(sector);
    for (;;) {
      if (this.isHydrated(r)) return this.writeHydrated(sector, data, fua);
      const inProgress = this.hydrations.inProgress.get(r);
      if (inProgress) {
        const err = await inProgress.settled;
        if (err) throw err;
        continue;
      }
      this.checkWritable('write', sector);
      const h = this.hydrations.begin(r);
      if (data.length === this.regionSize * SECTOR_SIZE) return this.overwriteRegion(h, sector, data, fua);
      // Partial write: copy the region, then re-route the write (now to a hydrated region).
      const err = await this.hydrations.copy(h);
      if (err) throw err;
    }
  }

  /** §8.6: a FUA write that needs a commit is sent only after the commit. */
  private async writeHydrated(sector: number, data: Buffer, fua: boolean): Promise<void> {
    if (fua) this.checkDurable('write', sector);
    if (fua && this.needsCommit) await this.commitForBio('write', sector);
    await this.dest.write(sector, data, { fua, tag: 'data' });
  }

  /**
   * §8.2 step 4: a write of the whole region needs no copy. It goes to the
   * destination first; the region is marked when it completed. A FUA one is
   * acknowledged only after the commit that makes the mark durable (§8.6).
   */
  private async overwriteRegion(h: RegionHydration, sector: number, data: Buffer, fua: boolean): Promise<void> {
    let err: IoError | null = null;
    try {
      await this.dest.write(sector, data, { fua, tag: 'data' });
    } catch (e) {
      err = toIoError(e);
    }
    const outcome = this.hydrations.complete(h, err);
    if (outcome) throw outcome;
    if (fua && this.needsCommit) await this.commitForBio('write', sector);
  }

  private checkNotFailed(op: 'read' | 'write' | 'flush' | 'discard', sector: number): void {
    if (this.mode === 'fail') throw targetIoError(this.ctx, TYPE, 'EIO', op, sector, 'metadata is in fail mode');
  }

  private checkWritable(op: 'write', sector: number): void {
    if (this.mode !== 'write') throw targetIoError(this.ctx, TYPE, 'EIO', op, sector, 'metadata is read-only');
  }

  /**
   * R6 in read-only mode. Read-only mode only follows a failed commit, whose
   * abort dropped regions hydrated by writes already acknowledged: those
   * writes can never become durable, so no later flush or FUA write may
   * report success. Linux sends such a flush to the destination and
   * succeeds, because its "needs commit" test sees the aborted transaction
   * as unchanged; the crash explorer's I/O-error sweep shows the lost
   * writes, so dmkit fails them with EIO.
   */
  private checkDurable(op: 'write' | 'flush', sector: number): void {
    if (this.mode !== 'write') {
      throw targetIoError(this.ctx, TYPE, 'EIO', op, sector, 'metadata is read-only after a failed commit: writes since the last commit are lost');
    }
  }

  // ---- HydrationHost --------------------------------------------------------

  mayHydrateInBackground(): boolean {
    return this.mode === 'write' && !this.suspended && !this.closed && !this.hydrationDone && this.userInflight === 0;
  }

  nextUnhydrated(from: number, skip: (r: number) => boolean): number {
    return this.md.nextUnhydrated(from, skip);
  }

  /** §8.3: refused (EPERM in Linux; the waiting bios fail with EIO) unless in write mode. */
  markHydrated(first: number, n: number): IoError | null {
    if (this.mode !== 'write') {
      return new IoError('EIO', `${this.ctx.deviceName}: regions ${first}+${n} hydrated but metadata is ${this.mode}: not marked`, {
        device: this.ctx.deviceName,
      });
    }
    this.md.markRange(first, n);
    this.armTimer();
    return null;
  }

  hydrationFailed(err: IoError): void {
    this.ctx.log.error(`${this.ctx.md}: hydration failed (${err.message})`);
  }

  // ---- metadata commits (§12) -----------------------------------------------

  /**
   * Queues a commit (one commit serves every bio queued before it starts)
   * and fails the bio with EIO if it fails. Resolves true when the commit
   * flushed the destination.
   */
  private async commitForBio(op: 'write' | 'flush', sector: number): Promise<boolean> {
    try {
      return await this.requestCommit();
    } catch (err) {
      throw targetIoError(this.ctx, TYPE, 'EIO', op, sector, `metadata commit failed: ${toIoError(err).message}`);
    }
  }

  private requestCommit(): Promise<boolean> {
    if (this.queuedCommit) return this.queuedCommit;
    const run = this.commitChain.then(() => {
      this.queuedCommit = null;
      return this.commitMetadata();
    });
    this.queuedCommit = run;
    this.commitChain = run.then(() => undefined, () => undefined);
    return run;
  }

  /** A commit whose failure is not the caller's (timer, status, suspend): the mode switch already handled it. */
  private backgroundCommit(): Promise<void> {
    return this.requestCommit().then(() => undefined, () => undefined);
  }

  /**
   * commit_metadata (§12.2), the one commit path. R1: the dirty set is frozen
   * (pre-commit), then the destination is flushed and waited for, and only
   * then are exactly the frozen regions committed — so no region's bit is
   * durable before the data that makes it true (the seed bug committed first
   * and flushed after). R2: the metadata commit itself writes shadows,
   * flushes, then the superblock (TransactionManager.commit). R6: a user
   * flush or FUA bio held for this commit completes only after it. Any
   * failure aborts to the last commit and switches to read-only (§7).
   * Resolves true when it wrote (and so flushed the destination).
   */
  private async commitMetadata(): Promise<boolean> {
    // The mode is tested first (Linux tests "changed" first): a bio queued
    // behind a commit that failed must fail too, although the abort left
    // nothing changed (see checkDurable).
    if (this.mode !== 'write') {
      throw new IoError('EPERM', `${this.ctx.deviceName}: metadata commit refused: metadata is ${this.mode}`, { device: this.ctx.deviceName });
    }
    if (!this.md.changed) return false;
    await this.metadataOp('dm_clone_metadata_pre_commit', async () => this.md.preCommit());
    if (this.test.commitBeforeDestinationFlush) {
      await this.metadataOp('dm_clone_metadata_commit', () => this.md.commit());
      await this.metadataOp('flush destination device', () => this.dest.flush());
    } else {
      await this.metadataOp('flush destination device', () => this.dest.flush());
      await this.metadataOp('dm_clone_metadata_commit', () => this.md.commit());
    }
    this.lastCommit = this.ctx.clock.now();
    if (this.md.allHydrated) {
      this.hydrationDone = true;
      this.ctx.raiseEvent();
    }
    return true;
  }

  /** Runs one metadata operation; on failure, __metadata_operation_failed and rethrow. */
  private async metadataOp(op: string, run: () => Promise<void>): Promise<void> {
    try {
      await run();
    } catch (err) {
      const e = toIoError(err);
      this.ctx.log.error(`${this.ctx.md}: Metadata operation \`${op}' failed: error = -${e.errno}`);
      await this.metadataFailed();
      throw e;
    }
  }

  /**
   * §7: abort to the last commit and reload the region map, in read-only
   * mode. dmkit switches to read-only before the abort (Linux after it), so
   * no hydration completing meanwhile can mark a region in the map being
   * thrown away. A failed abort is fail mode.
   */
  private async metadataFailed(): Promise<void> {
    this.setMode('read-only');
    try {
      await this.md.abort();
    } catch (err) {
      this.ctx.log.error(`${this.ctx.md}: Failed to abort metadata transaction: ${toIoError(err).message}`);
      this.setMode('fail');
    }
  }

  private setMode(mode: Mode): void {
    if (this.mode === mode || this.mode === 'fail') return;
    this.mode = mode;
    this.stopTimer();
    const word = mode === 'write' ? 'read-write' : mode;
    this.ctx.log.warn(`${this.ctx.md}: Switching to ${word} mode`);
    this.ctx.raiseEvent();
  }

  // ---- the periodic worker (§9.3) --------------------------------------------

  /**
   * Arms the 1 s wake-up when there is work for it: changed metadata to
   * commit, or regions left to hydrate. Linux re-arms unconditionally; an
   * idle device here arms nothing, so a finished clone leaves no timer.
   */
  private armTimer(): void {
    if (this.timer || this.closed || this.suspended || this.mode !== 'write') return;
    const work = this.md.changed || (this.hydrations.enabled && this.hydrations.threshold > 0 && !this.hydrationDone);
    if (!work) return;
    const timer = new AbortController();
    this.timer = timer;
    const wake = (): void => {
      if (this.timer !== timer) return;
      this.timer = null;
      this.periodicWork();
      this.armTimer();
    };
    this.ctx.clock.sleep(COMMIT_PERIOD_MS, timer.signal).then(wake, () => undefined);
  }

  private stopTimer(): void {
    this.timer?.abort();
    this.timer = null;
  }

  /** do_worker's periodic part: commit if changed and a period passed, then hydrate. */
  private periodicWork(): void {
    if (this.md.changed && this.ctx.clock.now() - this.lastCommit >= COMMIT_PERIOD_MS) void this.backgroundCommit();
    this.hydrations.run();
  }

  // ---- status, table, messages ------------------------------------------------

  limits(): TargetLimits {
    const l = inheritLimits([this.devs.dest, this.devs.source]);
    const regionBytes = this.regionSize * SECTOR_SIZE;
    if (!(l.ioOpt !== 0 && l.ioOpt % regionBytes === 0)) {
      l.ioMin = regionBytes;
      l.ioOpt = regionBytes;
    }
    this.disablePassdownIfNotSupported();
    return { ...l, discard: true, writeZeroes: false, discardZeroes: false };
  }

  /** §8.5: run at every limits computation. BlockDevice has no max-discard limit, so only support is checked. */
  private disablePassdownIfNotSupported(): void {
    if (!this.discardPassdown || this.dest.limits.discard) return;
    this.discardPassdown = false;
    this.ctx.log.warn(`Destination device (${this.devs.dest.diskName}) discard unsupported: Disabling discard passdown.`);
  }

  /** Source and destination over the target's length (iterate_devices), and the metadata device for deps. */
  areas(): DeviceArea[] {
    const { meta, dest, source } = this.devs;
    return [
      { ref: meta, start: 0, length: meta.device.sectors },
      { ref: dest, start: 0, length: this.length },
      { ref: source, start: 0, length: this.length },
    ];
  }

  /** Hydrated regions of all (dmkit wait --progress). */
  progress(): TargetProgress {
    return { what: 'regions hydrated', done: this.md.nrHydrated, total: this.nrRegions };
  }

  /**
   * clone_status commits first so the figures are current, unless the
   * device is suspended (or the request is --noflush: then this is not
   * called). Through commitMetadata, the one commit path (R1, R2); a failure
   * is reported by the mode the status then prints.
   */
  async prepareStatus(): Promise<void> {
    if (this.suspended || this.mode !== 'write') return;
    await this.backgroundCommit();
  }

  /** The in-core counts: hydrated regions come from the in-core map in Linux too, and the metadata usage includes the running transaction's blocks. */
  status(type: StatusType): string {
    const { meta, dest, source } = this.devs;
    if (type === 'table') return `${meta.id} ${dest.id} ${source.id}${this.tableArgs.map((a) => ` ${a}`).join('')}`;
    if (this.mode === 'fail') return 'Fail';
    const features = [
      ...(this.hydrations.enabled ? [] : ['no_hydration']),
      ...(this.discardPassdown ? [] : ['no_discard_passdown']),
    ];
    return `${METADATA_BLOCK_SECTORS} ${this.md.usedBlocks}/${this.md.totalBlocks} ${this.regionSize} ` +
      `${this.md.nrHydrated}/${this.nrRegions} ${this.hydrations.inFlight} ` +
      `${features.length} ${features.map((f) => `${f} `).join('')}` +
      `4 hydration_threshold ${this.hydrations.threshold} hydration_batch_size ${this.hydrations.batchSize} ` +
      (this.mode === 'write' ? 'rw' : 'ro');
  }

  /** §6: words compared case-insensitively; messages never answer with text. */
  async message(argv: string[]): Promise<string | undefined> {
    if (argv.length === 0) throw new IoError('EINVAL', `${this.ctx.deviceName}: clone message needs a word`);
    const word = argv[0]!.toLowerCase();
    if (word === 'enable_hydration') {
      if (!this.hydrations.enabled) {
        this.hydrations.enabled = true;
        this.wakeHydration();
      }
      return undefined;
    }
    if (word === 'disable_hydration') {
      this.hydrations.enabled = false;
      return undefined;
    }
    if (argv.length !== 2) throw new IoError('EINVAL', `${this.ctx.deviceName}: clone message ${argv[0]} takes exactly one argument`);
    if (word === 'hydration_threshold' || word === 'hydration_batch_size') {
      const value = kstrtouint(argv[1]!);
      if (value === undefined) throw new IoError('EINVAL', `${this.ctx.deviceName}: invalid value for ${argv[0]}: ${argv[1]}`);
      if (word === 'hydration_threshold') {
        this.hydrations.threshold = value;
        this.wakeHydration();
      } else {
        this.hydrations.batchSize = value;
      }
      return undefined;
    }
    this.ctx.log.error(`clone: ${this.ctx.md}: Unsupported message \`${argv[0]}'`);
    throw new IoError('EINVAL', `${this.ctx.deviceName}: unsupported clone message \`${argv[0]}'`);
  }

  private wakeHydration(): void {
    this.hydrations.run();
    this.armTimer();
  }

  // ---- suspend / resume / destroy (§10) ------------------------------------------

  /** No new background copies from here on; the periodic wake-up stops. */
  async presuspend(_opts: SuspendOptions): Promise<void> {
    this.suspended = true;
    this.stopTimer();
  }

  /** Waits for every hydration in flight, then commits (the full protocol, R1). */
  async postsuspend(_opts: SuspendOptions): Promise<void> {
    this.suspended = true;
    this.stopTimer();
    await this.hydrations.idle();
    if (this.mode === 'write') await this.backgroundCommit();
  }

  async resume(): Promise<void> {
    this.suspended = false;
    this.periodicWork();
    this.armTimer();
  }

  /** Destroy: no commit (the mapper suspended the live table first). */
  async close(): Promise<void> {
    this.closed = true;
    this.suspended = true;
    this.stopTimer();
    await this.hydrations.idle();
    await this.commitChain;
    await this.md.close();
  }
}
