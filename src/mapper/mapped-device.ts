/**
 * A mapped device: a live and an inactive table slot, suspend/resume, and the
 * I/O gate that holds requests while suspended (basic-targets §1, §4.1, §5).
 */
import {
  type BlockDevice, type Extent, type Limits, type WriteOptions, type WriteZeroesOptions,
  SECTOR_SIZE, checkBuffer, checkLength, checkRequest, makeLimits,
} from '../block/device.ts';
import { IoError } from '../block/errors.ts';
import { chunksLength } from '../block/vectored.ts';
import { RequeueRequest } from './requeue.ts';
import type { Table } from './table.ts';
import type { SuspendOptions } from './target.ts';

export const DM_MAJOR = 253;

export interface MappedDeviceInfo {
  name: string;
  uuid: string;
  major: number;
  minor: number;
  suspended: boolean;
  readOnly: boolean;
  liveTable: boolean;
  inactiveTable: boolean;
  openCount: number;
  eventNr: number;
  targetCount: number;
  /** Sectors; undefined until the first table was loaded (the disk is not registered yet). */
  readAhead: number | undefined;
  sectors: number;
}

const NO_TABLE_LIMITS = makeLimits({ flush: false, fua: false, writeZeroes: false });

export class MappedDevice implements BlockDevice {
  readonly name: string;
  readonly uuid: string;
  readonly major = DM_MAJOR;
  readonly minor: number;
  /** Holders: tables of other devices stacked on this one, and NBD exports. */
  openCount = 0;
  private liveTable: Table | undefined;
  private inactiveTable: Table | undefined;
  /** The user's suspend (DMF_SUSPENDED): what info reports. */
  private suspended = false;
  /** Internal suspends in effect (Linux's internal_suspend_count); they nest, apart from the user's. */
  private internalSuspends = 0;
  /** User suspends and resumes waiting for the last internal resume. */
  private internalResumeWaiters: (() => void)[] = [];
  /** Set from the start of any suspend until the device runs again: new I/O waits at the gate. */
  private gateClosed = false;
  private readonly gateWaiters: (() => void)[] = [];
  private inflight = 0;
  private drained: (() => void) | undefined;
  private events = 0;
  private readonly eventWaiters: (() => void)[] = [];
  private readAheadSectors: number | undefined;
  /** The first table ever loaded, already checked at load time (§3.2). */
  private validatedAtLoad: Table | undefined;
  private removed = false;
  /** Control operations on one device run one at a time. */
  private control: Promise<unknown> = Promise.resolve();
  /**
   * Linux's md->suspend_lock: suspends, resumes and internal ones run their
   * hooks one at a time. Internal ones do not join `control`, so a pool can
   * hold a thin device whose own control operation is waiting on the pool.
   */
  private suspendLock: Promise<unknown> = Promise.resolve();

  constructor(name: string, minor: number, uuid = '') {
    this.name = name;
    this.minor = minor;
    this.uuid = uuid;
  }

  get id(): string {
    return `${this.major}:${this.minor}`;
  }

  get live(): Table | undefined {
    return this.liveTable;
  }

  get inactive(): Table | undefined {
    return this.inactiveTable;
  }

  get isSuspended(): boolean {
    return this.suspended;
  }

  get isSuspendedInternally(): boolean {
    return this.internalSuspends > 0;
  }

  get eventNr(): number {
    return this.events;
  }

  get sectors(): number {
    return this.liveTable?.sectors ?? 0;
  }

  get limits(): Limits {
    return this.liveTable?.limits ?? NO_TABLE_LIMITS;
  }

  info(inactive = false): MappedDeviceInfo {
    const table = inactive ? this.inactiveTable : this.liveTable;
    return {
      name: this.name,
      uuid: this.uuid,
      major: this.major,
      minor: this.minor,
      suspended: this.suspended,
      readOnly: table?.readOnly ?? false,
      liveTable: this.liveTable !== undefined,
      inactiveTable: this.inactiveTable !== undefined,
      openCount: this.openCount,
      eventNr: this.events,
      targetCount: table?.entries.length ?? 0,
      readAhead: this.readAheadSectors,
      sectors: this.sectors,
    };
  }

  // ---- I/O ---------------------------------------------------------------

  read(sector: number, into: Buffer): Promise<void> {
    return this.submit((table) => {
      checkBuffer(this, 'read', sector, into);
      return table.read(sector, into);
    });
  }

  write(sector: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    return this.submit((table) => {
      checkBuffer(this, 'write', sector, data);
      return table.write(sector, data, opts);
    });
  }

  writev(sector: number, chunks: readonly Buffer[], opts: WriteOptions = {}): Promise<void> {
    return this.submit((table) => {
      const length = chunksLength(chunks);
      checkLength(this, 'write', sector, length);
      return table.writev(sector, chunks, length / SECTOR_SIZE, opts);
    });
  }

  flush(): Promise<void> {
    return this.submit((table) => table.flush());
  }

  discard(sector: number, count: number): Promise<void> {
    return this.submit((table) => {
      checkRequest(this, 'discard', sector, count);
      if (!table.limits.discard) throw this.unsupported('discard', sector);
      return table.discard(sector, count);
    });
  }

  writeZeroes(sector: number, count: number, opts: WriteZeroesOptions = {}): Promise<void> {
    return this.submit((table) => {
      checkRequest(this, 'write-zeroes', sector, count);
      if (!table.limits.writeZeroes) throw this.unsupported('write-zeroes', sector);
      return table.writeZeroes(sector, count, opts);
    });
  }

  extents(sector: number, count: number): Promise<Extent[]> {
    return this.submit((table) => {
      checkRequest(this, 'extents', sector, count);
      return table.extents(sector, count);
    });
  }

  /**
   * Runs one request through the live table, counted as in flight. A target
   * that hands the request back (RequeueRequest, during a noflush suspend)
   * gets it again, through whatever table is live after resume (§10.1 rule 6).
   */
  private async submit<T>(io: (table: Table) => Promise<T>): Promise<T> {
    for (;;) {
      const table = await this.enter();
      try {
        return await io(table);
      } catch (err) {
        if (!(err instanceof RequeueRequest)) throw err;
      } finally {
        this.leave();
      }
      if (!this.gateClosed) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Closing a handle on a mapped device does nothing: the registry's remove destroys it. */
  async close(): Promise<void> {}

  /**
   * The I/O gate (§4.1): while suspended, requests wait in FIFO order and are
   * mapped through whatever table is live after resume (§10.1 rule 6). No live
   * table: EIO.
   */
  private async enter(): Promise<Table> {
    while (this.gateClosed && !this.removed) await new Promise<void>((resolve) => this.gateWaiters.push(resolve));
    if (this.removed) throw new IoError('ESHUTDOWN', `${this.name}: device was removed`, { device: this.name });
    const table = this.liveTable;
    if (!table) throw new IoError('EIO', `${this.name}: mapping table unavailable, erroring io`, { device: this.name });
    this.inflight++;
    return table;
  }

  private leave(): void {
    if (--this.inflight === 0 && this.drained) {
      this.drained();
      this.drained = undefined;
    }
  }

  private unsupported(op: string, sector: number): IoError {
    return new IoError('EOPNOTSUPP', `${this.name}: ${op} is not supported by this table`, { device: this.name, sector });
  }

  // ---- control (serialised) ----------------------------------------------

  /** Runs one control operation after the previous one finished. */
  serialize<T>(op: () => Promise<T>): Promise<T> {
    const run = this.control.then(op, op);
    this.control = run.catch(() => undefined);
    return run;
  }

  private underSuspendLock<T>(op: () => Promise<T>): Promise<T> {
    const run = this.suspendLock.then(op, op);
    this.suspendLock = run.catch(() => undefined);
    return run;
  }

  /** Stages a table; a previously staged one is destroyed (TABLE_LOAD). */
  async stage(table: Table): Promise<void> {
    const old = this.inactiveTable;
    this.inactiveTable = table;
    await old?.close();
  }

  /** TABLE_CLEAR */
  async clear(): Promise<void> {
    const old = this.inactiveTable;
    this.inactiveTable = undefined;
    await old?.close();
  }

  /**
   * DEV_SUSPEND: close the gate, presuspend hooks, wait for every in-flight
   * request, postsuspend hooks. Not a flush (§10.1 rule 5). A device held
   * by an internal suspend is suspended once that ends, as dm_suspend waits
   * for DMF_SUSPENDED_INTERNALLY to clear.
   */
  async suspend(opts: SuspendOptions): Promise<void> {
    await this.retryAfterInternalResume(async () => {
      if (this.suspended) return;
      if (this.internalSuspends > 0) return 'held';
      await this.suspendTargets(opts);
      this.suspended = true;
    });
  }

  /**
   * DEV_SUSPEND without the suspend flag: swap in a staged table (validating
   * it first unless it was validated at load), then preresume/resume hooks and
   * reopen the gate. A failed validation destroys the staged table and leaves
   * the device suspended with the old one (§3.2). A device also held by an
   * internal suspend resumes once that ends (dm_resume waits as dm_suspend does).
   */
  async resume(opts: SuspendOptions): Promise<void> {
    const next = this.inactiveTable;
    if (next) {
      await this.suspend(opts);
      this.inactiveTable = undefined;
      if (next !== this.validatedAtLoad) {
        try {
          if (!(next.hasNoDevices && this.liveTable)) next.checkDeviceAreas();
        } catch (err) {
          await next.close();
          throw err;
        }
      }
      const old = this.liveTable;
      this.liveTable = next;
      this.updateReadAhead(next);
      await old?.close();
    }
    await this.retryAfterInternalResume(async () => {
      if (!this.suspended) return;
      if (this.internalSuspends > 0) return 'held';
      const table = this.liveTable;
      if (!table || table.sectors === 0) throw new IoError('EINVAL', `${this.name}: cannot resume a device without a table`);
      await this.resumeTargets(table);
      this.suspended = false;
    });
  }

  /**
   * dm_internal_suspend_noflush: holds the device's I/O for a target of
   * another device (dm-thin's pool suspend). The first one suspends with
   * noflush unless the user's suspend already holds everything; nested ones
   * only count. The user-visible state (info) does not change.
   */
  internalSuspend(): Promise<void> {
    return this.underSuspendLock(async () => {
      if (this.internalSuspends++ > 0 || this.suspended) return;
      await this.suspendTargets({ noflush: true });
    });
  }

  /**
   * dm_internal_resume: the last one resumes the device unless the user
   * suspended it meanwhile or before; then it stays suspended for the
   * user's resume. A refused preresume leaves the device suspended as if
   * the user had suspended it, so resume and postsuspend hooks stay paired
   * (Linux does the same); the refusal is the caller's to report.
   */
  internalResume(): Promise<void> {
    return this.underSuspendLock(async () => {
      if (this.internalSuspends === 0) throw new IoError('EINVAL', `${this.name}: internal resume without an internal suspend`);
      if (--this.internalSuspends > 0) return;
      try {
        if (this.suspended) return;
        if (this.liveTable) await this.resumeTargets(this.liveTable);
        else this.openGate();
      } catch (err) {
        this.suspended = true;
        throw err;
      } finally {
        for (const wake of this.internalResumeWaiters.splice(0)) wake();
      }
    });
  }

  /**
   * Runs `step` under the suspend lock; a step that finds an internal
   * suspend in effect returns 'held' and runs again after the last internal
   * resume (dm_suspend and dm_resume wait for DMF_SUSPENDED_INTERNALLY to
   * clear, then retry). The wait is outside the lock, which that resume needs.
   */
  private async retryAfterInternalResume(step: () => Promise<'held' | undefined>): Promise<void> {
    for (;;) {
      const held = await this.underSuspendLock(async () => {
        if ((await step()) !== 'held') return undefined;
        return { ended: new Promise<void>((wake) => this.internalResumeWaiters.push(wake)) };
      });
      if (!held) return;
      await held.ended;
    }
  }

  /** Linux's __dm_suspend and the postsuspend hooks. */
  private async suspendTargets(opts: SuspendOptions): Promise<void> {
    this.gateClosed = true;
    const entries = this.liveTable?.entries ?? [];
    for (const e of entries) await e.target.presuspend?.(opts);
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    for (const e of entries) await e.target.postsuspend?.(opts);
  }

  /** Linux's __dm_resume: preresume and resume hooks, then the held requests go. */
  private async resumeTargets(table: Table): Promise<void> {
    for (const e of table.entries) await e.target.preresume?.();
    for (const e of table.entries) await e.target.resume?.();
    this.openGate();
  }

  private openGate(): void {
    this.gateClosed = false;
    for (const wake of this.gateWaiters.splice(0)) wake();
  }

  /** True until a table has been loaded successfully: the disk is not registered yet. */
  get neverLoaded(): boolean {
    return this.validatedAtLoad === undefined;
  }

  /** The first successful load registers the disk; its table was checked at load (§3.2). */
  registerDisk(table: Table): void {
    this.validatedAtLoad = table;
    this.updateReadAhead(table);
  }

  private updateReadAhead(table: Table): void {
    // max(256, 2 × io_opt) sectors; mainline never lowers it on reload (§3.5).
    const wanted = Math.max(256, (2 * table.limits.ioOpt) / 512);
    this.readAheadSectors = Math.max(this.readAheadSectors ?? 0, wanted);
  }

  /**
   * Destroys both tables (DEV_REMOVE): suspends first unless the user or an
   * internal suspend did, so no request is left in flight. It does not wait
   * for an internal resume (Linux's __dm_destroy): a thin device can be
   * removed while its pool is suspended; the pool's resume then finds it gone.
   */
  async destroy(): Promise<void> {
    const hadLive = this.liveTable !== undefined;
    await this.underSuspendLock(async () => {
      if (!hadLive || this.suspended || this.internalSuspends > 0) return;
      await this.suspendTargets({ noflush: false });
      this.suspended = true;
    });
    this.removed = true;
    await this.inactiveTable?.close();
    await this.liveTable?.close();
    this.inactiveTable = undefined;
    this.liveTable = undefined;
    if (hadLive) this.raiseEvent();
    for (const wake of this.gateWaiters.splice(0)) wake();
  }

  // ---- events (§7.1) -----------------------------------------------------

  raiseEvent(): void {
    this.events = (this.events + 1) >>> 0;
    for (const wake of this.eventWaiters.splice(0)) wake();
  }

  /** DEV_WAIT: resolves once the event number differs from `eventNr`. */
  async waitEvent(eventNr: number, signal?: AbortSignal): Promise<number> {
    while (this.events === eventNr) {
      if (signal?.aborted) throw new IoError('EINTR', `${this.name}: wait interrupted`);
      await new Promise<void>((resolve) => {
        this.eventWaiters.push(resolve);
        signal?.addEventListener('abort', () => resolve(), { once: true });
      });
    }
    return this.events;
  }
}
