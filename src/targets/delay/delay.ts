/**
 * delay (Linux dm-delay.c, target version 1.5.0): holds reads, writes and
 * flushes for a per-class number of milliseconds before passing them to the
 * class's device (basic-targets §8.5). Held requests are not acknowledged, so
 * a crash loses them like any unacknowledged write (§10.1 rule 7).
 *
 *   table:  <dev> <offset> <delay>[ <wdev> <woffset> <wdelay>[ <fdev> <foffset> <fdelay>]]
 *   status: <held reads> <held writes> <held flushes>
 */
import type { WriteOptions, WriteZeroesOptions } from '../../block/device.ts';
import { parseU32Wrapping } from '../../mapper/args.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import {
  ctrError, formatDevOffset, lookupDevice, parseOffset, type DevOffset,
} from '../common/dev-offset.ts';
import { unsupported } from '../common/io.ts';

const TYPE = 'delay';

/** Node timers wait at most 2^31-1 ms; a longer delay wakes early and waits again. */
const MAX_TIMER_MS = 0x7fffffff;

/** One I/O class (read, write or flush): where it goes and how long it waits. */
interface DelayClass extends DevOffset {
  /** Milliseconds; 0 submits at once. */
  readonly delay: number;
  /** Requests of this class held right now (the status gauge, c->ops). */
  held: number;
}

// ---- constructor -----------------------------------------------------------

/** delay_class_ctr: offset, then delay, then the device, each with its own text. */
async function delayClassCtr(ctx: TargetContext, [dev, offset, delay]: string[]): Promise<DelayClass> {
  const start = parseOffset(offset!, 'Invalid device sector');
  const ms = parseU32Wrapping(delay!);
  if (ms === undefined) throw ctrError('Invalid delay');
  const ref = await lookupDevice(ctx, dev!, 'Device lookup failed');
  return { ref, offset: start, delay: ms, held: 0 };
}

async function delayCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  const argc = argv.length;
  if (argc !== 3 && argc !== 6 && argc !== 9) throw ctrError('Requires exactly 3, 6 or 9 arguments');
  const triple = (i: number): string[] => argv.slice(3 * i, 3 * i + 3);
  const triples = argc / 3;
  // Classes are built read, write, flush; a shared triple is parsed again for
  // each class it serves (and its device looked up again), as Linux does.
  const read = await delayClassCtr(ctx, triple(0));
  const write = await delayClassCtr(ctx, triple(Math.min(1, triples - 1)));
  const flush = await delayClassCtr(ctx, triple(triples - 1));
  return new DelayTarget(ctx, triples, read, write, flush);
}

// ---- I/O: holding and dispatching -------------------------------------------

interface HeldRequest {
  readonly cls: DelayClass;
  /** Clock time at which the request is due. */
  readonly expires: number;
  /** Hands the request to its device and settles the caller's promise with the result. */
  readonly submit: () => void;
}

class DelayTarget implements Target {
  /** dc->delayed_bios: every held request, in arrival order. */
  private held: HeldRequest[] = [];
  /** dc->may_delay: cleared by presuspend, set again by resume. */
  private mayDelay = true;
  /** The one armed wake-up (dc->delay_timer) and when it is due. */
  private timer: { at: number; cancel: AbortController } | undefined;

  constructor(
    private readonly ctx: TargetContext,
    /** How many triples the table gave (1, 2 or 3): what the table text prints. */
    private readonly triples: number,
    private readonly readClass: DelayClass,
    private readonly writeClass: DelayClass,
    private readonly flushClass: DelayClass,
  ) {}

  private get classes(): DelayClass[] {
    return [this.readClass, this.writeClass, this.flushClass];
  }

  read(sector: number, into: Buffer): Promise<void> {
    const c = this.readClass;
    return this.delayBio(c, () => c.ref.device.read(c.offset + sector, into));
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    const c = this.writeClass;
    return this.delayBio(c, () => c.ref.device.write(c.offset + sector, data, opts));
  }

  /** The core splits PREFLUSH from data (§4.3), so the flush class sees only empty flushes. */
  flush(): Promise<void> {
    const c = this.flushClass;
    return this.delayBio(c, () => c.ref.device.flush());
  }

  /** Discards are writes: they take the write class. */
  async discard(sector: number, count: number): Promise<void> {
    if (!this.limits().discard) throw unsupported(this.ctx, TYPE, 'discard', sector);
    const c = this.writeClass;
    await this.delayBio(c, () => c.ref.device.discard(c.offset + sector, count));
  }

  /** delay declares no write-zeroes bios. */
  async writeZeroes(sector: number, _count: number, _opts: WriteZeroesOptions): Promise<void> {
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  /**
   * delay_bio: submit at once when the class has no delay or delaying is off;
   * otherwise hold the request until its delay has passed.
   */
  private delayBio(cls: DelayClass, issue: () => Promise<void>): Promise<void> {
    // §10.2 bug 2: testing may_delay and adding to the held list happen in one
    // synchronous step (no await in between), so once presuspend has cleared
    // may_delay and emptied the list, nothing can be added to it.
    if (cls.delay === 0 || !this.mayDelay) return issue();
    return new Promise((resolve, reject) => {
      const expires = this.ctx.clock.now() + cls.delay;
      const submit = (): void => {
        // A device that throws instead of rejecting must not stop the dispatch loop.
        try {
          issue().then(resolve, reject);
        } catch (err) {
          reject(err);
        }
      };
      this.held.push({ cls, expires, submit });
      cls.held++;
      this.armTimer(expires);
    });
  }

  /**
   * flush_delayed_bios: submits every expired request (or all, when `all`) in
   * list order, so one class keeps its order, and re-arms for the rest.
   */
  private flushDelayed(all: boolean): void {
    const now = this.ctx.clock.now();
    const due: HeldRequest[] = [];
    const kept: HeldRequest[] = [];
    let next = Infinity;
    for (const r of this.held) {
      if (all || r.expires <= now) {
        due.push(r);
        r.cls.held--;
      } else {
        kept.push(r);
        next = Math.min(next, r.expires);
      }
    }
    this.held = kept;
    if (kept.length > 0) this.armTimer(next);
    else this.cancelTimer();
    for (const r of due) r.submit();
  }

  /**
   * Makes sure a wake-up is armed no later than `at` (mod_timer when earlier).
   * Dispatch depends only on this timer, never on a worker that may be stopped
   * (§10.2 bug 3); a wake-up that is superseded or cancelled does nothing.
   */
  private armTimer(at: number): void {
    if (this.timer && this.timer.at <= at) return;
    this.cancelTimer();
    const timer = { at, cancel: new AbortController() };
    this.timer = timer;
    const wait = Math.min(Math.max(at - this.ctx.clock.now(), 0), MAX_TIMER_MS);
    const wake = (): void => {
      if (this.timer !== timer) return;
      this.timer = undefined;
      this.flushDelayed(false);
    };
    this.ctx.clock.sleep(wait, timer.cancel.signal).then(wake, wake);
  }

  private cancelTimer(): void {
    this.timer?.cancel.abort();
    this.timer = undefined;
  }

  // ---- suspend / resume -------------------------------------------------------

  /** Stops delaying and submits everything held; suspend then waits for it like any in-flight I/O. */
  async presuspend(): Promise<void> {
    this.stopDelaying();
  }

  private stopDelaying(): void {
    this.mayDelay = false;
    this.flushDelayed(true);
  }

  async resume(): Promise<void> {
    this.mayDelay = true;
  }

  limits(): TargetLimits {
    return { ...inheritLimits(this.classes.map((c) => c.ref)), writeZeroes: false };
  }

  /** delay_iterate_devices: one area per class, shared triples included. */
  areas(): DeviceArea[] {
    return this.classes.map((c) => ({ ref: c.ref, start: c.offset, length: this.ctx.length }));
  }

  // ---- status ----------------------------------------------------------------

  status(type: StatusType): string {
    if (type === 'info') return this.classes.map((c) => c.held).join(' ');
    return this.classes
      .slice(0, this.triples)
      .map((c) => `${formatDevOffset(c)} ${c.delay}`)
      .join(' ');
  }

  /**
   * The mapper presuspends before destroying a live table; should a table be
   * destroyed with requests still held, they are submitted rather than left
   * unsettled forever.
   */
  async close(): Promise<void> {
    this.stopDelaying();
  }
}

export const delayTarget: TargetType = {
  name: TYPE,
  version: [1, 5, 0],
  construct: delayCtr,
};
