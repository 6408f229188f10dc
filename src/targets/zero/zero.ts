/**
 * zero (Linux dm-zero.c, target version 1.2.0): reads return zeroes, writes
 * are dropped, discards succeed doing nothing (basic-targets §8.3). Writes are
 * acknowledged but never stored — the documented semantics, not a durability
 * promise (§10.1 rule 8).
 *
 *   table:  (no arguments)
 *   status: (empty)
 */
import type { Extent } from '../../block/device.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { ctrError } from '../common/dev-offset.ts';
import { unsupported } from '../common/io.ts';

const TYPE = 'zero';

// ---- constructor -----------------------------------------------------------

async function zeroCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  if (argv.length !== 0) throw ctrError('No arguments required');
  return new ZeroTarget(ctx);
}

// ---- I/O -------------------------------------------------------------------

class ZeroTarget implements Target {
  constructor(private readonly ctx: TargetContext) {}

  async read(_sector: number, into: Buffer): Promise<void> {
    into.fill(0);
  }

  async write(): Promise<void> {
    // Dropped: zero_map completes writes without storing them.
  }

  /** Dropped too, without joining the chunks first. */
  async writev(): Promise<void> {}

  async flush(): Promise<void> {
    // num_flush_bios = 0: the core never sends the target a flush; it succeeds.
  }

  async discard(): Promise<void> {
    // Mainline: num_discard_bios = 1 with discards_supported, silently dropped.
  }

  async writeZeroes(sector: number): Promise<void> {
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  async extents(sector: number, count: number): Promise<Extent[]> {
    return [{ sector, count, hole: true, zero: true }];
  }

  limits(): TargetLimits {
    // No devices: 512-byte blocks and no write cache. Discard is the target's
    // own (a no-op), so nothing promises a discarded range reads as zeroes.
    return { ...inheritLimits([]), discard: true, discardZeroes: false, writeZeroes: false };
  }

  areas(): DeviceArea[] {
    return [];
  }

  // ---- status --------------------------------------------------------------

  status(_type: StatusType): string {
    return '';
  }

  async close(): Promise<void> {}
}

export const zeroTarget: TargetType = {
  name: TYPE,
  version: [1, 2, 0],
  construct: zeroCtr,
};
