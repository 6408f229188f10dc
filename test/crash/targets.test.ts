/**
 * The shipped targets under the crash explorer (CRASH-TESTING §2, §3): every
 * built-in crash target passes every family within the CI budget, linear and
 * striped pass the I/O-error sweep, and for each a deliberately broken
 * variant — a wrapper target type defined here, never reachable from
 * production code — is FOUND. If the explorer stops finding one, this fails.
 *
 * Budget (2 cores, the whole file well under a minute): 24-op workloads, one
 * seed per target (different seeds across targets, so the suite covers more
 * workloads than any one target sees), 80 states per family for the clean
 * runs (about 400–500 checked states per target at 300–600 states/s), and at
 * most 300 states per family when hunting a broken variant, which stops at
 * the first failure. The seeds were chosen so each family that is asserted to
 * find a variant finds it; the families that cannot, by construction, are
 * named at each variant.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { BlockDevice, Extent, WriteOptions, WriteZeroesOptions } from '../../src/block/device.ts';
import { type Budget, type CrashTarget, explore, formatFailure } from '../../src/crash/explorer.ts';
import type { FamilyName } from '../../src/crash/families.ts';
import { ioErrorSweep } from '../../src/crash/sweep.ts';
import { BUILTIN_STACKS, DELAY, LINEAR, STACKED, STRIPED_2, STRIPED_3 } from '../../src/crash/targets/basic.ts';
import { workloadFor } from '../../src/crash/targets/index.ts';
import { LOG_WRITES } from '../../src/crash/targets/log-writes.ts';
import { type StackSpec, stackTarget, withTargetType } from '../../src/crash/targets/stack.ts';
import type { DeviceRef, Target, TargetContext, TargetType } from '../../src/mapper/target.ts';
import { Scheduler } from '../../src/sim/scheduler.ts';
import { SimulatedDisk } from '../../src/sim/simulated-disk.ts';
import { delayTarget } from '../../src/targets/delay/delay.ts';
import { linearTarget } from '../../src/targets/linear/linear.ts';
import { logWritesTarget } from '../../src/targets/log-writes/log-writes.ts';
import { stripedTarget } from '../../src/targets/striped/striped.ts';

const OPS = 24;
const CLEAN: Budget = { states: 80, ms: 4000 };
const HUNT: Budget = { states: 300, ms: 8000 };
const STATE_FAMILIES: FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device'];

// ---- deliberately broken variants (test-only target types) ----------------------------

/**
 * Builds `inner` with a context whose openDevice records each device opened,
 * in order, so a wrapper can reach the underlying devices of the real target.
 */
async function constructRecording(inner: TargetType, ctx: TargetContext, argv: string[], wrap?: (ref: DeviceRef, i: number) => DeviceRef) {
  const refs: DeviceRef[] = [];
  const target = await inner.construct({
    ...ctx,
    openDevice: async (arg) => {
      const ref = await ctx.openDevice(arg);
      const used = wrap ? wrap(ref, refs.length) : ref;
      refs.push(used);
      return used;
    },
  }, argv);
  return { target, refs };
}

/** The real target with `flush` or `write` replaced; everything else runs on the real one. */
function override(target: Target, over: Partial<Pick<Target, 'flush' | 'write'>>): Target {
  return new Proxy(target, {
    get(t, key, receiver) {
      if (key === 'flush' || key === 'write') return over[key] ?? t[key].bind(t);
      const v: unknown = Reflect.get(t, key, receiver);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
}

/**
 * striped that sends the empty flush to stripe 0 only: what the striped map
 * function does with a PREFLUSH bio when the core makes one flush copy
 * instead of one per stripe (basic-targets §4.3 "copy k goes to stripe k",
 * §10.2 item 6). Violates R6 / basic-targets §10.1 rule 2.
 */
const brokenFlushStriped: TargetType = {
  name: 'flush0-striped',
  version: stripedTarget.version,
  async construct(ctx, argv) {
    const { target, refs } = await constructRecording(stripedTarget, ctx, argv);
    return override(target, { flush: () => refs[0]!.device.flush() });
  },
};

/**
 * A flush that completes although a device's flush failed: the error is
 * swallowed (ARCHITECTURE §1 item 9; the persistent-data bug of CRASH-TESTING
 * §3, "superblock written despite a failed flush"; basic-targets §4.3 "any
 * failure fails it").
 */
function swallowFlushErrors(inner: TargetType, name: string): TargetType {
  return {
    name,
    version: inner.version,
    async construct(ctx, argv) {
      const { target, refs } = await constructRecording(inner, ctx, argv);
      const devices = [...new Set(refs.map((r) => r.device))];
      return override(target, { flush: async () => void (await Promise.allSettled(devices.map((d) => d.flush()))) });
    },
  };
}

/**
 * delay that acknowledges a write as soon as it is held and submits it when
 * the delay expires (write-behind): a flush overtaking it covers nothing.
 * Violates basic-targets §10.1 rules 1 and 7 ("delay holds requests without
 * acknowledging them").
 */
const writeBehindDelay: TargetType = {
  name: 'ackearly-delay',
  version: delayTarget.version,
  async construct(ctx, argv) {
    const target = await delayTarget.construct(ctx, argv);
    return override(target, {
      write: async (sector: number, data: Buffer, opts: WriteOptions) => {
        target.write(sector, Buffer.from(data), opts).catch(() => undefined);
      },
    });
  },
};

/**
 * The log device as seen by a logger that does not wait for its super block
 * writes: Linux before "dm log writes: make sure super sector log updates are
 * written in order" (211ad4b73303, log-writes §7): the final super block can
 * be overtaken, or still be in flight when teardown flushes the log, so the
 * log's nr_entries misses the end mark (generic/455's "mark 'end' does not
 * exist").
 */
class UnwaitedSuperBlock implements BlockDevice {
  constructor(private readonly inner: BlockDevice) {}
  get name() { return this.inner.name; }
  get sectors() { return this.inner.sectors; }
  get limits() { return this.inner.limits; }
  read(sector: number, into: Buffer) { return this.inner.read(sector, into); }
  async write(sector: number, data: Buffer, opts?: WriteOptions) {
    const io = this.inner.write(sector, data, opts);
    if (sector === 0) io.catch(() => undefined);
    else await io;
  }
  flush() { return this.inner.flush(); }
  discard(sector: number, count: number) { return this.inner.discard(sector, count); }
  writeZeroes(sector: number, count: number, opts?: WriteZeroesOptions) { return this.inner.writeZeroes(sector, count, opts); }
  extents(sector: number, count: number): Promise<Extent[]> { return this.inner.extents?.(sector, count) ?? Promise.resolve([]); }
  close() { return this.inner.close(); }
}

const unorderedSuperLogWrites: TargetType = {
  name: 'asyncsuper-lw',
  version: logWritesTarget.version,
  async construct(ctx, argv) {
    const { target } = await constructRecording(logWritesTarget, ctx, argv, (ref, i) => (i === 1 ? { ...ref, device: new UnwaitedSuperBlock(ref.device) } : ref));
    return target;
  },
};

// ---- helpers ----------------------------------------------------------------------------

async function exploreSpec(spec: StackSpec, seed: number, families: readonly FamilyName[], budget: Budget) {
  const target = stackTarget(spec);
  return explore(target, { seed, workload: await workloadFor(target, seed, OPS), families, defaultBudget: budget, minimise: false });
}

const total = (checked: Partial<Record<FamilyName, number>>) => Object.values(checked).reduce((a, b) => a + b, 0);

// ---- the shipped targets pass --------------------------------------------------------

describe('every built-in crash target passes every family', () => {
  BUILTIN_STACKS.forEach((spec, i) => {
    it(spec.name, async (t) => {
      const seed = 101 + i;
      const r = await exploreSpec(spec, seed, [...STATE_FAMILIES, 'recovery'], CLEAN);
      assert.equal(r.failure, undefined, r.failure && formatFailure(r.failure));
      assert.deepEqual(r.lint, []);
      const families = spec.disks.length > 1 ? STATE_FAMILIES : STATE_FAMILIES.filter((f) => f !== 'per-device');
      for (const f of families) assert.ok((r.checked[f] ?? 0) > 0, `family ${f} checked no state`);
      // Nothing here writes while opening (log-writes writes nothing at construction, log-writes §2.1),
      // so there is no recovery to crash: the family finds no cut to explore.
      assert.equal(r.checked.recovery ?? 0, 0);
      t.diagnostic(`${spec.name} seed ${seed}: ${total(r.checked)} states in ${Math.round(r.elapsedMs)} ms (${Math.round(total(r.checked) / r.elapsedMs * 1000)}/s) ${JSON.stringify(r.checked)}`);
    });
  });
});

// ---- and their broken variants are found ---------------------------------------------

interface Variant {
  readonly spec: StackSpec;
  readonly seed: number;
  /** Families that must find it. */
  readonly families: readonly FamilyName[];
  /** Families that must find it with another seed's workload. */
  readonly alsoFoundBy?: Partial<Record<FamilyName, number>>;
  readonly check: 'oracle' | 'checker';
  readonly message: RegExp;
}

const VARIANTS: readonly Variant[] = [
  {
    // torn keeps every volatile write but one, which it tears: stripe 1's unflushed writes survive.
    spec: withTargetType(STRIPED_2, 'striped', brokenFlushStriped),
    seed: 7, families: ['persistence', 'all-none', 'single', 'subsets', 'per-device'],
    check: 'oracle', message: /acknowledged, flushed data was lost|which write #\d+ durably replaced/,
  },
  {
    spec: withTargetType(STRIPED_3, 'striped', brokenFlushStriped),
    seed: 8, families: ['persistence', 'all-none', 'single', 'subsets', 'per-device'],
    check: 'oracle', message: /acknowledged, flushed data was lost|which write #\d+ durably replaced/,
  },
  {
    // The broken striped is the lower device: the top FLUSH goes through linear and /dev/mapper/lower.
    spec: withTargetType(STACKED, 'striped', brokenFlushStriped),
    seed: 9, families: ['persistence', 'all-none', 'single', 'subsets', 'per-device'],
    check: 'oracle', message: /acknowledged, flushed data was lost|which write #\d+ durably replaced/,
  },
  {
    // The write is not even submitted when the flush completes: every state after that flush loses it.
    spec: withTargetType(DELAY, 'delay', writeBehindDelay),
    seed: 10, families: ['persistence', 'all-none', 'single', 'subsets', 'torn'],
    check: 'oracle', message: /acknowledged, flushed data was lost|which write #\d+ durably replaced/,
  },
  {
    // Only states after teardown's log flush can tell, and only when the last two super block
    // writes were in flight together (about a third of 24-op workloads end so; seeds 8 and 1 do).
    spec: withTargetType(LOG_WRITES, 'log-writes', unorderedSuperLogWrites),
    seed: 8, families: ['persistence', 'all-none', 'single', 'subsets', 'per-device'], alsoFoundBy: { torn: 1 },
    check: 'checker', message: /after teardown the super block counts \d+ entries/,
  },
];

describe('the broken variants are found', () => {
  for (const v of VARIANTS) {
    const hunts: [FamilyName, number][] = [...v.families.map((f) => [f, v.seed] as [FamilyName, number]), ...Object.entries(v.alsoFoundBy ?? {}) as [FamilyName, number][]];
    for (const [family, seed] of hunts) {
      it(`${v.spec.name} by ${family}`, async () => {
        const r = await exploreSpec(v.spec, seed, [family], HUNT);
        assert.ok(r.failure, `not found in ${r.checked[family] ?? 0} states`);
        assert.equal(r.failure.check, v.check, formatFailure(r.failure));
        assert.match(r.failure.message, v.message);
      });
    }
  }

  it('and the report of one names the ordering that was broken (§2.7)', async () => {
    const target = stackTarget(withTargetType(STRIPED_2, 'striped', brokenFlushStriped));
    const r = await explore(target, { seed: 7, workload: await workloadFor(target, 7, OPS), families: ['single'], defaultBudget: HUNT, minimiseMs: 3000 });
    assert.ok(r.failure);
    assert.ok(r.failure.ops.length < r.failure.originalOps, 'the workload was not minimised');
    assert.match(formatFailure(r.failure), /rerun: {4}npm run crash -- --seed 7 --target striped\/flush0-striped/);
  });
});

// ---- I/O errors -------------------------------------------------------------------------

/** Opens a stack on fresh disks, one of which fails its next flush. */
async function openWithFailingFlush(spec: StackSpec, disk: number): Promise<BlockDevice> {
  const scheduler = new Scheduler({ seed: 1 });
  const disks = spec.disks.map((d) => new SimulatedDisk({ name: d.name, sectors: d.sectors, scheduler }));
  disks[disk]!.addFault({ op: 'flush', action: 'fail', errno: 'EIO' });
  return stackTarget(spec).open(disks, scheduler.clock);
}

describe('I/O errors reach the top device', () => {
  for (const spec of [LINEAR, STRIPED_2, STRIPED_3]) {
    it(`${spec.name}: a failed flush of any disk fails the top flush`, async () => {
      for (let disk = 0; disk < spec.disks.length; disk++) {
        const top = await openWithFailingFlush(spec, disk);
        await assert.rejects(top.flush(), { code: 'EIO' }, `the flush of ${spec.disks[disk]!.name} failed, the top flush did not`);
        await top.flush(); // the fault fired once: the next flush is fine
        await top.close();
      }
    });
  }

  for (const [spec, seed] of [[LINEAR, 21], [STRIPED_2, 22], [STRIPED_3, 23]] as const) {
    it(`${spec.name} passes the I/O-error sweep; one that swallows flush errors does not`, async () => {
      const target = stackTarget(spec);
      const workload = await workloadFor(target, seed, OPS);
      const clean = await ioErrorSweep(target, { seed, workload, statesPerRun: 10 });
      assert.equal(clean.failure, undefined, clean.failure && `${clean.failure.fault}: ${formatFailure(clean.failure)}`);
      const faults = clean.counts.reduce((n, c) => n + c.write + c.flush, 0);
      assert.equal(clean.runs, faults, 'every write and flush was failed once');

      const [real, name] = spec === LINEAR ? [linearTarget, 'eatflush-linear'] : [stripedTarget, 'eatflush-stripe'];
      const broken: CrashTarget = stackTarget(withTargetType(spec, real.name, swallowFlushErrors(real, name)));
      const found = await ioErrorSweep(broken, { seed, workload, statesPerRun: 10 });
      assert.ok(found.failure, `not found in ${found.runs} faulted runs`);
      assert.match(found.failure.fault, /^flush #\d+ of sd[abc] failed with EIO$/);
      assert.equal(found.failure.check, 'oracle');
    });
  }
});
