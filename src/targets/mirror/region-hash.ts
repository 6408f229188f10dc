/**
 * The region hash (Linux dm-region-hash.c; mirror spec §6): the in-memory
 * state of every region with writes in flight or resync work, the lists the
 * worker drains, and the recovery slot that suspend takes away.
 *
 *   state       meaning                                   a write to it
 *   CLEAN       in sync, nothing in flight                counted, all legs, → DIRTY
 *   DIRTY       in sync, writes in flight, log bit clear  counted, all legs
 *   NOSYNC      legs may differ, not being copied         counted, primary only
 *   RECOVERING  chosen for resync                         delayed until resync ends
 *
 * A region without an entry is CLEAN when the log says in sync, else NOSYNC.
 */
import type { DirtyLog } from './dirty-log.ts';

export type RegionState = 'clean' | 'dirty' | 'nosync' | 'recovering';

export interface Region<W> {
  readonly key: number;
  state: RegionState;
  /** Counted writes in flight. */
  pending: number;
  /** Writes that arrived while RECOVERING, in order. */
  readonly delayed: W[];
}

export interface RegionHashHost<W> {
  /** Wakes the worker (kmirrord). */
  wake(): void;
  /** Puts delayed writes back at the end of the write queue. */
  dispatch(writes: W[]): void;
}

export interface RegionHashOptions {
  /**
   * TEST ONLY: the seed bug of Linux before 930d332a2368 (spec §11.4): a
   * region whose writes drain becomes CLEAN whatever its state, so a NOSYNC
   * region is marked clean in the log by user I/O instead of by resync (R4).
   */
  seedBug?: boolean;
}

/** A counting semaphore (struct semaphore recovery_count). */
class Slots {
  private free = 0;
  private readonly waiters: (() => void)[] = [];

  tryTake(): boolean {
    if (this.free === 0) return false;
    this.free--;
    return true;
  }

  take(): Promise<void> {
    if (this.tryTake()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}

export class RegionHash<W> {
  private readonly entries = new Map<number, Region<W>>();
  /** The lists of §6.1; an entry is on at most one. */
  private readonly clean = new Set<Region<W>>();
  private readonly quiesced = new Set<Region<W>>();
  private readonly recovered = new Set<Region<W>>();
  private readonly failedRecovered = new Set<Region<W>>();
  /** A flush request failed on some leg: nothing becomes CLEAN again for this table (rule 8). */
  flushFailure = false;
  /** Maximum parallel recovery is 1: none before the first resume and after presuspend. */
  private readonly slots = new Slots();
  private recoveryInFlight = 0;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    readonly log: DirtyLog,
    private readonly host: RegionHashHost<W>,
    private readonly opts: RegionHashOptions = {},
  ) {}

  /** dm_rh_get_state: the entry's state, or what the log implies. */
  state(region: number): RegionState {
    return this.entries.get(region)?.state ?? (this.log.inSync(region) ? 'clean' : 'nosync');
  }

  /** __rh_find: get or create; a new CLEAN entry goes on the clean list at once (§6.2). */
  private find(region: number): Region<W> {
    let reg = this.entries.get(region);
    if (!reg) {
      reg = { key: region, state: this.log.inSync(region) ? 'clean' : 'nosync', pending: 0, delayed: [] };
      this.entries.set(region, reg);
      if (reg.state === 'clean') this.clean.add(reg);
    }
    return reg;
  }

  private unlist(reg: Region<W>): void {
    this.clean.delete(reg);
    this.quiesced.delete(reg);
    this.recovered.delete(reg);
    this.failedRecovered.delete(reg);
  }

  /** dm_rh_inc: a counted write is dispatched. Only CLEAN regions are marked in the log. */
  inc(region: number): void {
    const reg = this.find(region);
    reg.pending++;
    if (reg.state === 'clean') {
      reg.state = 'dirty';
      this.unlist(reg);
      this.log.markRegion(region);
    }
  }

  /**
   * dm_rh_dec: a counted write finished (any outcome). Only DIRTY becomes
   * CLEAN (rule 2, R4): a NOSYNC region stays NOSYNC, on no list, until
   * resync takes it (rule 6).
   */
  dec(region: number): void {
    const reg = this.entries.get(region)!;
    if (--reg.pending > 0) return;
    if (this.flushFailure) {
      // Spec §11.6: a RECOVERING region draining here would hold its recovery slot forever in Linux;
      // dmkit keeps the state result and ends that recovery as failed.
      const recovering = reg.state === 'recovering';
      reg.state = 'nosync';
      if (recovering) this.completeResync(reg, false);
    } else if (reg.state === 'recovering') {
      this.quiesced.add(reg);
    } else if (reg.state === 'dirty' || (this.opts.seedBug && reg.state === 'nosync')) {
      reg.state = 'clean';
      this.clean.add(reg);
    }
    this.host.wake();
  }

  /** dm_rh_mark_nosync for a counted write that failed on some leg (§6.3). */
  markNosync(region: number): void {
    this.log.setRegionSync(region, false);
    // The entry exists and is on no list: the failed write is still counted in it.
    const reg = this.find(region);
    const recovering = reg.state === 'recovering';
    reg.state = 'nosync';
    if (recovering) this.completeResync(reg, false);
  }

  /**
   * dm_rh_update_states, the first step of every worker pass: finished
   * entries leave the hash; recovered ones are cleared and marked in sync
   * (R4: only a completed resync sets the in-sync bit); then the log is
   * flushed, so the clears of this pass are written by this pass (§11.5 #3).
   */
  async updateStates(errorsHandled: boolean): Promise<void> {
    const clean = this.detach(this.clean);
    const recovered = this.detach(this.recovered);
    const failed = this.detach(this.failedRecovered);
    for (const reg of recovered) {
      this.log.clearRegion(reg.key);
      this.completeResync(reg, true);
    }
    for (const reg of failed) this.completeResync(reg, !errorsHandled);
    for (const reg of clean) this.log.clearRegion(reg.key);
    await this.log.flush().catch(() => undefined); // the result is ignored here, as in Linux
  }

  private detach(list: Set<Region<W>>): Region<W>[] {
    const out = [...list];
    list.clear();
    for (const reg of out) this.entries.delete(reg.key);
    return out;
  }

  /** complete_resync_work */
  private completeResync(reg: Region<W>, ok: boolean): void {
    this.log.setRegionSync(reg.key, ok);
    this.host.dispatch(reg.delayed.splice(0));
    if (--this.recoveryInFlight === 0) this.wakeIdle();
    this.slots.release();
  }

  /**
   * dm_rh_recovery_prepare: while a slot is free, take resync work from the
   * log and start quiescing it. The extra in-flight reference keeps a
   * suspender waiting for zero from slipping through mid-selection.
   */
  recoveryPrepare(): void {
    this.recoveryInFlight++;
    while (this.slots.tryTake()) {
      this.recoveryInFlight++;
      const region = this.log.getResyncWork();
      if (region === undefined) {
        this.recoveryInFlight--;
        this.slots.release();
        break;
      }
      const reg = this.find(region);
      reg.state = 'recovering';
      this.unlist(reg);
      if (reg.pending === 0) this.quiesced.add(reg);
    }
    if (--this.recoveryInFlight === 0) this.wakeIdle();
  }

  /** dm_rh_recovery_start: a quiesced region ready to copy. */
  recoveryStart(): Region<W> | undefined {
    const reg = this.quiesced.values().next().value;
    if (reg) this.quiesced.delete(reg);
    return reg;
  }

  /** dm_rh_recovery_end: the copy finished; the next pass completes it. */
  recoveryEnd(reg: Region<W>, ok: boolean): void {
    (ok ? this.recovered : this.failedRecovered).add(reg);
    this.host.wake();
  }

  /** dm_rh_delay: a write to a RECOVERING region waits for the end of its resync. */
  delay(region: number, write: W): void {
    this.find(region).delayed.push(write);
  }

  /** dm_rh_stop_recovery: takes the slot, i.e. waits until the region being recovered is completely done. */
  stopRecovery(): Promise<void> {
    return this.slots.take();
  }

  /** dm_rh_start_recovery */
  startRecovery(): void {
    this.slots.release();
    this.host.wake();
  }

  /** dm_rh_recovery_in_flight reaching zero. */
  recoveryIdle(): Promise<void> {
    if (this.recoveryInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdle(): void {
    for (const wake of this.idleWaiters.splice(0)) wake();
  }
}
