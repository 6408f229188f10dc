import type { BlockDevice, Extent, Limits, WriteOptions, WriteZeroesOptions } from '../block/device.ts';

/**
 * An underlying device as a target holds it: the device plus the dev_t by
 * which tables name it (`7:0` for backing files, `253:N` for mapped devices).
 */
export interface DeviceRef {
  readonly device: BlockDevice;
  readonly major: number;
  readonly minor: number;
  /** `major:minor`, as every table line prints it. */
  readonly id: string;
  /** The kernel disk name used in log texts: `loop0`, `dm-1`, `nbd0`. */
  readonly diskName: string;
}

/** Injected time, so flakey and delay run on a virtual clock under test. */
export interface Clock {
  /** Milliseconds since an arbitrary epoch. */
  now(): number;
  /**
   * Resolves after `ms` milliseconds of this clock. Once `signal` aborts, the
   * wake-up no longer matters: the clock may reject or never settle, so a
   * cancelled timer does not keep the process alive.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/** What a target's constructor gets besides its arguments (ARCHITECTURE §4). */
export interface TargetContext {
  /** The mapped device's name. */
  readonly deviceName: string;
  /** The mapped device's `major:minor`, as kernel log texts name it. */
  readonly md: string;
  /** This target's first sector in the mapped device and its length, sectors. */
  readonly begin: number;
  readonly length: number;
  readonly readOnly: boolean;
  readonly clock: Clock;
  readonly log: Logger;
  /**
   * Opens an underlying device named as in a table: `major:minor`,
   * `/dev/mapper/NAME`, a file or block-device path, or a URI (`nbd://…`).
   * Rejects with IoError ENOENT / ENOTBLK / EOVERFLOW / EINVAL as Linux's
   * dm_get_device does. Devices opened by a constructor that then fails are
   * released by the mapper, so a constructor never cleans up.
   */
  openDevice(arg: string): Promise<DeviceRef>;
  /** dm_table_event: bumps the mapped device's event number and wakes waiters. */
  raiseEvent(): void;
  /**
   * dm_internal_suspend_noflush on the mapped device this target belongs to:
   * holds its new I/O and waits for the I/O in flight, without a flush.
   * Nests, and is apart from the user's suspend: the device's info still
   * reads active (dm-thin's pool suspend holds its thin devices this way).
   */
  internalSuspend(): Promise<void>;
  /** dm_internal_resume: undoes one internalSuspend(); the last one lets the held I/O go, unless the user suspended the device too. */
  internalResume(): Promise<void>;
}

/** One area of an underlying device a target uses (Linux's iterate_devices). */
export interface DeviceArea {
  readonly ref: DeviceRef;
  readonly start: number;
  readonly length: number;
}

/**
 * What a target advertises (ARCHITECTURE §4; basic-targets §3.5). The mapper
 * combines them over the table: flush/fua if any target has them,
 * discard/writeZeroes/discardZeroes only if every target has them.
 */
export interface TargetLimits {
  logicalBlockSize: number;
  physicalBlockSize: number;
  ioMin: number;
  ioOpt: number;
  flush: boolean;
  fua: boolean;
  discard: boolean;
  writeZeroes: boolean;
  discardZeroes: boolean;
}

export type StatusType = 'info' | 'table';

/** Background work of one target: `done` of `total` units (regions), and what the work is. */
export interface TargetProgress {
  readonly what: string;
  readonly done: number;
  readonly total: number;
}

export interface SuspendOptions {
  /** dmsetup suspend --noflush */
  noflush: boolean;
}

/**
 * A target instance: one table line, constructed from its arguments. All
 * sectors are relative to the target's first sector. The mapper has already
 * validated range and alignment and split at `maxIoSectors`.
 */
export interface Target {
  /**
   * Reads and writes never cross a multiple of this many sectors counted from
   * the target start (striped: the chunk size). Undefined: no limit.
   */
  readonly maxIoSectors?: number;
  read(sector: number, into: Buffer): Promise<void>;
  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void>;
  /**
   * A write whose data is `chunks` in order (block/vectored.ts), split like
   * `write`; only their total is whole sectors. Optional: the mapper joins
   * the chunks and calls `write` for a target without it, so only targets
   * that pass data through without looking at it gain by having it.
   */
  writev?(sector: number, chunks: readonly Buffer[], opts: WriteOptions): Promise<void>;
  /** An empty flush (REQ_PREFLUSH) reaching this target; targets with no volatile state resolve at once. */
  flush(): Promise<void>;
  /** Rejects with ENOTSUP (EOPNOTSUPP) where the target has no discard. */
  discard(sector: number, count: number): Promise<void>;
  writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void>;
  /** Allocation map of a range, where the target knows one. */
  extents?(sector: number, count: number): Promise<Extent[]>;
  limits(): TargetLimits;
  /** The areas this target uses, for deps and the device-area checks. */
  areas(): DeviceArea[];
  /** The text after `start length type ` in `dmsetup status` (info) or `dmsetup table` (table). */
  status(type: StatusType): string;
  /**
   * Runs before an `info` status that does not carry --noflush (Linux does
   * it inside its status method, unless DM_STATUS_NOFLUSH_FLAG): thin-pool
   * and clone commit so the figures are current, unless suspended. A
   * failed commit is not an error of the status request.
   */
  prepareStatus?(): Promise<void>;
  /**
   * Long-running background work (hydration, resync, recalculation): how far
   * it got, for `dmkit wait --progress`. Absent or undefined: none.
   */
  progress?(): TargetProgress | undefined;
  /** dmsetup message; returns response text, if any. Absent: "Target type does not support messages". */
  message?(argv: string[]): Promise<string | undefined>;
  presuspend?(opts: SuspendOptions): Promise<void>;
  postsuspend?(opts: SuspendOptions): Promise<void>;
  /** May refuse to resume (error: the device stays suspended). */
  preresume?(): Promise<void>;
  resume?(): Promise<void>;
  /** Destructor. Must not close underlying devices: the mapper releases them. */
  close(): Promise<void>;
}

export interface TargetFeatures {
  /** Must be the only target of its table (thin-pool). */
  singleton?: boolean;
  /** May not appear in a read-only table. */
  alwaysWriteable?: boolean;
  /** May not be mixed with other types, nor replaced except by a wildcard. */
  immutable?: boolean;
  /** May replace an immutable type's table (error). */
  wildcard?: boolean;
}

/** A registered target type: name, version, and its constructor. */
export interface TargetType {
  readonly name: string;
  readonly version: readonly [number, number, number];
  readonly features?: TargetFeatures;
  /**
   * Linux's ctr. Rejects with an IoError whose message is the ctr message
   * exactly as Linux sets ti->error (e.g. `Invalid device sector`) and whose
   * code is the errno Linux returns.
   */
  construct(ctx: TargetContext, argv: string[]): Promise<Target>;
}

export type { Limits };
