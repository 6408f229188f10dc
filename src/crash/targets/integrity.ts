/**
 * dm-integrity as a crash target (CRASH-TESTING §2, §3): J mode over one
 * device and with meta_device (data and metadata disks crash
 * independently; torn journal writes; crash during replay) must return, for
 * every sector, old or new data with a matching tag and never a false
 * mismatch; B mode must recalculate every dirty region. The seed bug of
 * integrity.md §6.3 (with meta_device, flushing metadata and only starting
 * the data flush, relying on order) is a broken variant.
 *
 * A read that fails (EILSEQ above all) is turned into a poison sector that no
 * write produces, so the oracle reports it as "data no write put there".
 */
import { SECTOR_SIZE } from '../../block/device.ts';
import { toIoError } from '../../block/errors.ts';
import { MemoryDevice } from '../../block/memory-device.ts';
import { systemClock } from '../../mapper/clock.ts';
import type { DeviceRegistry } from '../../mapper/device-registry.ts';
import { SparseImage } from '../../sim/sparse-image.ts';
import { type IntegrityTestOptions, integrityTargetType } from '../../targets/integrity/integrity.ts';
import type { CrashTarget, DiskSpec } from '../explorer.ts';
import { StackTop, stackRegistry, waitUntil } from './stack.ts';

const DATA = 2048;
const META = 1024;

export interface IntegrityCrashOptions {
  readonly mode: 'J' | 'B';
  /** Tags on a second disk (meta_device). */
  readonly meta: boolean;
  /** The seed bug: with meta_device, not waiting for the data flush (R3). */
  readonly brokenFlushOrder?: boolean;
}

/** The table parameters of a variant; small journal (two sections) and areas so that wrap and interleaving happen. */
function params(mode: string, meta: boolean): string {
  const common = 'internal_hash:crc32c allow_discards journal_sectors:352 journal_watermark:60 commit_time:50 bitmap_flush_interval:40 sectors_per_bit:256';
  return meta ? `/dev/data 0 4 ${mode} 8 ${common} meta_device:/dev/meta` : `/dev/data 0 4 ${mode} 8 ${common} interleave_sectors:512`;
}

/** The crash target of a variant, over images formatted and wiped first. */
export async function integrityCrashTarget(v: IntegrityCrashOptions): Promise<CrashTarget> {
  const name = `integrity-${v.mode}${v.meta ? '-meta' : ''}${v.brokenFlushOrder ? '-broken-flush' : ''}`;
  const { images, provided } = await wipedImages(v.meta);
  const disks: DiskSpec[] = [
    { name: 'data', sectors: DATA, initial: () => images[0]!.snapshot() },
    ...(v.meta ? [{ name: 'meta', sectors: META, initial: () => images[1]!.snapshot() }] : []),
  ];
  const test: IntegrityTestOptions = v.brokenFlushOrder ? { brokenFlushOrder: true } : {};
  return {
    name,
    disks,
    async open(devices, clock) {
      const registry = stackRegistry(name, disks, devices, clock, [integrityTargetType(test)]);
      await registry.create('i', { table: `0 ${provided} integrity ${params(v.mode, v.meta)}` });
      // B mode recovery ends when every dirty region is recalculated; from then on every read is checked.
      await waitUntil(() => recalculated(registry, 'i', provided), 'the recalculation');
      return new PoisonedReads(registry, registry.open('i'), ['i']);
    },
    // The superblock points at no data: only metadata must precede it.
    references: () => [],
    workload: { blockSectors: 1, maxBlocks: 24, discard: true, writeZeroes: false },
  };
}

/**
 * Formatted and wiped images (every tag valid), as `integritysetup format`
 * leaves a volume, and the provided size.
 */
async function wipedImages(meta: boolean): Promise<{ images: SparseImage[]; provided: number }> {
  const disks: DiskSpec[] = [{ name: 'data', sectors: DATA }, ...(meta ? [{ name: 'meta', sectors: META }] : [])];
  const devices = disks.map((d) => new MemoryDevice(d.sectors, { name: d.name }));
  const registry = stackRegistry('integrity format', disks, devices, systemClock, [integrityTargetType({ salt: () => Buffer.alloc(16, 0x5a) })]);
  await registry.create('f', { table: `0 8 integrity ${params('D', meta)}` });
  const provided = Number(registry.status('f', { type: 'info' })[0]!.params.split(' ')[1]);
  await registry.remove('f');
  await registry.create('w', { table: `0 ${provided} integrity ${params('D', meta)}` });
  const h = registry.open('w');
  await h.write(0, Buffer.alloc(provided * SECTOR_SIZE));
  await h.close();
  await registry.remove('w');
  const images = await Promise.all(devices.map(async (d) => {
    const img = new SparseImage(d.sectors);
    const buf = Buffer.alloc(d.sectors * SECTOR_SIZE);
    await d.read(0, buf);
    img.write(0, buf);
    return img;
  }));
  await registry.shutdown();
  return { images, provided };
}

/** Background recalculation (status field 3) has reached the end or is not running. */
function recalculated(registry: DeviceRegistry, name: string, provided: number): boolean {
  const recalc = registry.status(name, { type: 'info' })[0]!.params.split(' ')[2];
  return recalc === '-' || Number(recalc) >= provided;
}

/** The top device as the oracle sees it: failed reads become poison sectors naming the error. */
class PoisonedReads extends StackTop {
  override async read(sector: number, into: Buffer): Promise<void> {
    try {
      await super.read(sector, into);
    } catch {
      for (let s = 0; s < into.length / SECTOR_SIZE; s++) {
        const part = into.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
        await super.read(sector + s, part).catch((err: unknown) => part.fill(`${toIoError(err).code}!`));
      }
    }
  }
}
