/**
 * The crash explorer on dm-mirror with a disk log (CRASH-TESTING §2.4, §3):
 * the log and each leg crash independently, during the initial resync,
 * during user writes and during the recovery after a crash. The checker
 * holds the spec's invariant (§11.1) on the power-on images — a region the
 * on-disk log calls clean is identical on every leg — and that the resync
 * after power-on finishes with every leg equal (resumed, never skipped).
 * The seed bug (RH_NOSYNC → CLEAN when user I/O ends, Linux before
 * 930d332a2368) is kept as a broken variant the explorer must find.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { type BlockDevice, SECTOR_SIZE } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { type Budget, type CrashTarget, explore, formatFailure } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { randomWorkload } from '../../src/crash/workload.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { Clock } from '../../src/mapper/target.ts';
import { Rng } from '../../src/sim/rng.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';
import { type MirrorOptions, makeMirrorTarget } from '../../src/targets/mirror/mirror.ts';
import { decodeLogImage, syncProgress, until } from '../targets/mirror-helpers.ts';

const REGION = 8;
const REGIONS = 16;
const SIZE = REGION * REGIONS;
const LEGS = 2;

/** What the disks held at power-on, and the registry the stack lives in. */
interface PowerOn {
  readonly registry: DeviceRegistry;
  readonly log: Buffer;
  readonly legs: readonly Buffer[];
}

const powerOn = new WeakMap<BlockDevice, PowerOn>();

async function readWhole(dev: BlockDevice, sectors = dev.sectors): Promise<Buffer> {
  const buf = Buffer.alloc(sectors * SECTOR_SIZE);
  await dev.read(0, buf);
  return buf;
}

function staleImage(byte: number): () => SparseImage {
  return () => {
    const img = new SparseImage(SIZE);
    img.write(0, Buffer.alloc(SIZE * SECTOR_SIZE, byte));
    return img;
  };
}

function inSyncNow(registry: DeviceRegistry): boolean {
  const p = syncProgress(registry.status('m', { type: 'info' })[0]!.params);
  return p.inSync === p.total;
}

/** The mapped device as a program holds it; closing it removes the device (suspend, log written). */
class MirrorStack implements BlockDevice {
  constructor(private readonly registry: DeviceRegistry, private readonly handle: BlockDevice) {}
  get name() { return this.handle.name; }
  get sectors() { return this.handle.sectors; }
  get limits() { return this.handle.limits; }
  read(s: number, b: Buffer) { return this.handle.read(s, b); }
  write(s: number, b: Buffer, o?: { fua?: boolean }) { return this.handle.write(s, b, o); }
  flush() { return this.handle.flush(); }
  discard(s: number, n: number) { return this.handle.discard(s, n); }
  writeZeroes(s: number, n: number) { return this.handle.writeZeroes(s, n); }
  async close() {
    await this.handle.close();
    await this.registry.remove('m');
  }
}

/**
 * A two-leg mirror with a disk log over [log, leg0, leg1]; the legs start
 * with different stale bytes so that any region wrongly called in sync shows.
 * Power-on with a valid log (a restart) runs the recovery resync to its end
 * before the device is used; a blank log is a new mirror whose initial sync
 * runs in the background, concurrently with the workload.
 */
export function mirrorCrashTarget(opts: MirrorOptions = {}): CrashTarget {
  return {
    name: opts.seedBug ? 'mirror-seed-bug' : 'mirror',
    disks: [
      { name: 'log', sectors: 8 },
      { name: 'leg0', sectors: SIZE, initial: staleImage(0xaa) },
      { name: 'leg1', sectors: SIZE, initial: staleImage(0xbb) },
    ],
    async open(disks: BlockDevice[], clock: Clock): Promise<BlockDevice> {
      const log = await readWhole(disks[0]!, 3);
      const legs = await Promise.all(disks.slice(1).map((d) => readWhole(d)));
      const targets = new TargetRegistry();
      targets.register(makeMirrorTarget(opts));
      const registry = new DeviceRegistry({ targets, clock, openFile: async (p) => {
        throw new IoError('ENOENT', `${p}: not attached`);
      } });
      disks.forEach((d, i) => registry.attach(`/d${i}`, d));
      await registry.create('m', { table: [`0 ${SIZE} mirror disk 2 /d0 ${REGION} ${LEGS} /d1 0 /d2 0`] });
      const top = new MirrorStack(registry, registry.open('m'));
      if (decodeLogImage(log).magicOk) await until(() => inSyncNow(registry), 'the recovery resync');
      powerOn.set(top, { registry, log, legs });
      return top;
    },
    checkers: [
      async ({ top, disks }) => {
        const p = powerOn.get(top)!;
        const d = decodeLogImage(p.log);
        if (d.magicOk && (d.version === 1 || d.version === 2)) {
          const known = Math.min(REGIONS, Number(BigInt.asUintN(32, d.nrRegions)));
          for (let r = 0; r < known; r++) {
            if (!d.clean(r)) continue;
            const range = [r * REGION * SECTOR_SIZE, (r + 1) * REGION * SECTOR_SIZE] as const;
            if (!p.legs[0]!.subarray(...range).equals(p.legs[1]!.subarray(...range))) {
              return `region ${r} is clean in the on-disk log but its legs differ at power-on (§11.1, R4)`;
            }
          }
        }
        // The resync after power-on runs to the end (never skipped) and leaves every leg equal.
        await until(() => inSyncNow(p.registry), 'the resync after power-on');
        await p.registry.suspend('m');
        const legs = await Promise.all(disks.slice(1).map((x) => readWhole(x)));
        for (let r = 0; r < REGIONS; r++) {
          const range = [r * REGION * SECTOR_SIZE, (r + 1) * REGION * SECTOR_SIZE] as const;
          if (!legs[0]!.subarray(...range).equals(legs[1]!.subarray(...range))) {
            return `region ${r} differs between the legs after the resync completed`;
          }
        }
        return undefined;
      },
    ],
  };
}

/** The CI budget per family: the broken variant is found well within it on every seed below (2 cores). */
const BUDGET: Budget = { states: 30, ms: 2500 };
const FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];
const workload = (seed: number) => randomWorkload(new Rng(seed), { sectors: SIZE, blockSectors: 4, length: 20 });

describe('mirror under the crash explorer', () => {
  it('the real region hash passes every family, the log and each leg crashing independently', async () => {
    for (const seed of [1, 2]) {
      const r = await explore(mirrorCrashTarget(), { seed, workload: workload(seed), defaultBudget: BUDGET, lint: false });
      assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
      for (const f of FAMILIES) assert.ok((r.checked[f] ?? 0) > 0, `seed ${seed}: family ${f} checked no state`);
    }
  });

  it('finds the seed bug (RH_NOSYNC → CLEAN on user I/O end) within the CI budget', async () => {
    for (const seed of [1, 2, 3]) {
      const r = await explore(mirrorCrashTarget({ seedBug: true }), {
        seed, workload: workload(seed), families: ['all-none', 'single', 'per-device'], defaultBudget: BUDGET, lint: false, minimise: false,
      });
      assert.ok(r.failure, `seed ${seed}: not found in ${JSON.stringify(r.checked)}`);
      assert.equal(r.failure.check, 'checker');
      assert.match(r.failure.message, /is clean in the on-disk log but its legs differ at power-on/);
    }
  });
});
