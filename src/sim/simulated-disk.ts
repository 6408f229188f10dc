import {
  type BlockDevice, type Extent, type IoTag, type Limits, type WriteOptions, type WriteZeroesOptions,
  SECTOR_SIZE, checkBuffer, checkRequest, makeLimits,
} from '../block/device.ts';
import { IoError } from '../block/errors.ts';
import { chunkExtents } from '../block/chunks.ts';
import { type CrashSelection, DiskState, type KeptWrite, type PendingWrite, type WriteRequest } from './disk-state.ts';
import { type Fault, type FaultOp, type FaultRule, FaultSet, corruptSectors } from './faults.ts';
import type { Rng } from './rng.ts';
import type { Scheduler } from './scheduler.ts';
import { CHUNK_SECTORS, SparseImage } from './sparse-image.ts';

export interface SimulatedDiskOptions {
  name?: string;
  /** Size in sectors; taken from `image` when given. */
  sectors?: number;
  scheduler: Scheduler;
  /** The durable content at power-on (never modified: the disk writes to an overlay). */
  image?: SparseImage;
  limits?: Partial<Limits>;
}

/** One line of a disk's log: the request and what became of it. */
export interface DiskEvent {
  /** Order across every disk of the scheduler. */
  readonly seq: number;
  readonly type: 'submit' | 'complete';
  readonly id: number;
  readonly op: FaultOp;
  readonly sector: number;
  readonly count: number;
  readonly fua?: boolean;
  readonly tag?: IoTag;
  /** On completion: ok, failed (with code), or dropped (acknowledged, never persisted). */
  readonly result?: 'ok' | 'failed' | 'dropped';
  readonly code?: string;
}

/**
 * A disk that does exactly what ARCHITECTURE §1 allows: completed writes sit
 * in a volatile cache until a flush or FUA, requests complete when the seeded
 * scheduler lets them, in any order, and `crash()` yields any durable image a
 * power loss could leave. Fault rules (CRASH-TESTING §2.6) make it fail, lie,
 * corrupt, stall or vanish.
 *
 * limits.flush false makes it write-through (no volatile cache).
 */
export class SimulatedDisk implements BlockDevice {
  readonly name: string;
  readonly sectors: number;
  readonly limits: Limits;
  readonly scheduler: Scheduler;
  readonly faults = new FaultSet();
  readonly log: DiskEvent[] = [];
  /** Requests received per kind, for the I/O-error sweep. */
  readonly counts: Record<FaultOp, number> = { read: 0, write: 0, flush: 0, discard: 0, 'write-zeroes': 0 };
  private readonly state: DiskState;
  private readonly rng: Rng;
  private nextId = 1;
  private closed = false;
  private gone = false;

  constructor(opts: SimulatedDiskOptions) {
    const sectors = opts.image?.sectors ?? opts.sectors;
    if (sectors === undefined || !Number.isSafeInteger(sectors) || sectors < 0) {
      throw new IoError('EINVAL', `simulated disk size ${String(sectors)} is not a whole number of sectors`);
    }
    this.name = opts.name ?? 'sim';
    this.sectors = sectors;
    this.scheduler = opts.scheduler;
    this.rng = opts.scheduler.rng.fork();
    this.limits = makeLimits({ discard: true, discardZeroes: true, writeZeroes: true, ...opts.limits });
    this.state = new DiskState(opts.image ?? new SparseImage(sectors), {
      name: this.name,
      atomicSectors: this.limits.logicalBlockSize / SECTOR_SIZE,
      volatileCache: this.limits.flush,
    });
  }

  async read(sector: number, into: Buffer): Promise<void> {
    this.checkOpen(sector);
    checkBuffer(this, 'read', sector, into);
    const count = into.length / SECTOR_SIZE;
    const { id, fault } = this.submit('read', sector, count);
    return this.schedule(fault, (ok) => {
      if (!ok) return this.failure(id, 'read', sector, count, fault);
      this.state.read(sector, into);
      if (fault?.action === 'corrupt') corruptSectors(into);
      this.logComplete(id, 'read', sector, count, 'ok');
      return undefined;
    });
  }

  async write(sector: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    this.checkOpen(sector);
    checkBuffer(this, 'write', sector, data);
    // The caller may reuse its buffer once we return (ARCHITECTURE §3): keep a copy.
    const copy = Buffer.from(data);
    return this.writeRequest('write', sector, copy.length / SECTOR_SIZE, copy, opts.fua ?? false, opts.tag);
  }

  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions = {}): Promise<void> {
    this.checkOpen(sector);
    checkRequest(this, 'write-zeroes', sector, count);
    return this.writeRequest('write-zeroes', sector, count, null, opts.fua ?? false, opts.tag);
  }

  /**
   * §1.10: with discardZeroes the range reads as zeroes afterwards; without,
   * the disk chooses (seeded) whether this discard zeroes the range or leaves it.
   */
  async discard(sector: number, count: number): Promise<void> {
    this.checkOpen(sector);
    if (!this.limits.discard) {
      throw new IoError('ENOTSUP', `${this.name}: discard at sector ${sector} is not supported`, { device: this.name, sector });
    }
    checkRequest(this, 'discard', sector, count);
    const zeroes = this.limits.discardZeroes || this.rng.chance(0.5);
    if (zeroes) return this.writeRequest('discard', sector, count, null, false, undefined);
    const { id, fault } = this.submit('discard', sector, count);
    return this.schedule(fault, (ok) => {
      if (!ok) return this.failure(id, 'discard', sector, count, fault);
      this.logComplete(id, 'discard', sector, count, 'ok');
      return undefined;
    });
  }

  async flush(): Promise<void> {
    this.checkOpen(0);
    const { id, fault } = this.submit('flush', 0, 0);
    this.state.submitFlush(id);
    return this.schedule(fault, (ok) => {
      if (!ok) {
        this.state.failFlush(id);
        return this.failure(id, 'flush', 0, 0, fault);
      }
      const persist = fault?.action !== 'drop';
      this.state.completeFlush(id, persist);
      this.logComplete(id, 'flush', 0, 0, persist ? 'ok' : 'dropped');
      return undefined;
    });
  }

  async extents(sector: number, count: number): Promise<Extent[]> {
    this.checkOpen(sector);
    checkRequest(this, 'extents', sector, count);
    return chunkExtents(sector, count, CHUNK_SECTORS, (chunk) => this.state.isHole(chunk * CHUNK_SECTORS));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  // ---- simulation controls ----

  addFault(rule: FaultRule): Fault {
    return this.faults.add(rule);
  }

  /** The device goes away: every request, including those in flight, fails with ESHUTDOWN. */
  disappear(): void {
    this.gone = true;
  }

  /** The durable image a power loss now would leave, for the chosen writes (an overlay; the disk is unchanged). */
  crash(sel: CrashSelection = { volatile: 'none' }): SparseImage {
    return this.state.crash(sel);
  }

  /** Completed writes not yet durable, in completion order. */
  volatileWrites(): readonly PendingWrite[] {
    return this.state.volatileWrites();
  }

  /** Writes in flight, and failed writes whose sectors are in doubt, in submission order. */
  inflightWrites(): readonly PendingWrite[] {
    return this.state.inflightWrites();
  }

  /** Spontaneous write-back of chosen volatile writes, whole or in part (§1.5). */
  writeBack(kept: readonly KeptWrite[]): void {
    this.state.writeBack(kept);
  }

  /** Writes back each volatile write with probability `p`, chosen by `rng` (default: the disk's own). */
  writeBackRandom(p = 0.5, rng: Rng = this.rng): void {
    this.state.writeBack(this.state.volatileWrites().filter(() => rng.chance(p)).map((w) => ({ id: w.req.id })));
  }

  // ---- internals ----

  private writeRequest(op: FaultOp, sector: number, count: number, data: Buffer | null, fua: boolean, tag: IoTag | undefined): Promise<void> {
    const { id, fault } = this.submit(op, sector, count, fua, tag);
    const req: WriteRequest = { id, sector, count, data, fua, tag };
    if (data && fault?.action === 'corrupt') corruptSectors(data);
    this.state.submitWrite(req);
    return this.schedule(fault, (ok) => {
      if (!ok) {
        this.state.failWrite(id);
        return this.failure(id, op, sector, count, fault);
      }
      const persist = fault?.action !== 'drop';
      this.state.completeWrite(id, persist);
      this.logComplete(id, op, sector, count, persist ? 'ok' : 'dropped');
      return undefined;
    });
  }

  private submit(op: FaultOp, sector: number, count: number, fua?: boolean, tag?: IoTag): { id: number; fault: Readonly<FaultRule> | undefined } {
    const id = this.nextId++;
    this.counts[op]++;
    const fault = this.faults.check(op, sector, count);
    const ev: DiskEvent = { seq: this.scheduler.nextEvent(), type: 'submit', id, op, sector, count };
    this.log.push(fua || tag ? { ...ev, ...(fua ? { fua } : {}), ...(tag ? { tag } : {}) } : ev);
    return { id, fault };
  }

  /**
   * Queues the completion. `done(ok)` applies it to the disk state and returns
   * the error to reject with, if any; ok is false for a failing rule or a
   * vanished device.
   */
  private schedule(fault: Readonly<FaultRule> | undefined, done: (ok: boolean) => IoError | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      this.scheduler.enqueue({
        readyAt: this.scheduler.clock.now() + (fault?.action === 'delay' ? fault.delayMs ?? 0 : 0),
        complete: () => {
          const err = done(!this.gone && fault?.action !== 'fail');
          if (err) reject(err);
          else resolve();
        },
      });
    });
  }

  private failure(id: number, op: FaultOp, sector: number, count: number, fault: Readonly<FaultRule> | undefined): IoError {
    const code = this.gone ? 'ESHUTDOWN' : fault?.errno ?? 'EIO';
    this.logComplete(id, op, sector, count, 'failed', code);
    const what = op === 'flush' ? 'flush' : `${op} of ${count} sectors at sector ${sector}`;
    const why = this.gone ? 'the device has gone away' : 'injected fault';
    return new IoError(code, `${this.name}: ${what} failed: ${why}`, { device: this.name, sector });
  }

  private logComplete(id: number, op: FaultOp, sector: number, count: number, result: 'ok' | 'failed' | 'dropped', code?: string): void {
    const ev: DiskEvent = { seq: this.scheduler.nextEvent(), type: 'complete', id, op, sector, count, result };
    this.log.push(code ? { ...ev, code } : ev);
  }

  private checkOpen(sector: number): void {
    if (this.closed) throw new IoError('ESHUTDOWN', `${this.name}: device is closed`, { device: this.name, sector });
    if (this.gone) throw new IoError('ESHUTDOWN', `${this.name}: the device has gone away`, { device: this.name, sector });
  }
}
