import { IoError } from '../block/errors.ts';
import type { Clock } from '../mapper/target.ts';
import { Rng } from './rng.ts';

/**
 * Virtual time: advances only when the scheduler says so, so a delay or flakey
 * target under test runs in no wall-clock time and the same way every run.
 */
export class VirtualClock implements Clock {
  private t = 0;
  private seq = 0;
  private sleepers: { at: number; seq: number; wake: () => void }[] = [];
  /** Called when someone starts sleeping: the scheduler must know there is work. */
  onSleep: (() => void) | undefined;

  now(): number {
    return this.t;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      this.sleepers.push({ at: this.t + Math.max(0, ms), seq: this.seq++, wake });
      this.onSleep?.();
    });
  }

  /** When the earliest sleeper is due, if any. */
  nextWake(): number | undefined {
    let at: number | undefined;
    for (const s of this.sleepers) if (at === undefined || s.at < at) at = s.at;
    return at;
  }

  /** Moves time to `t` (never back) and wakes the sleepers now due, earliest first. */
  advanceTo(t: number): void {
    this.t = Math.max(this.t, t);
    const due = this.sleepers.filter((s) => s.at <= this.t).sort((a, b) => a.at - b.at || a.seq - b.seq);
    if (due.length === 0) return;
    this.sleepers = this.sleepers.filter((s) => s.at > this.t);
    for (const s of due) s.wake();
  }
}

/** A request waiting for the scheduler's leave to complete. */
export interface ScheduledOp {
  /** Virtual time before which it may not complete (a delay fault). */
  readonly readyAt: number;
  /** Completes the request: updates the disk and settles its promise. */
  complete(): void;
}

export interface SchedulerOptions {
  seed: number;
  /**
   * True (default): completes requests by itself, one per event-loop turn,
   * so devices can be used with plain await. False: nothing completes until
   * step()/runUntilIdle()/drive() is called.
   */
  auto?: boolean;
  /** Virtual milliseconds each completion takes (default 0: time moves only when idle). */
  ioTimeMs?: number;
}

/**
 * Decides, from one seed, the order in which concurrent requests on one or
 * more SimulatedDisks complete (ARCHITECTURE §1 items 5, 7, 8), and drives the
 * virtual clock. Between two completions every microtask runs, so code that
 * only awaits promises sees the same interleaving on every run of a seed.
 */
export class Scheduler {
  readonly seed: number;
  readonly rng: Rng;
  readonly clock = new VirtualClock();
  private readonly pending: ScheduledOp[] = [];
  private readonly auto: boolean;
  private readonly ioTimeMs: number;
  private tickQueued = false;
  /** Completions and clock advances so far. */
  steps = 0;
  private events = 0;

  constructor(opts: SchedulerOptions) {
    this.seed = opts.seed;
    this.rng = new Rng(opts.seed);
    this.auto = opts.auto ?? true;
    this.ioTimeMs = opts.ioTimeMs ?? 0;
    this.clock.onSleep = () => this.kick();
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /** A sequence number for a disk's log: one order across every disk of this scheduler. */
  nextEvent(): number {
    return this.events++;
  }

  enqueue(op: ScheduledOp): void {
    this.pending.push(op);
    this.kick();
  }

  /**
   * Completes one request chosen by the seeded RNG among those that are ready;
   * when none is ready, advances the clock to the next due request or sleeper.
   * Returns false when there is nothing left to do.
   */
  step(): boolean {
    const now = this.clock.now();
    const ready: number[] = [];
    this.pending.forEach((op, i) => {
      if (op.readyAt <= now) ready.push(i);
    });
    if (ready.length > 0) {
      const [op] = this.pending.splice(this.rng.pick(ready), 1) as [ScheduledOp];
      this.steps++;
      op.complete();
      if (this.ioTimeMs > 0) this.clock.advanceTo(now + this.ioTimeMs);
      return true;
    }
    let next = this.clock.nextWake();
    for (const op of this.pending) if (next === undefined || op.readyAt < next) next = op.readyAt;
    if (next === undefined) return false;
    this.steps++;
    this.clock.advanceTo(next);
    return true;
  }

  /** Runs until no request is pending and no sleeper waits (manual mode; auto mode just waits). */
  async runUntilIdle(): Promise<void> {
    for (;;) {
      await settle();
      if (this.auto ? this.pending.length === 0 && this.clock.nextWake() === undefined : !this.step()) return;
    }
  }

  /** Runs requests until `p` settles; rejects if it waits on nothing the scheduler can run. */
  async drive<T>(p: Promise<T>): Promise<T> {
    let done = false;
    const watched = p.finally(() => {
      done = true;
    });
    watched.catch(() => undefined);
    for (;;) {
      await settle();
      if (done) return watched;
      if (!this.step()) {
        await settle();
        if (done) return watched;
        if (!this.step()) {
          throw new IoError('EIO', `scheduler (seed ${this.seed}): the awaited operation waits on no request, sleeper or timer`);
        }
      }
    }
  }

  private kick(): void {
    if (!this.auto || this.tickQueued) return;
    this.tickQueued = true;
    setImmediate(() => {
      this.tickQueued = false;
      if (this.step()) this.kick();
    });
  }
}

/** Lets every queued microtask and promise chain run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
