/**
 * dm-clone's region hydrations (spec/clone.md §8.2–§8.3, §9): the records
 * of regions being copied or overwritten, the source → destination copy,
 * and background hydration in batches of adjacent regions.
 */
import { type BlockDevice, SECTOR_SIZE } from '../../block/device.ts';
import { type IoError, toIoError } from '../../block/errors.ts';

/** Largest piece of one copy, sectors (kcopyd splits its jobs the same way). */
const COPY_PIECE_SECTORS = 8192;
/** Pieces of one copy in flight at once. */
const COPY_PIECES_IN_FLIGHT = 4;

/** What the hydrations need from the target. */
export interface HydrationHost {
  readonly regionSize: number;
  /** Target length, sectors: the last region may be shorter. */
  readonly length: number;
  readonly nrRegions: number;
  readonly source: BlockDevice;
  readonly dest: BlockDevice;
  /** Background copies may start: write mode, not suspended, hydration not done, no user I/O in flight. */
  mayHydrateInBackground(): boolean;
  /** The first region ≥ from whose bit is clear and for which `skip` is false, or -1. */
  nextUnhydrated(from: number, skip: (r: number) => boolean): number;
  /**
   * §8.3 step 1–2: marks `n` regions from `first` hydrated, or returns the
   * error that refused it (read-only or fail mode).
   */
  markHydrated(first: number, n: number): IoError | null;
  /** A background copy failed (rate-limited log in Linux). */
  hydrationFailed(err: IoError): void;
}

/**
 * One hydration record covering `count` adjacent regions from `start` (a
 * batch, or one region). Writes to any of them wait on `settled`, which
 * gives the error the hydration ended with, or null.
 */
export class RegionHydration {
  count = 1;
  readonly settled: Promise<IoError | null>;
  private resolve!: (err: IoError | null) => void;
  constructor(readonly start: number) {
    this.settled = new Promise((resolve) => (this.resolve = resolve));
  }
  settle(err: IoError | null): void {
    this.resolve(err);
  }
}

export class Hydrations {
  /** Region → its hydration in progress (Linux's hydration hash table). */
  readonly inProgress = new Map<number, RegionHydration>();
  enabled = true;
  threshold = 1;
  batchSize = 1;
  /** Where the next background pass looks first. */
  private offset = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly host: HydrationHost) {}

  /** Regions being copied or overwritten: the status field "hydrating regions". */
  get inFlight(): number {
    return this.inProgress.size;
  }

  /** A record for region `r`; the caller checked it is neither hydrated nor in progress. */
  begin(r: number): RegionHydration {
    const h = new RegionHydration(r);
    this.inProgress.set(r, h);
    return h;
  }

  /**
   * §8.3: on success mark the regions (which may be refused), then drop the
   * records and wake whoever waits on them. Returns the hydration's outcome.
   */
  complete(h: RegionHydration, err: IoError | null): IoError | null {
    const outcome = err ?? this.host.markHydrated(h.start, h.count);
    for (let r = h.start; r < h.start + h.count; r++) this.inProgress.delete(r);
    h.settle(outcome);
    if (this.inProgress.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    return outcome;
  }

  /** Resolves once no hydration is in progress. */
  idle(): Promise<void> {
    if (this.inProgress.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Copies the regions of `h` from the source to the same sectors of the
   * destination (the last region truncated at the target end), then
   * completes the record.
   */
  async copy(h: RegionHydration): Promise<IoError | null> {
    let err: IoError | null = null;
    try {
      await this.copyRange(h.start * this.host.regionSize, Math.min((h.start + h.count) * this.host.regionSize, this.host.length));
    } catch (e) {
      err = toIoError(e);
    }
    return this.complete(h, err);
  }

  private async copyRange(from: number, to: number): Promise<void> {
    const { source, dest } = this.host;
    const piece = Math.min(COPY_PIECE_SECTORS, source.limits.maxTransfer, dest.limits.maxTransfer, to - from);
    let next = from;
    const worker = async (): Promise<void> => {
      while (next < to) {
        const s = next;
        const n = Math.min(piece, to - s);
        next += n;
        const buf = Buffer.allocUnsafe(n * SECTOR_SIZE);
        await source.read(s, buf);
        await dest.write(s, buf, { tag: 'data' });
      }
    };
    const workers: Promise<void>[] = [];
    for (let i = 0; i < COPY_PIECES_IN_FLIGHT && i * piece < to - from; i++) workers.push(worker());
    const results = await Promise.allSettled(workers);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /**
   * do_hydration (§9): while the host allows it, hydration is enabled and
   * fewer than `threshold` regions are in flight, take the next region that
   * is neither hydrated nor in progress and batch it (§9.1): a region right
   * after the batch's last joins it until the batch holds `batchSize`; any
   * other starts a new batch (or, with batchSize ≤ 1, is copied alone).
   */
  run(): void {
    const nr = this.host.nrRegions;
    let batch: RegionHydration | null = null;
    while (this.enabled && this.offset < nr && this.host.mayHydrateInBackground()) {
      if (this.inProgress.size + 1 > this.threshold) break;
      const r = this.host.nextUnhydrated(this.offset, (i) => this.inProgress.has(i));
      if (r < 0) {
        this.offset = nr;
        break;
      }
      this.offset = r + 1;
      if (batch && batch.count < this.batchSize && r === batch.start + batch.count) {
        this.inProgress.set(r, batch);
        batch.count++;
        if (batch.count >= this.batchSize) {
          this.issue(batch);
          batch = null;
        }
        continue;
      }
      if (batch) this.issue(batch);
      batch = this.begin(r);
      if (this.batchSize <= 1) {
        this.issue(batch);
        batch = null;
      }
    }
    if (batch) this.issue(batch);
    if (this.offset >= nr) this.offset = 0;
  }

  /**
   * Starts a background copy. A successful one keeps the pipeline going
   * (§9.2); a failed one is logged and retried by a later pass — from the
   * next periodic wake-up rather than at once, so a failing source is not
   * hammered in a tight loop.
   */
  private issue(h: RegionHydration): void {
    void this.copy(h).then((err) => {
      if (err) this.host.hydrationFailed(err);
      else this.run();
    });
  }
}
