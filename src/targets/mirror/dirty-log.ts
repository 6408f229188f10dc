/**
 * The dirty-region logs of dm-mirror (Linux dm-log.c; mirror spec §2.3, §4,
 * §5): `core` keeps its bitmaps in memory only; `disk` keeps the clean bitmap
 * in the on-disk buffer (disk-log.ts) and writes it out on flush. Both keep
 * Linux's arithmetic literally, including the per-log "touched" flags that
 * decide the exact I/O sequence of a flush.
 */
import { SECTOR_SIZE } from '../../block/device.ts';
import { IoError, toIoError } from '../../block/errors.ts';
import { parseU32Wrapping } from '../../mapper/args.ts';
import type { DeviceRef, Logger, TargetContext } from '../../mapper/target.ts';
import { bitsetBytes, clearBit, findNextZeroBit, popcount, setBit, testBit } from './bits.ts';
import { cleanBitmap, decodeHeader, encodeHeader, LOG_MAGIC, LOG_VERSION, logBufferSize, type DiskLogHeader } from './disk-log.ts';
import { checkHeader, type SyncMode } from './disk-log-validate.ts';

const UINT_MAX = 0xffffffff;
/** Kernel log prefix of dm-log. */
const PREFIX = 'dirty region log: ';

/** What a log needs from its mirror (dm_dirty_log_create's flush_callback_fn and the table). */
export interface LogHost {
  /** mirror_flush: one empty flush to every leg at once; false when any leg failed it. */
  flushLegs(): Promise<boolean>;
  raiseEvent(): void;
  readonly log: Logger;
}

/** A failure of the log constructor: Linux logs `reason` and the mirror reports its own text. */
export class LogCtrError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

// ---- core ------------------------------------------------------------------

export class CoreLog {
  readonly type: 'core' | 'disk' = 'core';
  readonly regionCount: number;
  /** 1 = clean: in sync and no write possibly in flight. */
  protected clean: Uint8Array;
  /** 1 = in sync: reads may use any leg, writes go to every leg. */
  private readonly sync: Uint8Array;
  /** 1 = handed out as resync work and not finished. */
  private readonly recovering: Uint8Array;
  private syncCountValue: number;
  protected syncSearch = 0;
  protected touchedDirtied = false;
  protected touchedCleaned = false;
  /** Sticky: a leg flush failed, no region can become clean again (rule 4). */
  protected flushFailed = false;
  host: LogHost | undefined;

  constructor(readonly regionSize: number, readonly syncMode: SyncMode, readonly length: number, clean?: Uint8Array) {
    this.regionCount = Math.ceil(length / regionSize);
    const bytes = bitsetBytes(this.regionCount);
    this.clean = clean ?? new Uint8Array(bytes).fill(0xff);
    this.sync = new Uint8Array(bytes).fill(syncMode === 'nosync' ? 0xff : 0);
    this.recovering = new Uint8Array(bytes);
    this.syncCountValue = syncMode === 'nosync' ? this.regionCount : 0;
  }

  /** log_set_bit / log_clear_bit: any change to any bitmap marks the whole log touched (§4). */
  protected setBit(map: Uint8Array, n: number): void {
    setBit(map, n);
    this.touchedCleaned = true;
  }

  protected clearBit(map: Uint8Array, n: number): void {
    clearBit(map, n);
    this.touchedDirtied = true;
  }

  inSync(region: number): boolean {
    return testBit(this.sync, region);
  }

  isClean(region: number): boolean {
    return testBit(this.clean, region);
  }

  markRegion(region: number): void {
    this.clearBit(this.clean, region);
  }

  clearRegion(region: number): void {
    if (!this.flushFailed) this.setBit(this.clean, region);
  }

  /** The next region to resynchronise, marked recovering; undefined when none is left this round. */
  getResyncWork(): number | undefined {
    if (this.syncSearch >= this.regionCount) return undefined;
    let region: number;
    do {
      region = findNextZeroBit(this.sync, this.regionCount, this.syncSearch);
      this.syncSearch = region + 1;
      if (region >= this.regionCount) return undefined;
    } while (testBit(this.recovering, region));
    this.setBit(this.recovering, region);
    return region;
  }

  /** sync_count moves on every success, without looking at the bit (spec §12 pitfall 4). */
  setRegionSync(region: number, inSync: boolean): void {
    this.clearBit(this.recovering, region);
    if (inSync) {
      this.setBit(this.sync, region);
      this.syncCountValue++;
    } else if (testBit(this.sync, region)) {
      this.syncCountValue--;
      this.clearBit(this.sync, region);
    }
  }

  get syncCount(): number {
    return this.syncCountValue;
  }

  async flush(): Promise<void> {}

  async resume(): Promise<void> {
    this.syncSearch = 0;
  }

  async postsuspend(): Promise<void> {}

  /** The log's words of the mirror's info status. */
  statusInfo(): string {
    return '1 core';
  }

  /** The log's part of the table line, every piece followed by one space. */
  statusTable(): string {
    return `core ${this.argCount(1)} ${this.regionSize} ${this.syncWord()}`;
  }

  protected argCount(base: number): number {
    return this.syncMode === 'default' ? base : base + 1;
  }

  /** DMEMIT_SYNC: the sync keyword followed by a space, when one was given. */
  protected syncWord(): string {
    return this.syncMode === 'default' ? '' : `${this.syncMode} `;
  }

  /** Replaces the in-sync set by the clean bitmap (disk resume, §5.4 step 8). */
  protected loadSyncFromClean(): void {
    this.sync.set(this.clean);
    this.syncCountValue = popcount(this.clean);
    this.syncSearch = 0;
  }
}

// ---- disk ------------------------------------------------------------------

export class DiskLog extends CoreLog {
  override readonly type = 'disk';
  /** The whole on-disk image: header, clean bitmap (this.clean is a view into it), padding. */
  private readonly buf: Buffer;
  private header: DiskLogHeader = { magic: LOG_MAGIC, version: LOG_VERSION, nrRegions: 0n };
  private devFailed = false;
  private devFlushFailed = false;
  /** Log I/O runs one request sequence at a time (worker passes and postsuspend). */
  private serial: Promise<unknown> = Promise.resolve();

  constructor(readonly dev: DeviceRef, regionSize: number, syncMode: SyncMode, length: number, readonly bufSize: number) {
    const buf = Buffer.alloc(bufSize);
    super(regionSize, syncMode, length, cleanBitmap(buf, Math.ceil(length / regionSize)));
    this.buf = buf;
  }

  /** The buffer as the next write would put it on disk (tests compare it with golden images). */
  get image(): Buffer {
    return this.buf;
  }

  private exclusive<T>(op: () => Promise<T>): Promise<T> {
    const run = this.serial.then(op, op);
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** fail_log_device: sticky, one event the first time. */
  private failDevice(): void {
    if (this.devFailed) return;
    this.devFailed = true;
    this.host?.raiseEvent();
  }

  /**
   * §5.5. Dirty marks are written and the log device flushed before this
   * returns (R1/R3: the caller issues leg writes only after it resolved);
   * newly set clean bits are written only after every leg's cache was
   * flushed (rule 3), and not flushed themselves (losing them costs a resync).
   */
  override flush(): Promise<void> {
    return this.exclusive(async () => {
      if (!this.touchedCleaned && !this.touchedDirtied) return;
      if (this.touchedCleaned && this.host && !(await this.host.flushLegs())) {
        // Rule 4: which regions reached which leg's media is unknown: all dirty, for good.
        this.flushFailed = true;
        for (let r = 0; r < this.regionCount; r++) this.clearBit(this.clean, r);
      }
      try {
        await this.dev.device.write(0, this.buf, { tag: 'bitmap' });
      } catch (err) {
        this.failDevice();
        throw this.ioError('write', err);
      }
      if (this.touchedDirtied) {
        try {
          await this.dev.device.flush();
        } catch (err) {
          this.devFlushFailed = true;
          this.failDevice();
          this.touchedCleaned = false;
          throw this.ioError('flush', err);
        }
        this.touchedDirtied = false;
      }
      this.touchedCleaned = false;
    });
  }

  /** §5.4: the on-disk clean bitmap becomes the in-sync set; the header is rewritten and flushed. */
  override resume(): Promise<void> {
    return this.exclusive(async () => {
      const readOk = await this.readHeader();
      if (!readOk) {
        this.host?.log.warn(`${PREFIX}${this.dev.id}: Failed to read header on dirty region log device`);
        this.failDevice();
        this.header.nrRegions = 0n;
      }
      const first = Number(BigInt.asUintN(32, this.header.nrRegions));
      for (let r = first; r < this.regionCount; r++) {
        if (this.syncMode === 'nosync') this.setBit(this.clean, r);
        else this.clearBit(this.clean, r);
      }
      // Bits past the end, up to the 64-bit word, are kept 0 (device shrunk; old 32-bit logs).
      for (let r = this.regionCount; r % 64 !== 0; r++) this.clearBit(this.clean, r);
      this.loadSyncFromClean();
      this.header.nrRegions = BigInt(this.regionCount);
      encodeHeader(this.buf, this.header);
      try {
        await this.dev.device.write(0, this.buf, { tag: 'bitmap' });
        try {
          await this.dev.device.flush();
        } catch (err) {
          this.devFlushFailed = true;
          throw err;
        }
      } catch (err) {
        this.host?.log.warn(`${PREFIX}${this.dev.id}: Failed to write header on dirty region log device: ${toIoError(err).message}`);
        this.failDevice();
        throw this.ioError('write', err);
      }
    });
  }

  /** read_header: false when the read failed or the version is unknown (§5.4 steps 1–5). */
  private async readHeader(): Promise<boolean> {
    const scratch = Buffer.alloc(this.bufSize);
    try {
      await this.dev.device.read(0, scratch);
    } catch (err) {
      // The buffer keeps what it held (zeroes before the first successful read).
      this.host?.log.warn(`${PREFIX}${this.dev.id}: log read failed: ${toIoError(err).message}`);
      return false;
    }
    this.buf.set(scratch);
    const check = checkHeader(decodeHeader(this.buf), this.syncMode);
    this.header = check.header;
    if (!check.ok) this.host?.log.warn(`${PREFIX}${check.reason}`);
    return check.ok;
  }

  override postsuspend(): Promise<void> {
    return this.flush();
  }

  override statusInfo(): string {
    return `3 disk ${this.dev.id} ${this.devFlushFailed ? 'F' : this.devFailed ? 'D' : 'A'}`;
  }

  override statusTable(): string {
    return `disk ${this.argCount(2)} ${this.dev.id} ${this.regionSize} ${this.syncWord()}`;
  }

  private ioError(op: 'write' | 'flush', err: unknown): IoError {
    return new IoError(toIoError(err).code, `${this.dev.diskName}: dirty region log ${op} failed: ${toIoError(err).message}`, {
      device: this.dev.device.name, sector: 0, cause: err,
    });
  }
}

export type DirtyLog = CoreLog;

// ---- constructors (§2.3) ---------------------------------------------------

/** create_log_context's argument checks: sync keyword first, then the region size (c1–c4). */
function parseCommon(ctx: TargetContext, argv: readonly string[], wrongCount: string): { regionSize: number; mode: SyncMode } {
  if (argv.length < 1 || argv.length > 2) throw new LogCtrError(wrongCount);
  let mode: SyncMode = 'default';
  if (argv.length > 1) {
    if (argv[1] === 'sync') mode = 'sync';
    else if (argv[1] === 'nosync') mode = 'nosync';
    else throw new LogCtrError(`unrecognised sync argument to dirty region log: ${argv[1]}`);
  }
  const regionSize = parseU32Wrapping(argv[0]!);
  if (regionSize === undefined || regionSize < 2 || regionSize > ctx.length || (regionSize & (regionSize - 1)) !== 0) {
    throw new LogCtrError(`invalid region size ${argv[0]}`);
  }
  if (Math.ceil(ctx.length / regionSize) > UINT_MAX) throw new LogCtrError(`region count exceeds limit of ${UINT_MAX}`);
  return { regionSize, mode };
}

/**
 * dm_dirty_log_create: `core` or `disk` with their arguments. Any failure is
 * a LogCtrError (the reason goes to the log; the mirror reports "Error
 * creating mirror dirty log"). Construction does no I/O on the log device.
 */
export async function createDirtyLog(ctx: TargetContext, type: string, argv: readonly string[]): Promise<DirtyLog> {
  if (type === 'core') {
    const { regionSize, mode } = parseCommon(ctx, argv, 'wrong number of arguments to dirty region log');
    return new CoreLog(regionSize, mode, ctx.length);
  }
  if (type === 'disk') {
    if (argv.length < 2 || argv.length > 3) throw new LogCtrError('wrong number of arguments to disk dirty region log');
    let dev: DeviceRef;
    try {
      dev = await ctx.openDevice(argv[0]!);
    } catch (err) {
      throw new LogCtrError(`log device ${argv[0]}: ${toIoError(err).message}`);
    }
    const { regionSize, mode } = parseCommon(ctx, argv.slice(1), 'wrong number of arguments to dirty region log');
    const regionCount = Math.ceil(ctx.length / regionSize);
    const bufSize = logBufferSize(regionCount, dev.device.limits.logicalBlockSize);
    if (bufSize > dev.device.sectors * SECTOR_SIZE) throw new LogCtrError(`log device ${dev.id} too small: need ${bufSize} bytes`);
    return new DiskLog(dev, regionSize, mode, ctx.length, bufSize);
  }
  throw new LogCtrError(`Module for logging type "${type}" not found.`);
}
