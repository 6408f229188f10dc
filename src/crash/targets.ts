/**
 * The built-in crash targets: dmkit's shipped targets as real stacks, built
 * through a DeviceRegistry from dmsetup-style tables over the SimulatedDisks
 * the explorer hands in (attached as backing devices `/dev/NAME`), opened as
 * a program opens /dev/mapper/NAME, and torn down at close as `dmsetup
 * remove` does (CRASH-TESTING §2). `npm run crash` explores these by default.
 */
import { type BlockDevice, type Extent, type Limits, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions } from '../block/device.ts';
import { IoError } from '../block/errors.ts';
import { MemoryDevice } from '../block/memory-device.ts';
import type { DeviceHandle } from '../mapper/device-handle.ts';
import { DeviceRegistry } from '../mapper/device-registry.ts';
import type { Clock, TargetType } from '../mapper/target.ts';
import { Rng } from '../sim/rng.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { SimulatedDisk } from '../sim/simulated-disk.ts';
import { SparseImage } from '../sim/sparse-image.ts';
import { builtinTargets } from '../targets/index.ts';
import {
  LOG_DISCARD_FLAG, LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG, LOG_METADATA_FLAG, decodeEntry, decodeSuper, payloadBlocks,
} from '../targets/log-writes/log-format.ts';
import { END_MARK } from '../targets/log-writes/log-writes.ts';
import { isValidEntry, superProblem } from '../targets/log-writes/log-validate.ts';
import type { Checker, CrashTarget, DiskSpec } from './explorer.ts';
import type { Recording, SubmitEvent } from './recording.ts';
import { type TopOp, randomWorkload } from './workload.ts';

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

/** Where a disk is attached, as tables name it. */
export const diskPath = (name: string): string => `/dev/${name}`;

/** A crash target for a stack spec. */
export function stackTarget(spec: StackSpec): CrashTarget {
  return {
    name: spec.name,
    disks: spec.disks,
    ...(spec.checkers ? { checkers: spec.checkers } : {}),
    open: (disks, clock) => openStack(spec, disks, clock),
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

async function openStack(spec: StackSpec, disks: BlockDevice[], clock: Clock): Promise<BlockDevice> {
  const targets = builtinTargets();
  for (const t of spec.types ?? []) targets.register(t);
  const registry = new DeviceRegistry({
    targets,
    clock,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: only the simulated disks of crash target ${spec.name} can be opened`);
    },
  });
  spec.disks.forEach((d, i) => registry.attach(diskPath(d.name), disks[i]!));
  for (const d of spec.devices) await registry.create(d.name, { table: d.table });
  const top = spec.devices[spec.devices.length - 1]!.name;
  return new StackTop(registry, registry.open(top), spec.devices.map((d) => d.name));
}

/**
 * The top device of a stack. Closing it removes every device, top first, as
 * `dmsetup remove` does (no flush: basic-targets §10.1 rule 5), so target
 * teardown (log-writes' end mark) is part of the recorded run.
 */
class StackTop implements BlockDevice {
  constructor(private readonly registry: DeviceRegistry, private readonly handle: DeviceHandle, private readonly names: readonly string[]) {}

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
    return this.handle.extents(sector, count);
  }

  async close(): Promise<void> {
    await this.handle.close();
    for (const name of [...this.names].reverse()) await this.registry.remove(name);
    await this.registry.shutdown();
  }
}

// ---- disks -------------------------------------------------------------------

/**
 * What a previous user left on a disk: every sector names the disk and
 * itself, so data read from the wrong place, or old data shown where a write
 * was acknowledged, never passes for a value the oracle allows.
 */
function staleImage(name: string, sectors: number): SparseImage {
  const img = new SparseImage(sectors);
  const buf = Buffer.alloc(sectors * SECTOR_SIZE);
  for (let s = 0; s < sectors; s++) {
    const off = s * SECTOR_SIZE;
    buf.write(`stale ${name} ${s}`, off, 'latin1');
    buf.fill((s * 7 + name.length) & 0xff, off + 32, off + SECTOR_SIZE);
  }
  img.write(0, buf);
  return img;
}

const disk = (name: string, sectors: number): DiskSpec => ({ name, sectors, initial: () => staleImage(name, sectors) });

// ---- the built-in stacks -------------------------------------------------------

/** Disk size of the small stacks: big enough for splits and several stripe rows, small enough to check thousands of states. */
const DISK = 72;

export const LINEAR: StackSpec = {
  name: 'linear',
  disks: [disk('sda', DISK)],
  devices: [{ name: 'lin', table: ['0 64 linear /dev/sda 8'] }],
};

/** Two stripes on separate disks: a top FLUSH must reach both (R6; basic-targets §4.3, §10.1 rule 2). */
export const STRIPED_2: StackSpec = {
  name: 'striped',
  disks: [disk('sda', DISK), disk('sdb', DISK)],
  devices: [{ name: 'str', table: ['0 128 striped 2 4 /dev/sda 8 /dev/sdb 0'] }],
};

export const STRIPED_3: StackSpec = {
  name: 'striped-3',
  disks: [disk('sda', DISK), disk('sdb', DISK), disk('sdc', DISK)],
  devices: [{ name: 'str3', table: ['0 96 striped 3 2 /dev/sda 0 /dev/sdb 8 /dev/sdc 4'] }],
};

/** Two targets in one table: requests crossing sector 32 are split, a FLUSH fans out to both (§4.2, §4.3). */
export const LINEAR_STRIPED: StackSpec = {
  name: 'linear+striped',
  disks: [disk('sda', DISK), disk('sdb', DISK), disk('sdc', DISK)],
  devices: [{ name: 'mix', table: ['0 32 linear /dev/sda 16', '32 64 striped 2 4 /dev/sdb 0 /dev/sdc 8'] }],
};

export const DELAY_0: StackSpec = {
  name: 'delay-0',
  disks: [disk('sda', DISK)],
  devices: [{ name: 'dly0', table: ['0 64 delay /dev/sda 8 0'] }],
};

/**
 * Reads, writes and flushes held for different times on the virtual clock
 * (the scheduler advances it when every disk is idle), so a flush can
 * overtake held writes: they were never acknowledged, so it need not cover them.
 */
export const DELAY: StackSpec = {
  name: 'delay',
  disks: [disk('sda', DISK)],
  devices: [{ name: 'dly', table: ['0 64 delay /dev/sda 8 7 /dev/sda 8 13 /dev/sda 8 3'] }],
};

/** linear over striped over two disks, through /dev/mapper (R6 through two layers). */
export const STACKED: StackSpec = {
  name: 'stacked',
  disks: [disk('sda', DISK), disk('sdb', DISK)],
  devices: [
    { name: 'lower', table: ['0 128 striped 2 4 /dev/sda 8 /dev/sdb 0'] },
    { name: 'upper', table: ['0 96 linear /dev/mapper/lower 24'] },
  ],
};

const LOG_DATA = 96;
/** Room for about 1600 logged requests: a log that overflows disables logging (log-writes §4.9). */
const LOG_SECTORS = 8192;

export const LOG_WRITES: StackSpec = {
  name: 'log-writes',
  disks: [disk('data', LOG_DATA), { name: 'log', sectors: LOG_SECTORS }],
  devices: [{ name: 'lw', table: [`0 ${LOG_DATA} log-writes /dev/data /dev/log`] }],
  checkers: [logWritesChecker(0, 1)],
};

export const BUILTIN_STACKS: readonly StackSpec[] = [LINEAR, STRIPED_2, STRIPED_3, LINEAR_STRIPED, DELAY_0, DELAY, STACKED, LOG_WRITES];

/** Name → crash target, for `npm run crash` (the shape a --module exports as `crashTargets`). */
export function builtinCrashTargets(): Record<string, CrashTarget> {
  return Object.fromEntries(BUILTIN_STACKS.map((s) => [s.name, stackTarget(s)]));
}

// ---- workloads -------------------------------------------------------------------

/** The top device's size, block and capabilities, from one throw-away open. */
export async function topGeometry(target: CrashTarget) {
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

/** A seeded random workload of `length` ops sized to the target's top device. */
export async function workloadFor(target: CrashTarget, seed: number, length: number): Promise<TopOp[]> {
  return randomWorkload(new Rng(seed), { ...(await topGeometry(target)), length });
}

// ---- the log-writes checker (CRASH-TESTING §2.4) -----------------------------------

interface ReadEntry {
  readonly flags: number;
  /** Data-device sectors (512 bytes). */
  readonly sector: number;
  readonly count: number;
  readonly payload?: Buffer;
  readonly mark?: string;
}

/**
 * At every crash state the log on the log disk must be well formed and
 * replay to a prefix-consistent image:
 *
 * - The super block is blank (nothing logged with a FUA or MARK yet) or valid,
 *   with the data device's block size (log-writes §3.1).
 * - Linux never flushes the log device while logging (log-writes §4.6), so a
 *   crash may leave a super block counting entries that never became
 *   durable; a reader stops at the first header that is not valid or points
 *   outside the devices (§7 rule 12), and a payload may not have reached the
 *   log (it still reads as the log disk's old content, which no reader can
 *   tell). Replaying the entries before it onto the initial data image must
 *   leave, in every sector not replayed from a lost payload, its initial
 *   content or the whole value of some top-level write or discard of that
 *   sector — never garbage, nor another sector's data.
 * - Once teardown has flushed the log device (the end of a clean run), the
 *   log is complete: every entry and payload is there, the super block counts every
 *   top-level write, discard and flush plus the end mark, which comes last,
 *   and each acknowledged write and discard is in it with its data (§4.5).
 */
export function logWritesChecker(dataDisk: number, logDisk: number): Checker {
  return async ({ disks, cut, recording }) => {
    const data = disks[dataDisk]!;
    const log = disks[logDisk]!;
    const tornDown = logFlushedBefore(recording, logDisk, cut);
    const blockSize = data.limits.logicalBlockSize;
    const per = blockSize / SECTOR_SIZE;
    const sb = Buffer.alloc(blockSize);
    await log.read(0, sb);
    if (sb.every((b) => b === 0)) return tornDown ? 'log-writes: the log has no super block after teardown flushed the log device' : undefined;
    const sup = decodeSuper(sb);
    const problem = superProblem(sup) ?? (sup.sectorSize === blockSize ? undefined : `sectorsize ${sup.sectorSize}, the data device's block is ${blockSize}`);
    if (problem) return `log-writes: the log super block is malformed: ${problem}`;

    const image = new MemoryDevice(data.sectors, { name: 'replay' });
    const initial = recording.devices[dataDisk]!.initial!;
    const whole = Buffer.alloc(data.sectors * SECTOR_SIZE);
    initial.read(0, whole);
    await image.write(0, whole);
    const logInitial = recording.devices[logDisk]!.initial!;
    const entries: ReadEntry[] = [];
    /** Data sectors last replayed from log sectors whose payload was lost in the crash. */
    const unlogged = new Set<number>();
    const header = Buffer.alloc(blockSize);
    let pos = per;
    for (let i = 0n; i < sup.nrEntries; i++) {
      await log.read(pos, header);
      const e = decodeEntry(header);
      const blocks = payloadBlocks(e);
      const inside = e.flags & BigInt(LOG_MARK_FLAG) || e.sector + e.nrSectors <= BigInt(data.sectors / per);
      if (!isValidEntry(e, header) || !inside || BigInt(pos + per) + blocks * BigInt(per) > BigInt(log.sectors)) {
        if (tornDown) return `log-writes: entry ${i} at log sector ${pos} is malformed after teardown flushed the log device`;
        break;
      }
      const entry: ReadEntry = {
        flags: Number(e.flags), sector: Number(e.sector) * per, count: Number(e.nrSectors) * per,
        ...(e.flags & BigInt(LOG_MARK_FLAG) ? { mark: header.toString('latin1', 32, 32 + Number(e.dataLen)) } : {}),
      };
      if (blocks > 0n) {
        const payload = Buffer.alloc(entry.count * SECTOR_SIZE);
        await log.read(pos + per, payload);
        await image.write(entry.sector, payload);
        entries.push({ ...entry, payload });
        // A payload sector that still holds what the log disk held before never reached it.
        const before = Buffer.alloc(payload.length);
        logInitial.read(pos + per, before);
        for (let k = 0; k < entry.count; k++) {
          const at = k * SECTOR_SIZE;
          if (payload.subarray(at, at + SECTOR_SIZE).equals(before.subarray(at, at + SECTOR_SIZE))) unlogged.add(entry.sector + k);
          else unlogged.delete(entry.sector + k);
        }
      } else {
        if (entry.flags & LOG_DISCARD_FLAG) {
          await image.writeZeroes(entry.sector, entry.count);
          for (let k = 0; k < entry.count; k++) unlogged.delete(entry.sector + k);
        }
        entries.push(entry);
      }
      pos += per + Number(blocks) * per;
    }

    const top = topWrites(recording, cut);
    const replayed = Buffer.alloc(data.sectors * SECTOR_SIZE);
    await image.read(0, replayed);
    const lost = [...unlogged].sort((a, b) => a - b)[0];
    if (tornDown && lost !== undefined) return `log-writes: after teardown the log holds no payload for data sector ${lost}`;
    const bad = foreignSector(replayed, whole, top, unlogged);
    if (bad !== undefined) {
      return `log-writes: replaying the ${entries.length} readable log entries puts data no top-level write wrote at data sector ${bad}`;
    }
    return tornDown ? incomplete(recording, entries, sup.nrEntries, top) : undefined;
  };
}

/** A flush of the log device completed before the cut: only teardown flushes it. */
function logFlushedBefore(recording: Recording, dev: number, cut: number): boolean {
  const events = recording.events.slice(0, cut);
  return events.some((s) => s.type === 'submit' && s.dev === dev && s.op === 'flush' &&
    events.some((c) => c.type === 'complete' && c.dev === dev && c.id === s.id && c.ok));
}

/** The top device's write, discard and flush submissions before the cut. */
function topWrites(recording: Recording, cut: number): SubmitEvent[] {
  const top = recording.devices.find((d) => d.initial === undefined)!.index;
  return recording.events.slice(0, cut).filter((e): e is SubmitEvent => e.type === 'submit' && e.dev === top);
}

/**
 * The first sector holding neither its initial content nor the whole value
 * some top-level write gave it, leaving out those replayed from a lost payload.
 */
function foreignSector(got: Buffer, initial: Buffer, top: readonly SubmitEvent[], unlogged: ReadonlySet<number>): number | undefined {
  const zero = Buffer.alloc(SECTOR_SIZE);
  for (let s = 0; s < got.length / SECTOR_SIZE; s++) {
    if (unlogged.has(s)) continue;
    const sector = got.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
    if (sector.equals(initial.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE))) continue;
    const ok = top.some((w) => w.op !== 'flush' && s >= w.sector && s < w.sector + w.count &&
      sector.equals(w.data ? w.data.subarray((s - w.sector) * SECTOR_SIZE, (s - w.sector + 1) * SECTOR_SIZE) : zero));
    if (!ok) return s;
  }
  return undefined;
}

/** After teardown: the whole log, ending with the end mark, holding every top-level request once. */
function incomplete(recording: Recording, entries: readonly ReadEntry[], nrEntries: bigint, top: readonly SubmitEvent[]): string | undefined {
  const expected = top.length + 1;
  const last = entries[entries.length - 1];
  if (BigInt(expected) !== nrEntries || last?.mark !== END_MARK) {
    return `log-writes: after teardown the super block counts ${nrEntries} entries and the last readable one is ` +
      `${last?.mark !== undefined ? `mark "${last.mark}"` : 'not a mark'}; the run made ${top.length} top-level requests, ` +
      `so ${expected} entries ending with mark "${END_MARK}" (log-writes §4.5)`;
  }
  const unused = new Set(entries);
  for (const w of top) {
    const flags = w.op === 'flush' ? LOG_FLUSH_FLAG : w.op === 'discard' ? LOG_DISCARD_FLAG : w.fua ? LOG_FUA_FLAG : 0;
    const match = [...unused].find((e) => (e.flags & ~LOG_METADATA_FLAG) === flags &&
      (w.op === 'flush' || (e.sector === w.sector && e.count === w.count && (!w.data || w.data.equals(e.payload ?? Buffer.alloc(0))))));
    if (!match) {
      const name = recording.devices[w.dev]!.name;
      return `log-writes: after teardown the log lacks top-level ${w.op} #${w.id} on ${name}` +
        (w.op === 'flush' ? '' : `, sectors ${w.sector}+${w.count}`);
    }
    unused.delete(match);
  }
  return undefined;
}
