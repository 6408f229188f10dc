/**
 * clone as a crash target (CRASH-TESTING §2–§3): a clone device over three
 * SimulatedDisks (metadata, destination, source) crashing independently,
 * with the clone checker of §2.4. The seed bug — committing hydrated bits
 * before the destination flush (Linux before 8b3fd1f53af3) — is a broken
 * variant.
 */
import { type BlockDevice, SECTOR_SIZE } from '../../block/device.ts';
import { makeCloneTarget } from '../../targets/clone/clone.ts';
import { CloneMetadata } from '../../targets/clone/metadata.ts';
import type { CheckContext, CrashTarget } from '../explorer.ts';
import { StackTop, stackRegistry, staleDisk } from './stack.ts';

export const CLONE_REGION = 16;
const CLONE_SECTORS = 256; // 16 regions
const META_SECTORS = 1024; // 128 metadata blocks

export interface CloneCrashOptions {
  /** Background hydration, two regions at a time (default); without it, only writes hydrate. */
  hydration?: boolean;
  /** The seed bug: commit the metadata, then flush the destination. */
  commitBeforeDestinationFlush?: boolean;
  /**
   * List the destination first: the I/O-error sweep fails requests disk by
   * disk in list order, so within a budget this sweeps copies and
   * destination flushes before metadata writes.
   */
  destFirst?: boolean;
}

/** The table of a variant. */
function cloneTable({ hydration = true }: CloneCrashOptions = {}): string {
  const args = hydration ? `${CLONE_REGION} 0 4 hydration_threshold 2 hydration_batch_size 2` : `${CLONE_REGION} 1 no_hydration`;
  return `0 ${CLONE_SECTORS} clone /dev/meta /dev/dest /dev/source ${args}`;
}

export function cloneCrashTarget(opts: CloneCrashOptions = {}): CrashTarget {
  const name = ['clone', opts.hydration === false && 'no-hydration', opts.commitBeforeDestinationFlush && 'commit-before-destination-flush', opts.destFirst && 'dest-first']
    .filter(Boolean).join('-');
  const meta = { name: 'meta', sectors: META_SECTORS };
  const dest = { name: 'dest', sectors: CLONE_SECTORS };
  const source = staleDisk('source', CLONE_SECTORS);
  const disks = opts.destFirst ? [dest, meta, source] : [meta, dest, source];
  /** Disks in [meta, dest, source] order, whatever order they are listed in. */
  const canonical = <T>(d: readonly T[]): T[] => (opts.destFirst ? [d[1]!, d[0]!, d[2]!] : [...d]);
  const types = opts.commitBeforeDestinationFlush ? [makeCloneTarget({ commitBeforeDestinationFlush: true })] : [];
  return {
    name,
    disks,
    async open(devices, clock) {
      const registry = stackRegistry(name, disks, devices, clock, types);
      await registry.create('clone', { table: [cloneTable(opts)] });
      return new StackTop(registry, registry.open('clone'), ['clone']);
    },
    checkers: [(c) => hydratedRegionsHoldSourceOrNewer(canonical(c.disks), c)],
    workload: { blockSectors: 8, discard: true, writeZeroes: false },
  };
}

/**
 * CRASH-TESTING §2.4, clone: every region the committed metadata marks
 * hydrated holds, on the destination, the source's data or data a top-level
 * write or discard put there.
 */
export async function hydratedRegionsHoldSourceOrNewer(
  disks: readonly BlockDevice[], c: Pick<CheckContext, 'cut' | 'recording'>,
): Promise<string | undefined> {
  const [meta, dest, source] = disks;
  const md = await CloneMetadata.open(meta!, { regionSize: CLONE_REGION, targetSize: CLONE_SECTORS, readOnly: true });
  try {
    const top = c.recording.devices.findIndex((d) => d.initial === undefined);
    const topWrites = c.recording.events.filter((e) => e.type === 'submit' && e.dev === top && e.seq < c.cut && e.op !== 'flush');
    const d = Buffer.alloc(CLONE_REGION * SECTOR_SIZE);
    const s = Buffer.alloc(CLONE_REGION * SECTOR_SIZE);
    for (let r = 0; r < md.nrRegions; r++) {
      if (!md.isHydrated(r)) continue;
      await dest!.read(r * CLONE_REGION, d);
      await source!.read(r * CLONE_REGION, s);
      for (let i = 0; i < CLONE_REGION; i++) {
        const sector = r * CLONE_REGION + i;
        const got = d.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE);
        if (got.equals(s.subarray(i * SECTOR_SIZE, (i + 1) * SECTOR_SIZE))) continue;
        const newer = topWrites.some((w) => w.type === 'submit' && sector >= w.sector && sector < w.sector + w.count &&
          (w.data ? got.equals(w.data.subarray((sector - w.sector) * SECTOR_SIZE, (sector - w.sector + 1) * SECTOR_SIZE)) : got.every((b) => b === 0)));
        if (!newer) return `region ${r} is marked hydrated but sector ${sector} on the destination holds neither the source's data nor a newer write`;
      }
    }
    return undefined;
  } finally {
    await md.close();
  }
}
