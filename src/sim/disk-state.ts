import type { IoTag } from '../block/device.ts';
import { IoError } from '../block/errors.ts';
import { SparseImage } from './sparse-image.ts';
import { type Span, intersectSpans, subtractSpan } from './spans.ts';

/** A write, write-zeroes or zeroing discard as the disk received it. */
export interface WriteRequest {
  readonly id: number;
  readonly sector: number;
  readonly count: number;
  /** The bytes written (a private copy), or null for zeroes. */
  readonly data: Buffer | null;
  readonly fua: boolean;
  readonly tag?: IoTag | undefined;
}

/** A write whose sectors are not known durable: which of its sectors still matter. */
export interface PendingWrite {
  readonly req: WriteRequest;
  /** Sectors of this write that a crash may still reveal (later writes trim them). */
  live: Span[];
}

/** One write chosen for a crash state; `ranges` tears it to those sectors (absent: all of it). */
export interface KeptWrite {
  readonly id: number;
  readonly ranges?: readonly { readonly sector: number; readonly count: number }[] | undefined;
}

/**
 * Which volatile writes survive a crash (applied in completion order) and
 * which parts of the writes in flight had reached the media (ARCHITECTURE §1).
 */
export interface CrashSelection {
  readonly volatile: 'all' | 'none' | readonly KeptWrite[];
  readonly inflight?: readonly KeptWrite[] | undefined;
}

export interface DiskStateOptions {
  /** The atomic unit, sectors: a torn write keeps or loses whole units (the logical block size). */
  atomicSectors: number;
  /** False: a write-through disk, every completed write is durable. */
  volatileCache: boolean;
  /** Name used in error messages. */
  name: string;
}

/**
 * The disk model of ARCHITECTURE §1 as a state machine with no notion of time:
 * a durable image, the volatile cache of completed writes in completion order,
 * the writes in flight (and failed writes, whose sectors stay in doubt, §1.9),
 * and the flushes in flight with the writes they cover. SimulatedDisk drives
 * it live; the crash explorer replays recordings through it.
 */
export class DiskState {
  readonly durable: SparseImage;
  private view: SparseImage;
  /** Completed, not yet durable, in completion order (§1.1, §1.5). */
  private readonly cache: (PendingWrite & { order: number })[] = [];
  /** Submitted and not completed, or failed: any part may have landed (§1.2, §1.9). */
  private readonly inflight = new Map<number, PendingWrite & { failed: boolean }>();
  /** Flush id → completion count when it was submitted: it covers writes completed before (§1.4). */
  private readonly flushes = new Map<number, number>();
  private completions = 0;
  /** The read view holds writes the durable image and cache do not (dropped by a fault). */
  private viewDiverged = false;
  private frozen: SparseImage | undefined;
  private readonly opts: DiskStateOptions;

  constructor(initial: SparseImage, opts: DiskStateOptions) {
    this.opts = opts;
    this.durable = initial.overlay();
    this.view = this.durable.overlay();
  }

  get sectors(): number {
    return this.durable.sectors;
  }

  /** Reads see the newest completed write (§1.6). */
  read(sector: number, into: Buffer): void {
    this.view.read(sector, into);
  }

  isHole(sector: number): boolean {
    return this.view.isHole(sector);
  }

  /** Completed writes that are not yet durable, in completion order. */
  volatileWrites(): readonly PendingWrite[] {
    return this.cache;
  }

  /** Writes in flight and failed writes, in submission order. */
  inflightWrites(): readonly PendingWrite[] {
    return [...this.inflight.values()].sort((a, b) => a.req.id - b.req.id);
  }

  get hasFlushesInFlight(): boolean {
    return this.flushes.size > 0;
  }

  submitWrite(req: WriteRequest): void {
    this.inflight.set(req.id, { req, live: [[req.sector, req.sector + req.count]], failed: false });
  }

  /**
   * The write completes. `persist` false: the disk acknowledges it and serves
   * it to reads but will never make it durable (a dropping fault).
   */
  completeWrite(id: number, persist = true): void {
    const w = this.take(id);
    const { req } = w;
    // A completed write supersedes what failed writes may have left (§1.9).
    for (const other of this.inflight.values()) {
      if (other.failed) other.live = subtractSpan(other.live, req.sector, req.sector + req.count);
    }
    apply(this.view, req, [[req.sector, req.sector + req.count]]);
    if (!persist) {
      this.viewDiverged = true;
      return;
    }
    const cached = { req, live: w.live, order: this.completions++ };
    this.cache.push(cached);
    // FUA (§1.3) or a write-through disk: durable at completion, only this write.
    if (req.fua || !this.opts.volatileCache) this.persist(cached, cached.live);
  }

  /** The write failed: its sectors stay old, new or torn until a later write covers them (§1.9). */
  failWrite(id: number): void {
    const w = this.take(id);
    this.inflight.set(id, { ...w, failed: true });
  }

  /** The request was refused before it reached the media (bad range, read-only): it never happened. */
  cancelWrite(id: number): void {
    this.take(id);
  }

  submitFlush(id: number): void {
    this.flushes.set(id, this.completions);
  }

  /** A flush completes: every write that completed before it was submitted is durable (§1.4). */
  completeFlush(id: number, persist = true): void {
    const bound = this.flushBound(id);
    if (!persist) return;
    for (const w of this.cache.filter((c) => c.order < bound)) this.persist(w, w.live);
  }

  /** A failed flush makes nothing durable; what it covered stays volatile (§1.9). */
  failFlush(id: number): void {
    this.flushBound(id);
  }

  /** Spontaneous write-back of chosen volatile writes, possibly in part (§1.5). */
  writeBack(kept: readonly KeptWrite[]): void {
    for (const k of kept) {
      const w = this.cache.find((c) => c.req.id === k.id);
      if (!w) throw new IoError('EINVAL', `${this.opts.name}: write #${k.id} is not in the volatile cache`);
      this.persist(w, this.chosen(w, k));
    }
  }

  /**
   * The durable image after a power loss now: the chosen volatile writes applied
   * in completion order, then the chosen parts of writes in flight. An overlay
   * over a frozen copy of the durable image; this disk is not changed.
   */
  crash(sel: CrashSelection): SparseImage {
    if (!this.frozen) this.frozen = this.durable.snapshot();
    const img = this.frozen.overlay();
    const kept = sel.volatile === 'all'
      ? this.cache.map((w) => ({ id: w.req.id }))
      : sel.volatile === 'none' ? [] : sel.volatile;
    const byId = new Map(kept.map((k) => [k.id, k]));
    if (byId.size !== kept.length) throw new IoError('EINVAL', `${this.opts.name}: a crash selection names a write twice`);
    for (const w of this.cache) {
      const k = byId.get(w.req.id);
      if (!k) continue;
      byId.delete(w.req.id);
      apply(img, w.req, this.chosen(w, k));
    }
    if (byId.size > 0) {
      throw new IoError('EINVAL', `${this.opts.name}: crash selection keeps write #${[...byId.keys()][0]}, which is not volatile`);
    }
    for (const k of sel.inflight ?? []) {
      const w = this.inflight.get(k.id);
      if (!w) throw new IoError('EINVAL', `${this.opts.name}: crash selection tears write #${k.id}, which is not in flight`);
    }
    const torn = new Map((sel.inflight ?? []).map((k) => [k.id, k]));
    for (const w of this.inflightWrites()) {
      const k = torn.get(w.req.id);
      if (k) apply(img, w.req, this.chosen(w, k));
    }
    return img;
  }

  /** The parts of `w` that `k` keeps, checked against the atomic unit and the write's extent. */
  private chosen(w: PendingWrite, k: KeptWrite): Span[] {
    if (!k.ranges) return w.live;
    const unit = this.opts.atomicSectors;
    const { sector, count } = w.req;
    const spans: Span[] = [];
    for (const r of k.ranges) {
      if (r.sector % unit !== 0 || r.count % unit !== 0 || r.count <= 0) {
        throw new IoError('EINVAL', `${this.opts.name}: torn part ${r.sector}+${r.count} of write #${k.id} is not whole ${unit}-sector units`);
      }
      if (r.sector < sector || r.sector + r.count > sector + count) {
        throw new IoError('EINVAL', `${this.opts.name}: torn part ${r.sector}+${r.count} lies outside write #${k.id} (${sector}+${count})`);
      }
      spans.push([r.sector, r.sector + r.count]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    return intersectSpans(w.live, spans);
  }

  /**
   * Makes `spans` of cached write `w` durable. Older cached writes lose those
   * sectors: the cache is coherent, so their data there is gone (§1.6), and a
   * crash must never put them back over a newer durable write.
   */
  private persist(w: PendingWrite & { order: number }, spans: readonly Span[]): void {
    apply(this.durable, w.req, spans);
    this.frozen = undefined;
    for (const [s, e] of spans) {
      for (const c of this.cache) if (c.order <= w.order) c.live = subtractSpan(c.live, s, e);
    }
    for (let i = this.cache.length - 1; i >= 0; i--) {
      if ((this.cache[i] as PendingWrite).live.length === 0) this.cache.splice(i, 1);
    }
    // With nothing volatile the view equals the durable image: drop its copies.
    if (this.cache.length === 0 && !this.viewDiverged) this.view = this.durable.overlay();
  }

  private take(id: number): PendingWrite & { failed: boolean } {
    const w = this.inflight.get(id);
    if (!w || w.failed) throw new IoError('EINVAL', `${this.opts.name}: write #${id} is not in flight`);
    this.inflight.delete(id);
    return w;
  }

  private flushBound(id: number): number {
    const bound = this.flushes.get(id);
    if (bound === undefined) throw new IoError('EINVAL', `${this.opts.name}: flush #${id} is not in flight`);
    this.flushes.delete(id);
    return bound;
  }
}

function apply(img: SparseImage, req: WriteRequest, spans: readonly Span[]): void {
  for (const [s, e] of spans) {
    if (req.data) {
      const off = (s - req.sector) * 512;
      img.write(s, req.data.subarray(off, off + (e - s) * 512));
    } else {
      img.zero(s, e - s);
    }
  }
}
