/**
 * dm-mirror with a disk log as a crash target (CRASH-TESTING §2.4, §3): the
 * log and each leg crash independently, during the initial resync, during
 * user writes and during the recovery after a crash. The checker holds the
 * spec's invariant (§11.1) on the power-on images — a region the on-disk log
 * calls clean is identical on every leg — and that the resync after power-on
 * finishes with every leg equal (resumed, never skipped). The seed bug
 * (RH_NOSYNC → CLEAN when user I/O ends, Linux before 930d332a2368) is a
 * broken variant.
 */
import { type BlockDevice, SECTOR_SIZE } from '../../block/device.ts';
import type { DeviceRegistry } from '../../mapper/device-registry.ts';
import { testBit } from '../../targets/mirror/bits.ts';
import { BITMAP_OFFSET, LOG_MAGIC, decodeHeader } from '../../targets/mirror/disk-log.ts';
import { type MirrorOptions, makeMirrorTarget } from '../../targets/mirror/mirror.ts';
import type { CrashTarget } from '../explorer.ts';
import { StackTop, stackRegistry, staleDisk, waitUntil } from './stack.ts';

const REGION = 8;
const REGIONS = 16;
const SIZE = REGION * REGIONS;
/** The log's header and clean bitmap (bytes 1024 on): its first three sectors. */
const LOG_SECTORS_READ = 3;

/** What the disks held at power-on, and the registry the stack lives in. */
interface PowerOn {
  readonly registry: DeviceRegistry;
  readonly log: Buffer;
  readonly legs: readonly Buffer[];
}

async function readWhole(dev: BlockDevice, sectors = dev.sectors): Promise<Buffer> {
  const buf = Buffer.alloc(sectors * SECTOR_SIZE);
  await dev.read(0, buf);
  return buf;
}

function inSync(registry: DeviceRegistry): boolean {
  const p = registry.progress('m')[0]!;
  return p.done === p.total;
}

/**
 * A two-leg mirror with a disk log over [log, leg0, leg1]; the legs start
 * with different stale bytes so that any region wrongly called in sync shows.
 * Power-on with a valid log (a restart) runs the recovery resync to its end
 * before the device is used; a blank log is a new mirror whose initial sync
 * runs in the background, concurrently with the workload.
 */
export function mirrorCrashTarget(opts: MirrorOptions = {}): CrashTarget {
  const name = opts.seedBug ? 'mirror-seed-bug' : 'mirror';
  const disks = [{ name: 'log', sectors: 8 }, staleDisk('leg0', SIZE), staleDisk('leg1', SIZE)];
  const powerOn = new WeakMap<BlockDevice, PowerOn>();
  return {
    name,
    disks,
    async open(devices, clock) {
      const log = await readWhole(devices[0]!, LOG_SECTORS_READ);
      const legs = await Promise.all(devices.slice(1).map((d) => readWhole(d)));
      const registry = stackRegistry(name, disks, devices, clock, opts.seedBug ? [makeMirrorTarget(opts)] : []);
      await registry.create('m', { table: [`0 ${SIZE} mirror disk 2 /dev/log ${REGION} 2 /dev/leg0 0 /dev/leg1 0`] });
      const top = new StackTop(registry, registry.open('m'), ['m']);
      if (decodeHeader(log).magic === LOG_MAGIC) await waitUntil(() => inSync(registry), 'the recovery resync');
      powerOn.set(top, { registry, log, legs });
      return top;
    },
    checkers: [
      async ({ top, disks: now }) => {
        const p = powerOn.get(top)!;
        const header = decodeHeader(p.log);
        if (header.magic === LOG_MAGIC && (header.version === 1 || header.version === 2)) {
          const known = Math.min(REGIONS, Number(BigInt.asUintN(32, header.nrRegions)));
          const clean = p.log.subarray(BITMAP_OFFSET);
          for (let r = 0; r < known; r++) {
            if (testBit(clean, r) && !sameOnLegs(p.legs, r)) return `region ${r} is clean in the on-disk log but its legs differ at power-on (§11.1, R4)`;
          }
        }
        // The resync after power-on runs to the end (never skipped) and leaves every leg equal.
        await waitUntil(() => inSync(p.registry), 'the resync after power-on');
        await p.registry.suspend('m');
        const legs = await Promise.all(now.slice(1).map((x) => readWhole(x)));
        for (let r = 0; r < REGIONS; r++) {
          if (!sameOnLegs(legs, r)) return `region ${r} differs between the legs after the resync completed`;
        }
        return undefined;
      },
    ],
    workload: { blockSectors: 4, discard: false, writeZeroes: false },
  };
}

function sameOnLegs(legs: readonly Buffer[], r: number): boolean {
  const range = [r * REGION * SECTOR_SIZE, (r + 1) * REGION * SECTOR_SIZE] as const;
  return legs.every((leg) => leg.subarray(...range).equals(legs[0]!.subarray(...range)));
}
