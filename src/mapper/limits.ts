import { SECTOR_SIZE, type Limits } from '../block/device.ts';
import type { DeviceRef, TargetLimits } from './target.ts';

/**
 * The limits a target inherits from its devices (basic-targets §3.5): block
 * sizes are the largest, a cache or FUA if any device has one, discard and
 * write-zeroes only if every device has them. With no devices: 512-byte
 * blocks, no cache, no discard.
 */
export function inheritLimits(refs: readonly DeviceRef[]): TargetLimits {
  const out: TargetLimits = {
    logicalBlockSize: SECTOR_SIZE,
    physicalBlockSize: SECTOR_SIZE,
    ioMin: SECTOR_SIZE,
    ioOpt: 0,
    flush: false,
    fua: false,
    discard: refs.length > 0,
    writeZeroes: refs.length > 0,
    discardZeroes: refs.length > 0,
  };
  for (const { device } of refs) {
    const l: Limits = device.limits;
    out.logicalBlockSize = Math.max(out.logicalBlockSize, l.logicalBlockSize);
    out.physicalBlockSize = Math.max(out.physicalBlockSize, l.physicalBlockSize);
    out.ioMin = Math.max(out.ioMin, l.ioMin);
    out.ioOpt = lcm(out.ioOpt, l.ioOpt);
    out.flush ||= l.flush;
    out.fua ||= l.fua;
    out.discard &&= l.discard;
    out.writeZeroes &&= l.writeZeroes;
    out.discardZeroes &&= l.discardZeroes;
  }
  return out;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Least common multiple where 0 means "no preference". */
export function lcm(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return (a / gcd(a, b)) * b;
}
