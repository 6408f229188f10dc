/**
 * mirror (Linux dm-raid1.c, target version 1.14.0 as in Debian 12's 6.1): N
 * legs holding the same data, a dirty-region log that says which regions may
 * differ, and background resynchronisation from the default leg (spec
 * mirror.md).
 *
 *   table:  <log type> <#log args> <log args...> <#legs> <dev> <offset>...
 *           [<#features> handle_errors|keep_log...]
 *   status: <#legs> <dev>... <in sync>/<regions> 1 <health chars> <log status>
 *
 * One worker ("kmirrord", §7.1) makes every state change except completion
 * accounting; a pass runs: update_states → recovery → reads → writes →
 * failures. The ordering rules of §11.2 are cited where they are kept.
 */
import { SECTOR_SIZE, type WriteOptions } from '../../block/device.ts';
import { type Errno, IoError, toIoError } from '../../block/errors.ts';
import { parseU32Wrapping } from '../../mapper/args.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import { RequeueRequest } from '../../mapper/requeue.ts';
import type {
  DeviceArea, StatusType, SuspendOptions, Target, TargetContext, TargetLimits, TargetProgress, TargetType,
} from '../../mapper/target.ts';
import { ctrError, lookupDevice, parseOffset } from '../common/dev-offset.ts';
import { type TargetOp, isNotSupported, targetIoError, unsupported } from '../common/io.ts';
import { createDirtyLog, type DirtyLog, LogCtrError } from './dirty-log.ts';
import { Leg, type LegError } from './legs.ts';
import { type Region, RegionHash } from './region-hash.ts';
import { COPY_CHUNK_SECTORS, copyRegion, ResyncThrottle } from './resync.ts';

const TYPE = 'mirror';
/** kcopyd's 8 destinations + 1 source. */
const MAX_NR_MIRRORS = 9;

export interface MirrorOptions {
  /** TEST ONLY: the pre-2006 seed bug (region-hash.ts RegionHashOptions.seedBug). */
  seedBug?: boolean;
}

interface Features {
  readonly handleErrors: boolean;
  readonly keepLog: boolean;
}

/** A write-side request on the worker's queues: a data write, an empty flush or a discard. */
interface WriteBio {
  readonly kind: 'write' | 'flush' | 'discard';
  /** Target-relative; 0 for a flush (empty flushes are sent to sector 0). */
  readonly sector: number;
  readonly count: number;
  readonly data: Buffer | undefined;
  readonly fua: boolean;
  /** The region of the first sector, remembered at map time for dec (§7.4). */
  readonly region: number;
  resolve(): void;
  reject(err: IoError): void;
}

interface ReadBio {
  readonly sector: number;
  readonly into: Buffer;
  readonly region: number;
  resolve(): void;
  reject(err: IoError): void;
}

// ---- constructor (§2.2) ----------------------------------------------------

async function mirrorCtr(ctx: TargetContext, argv: string[], opts: MirrorOptions): Promise<Target> {
  // create_dirty_log
  if (argv.length < 2) throw ctrError('Insufficient mirror log arguments');
  const logArgs = parseU32Wrapping(argv[1]!);
  if (logArgs === undefined) throw ctrError('Invalid mirror log argument count');
  if (logArgs > argv.length - 2) throw ctrError('Insufficient mirror log arguments');
  let log: DirtyLog;
  try {
    log = await createDirtyLog(ctx, argv[0]!, argv.slice(2, 2 + logArgs));
  } catch (err) {
    if (!(err instanceof LogCtrError)) throw err;
    ctx.log.warn(`dirty region log: ${err.reason}`);
    throw ctrError('Error creating mirror dirty log');
  }
  let i = 2 + logArgs;

  const nrLegs = i < argv.length ? parseU32Wrapping(argv[i]!) : undefined;
  if (nrLegs === undefined || nrLegs < 2 || nrLegs > MAX_NR_MIRRORS) throw ctrError('Invalid number of mirrors');
  i++;
  if (argv.length - i < nrLegs * 2) throw ctrError('Too few mirror arguments');
  const legs: Leg[] = [];
  for (let m = 0; m < nrLegs; m++, i += 2) {
    const offset = parseOffset(argv[i + 1]!, 'Invalid offset');
    legs.push(new Leg(m, await lookupDevice(ctx, argv[i]!, 'Device lookup failure'), offset));
  }

  // parse_features
  let handleErrors = false;
  let keepLog = false;
  if (i < argv.length) {
    const n = parseU32Wrapping(argv[i]!);
    if (n === undefined) throw ctrError('Invalid number of features');
    i++;
    if (n > argv.length - i) throw ctrError('Not enough arguments to support feature count');
    for (let f = 0; f < n; f++, i++) {
      if (argv[i] === 'handle_errors') handleErrors = true;
      else if (argv[i] === 'keep_log') keepLog = true;
      else throw ctrError('Unrecognised feature requested');
    }
    if (keepLog && !handleErrors) throw ctrError('keep_log feature requires the handle_errors feature');
  }
  if (i < argv.length) throw ctrError('Too many mirror arguments');
  return new MirrorSet(ctx, log, legs, { handleErrors, keepLog }, opts);
}

// ---- the mirror set --------------------------------------------------------

export class MirrorSet implements Target {
  readonly maxIoSectors: number;
  readonly rh: RegionHash<WriteBio>;
  private defaultLeg: Leg;
  /** All regions in sync since the last failed write (ms->in_sync). */
  private inSync = false;
  /** A leg failed since construction or the last completed sync. */
  private legFailure = false;
  /** The log could not be written: sticky for this table. */
  private logFailure = false;
  private suspended = false;
  /** The suspend under way is --noflush: held writes go back to the core. */
  private noflushSuspend = false;
  private closed = false;

  private reads: ReadBio[] = [];
  private writes: WriteBio[] = [];
  private failures: WriteBio[] = [];
  /** Writes held for userspace (handle_errors without keep_log), until suspend. */
  private holds: WriteBio[] = [];

  private worker: Promise<void> | undefined;
  private wakeRequested = false;
  private readonly throttle: ResyncThrottle;
  private copyBuffer: Buffer | undefined;
  /** The resync copy in flight, if any. */
  private copying: Promise<void> | undefined;

  constructor(
    private readonly ctx: TargetContext,
    readonly log: DirtyLog,
    readonly legs: readonly Leg[],
    private readonly features: Features,
    opts: MirrorOptions,
  ) {
    this.maxIoSectors = log.regionSize;
    this.defaultLeg = legs[0]!;
    this.throttle = new ResyncThrottle(ctx.clock);
    this.rh = new RegionHash<WriteBio>(log, {
      wake: () => this.wake(),
      dispatch: (delayed) => {
        this.writes.push(...delayed);
        this.wake();
      },
    }, { seedBug: opts.seedBug });
    log.host = { flushLegs: () => this.flushLegs(), raiseEvent: () => ctx.raiseEvent(), log: ctx.log };
    this.wake();
  }

  private regionOf(sector: number): number {
    return Math.floor(sector / this.log.regionSize);
  }

  private ioError(code: Errno, op: TargetOp, sector: number, why: string): IoError {
    return targetIoError(this.ctx, TYPE, code, op, sector, why);
  }

  // ---- I/O mapping (§7) ----------------------------------------------------

  /** Every user request counts for the resync throttle. */
  private async tracked(io: () => Promise<void>): Promise<void> {
    this.throttle.begin();
    try {
      await io();
    } finally {
      this.throttle.end();
    }
  }

  /** Map time (§7.3): in-sync regions are read straight from choose(); others go through the worker. */
  read(sector: number, into: Buffer): Promise<void> {
    return this.tracked(async () => {
      const region = this.regionOf(sector);
      if (!this.log.inSync(region)) return this.queueRead(sector, into, region);
      const leg = this.choose();
      if (!leg) throw this.ioError('EIO', 'read', sector, 'every mirror leg has failed');
      try {
        await this.readLeg(leg, sector, into);
      } catch (err) {
        if (isNotSupported(err)) throw err;
        this.failLeg(leg, 'read');
        if (!this.defaultLeg.healthy && !this.mirrorAvailable(region)) {
          this.ctx.log.error('raid1: All replicated volumes dead, failing I/O');
          throw this.ioError('EIO', 'read', sector, `read failed on ${leg.ref.id} and no other leg can serve it`);
        }
        this.ctx.log.error(`raid1: Mirror read failed from ${leg.ref.id}. Trying alternative device.`);
        return this.queueRead(sector, into, region);
      }
    });
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.tracked(() =>
      this.queueWrite('write', sector, data.length / SECTOR_SIZE, data, opts.fua ?? false));
  }

  /** R6: an empty flush fans out to every leg after the log flush of its pass. */
  flush(): Promise<void> {
    return this.queueWrite('flush', 0, 0, undefined, false);
  }

  discard(sector: number, count: number): Promise<void> {
    if (!this.limits().discard) return Promise.reject(unsupported(this.ctx, TYPE, 'discard', sector));
    return this.tracked(() => this.queueWrite('discard', sector, count, undefined, false));
  }

  /** num_write_zeroes_bios = 0: the dm core turns WRITE ZEROES off. */
  writeZeroes(sector: number): Promise<void> {
    return Promise.reject(unsupported(this.ctx, TYPE, 'write-zeroes', sector));
  }

  private queueRead(sector: number, into: Buffer, region: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.reads.push({ sector, into, region, resolve, reject });
      this.wake();
    });
  }

  private queueWrite(kind: WriteBio['kind'], sector: number, count: number, data: Buffer | undefined, fua: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.writes.push({ kind, sector, count, data, fua, region: this.regionOf(sector), resolve, reject });
      this.wake();
    });
  }

  private readLeg(leg: Leg, sector: number, into: Buffer): Promise<void> {
    return leg.device.read(leg.offset + sector, into);
  }

  /** choose_mirror: the default leg if healthy, else the next lower healthy one, wrapping. No balancing (§12 #1). */
  private choose(): Leg | undefined {
    const n = this.legs.length;
    for (let k = 0, i = this.defaultLeg.index; k < n; k++, i = (i + n - 1) % n) {
      if (this.legs[i]!.healthy) return this.legs[i];
    }
    return undefined;
  }

  /** get_valid_mirror: the lowest-index healthy leg. */
  private validLeg(): Leg | undefined {
    return this.legs.find((l) => l.healthy);
  }

  /** mirror_available: the region is in sync and some leg is healthy. */
  private mirrorAvailable(region: number): boolean {
    return this.log.inSync(region) && this.choose() !== undefined;
  }

  /** fail_mirror (§7.7). */
  private failLeg(leg: Leg, type: LegError): void {
    this.legFailure = true;
    if (!leg.recordError(type) || !this.features.handleErrors) return;
    if (leg === this.defaultLeg) {
      if (!this.inSync && !this.features.keepLog) {
        this.ctx.log.error(`raid1: Primary mirror (${leg.ref.id}) failed while out-of-sync: Reads may fail.`);
      } else {
        const next = this.validLeg();
        if (next) this.defaultLeg = next;
        else this.ctx.log.warn('raid1: All sides of mirror have failed.');
      }
    }
    this.ctx.raiseEvent();
  }

  /** mirror_flush, the log's flush callback: one empty flush to every leg at once. */
  private async flushLegs(): Promise<boolean> {
    const results = await Promise.allSettled(this.legs.map((leg) => leg.device.flush()));
    let ok = true;
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        this.failLeg(this.legs[i]!, 'flush');
        ok = false;
      }
    });
    return ok;
  }

  // ---- the worker (§7.1) ---------------------------------------------------

  private wake(): void {
    this.wakeRequested = true;
    if (this.worker || this.closed) return;
    this.worker = this.runWorker();
  }

  private async runWorker(): Promise<void> {
    await Promise.resolve(); // never run a pass inside the caller's stack
    try {
      while (this.wakeRequested) {
        this.wakeRequested = false;
        await this.pass();
      }
    } catch (err) {
      this.ctx.log.error(`raid1: worker pass failed: ${toIoError(err).message}`);
    } finally {
      this.worker = undefined;
    }
  }

  private async workerIdle(): Promise<void> {
    while (this.worker) await this.worker;
  }

  private async pass(): Promise<void> {
    const reads = this.reads;
    const writes = this.writes;
    const failures = this.failures;
    this.reads = [];
    this.writes = [];
    this.failures = [];
    await this.rh.updateStates(this.features.handleErrors);
    this.doRecovery();
    this.doReads(reads);
    await this.doWrites(writes);
    this.doFailures(failures);
  }

  // ---- recovery (§8) -------------------------------------------------------

  private doRecovery(): void {
    this.rh.recoveryPrepare();
    for (let reg = this.rh.recoveryStart(); reg; reg = this.rh.recoveryStart()) this.recover(reg);
    if (!this.inSync && this.log.syncCount === this.log.regionCount) {
      this.ctx.raiseEvent();
      this.inSync = true;
      // reset_ms_flags: error state from before the completed sync no longer steers reads and holds.
      this.legFailure = false;
      for (const leg of this.legs) leg.reset();
    }
  }

  /** recover(): copies the region from the default leg to every other leg, outside the worker. */
  private recover(reg: Region<WriteBio>): void {
    const { regionSize, regionCount } = this.log;
    const source = this.defaultLeg;
    const dests = this.legs.filter((l) => l !== source);
    const sector = reg.key * regionSize;
    // The last region may be short.
    const count = reg.key === regionCount - 1 ? this.ctx.length - sector : regionSize;
    this.copyBuffer ??= Buffer.alloc(this.copyChunkSectors() * SECTOR_SIZE);
    const job = { source, dests, sector, count, stopOnError: this.features.handleErrors };
    this.copying = copyRegion(job, this.copyBuffer, this.throttle).then((result) => {
      this.copying = undefined;
      if (result.readError) {
        this.ctx.log.error('raid1: Unable to read primary mirror during recovery');
        this.failLeg(source, 'sync');
      }
      if (result.writeErrors) {
        this.ctx.log.error(`raid1: Write error during recovery (error = 0x${result.writeErrors.toString(16)})`);
        dests.forEach((leg, k) => {
          if (result.writeErrors & (1 << k)) this.failLeg(leg, 'sync');
        });
        if (!this.features.handleErrors) {
          this.ctx.log.warn(`raid1: region ${reg.key} counts as in sync without handle_errors, but its legs may differ (spec §12 #5)`);
        }
      }
      this.rh.recoveryEnd(reg, !result.readError && result.writeErrors === 0);
    });
  }

  /** kcopyd's sub-job size, within the region and every leg's largest transfer. */
  private copyChunkSectors(): number {
    return Math.min(COPY_CHUNK_SECTORS, this.log.regionSize, ...this.legs.map((l) => l.device.limits.maxTransfer));
  }

  // ---- reads (§7.3) --------------------------------------------------------

  private doReads(reads: readonly ReadBio[]): void {
    for (const bio of reads) {
      const state = this.rh.state(bio.region);
      let leg: Leg | undefined;
      if (state === 'clean' || state === 'dirty') leg = this.choose();
      else if (this.defaultLeg.healthy) leg = this.defaultLeg;
      if (!leg) {
        bio.reject(this.ioError('EIO', 'read', bio.sector, 'no mirror leg in sync for the region is healthy'));
        continue;
      }
      const from = leg;
      this.readLeg(from, bio.sector, bio.into).then(bio.resolve, () => this.readFailed(from, bio));
    }
  }

  /** read_callback */
  private readFailed(leg: Leg, bio: ReadBio): void {
    this.failLeg(leg, 'read');
    if (this.defaultLeg.healthy || this.mirrorAvailable(bio.region)) {
      this.ctx.log.warn(`raid1: Read failure on mirror device ${leg.ref.id}.  Trying alternative device.`);
      this.reads.push(bio);
      this.wake();
      return;
    }
    this.ctx.log.error(`raid1: Read failure on mirror device ${leg.ref.id}.  Failing I/O.`);
    bio.reject(this.ioError('EIO', 'read', bio.sector, `read failed on ${leg.ref.id} and no other leg can serve it`));
  }

  // ---- writes (§7.4) -------------------------------------------------------

  private async doWrites(writes: readonly WriteBio[]): Promise<void> {
    if (writes.length === 0) return;
    const sync: WriteBio[] = [];
    const nosync: WriteBio[] = [];
    const recover: WriteBio[] = [];
    for (const bio of writes) {
      if (bio.kind !== 'write') {
        sync.push(bio);
        continue;
      }
      const state = this.rh.state(bio.region);
      if (state === 'clean' || state === 'dirty') sync.push(bio);
      else if (state === 'nosync') nosync.push(bio);
      else recover.push(bio);
    }
    for (const bio of sync) if (bio.kind === 'write') this.rh.inc(bio.region);
    for (const bio of nosync) this.rh.inc(bio.region);
    // Rule 1 (R1/R3): the regions just dirtied are written to the log and the log
    // device flushed, and that has COMPLETED before any write of this pass is issued.
    try {
      await this.log.flush();
    } catch {
      this.logFailure = true;
    }
    if (this.logFailure && this.features.handleErrors) {
      // Rule 9: never issue a write the log could not mark.
      this.failures.push(...sync);
      this.wake();
    } else {
      for (const bio of sync) this.doWrite(bio);
    }
    for (const bio of recover) this.rh.delay(bio.region, bio);
    for (const bio of nosync) {
      if (this.legFailure && this.features.handleErrors && !this.features.keepLog) {
        this.failures.push(bio);
        this.wake();
      } else {
        // Rule 6: the primary only; the region stays NOSYNC until resync copies it.
        this.legIo(this.defaultLeg, bio).then(() => this.endWrite(bio), (err) => this.endWrite(bio, toIoError(err)));
      }
    }
  }

  private legIo(leg: Leg, bio: WriteBio): Promise<void> {
    switch (bio.kind) {
      case 'write':
        return leg.device.write(leg.offset + bio.sector, bio.data!, { fua: bio.fua, tag: 'data' });
      case 'flush':
        return leg.device.flush();
      case 'discard':
        return leg.device.discard(leg.offset + bio.sector, bio.count);
    }
  }

  /** do_write + write_callback: the same request to every leg; it completes when all legs answered. */
  private doWrite(bio: WriteBio): void {
    void Promise.allSettled(this.legs.map((leg) => this.legIo(leg, bio))).then((results) => {
      const failed = this.legs.filter((_, i) => results[i]!.status === 'rejected');
      if (failed.length === 0) return this.endWrite(bio);
      if (bio.kind === 'discard') {
        // A discard error does not degrade the mirror (§11.5 #11).
        return this.endWrite(bio, this.ioError('EOPNOTSUPP', 'discard', bio.sector, 'discard failed on a mirror leg'));
      }
      for (const leg of failed) this.failLeg(leg, 'write');
      this.failures.push(bio);
      this.wake();
    });
  }

  /** The request's final completion; counted writes leave their region (rule 2). */
  private endWrite(bio: WriteBio, err?: IoError): void {
    if (bio.kind === 'write') this.rh.dec(bio.region);
    if (err) bio.reject(err);
    else bio.resolve();
  }

  // ---- failures (§7.6) -----------------------------------------------------

  private doFailures(failures: readonly WriteBio[]): void {
    for (const bio of failures) {
      if (!this.logFailure) {
        // Rules 7 and 8: a failed write makes its region out of sync; a failed flush, every region that drains.
        this.inSync = false;
        if (bio.kind === 'flush') this.rh.flushFailure = true;
        else if (bio.kind === 'write') this.rh.markNosync(bio.region);
      }
      if (!this.validLeg() || (this.features.keepLog && this.logFailure)) {
        this.endWrite(bio, this.ioError('EIO', bio.kind, bio.sector, 'the write reached no healthy mirror leg or could not be logged'));
      } else if (this.features.handleErrors && !this.features.keepLog) {
        this.hold(bio);
      } else {
        // The data is on at least one healthy leg; the region resyncs from the primary.
        this.endWrite(bio);
      }
    }
  }

  /**
   * hold_bio: keep the write unacknowledged until userspace reconfigures the
   * mirror; once a suspend started it completes: on a noflush suspend it is
   * handed back to the core, which reissues it to the next table (as Linux
   * requeues it), otherwise it fails with EIO.
   */
  private hold(bio: WriteBio): void {
    if (!this.suspended) {
      this.holds.push(bio);
      return;
    }
    this.endWrite(
      bio,
      this.noflushSuspend
        ? new RequeueRequest(this.ctx.deviceName, this.ctx.begin + bio.sector)
        : this.ioError('EIO', bio.kind, bio.sector, 'held write released by suspend'),
    );
  }

  // ---- status (§10) --------------------------------------------------------

  /** Regions in sync of all (dmkit wait --progress). */
  progress(): TargetProgress {
    return { what: 'regions in sync', done: this.log.syncCount, total: this.log.regionCount };
  }

  status(type: StatusType): string {
    if (type === 'info') {
      const devs = this.legs.map((l) => l.ref.id).join(' ');
      const health = this.legs.map((l) => l.statusChar()).join('');
      return `${this.legs.length} ${devs} ${this.log.syncCount}/${this.log.regionCount} 1 ${health} ${this.log.statusInfo()}`;
    }
    const legs = this.legs.map((l) => ` ${l.ref.id} ${l.offset}`).join('');
    const features = [this.features.handleErrors && 'handle_errors', this.features.keepLog && 'keep_log'].filter(Boolean);
    return `${this.log.statusTable()}${this.legs.length}${legs}${features.length ? ` ${features.length} ${features.join(' ')}` : ''}`;
  }

  limits(): TargetLimits {
    // One discard bio (only if every leg discards), no write-zeroes bios.
    return { ...inheritLimits(this.legs.map((l) => l.ref)), writeZeroes: false };
  }

  /** mirror_iterate_devices: the legs (the log device is the log's own business). */
  areas(): DeviceArea[] {
    return this.legs.map((l) => ({ ref: l.ref, start: l.offset, length: this.ctx.length }));
  }

  // ---- suspend / resume (§9) -----------------------------------------------

  /**
   * Held writes are released first (they may keep the region being
   * recovered from quiescing, §11.5 #8); then the region being recovered is
   * finished, not aborted, and no new one is started.
   */
  async presuspend(opts: SuspendOptions): Promise<void> {
    this.suspended = true;
    this.noflushSuspend = opts.noflush;
    for (const bio of this.holds.splice(0)) this.hold(bio);
    this.throttle.stop();
    await this.rh.stopRecovery();
    await this.rh.recoveryIdle();
    await this.workerIdle();
  }

  /** The log is written after the worker drained, so no pass writes it behind postsuspend's back. */
  async postsuspend(): Promise<void> {
    await this.workerIdle();
    await this.log.postsuspend().catch((err) => this.ctx.log.warn(`raid1: log postsuspend failed: ${toIoError(err).message}`));
  }

  async resume(): Promise<void> {
    this.suspended = false;
    this.throttle.restart();
    // A log that cannot be read or written does not stop the resume (its status shows it).
    await this.log.resume().catch((err) => this.ctx.log.warn(`raid1: log resume failed: ${toIoError(err).message}`));
    this.rh.startRecovery();
  }

  /** The destructor does no log I/O: a live mirror was suspended first. */
  async close(): Promise<void> {
    this.throttle.stop();
    await this.copying;
    await this.workerIdle();
    this.closed = true;
  }
}

/** The mirror target type; `opts` switches test-only variants. */
export function makeMirrorTarget(opts: MirrorOptions = {}): TargetType {
  return {
    name: TYPE,
    version: [1, 14, 0],
    construct: (ctx, argv) => mirrorCtr(ctx, argv, opts),
  };
}

export const mirrorTarget: TargetType = makeMirrorTarget();
