import type { Errno } from '../block/errors.ts';
import { IoError } from '../block/errors.ts';

export type FaultOp = 'read' | 'write' | 'flush' | 'discard' | 'write-zeroes';

/**
 * fail: the request completes with an error (a failed write leaves its sectors
 * in doubt, a failed flush makes nothing durable, ARCHITECTURE §1.9).
 * drop: it completes successfully but never persists (a lying disk).
 * corrupt: a write stores, or a read returns, damaged bytes.
 * delay: it completes only after `delayMs` of virtual time.
 */
export type FaultAction = 'fail' | 'drop' | 'corrupt' | 'delay';

/** One fault rule (CRASH-TESTING §2.6). */
export interface FaultRule {
  op: FaultOp | 'any';
  action: FaultAction;
  /** Fire on the Nth matching request (1-based); sticky: on it and every later one. Default 1. */
  nth?: number;
  /** Only requests touching this sector range match (flushes touch no sector and never match). */
  range?: { sector: number; count: number };
  /** Keep firing after the first time. */
  sticky?: boolean;
  /** The error of a `fail` rule (default EIO). */
  errno?: Errno;
  /** Virtual milliseconds of a `delay` rule. */
  delayMs?: number;
}

export interface Fault {
  readonly rule: Readonly<FaultRule>;
  /** Requests that matched the rule's op and range so far. */
  readonly matched: number;
  /** Times it fired. */
  readonly fired: number;
  remove(): void;
}

interface LiveFault extends Fault {
  matched: number;
  fired: number;
}

const ACTIONS_BY_OP: Record<FaultOp | 'any', readonly FaultAction[]> = {
  read: ['fail', 'corrupt', 'delay'],
  write: ['fail', 'drop', 'corrupt', 'delay'],
  flush: ['fail', 'drop', 'delay'],
  discard: ['fail', 'drop', 'delay'],
  'write-zeroes': ['fail', 'drop', 'delay'],
  any: ['fail', 'delay'],
};

/** The fault rules of one SimulatedDisk, in the order they were added. */
export class FaultSet {
  private readonly rules: LiveFault[] = [];

  add(rule: FaultRule): Fault {
    if (!ACTIONS_BY_OP[rule.op].includes(rule.action)) {
      throw new IoError('EINVAL', `fault rule: ${rule.action} does not apply to ${rule.op} requests`);
    }
    if (rule.nth !== undefined && !(Number.isSafeInteger(rule.nth) && rule.nth >= 1)) {
      throw new IoError('EINVAL', `fault rule: nth ${rule.nth} is not a positive integer`);
    }
    if (rule.action === 'delay' && !(rule.delayMs !== undefined && rule.delayMs >= 0)) {
      throw new IoError('EINVAL', 'fault rule: delay needs a non-negative delayMs');
    }
    const fault: LiveFault = {
      rule: { ...rule },
      matched: 0,
      fired: 0,
      remove: () => {
        const i = this.rules.indexOf(fault);
        if (i >= 0) this.rules.splice(i, 1);
      },
    };
    this.rules.push(fault);
    return fault;
  }

  clear(): void {
    this.rules.length = 0;
  }

  /**
   * Counts the request against every rule it matches and returns the first rule
   * that fires for it, if any. A flush passes sector = count = 0.
   */
  check(op: FaultOp, sector: number, count: number): Readonly<FaultRule> | undefined {
    let firing: Readonly<FaultRule> | undefined;
    for (const f of this.rules) {
      const r = f.rule;
      if (r.op !== 'any' && r.op !== op) continue;
      if (r.range && (count === 0 || sector >= r.range.sector + r.range.count || sector + count <= r.range.sector)) continue;
      f.matched++;
      const nth = r.nth ?? 1;
      const fires = r.sticky ? f.matched >= nth : f.matched === nth;
      if (fires && !firing) {
        f.fired++;
        firing = r;
      }
    }
    return firing;
  }
}

/** Damages a buffer the way a `corrupt` rule does: every sector's first byte inverted. */
export function corruptSectors(buf: Buffer): void {
  for (let off = 0; off < buf.length; off += 512) buf[off] = (buf[off] as number) ^ 0xff;
}
