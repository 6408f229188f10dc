/**
 * Background resynchronisation (Linux dm-raid1.c recover() + dm-kcopyd;
 * mirror spec §8.2): one region at a time is copied from the default leg to
 * every other leg, in chunks, yielding to user I/O so that it keeps its
 * latency. Which region, and what its outcome means, is the region hash's
 * and the worker's business (region-hash.ts, mirror.ts).
 */
import { SECTOR_SIZE } from '../../block/device.ts';
import type { Clock } from '../../mapper/target.ts';
import type { Leg } from './legs.ts';

/** kcopyd splits a copy into sub-jobs of this many sectors. */
export const COPY_CHUNK_SECTORS = 1024;
/** User I/O within this window defers the next chunk. */
export const RESYNC_QUIET_MS = 10;
/** …but never by more than this per chunk: resync is slowed, never starved. */
export const RESYNC_MAX_DEFER_MS = 100;

/**
 * Tracks user I/O and makes the copier wait for a quiet moment. Stopping it
 * (presuspend, close) cuts every wait short, so a region being copied
 * finishes at full speed and no timer is left behind.
 */
export class ResyncThrottle {
  private inflight = 0;
  private lastIo = -Infinity;
  private stopper = new AbortController();

  constructor(private readonly clock: Clock) {}

  /** Brackets one user request. */
  begin(): void {
    this.inflight++;
    this.lastIo = this.clock.now();
  }

  end(): void {
    this.inflight--;
    this.lastIo = this.clock.now();
  }

  /** Ends throttling until restart(): pending and future waits return at once. */
  stop(): void {
    this.stopper.abort();
  }

  restart(): void {
    if (this.stopper.signal.aborted) this.stopper = new AbortController();
  }

  /** Waits until no user I/O is in flight or happened in the last RESYNC_QUIET_MS, at most RESYNC_MAX_DEFER_MS. */
  async yieldToUserIo(): Promise<void> {
    const signal = this.stopper.signal;
    const start = this.clock.now();
    while (!signal.aborted) {
      const now = this.clock.now();
      const quietFor = now - this.lastIo;
      if (this.inflight === 0 && quietFor >= RESYNC_QUIET_MS) return;
      const left = RESYNC_MAX_DEFER_MS - (now - start);
      if (left <= 0) return;
      const wait = Math.min(left, this.inflight > 0 ? RESYNC_QUIET_MS : RESYNC_QUIET_MS - quietFor);
      await sleepUnlessAborted(this.clock, wait, signal);
    }
  }
}

/** A clock may leave a cancelled sleep unsettled (Clock.sleep): race it with the abort. */
async function sleepUnlessAborted(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([clock.sleep(ms, signal).catch(() => undefined), aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

export interface CopyJob {
  readonly source: Leg;
  /** Every other leg, in table order. */
  readonly dests: readonly Leg[];
  /** Target-relative first sector and length (the last region may be short). */
  readonly sector: number;
  readonly count: number;
  /** handle_errors: stop at the first error; otherwise copy on through errors (DM_KCOPYD_IGNORE_ERROR). */
  readonly stopOnError: boolean;
}

export interface CopyResult {
  readonly readError: boolean;
  /** Bit k: the k-th destination failed. */
  readonly writeErrors: number;
}

/**
 * Copies one region. `buffer` is the mirror's one copy buffer (one region is
 * recovered at a time). A chunk whose read failed is written as zeroes when
 * errors are ignored: the region stays out of sync on disk anyway (no clean
 * bit without a fully successful copy, rule 5).
 */
export async function copyRegion(job: CopyJob, buffer: Buffer, throttle: ResyncThrottle): Promise<CopyResult> {
  let readError = false;
  let writeErrors = 0;
  const chunkSectors = buffer.length / SECTOR_SIZE;
  for (let done = 0; done < job.count; done += chunkSectors) {
    await throttle.yieldToUserIo();
    const n = Math.min(chunkSectors, job.count - done);
    const chunk = buffer.subarray(0, n * SECTOR_SIZE);
    const rel = job.sector + done;
    try {
      await job.source.device.read(job.source.offset + rel, chunk);
    } catch {
      readError = true;
      if (job.stopOnError) break;
      chunk.fill(0);
    }
    const results = await Promise.allSettled(job.dests.map((leg) => leg.device.write(leg.offset + rel, chunk, { tag: 'data' })));
    results.forEach((r, k) => {
      if (r.status === 'rejected') writeErrors |= 1 << k;
    });
    if (writeErrors && job.stopOnError) break;
  }
  return { readError, writeErrors };
}
