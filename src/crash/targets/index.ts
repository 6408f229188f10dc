/**
 * The crash targets of `npm run crash` by name (CRASH-TESTING §2.7: `npm
 * run crash -- --seed S --target T` reruns what a report names): dmkit's
 * shipped targets as real stacks, and the seed bugs of CRASH-TESTING §3 —
 * each the real target with its test-only option on, which the explorer
 * must find. A target is built when chosen (integrity formats its images).
 */
import { SECTOR_SIZE } from '../../block/device.ts';
import { Rng } from '../../sim/rng.ts';
import { Scheduler } from '../../sim/scheduler.ts';
import { SimulatedDisk } from '../../sim/simulated-disk.ts';
import { SparseImage } from '../../sim/sparse-image.ts';
import type { CrashTarget } from '../explorer.ts';
import { type TopOp, randomWorkload } from '../workload.ts';
import { BUILTIN_STACKS } from './basic.ts';
import { cloneCrashTarget } from './clone.ts';
import { type IntegrityCrashOptions, integrityCrashTarget } from './integrity.ts';
import { mirrorCrashTarget } from './mirror.ts';
import { stackTarget } from './stack.ts';
import { thinCrashTarget } from './thin.ts';

export type CrashTargetBuilder = () => CrashTarget | Promise<CrashTarget>;

const INTEGRITY_VARIANTS: readonly IntegrityCrashOptions[] = [
  { mode: 'J', meta: false }, { mode: 'J', meta: true }, { mode: 'B', meta: false }, { mode: 'B', meta: true },
];

const integrityName = (v: IntegrityCrashOptions) => `integrity-${v.mode}${v.meta ? '-meta' : ''}`;

/** The shipped targets, each under its CrashTarget name: what `npm run crash` explores by default. */
export const CRASH_TARGETS: Readonly<Record<string, CrashTargetBuilder>> = {
  ...Object.fromEntries(BUILTIN_STACKS.map((s) => [s.name, () => stackTarget(s)])),
  thin: () => thinCrashTarget(),
  'thin-snapshot': () => thinCrashTarget({ snapshot: true }),
  'thin-5-blocks': () => thinCrashTarget({ dataBlocks: 5 }),
  clone: () => cloneCrashTarget(),
  'clone-no-hydration': () => cloneCrashTarget({ hydration: false }),
  mirror: () => mirrorCrashTarget(),
  ...Object.fromEntries(INTEGRITY_VARIANTS.map((v) => [integrityName(v), () => integrityCrashTarget(v)])),
};

/** The seed bugs (CRASH-TESTING §3): run when named or with --broken; every one must fail. */
export const BROKEN_CRASH_TARGETS: Readonly<Record<string, CrashTargetBuilder>> = {
  'thin-mapping-before-data-flush': () => thinCrashTarget({ broken: 'mapping-before-data-flush' }),
  'clone-commit-before-destination-flush': () => cloneCrashTarget({ commitBeforeDestinationFlush: true }),
  'mirror-seed-bug': () => mirrorCrashTarget({ seedBug: true }),
  'integrity-B-meta-broken-flush': () => integrityCrashTarget({ mode: 'B', meta: true, brokenFlushOrder: true }),
};

// ---- workloads -------------------------------------------------------------------

interface TopGeometry {
  readonly sectors: number;
  readonly blockSectors: number;
  readonly discard: boolean;
  readonly writeZeroes: boolean;
}

const geometries = new WeakMap<CrashTarget, Promise<TopGeometry>>();

/** The top device's size, block and capabilities, from one throw-away open (once per target). */
function topGeometry(target: CrashTarget): Promise<TopGeometry> {
  let g = geometries.get(target);
  if (!g) geometries.set(target, (g = openOnce(target)));
  return g;
}

async function openOnce(target: CrashTarget): Promise<TopGeometry> {
  const scheduler = new Scheduler({ seed: 0 });
  const disks = target.disks.map((spec) => new SimulatedDisk({
    name: spec.name, scheduler, image: spec.initial?.() ?? new SparseImage(spec.sectors), limits: spec.limits ?? {},
  }));
  const top = await target.open(disks, scheduler.clock);
  const g = {
    sectors: top.sectors,
    blockSectors: top.limits.logicalBlockSize / SECTOR_SIZE,
    discard: top.limits.discard,
    writeZeroes: top.limits.writeZeroes,
  };
  await top.close();
  return g;
}

/** A seeded random workload of `length` ops sized to the target's top device, shaped as the target asks. */
export async function workloadFor(target: CrashTarget, seed: number, length: number): Promise<TopOp[]> {
  return randomWorkload(new Rng(seed), { ...(await topGeometry(target)), ...target.workload, length });
}
