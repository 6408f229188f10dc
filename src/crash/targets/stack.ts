/**
 * Crash targets as real stacks: a DeviceRegistry over the SimulatedDisks the
 * explorer hands in (attached as backing devices `/dev/NAME`), devices built
 * from dmsetup-style tables, the top one opened as a program opens
 * /dev/mapper/NAME and torn down at close as `dmsetup remove` does
 * (CRASH-TESTING §2). Every target of the crash CLI is built from these.
 */
import { type BlockDevice, type Extent, type Limits, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { DeviceRegistry } from '../../mapper/device-registry.ts';
import { TargetRegistry } from '../../mapper/target-registry.ts';
import type { Clock, TargetType } from '../../mapper/target.ts';
import { SparseImage } from '../../sim/sparse-image.ts';
import { BUILTIN_TARGETS } from '../../targets/index.ts';
import type { Checker, CrashTarget, DiskSpec } from '../explorer.ts';

/** Where a disk is attached, as tables name it. */
const diskPath = (name: string): string => `/dev/${name}`;

/**
 * What a previous user left on a disk: every sector names the disk and
 * itself, so data read from the wrong place, or old data shown where a write
 * was acknowledged, never passes for a value the oracle allows.
 */
export function staleImage(name: string, sectors: number): SparseImage {
  const img = new SparseImage(sectors);
  img.write(0, namedSectors(name, sectors));
  return img;
}

/** Bytes in which every sector names `name` and its own number: misplaced data never matches. */
export function namedSectors(name: string, sectors: number): Buffer {
  const buf = Buffer.alloc(sectors * SECTOR_SIZE);
  for (let s = 0; s < sectors; s++) {
    const off = s * SECTOR_SIZE;
    buf.write(`stale ${name} ${s}`, off, 'latin1');
    buf.fill((s * 7 + name.length) & 0xff, off + 32, off + SECTOR_SIZE);
  }
  return buf;
}

/** A disk that starts with another user's bytes (staleImage). */
export const staleDisk = (name: string, sectors: number): DiskSpec => ({ name, sectors, initial: () => staleImage(name, sectors) });

/**
 * A registry over a crash target's disks: the built-in target types, with
 * `types` registered in place of the built-in ones of the same name (a
 * deliberately broken variant) or beside them.
 */
export function stackRegistry(
  target: string, specs: readonly DiskSpec[], disks: readonly BlockDevice[], clock: Clock, types: readonly TargetType[] = [],
): DeviceRegistry {
  const registered = new TargetRegistry();
  for (const t of BUILTIN_TARGETS) if (!types.some((v) => v.name === t.name)) registered.register(t);
  for (const t of types) registered.register(t);
  const registry = new DeviceRegistry({
    targets: registered,
    clock,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: only the simulated disks of crash target ${target} can be opened`);
    },
  });
  specs.forEach((d, i) => registry.attach(diskPath(d.name), disks[i]!));
  return registry;
}

/**
 * The top device of a stack. Closing it removes every device, top first, as
 * `dmsetup remove` does (no flush: basic-targets §10.1 rule 5; removing
 * suspends, which is where targets commit), so teardown is part of the
 * recorded run.
 */
export class StackTop implements BlockDevice {
  constructor(private readonly registry: DeviceRegistry, private readonly handle: BlockDevice, private readonly names: readonly string[]) {}

  get name(): string {
    return this.handle.name;
  }

  get sectors(): number {
    return this.handle.sectors;
  }

  get limits(): Limits {
    return this.handle.limits;
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.handle.read(sector, into);
  }

  write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    return this.handle.write(sector, data, opts);
  }

  flush(): Promise<void> {
    return this.handle.flush();
  }

  discard(sector: number, count: number): Promise<void> {
    return this.handle.discard(sector, count);
  }

  writeZeroes(sector: number, count: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.handle.writeZeroes(sector, count, opts);
  }

  extents(sector: number, count: number): Promise<Extent[]> {
    return this.handle.extents?.(sector, count) ?? Promise.resolve([{ sector, count, hole: false, zero: false }]);
  }

  async close(): Promise<void> {
    await this.handle.close();
    for (const name of [...this.names].reverse()) await this.registry.remove(name);
    await this.registry.shutdown();
  }
}

/** Lets queued callbacks run until `done` holds: background work of a target (resync, recalculation) reaching its end. */
export async function waitUntil(done: () => boolean, what: string, turns = 200_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (done()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new IoError('ETIMEDOUT', `${what} did not finish within ${turns} event-loop turns`);
}

// ---- stacks from tables -----------------------------------------------------------

/** One mapped device of a stack: created in order, the last one is the top. */
export interface StackDevice {
  readonly name: string;
  /** Table lines; `/dev/NAME` is the disk called NAME, `/dev/mapper/NAME` a device created before. */
  readonly table: readonly string[];
}

export interface StackSpec {
  readonly name: string;
  readonly disks: readonly DiskSpec[];
  readonly devices: readonly StackDevice[];
  /** Target types registered besides the built-in ones (a test's deliberately broken variants). */
  readonly types?: readonly TargetType[];
  readonly checkers?: readonly Checker[];
}

/** A crash target for a stack spec. */
export function stackTarget(spec: StackSpec): CrashTarget {
  return {
    name: spec.name,
    disks: spec.disks,
    ...(spec.checkers ? { checkers: spec.checkers } : {}),
    async open(disks, clock) {
      const registry = stackRegistry(spec.name, spec.disks, disks, clock, spec.types);
      for (const d of spec.devices) await registry.create(d.name, { table: d.table });
      const top = spec.devices[spec.devices.length - 1]!.name;
      return new StackTop(registry, registry.open(top), spec.devices.map((d) => d.name));
    },
  };
}

/**
 * The same stack with every table line of type `from` using `type` instead:
 * how a test swaps in a deliberately broken variant of one target.
 */
export function withTargetType(spec: StackSpec, from: string, type: TargetType, name = `${spec.name}/${type.name}`): StackSpec {
  const swap = (line: string) => {
    const f = line.split(' ');
    return f[2] === from ? [f[0], f[1], type.name, ...f.slice(3)].join(' ') : line;
  };
  return {
    ...spec,
    name,
    types: [...(spec.types ?? []), type],
    devices: spec.devices.map((d) => ({ name: d.name, table: d.table.map(swap) })),
  };
}
