/**
 * thin-pool + thin as crash targets (CRASH-TESTING §2, §3): a pool over a
 * metadata disk and a data disk that starts full of stale bytes, with a thin
 * volume — or a snapshot of a written volume — on top. The checkers of §2.4:
 * the metadata passes dmkit's thin check (reference counts equal a full
 * re-walk), and its mappings are what the workload explains (thinMappings).
 */
import { type BlockDevice, SECTOR_SIZE } from '../../block/device.ts';
import { type Errno, IoError } from '../../block/errors.ts';
import type { DeviceRegistry } from '../../mapper/device-registry.ts';
import { lookup, walk } from '../../pdata/btree/btree.ts';
import { readU64 } from '../../pdata/endian.ts';
import { type BlockTime, decodeBlockTime } from '../../pdata/thin/block-time.ts';
import type { DeviceDetails } from '../../pdata/thin/device-details.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import { NEEDS_CHECK_FLAG } from '../../pdata/thin/superblock.ts';
import type { BrokenPool } from '../../targets/thin/pool-core.ts';
import { makeThinPoolTarget } from '../../targets/thin/pool.ts';
import { checkThinMetadata, fixThinMetadata } from '../../tools/thin/check.ts';
import type { CheckContext, Checker, CrashTarget, DiskSpec } from '../explorer.ts';
import { type TopRequest, topRequests } from '../oracle.ts';
import { StackTop, namedSectors, stackRegistry, staleDisk } from './stack.ts';

/** Data block size, sectors (64 KiB). */
export const THIN_BLOCK_SECTORS = 128;
const DATA_BLOCKS = 48;
const VOLUME_BLOCKS = 16;
const VOLUME_SECTORS = VOLUME_BLOCKS * THIN_BLOCK_SECTORS;
const META_SECTORS = 1024;
/** The volume's thin id; with a snapshot, the snapshot's origin. */
const ORIGIN = 1;
const SNAPSHOT = 2;

export interface ThinCrashOptions {
  /** The seed bug kept as a broken variant (CRASH-TESTING §3): commit a mapping before flushing its data. */
  broken?: BrokenPool;
  /** Expose a snapshot of a written volume instead of a fresh volume (copy-on-write paths). */
  snapshot?: boolean;
  /** Data blocks of the pool (default 48, more than the volume needs). */
  dataBlocks?: number;
  /** Checkers run besides the thin ones (a test adds Debian's thin_check). */
  checkers?: readonly Checker[];
}

/** Disks in the order the checkers read them. */
const DATA_DISK = 0;
export const THIN_META_DISK = 1;
const DISKS: readonly DiskSpec[] = [
  staleDisk('data', DATA_BLOCKS * THIN_BLOCK_SECTORS),
  { name: 'meta', sectors: META_SECTORS },
];

export function thinCrashTarget(opts: ThinCrashOptions = {}): CrashTarget {
  const name = `thin${opts.snapshot ? '-snapshot' : ''}${opts.dataBlocks ? `-${opts.dataBlocks}-blocks` : ''}${opts.broken ? `-${opts.broken}` : ''}`;
  return {
    name,
    disks: DISKS,
    open: async (disks, clock) => {
      await clearNeedsCheck(disks[THIN_META_DISK]!);
      return openThin(stackRegistry(name, DISKS, disks, clock, opts.broken ? [makeThinPoolTarget({ broken: opts.broken })] : []), opts);
    },
    checkers: [
      async ({ disks }) => {
        const problem = await firstProblem(disks[THIN_META_DISK]!);
        return problem && `thin metadata check: ${problem}`;
      },
      (c) => thinMappings(c.disks[DATA_DISK]!, c.disks[THIN_META_DISK]!, c, { snapshot: opts.snapshot ?? false }),
      ...(opts.checkers ?? []),
    ],
    workload: { blockSectors: 8, maxBlocks: 24, discard: true, writeZeroes: true },
  };
}

/** What the snapshot's origin holds: written and flushed before the snapshot is taken. */
const ORIGIN_CONTENT = namedSectors('origin', VOLUME_SECTORS);

/**
 * What LVM does before activating a pool (thin_check -q
 * --clear-needs-check-flag): metadata a failed operation marked NEEDS_CHECK
 * — the pool would start read-only — is checked in full and the flag
 * cleared only when the check is clean; damage fails the power-on.
 */
async function clearNeedsCheck(meta: BlockDevice): Promise<void> {
  const { flags } = await checkThinMetadata(meta, { superBlockOnly: true }); // 0 for blank or unreadable metadata: the pool's open decides
  if (!(flags & NEEDS_CHECK_FLAG)) return;
  const problem = await firstProblem(meta);
  if (problem) throw new IoError('EBADMSG', `thin check before activation: ${problem}`);
  await fixThinMetadata(meta, { leaks: [], clearNeedsCheck: true });
}

/** The first error or warning of a full thin check (the recovered metadata must have neither), or undefined. */
async function firstProblem(meta: BlockDevice): Promise<string | undefined> {
  const report = await checkThinMetadata(meta);
  return report.errors[0] ?? report.warnings[0];
}

/**
 * Power-on: build the pool (recovery = reopening the metadata at its last
 * commit), and make sure the volume exists, creating it where a crash came
 * before its create_thin — or the snapshot's set-up — was committed.
 */
async function openThin(registry: DeviceRegistry, opts: ThinCrashOptions): Promise<BlockDevice> {
  await registry.create('pool', { table: [`0 ${(opts.dataBlocks ?? DATA_BLOCKS) * THIN_BLOCK_SECTORS} thin-pool /dev/meta /dev/data ${THIN_BLOCK_SECTORS} 0`] });
  await registry.message('pool', 0, ['create_thin', String(ORIGIN)]).catch(unless('EEXIST'));
  const volume = (id: number) => registry.create('vol', { table: [`0 ${VOLUME_SECTORS} thin /dev/mapper/pool ${id}`] });
  if (!opts.snapshot) {
    await volume(ORIGIN);
  } else if (!(await volume(SNAPSHOT).then(() => true, unless('ENODATA')))) {
    // Idempotent set-up: write the origin (again), flush, snapshot it. The snapshot exists only once the origin's data is committed.
    await registry.create('origin', { table: [`0 ${VOLUME_SECTORS} thin /dev/mapper/pool ${ORIGIN}`] });
    const origin = registry.open('origin');
    await origin.write(0, Buffer.from(ORIGIN_CONTENT));
    await origin.flush();
    await origin.close();
    await registry.remove('origin');
    await registry.message('pool', 0, ['create_snap', String(SNAPSHOT), String(ORIGIN)]);
    await volume(SNAPSHOT);
  }
  return new StackTop(registry, registry.open('vol'), ['pool', 'vol']);
}

/** A rejection handler that swallows IoError `code` (resolving to false) and rethrows anything else. */
function unless(code: Errno): (err: unknown) => false {
  return (err) => {
    if (err instanceof IoError && err.code === code) return false;
    throw err;
  };
}

// ---- the mapping checker (CRASH-TESTING §2.4) ----------------------------------------

interface ThinDevice {
  readonly id: number;
  readonly details: DeviceDetails;
  readonly mappings: ReadonlyMap<number, BlockTime>;
}

/** What the top-level requests before the crash allow for one virtual block of the volume. */
interface BlockModel {
  /** A write, or a write-zeroes covering it only in part, was submitted: it may have a data block of its own. */
  readonly written: boolean;
  /** A discard or write-zeroes covering it whole was submitted: it may be unmapped. */
  readonly unmapped: boolean;
  /** An acknowledged, flushed write to it that no unmapping may have followed: it must have a data block of its own. */
  readonly durable?: TopRequest;
}

/**
 * CRASH-TESTING §2.4, thin: the recovered metadata's mappings are the ones
 * the workload explains, device by device.
 *
 * - The pool holds exactly the devices the stack created; each device's
 *   mapped_blocks counts its mappings.
 * - No data block is mapped twice, except by the snapshot's inherited block
 *   and the origin's same block (mapping time before the snapshot's).
 * - The volume (the snapshot, with `snapshot`): a block has a data block of
 *   its own only if a write or write-zeroes touched it before the crash; it
 *   lost its initial mapping (none, or the origin's block) only if a discard
 *   or write-zeroes covered it whole; and an acknowledged, flushed write that
 *   no unmapping may have followed left it a block of its own (R6, also when
 *   it wrote zeroes, which the oracle cannot tell from unmapped).
 * - With a snapshot, its origin keeps every mapping it had when the snapshot
 *   was taken, and those blocks still hold the origin's data: writes to the
 *   snapshot broke sharing instead of writing the shared blocks.
 */
export async function thinMappings(
  data: BlockDevice, meta: BlockDevice, c: Pick<CheckContext, 'cut' | 'recording'>, opts: { snapshot: boolean },
): Promise<string | undefined> {
  const md = await ThinMetadata.open(meta, { readOnly: true });
  let devices: ThinDevice[];
  try {
    devices = await thinDevices(md);
  } finally {
    await md.close();
  }
  const expected = opts.snapshot ? [ORIGIN, SNAPSHOT] : [ORIGIN];
  const ids = devices.map((d) => d.id);
  if (ids.join() !== expected.join()) return `the pool holds thin devices [${ids.join(', ')}]; the stack created [${expected.join(', ')}]`;
  for (const d of devices) {
    if (d.details.mappedBlocks !== d.mappings.size) {
      return `thin device ${d.id}: mapped_blocks is ${d.details.mappedBlocks} but ${d.mappings.size} blocks are mapped`;
    }
  }
  const origin = devices[0]!;
  const volume = devices[devices.length - 1]!;
  /** The volume's block `v` shares the origin's: a snapshot's block mapped before it was taken. */
  const inherited = (v: number, m: BlockTime) =>
    opts.snapshot && m.time < volume.details.snapshottedTime && origin.mappings.get(v)?.block === m.block;
  const shared = sharedBlock(devices, (d, v, m) => d === volume && inherited(v, m));
  if (shared) return shared;
  if (opts.snapshot) {
    const problem = await originKept(data, origin);
    if (problem) return problem;
  }

  const what = opts.snapshot ? 'snapshot' : 'thin volume';
  const models = blockModels(c);
  for (const v of new Set([...models.keys(), ...volume.mappings.keys()])) {
    const m = volume.mappings.get(v);
    const model = models[v];
    if (!model) return `${what} block ${v} is mapped (data block ${m!.block}), beyond the volume's ${VOLUME_BLOCKS} blocks`;
    const durable = model.durable ? `top write #${model.durable.id} (${model.durable.sector}+${model.durable.count}) to it was acknowledged and flushed (durable since event ${model.durable.durableAt})` : '';
    if (!m) {
      if (durable) return `${what} block ${v} is unmapped, but ${durable}`;
      if (opts.snapshot && !model.unmapped) return `${what} block ${v} lost the origin's block it shared, though no discard or write-zeroes covered it whole`;
    } else if (inherited(v, m)) {
      if (durable) return `${what} block ${v} still shares the origin's data block ${m.block}, but ${durable}`;
    } else if (opts.snapshot && m.time < volume.details.snapshottedTime) {
      return `${what} block ${v} maps data block ${m.block} from before the snapshot (time ${m.time}), but the origin maps that block to ${origin.mappings.get(v)?.block ?? 'nothing'}`;
    } else if (!model.written) {
      return `${what} block ${v} has a data block of its own (${m.block}, time ${m.time}), but no top-level write before the crash touched it`;
    }
  }
  return undefined;
}

/** Every device with its details and mappings, ascending by id. */
async function thinDevices(md: ThinMetadata): Promise<ThinDevice[]> {
  const devices: ThinDevice[] = [];
  for (const id of await md.deviceIds()) {
    const mappings = new Map<number, BlockTime>();
    const root = await lookup(md.tm, md.superblock.dataMappingRoot, id);
    if (root) {
      await walk(md.tm, readU64(root, 0), (vblock, v) => {
        mappings.set(vblock, decodeBlockTime(v));
      });
    }
    devices.push({ id, details: (await md.deviceDetails(id))!, mappings });
  }
  return devices;
}

/** The first data block mapped by two (device, block) pairs, leaving out the sharing `allowed` calls legitimate. */
function sharedBlock(devices: readonly ThinDevice[], allowed: (d: ThinDevice, v: number, m: BlockTime) => boolean): string | undefined {
  const owner = new Map<number, string>();
  for (const d of devices) {
    for (const [v, m] of d.mappings) {
      if (allowed(d, v, m)) continue;
      const here = `device ${d.id} block ${v}`;
      const first = owner.get(m.block);
      if (first) return `data block ${m.block} is mapped by ${first} and by ${here}`;
      owner.set(m.block, here);
    }
  }
  return undefined;
}

/** The origin maps every block, all from before the snapshot, each holding the origin's data. */
async function originKept(data: BlockDevice, origin: ThinDevice): Promise<string | undefined> {
  const got = Buffer.alloc(THIN_BLOCK_SECTORS * SECTOR_SIZE);
  for (let v = 0; v < VOLUME_BLOCKS; v++) {
    const m = origin.mappings.get(v);
    if (!m) return `origin block ${v} is unmapped: the snapshot's origin lost a mapping`;
    if (m.time >= origin.details.snapshottedTime) {
      return `origin block ${v} was remapped (to data block ${m.block}, time ${m.time}) after its snapshot (time ${origin.details.snapshottedTime})`;
    }
    await data.read(m.block * THIN_BLOCK_SECTORS, got);
    const want = ORIGIN_CONTENT.subarray(v * got.length, (v + 1) * got.length);
    if (!got.equals(want)) return `origin block ${v} (data block ${m.block}) no longer holds the origin's data: a write to the snapshot reached a shared block`;
  }
  if (origin.mappings.size !== VOLUME_BLOCKS) return `the origin maps ${origin.mappings.size} blocks; it had ${VOLUME_BLOCKS} when the snapshot was taken`;
  return undefined;
}

/** Per virtual block of the volume, what the top-level requests submitted before the cut allow. */
function blockModels({ recording, cut }: Pick<CheckContext, 'cut' | 'recording'>): BlockModel[] {
  const top = recording.devices.findIndex((d) => d.initial === undefined);
  const requests = topRequests(recording, top).filter((r) => r.submitted < cut);
  return Array.from({ length: VOLUME_BLOCKS }, (_, v) => {
    const begin = v * THIN_BLOCK_SECTORS;
    const end = begin + THIN_BLOCK_SECTORS;
    const whole = (r: TopRequest) => r.sector <= begin && r.sector + r.count >= end;
    // The pool unmaps whole blocks a discard or write-zeroes covers, and writes the rest (pool-io.ts).
    const unmapping = requests.filter((r) => r.op !== 'write' && whole(r));
    const writing = requests.filter((r) => r.sector < end && r.sector + r.count > begin && (r.op === 'write' || (r.op === 'write-zeroes' && !whole(r))));
    // An unmapping that had not completed when the write was submitted may have come after it.
    const durable = writing.find((w) => w.durableAt < cut && !unmapping.some((d) => d.completed > w.submitted));
    return { written: writing.length > 0, unmapped: unmapping.length > 0, ...(durable ? { durable } : {}) };
  });
}
