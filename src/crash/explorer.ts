/**
 * The crash explorer (CRASH-TESTING §2): record a workload on a target over
 * SimulatedDisks, generate crash states family by family, rebuild the target
 * from each state's images, recover, and hold the result to the top-device
 * oracle, the stability and idempotence checks (R7) and the target's own
 * checkers. A failure comes back with everything §2.7 asks for.
 */
import type { BlockDevice, Limits } from '../block/device.ts';
import { toIoError } from '../block/errors.ts';
import type { Clock } from '../mapper/target.ts';
import type { CrashSelection, KeptWrite } from '../sim/disk-state.ts';
import type { FaultRule } from '../sim/faults.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { SimulatedDisk } from '../sim/simulated-disk.ts';
import { SparseImage } from '../sim/sparse-image.ts';
import { type CrashState, type FamilyName, type StateFamily, crashImages, describe, generateStates } from './families.ts';
import { type LintViolation, type References, commitPointLint } from './lint.ts';
import { TopModel } from './oracle.ts';
import { Recording, type SubmitEvent } from './recording.ts';
import type { Replay } from './replay.ts';
import { type TopOp, type WorkloadShape, formatOp, readAll, runWorkload } from './workload.ts';

export interface DiskSpec {
  readonly name: string;
  readonly sectors: number;
  readonly limits?: Partial<Limits>;
  /** The disk's content before the run (default: zeroes). Called once per run. */
  readonly initial?: () => SparseImage;
}

export interface CheckContext {
  /** The recovered top device. */
  readonly top: BlockDevice;
  /** The underlying disks the top device was rebuilt on, in DiskSpec order. */
  readonly disks: readonly SimulatedDisk[];
  /** The crash happened right after recorded event cut-1. */
  readonly cut: number;
  readonly recording: Recording;
}

/** A per-target check (CRASH-TESTING §2.4): a violation message, or undefined. */
export type Checker = (c: CheckContext) => Promise<string | undefined>;

/** What the explorer tests: a stack over one or more disks. */
export interface CrashTarget {
  readonly name: string;
  readonly disks: readonly DiskSpec[];
  /** Builds the stack over `disks` (DiskSpec order) and recovers, as at power-on. */
  open(disks: BlockDevice[], clock: Clock): Promise<BlockDevice>;
  readonly checkers?: readonly Checker[];
  /** Tells the commit-point lint which data writes a superblock write references (lint.ts). */
  readonly references?: References;
  /** The random workloads `npm run crash` and the tests give it (targets/index.ts workloadFor); default: from the top device. */
  readonly workload?: WorkloadShape;
}

export interface Budget {
  /** States checked, at most. */
  readonly states: number;
  /** Wall-clock milliseconds, at most (checked between states). */
  readonly ms: number;
}

export interface ExploreOptions {
  seed: number;
  workload: readonly TopOp[];
  /** Top-level requests in flight at once (default 4). */
  concurrency?: number;
  /** Default: every family. */
  families?: readonly FamilyName[];
  /** Per-family budgets; missing ones take `defaultBudget`. */
  budget?: Partial<Record<FamilyName, Budget>>;
  defaultBudget?: Budget;
  /** Single omission/inclusion window (default 16). */
  k?: number;
  /** Report commit-point lint violations as a failure when no state failed (default true). */
  lint?: boolean;
  /** Shrink the workload of a failure (default true), within this many ms (default 10000). */
  minimise?: boolean;
  minimiseMs?: number;
}

export type CheckName = 'oracle' | 'open' | 'read' | 'read-stability' | 'idempotence' | 'recovery-result' | 'checker' | 'lint';

export interface Failure {
  readonly target: string;
  readonly seed: number;
  readonly family: FamilyName | 'lint';
  readonly check: CheckName;
  readonly message: string;
  /** The crash state, described: cut, and per device what was kept and torn. */
  readonly state: string;
  /** "write X had to be durable before write Y", when the explorer can tell. */
  readonly ordering?: string;
  /** The (minimised) top-level operations that reproduce it. */
  readonly ops: readonly TopOp[];
  /** How many top-level operations the recorded workload had before minimising. */
  readonly originalOps: number;
}

export interface ExploreResult {
  readonly target: string;
  readonly seed: number;
  /** States checked per family. */
  readonly checked: Partial<Record<FamilyName, number>>;
  readonly events: number;
  readonly elapsedMs: number;
  readonly lint: readonly LintViolation[];
  readonly failure?: Failure;
}

export const DEFAULT_BUDGET: Budget = { states: 200, ms: 5000 };
const ALL_FAMILIES: readonly FamilyName[] = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'];
/** States of a crash during recovery checked per recovered base state. */
const RECOVERY_STATES_PER_BASE = 8;

export interface Run {
  readonly recording: Recording;
  readonly model: TopModel;
  /** The disks of the run, with their request counts. */
  readonly disks: readonly SimulatedDisk[];
}

/** A fault rule on one disk of the target (DiskSpec order), for the I/O-error sweep. */
export interface InjectedFault {
  readonly disk: number;
  readonly rule: FaultRule;
}

interface Verdict {
  readonly check: CheckName;
  readonly message: string;
}

/** Records one run of the workload on the target over fresh SimulatedDisks. */
export async function recordRun(
  target: CrashTarget, seed: number, workload: readonly TopOp[], concurrency = 4, faults: readonly InjectedFault[] = [],
): Promise<Run> {
  const scheduler = new Scheduler({ seed });
  const recording = new Recording();
  const sims = target.disks.map((spec) => {
    const image = spec.initial?.() ?? new SparseImage(spec.sectors);
    return { sim: new SimulatedDisk({ name: spec.name, image, scheduler, limits: spec.limits ?? {} }), image };
  });
  for (const f of faults) sims[f.disk]!.sim.addFault(f.rule);
  const disks = sims.map(({ sim, image }) => recording.record(sim, image));
  const opened = await target.open(disks, scheduler.clock);
  const initial = await readAll(opened);
  const top = recording.record(opened);
  await runWorkload(top, workload, concurrency);
  // A close that fails (a faulted flush) is already in the recording.
  await top.close().catch(() => undefined);
  return { recording, model: new TopModel(recording, top.index, initial), disks: sims.map((d) => d.sim) };
}

/** Explores one seed and workload; stops at the first failure. */
export async function explore(target: CrashTarget, opts: ExploreOptions): Promise<ExploreResult> {
  const t0 = performance.now();
  const run = await recordRun(target, opts.seed, opts.workload, opts.concurrency);
  const lint = commitPointLint(run.recording, target.references);
  const checked: Partial<Record<FamilyName, number>> = {};
  const families = opts.families ?? ALL_FAMILIES;
  const budgetOf = (f: FamilyName) => opts.budget?.[f] ?? opts.defaultBudget ?? DEFAULT_BUDGET;
  const done = (failure?: Failure): ExploreResult => ({
    target: target.name, seed: opts.seed, checked, events: run.recording.events.length,
    elapsedMs: performance.now() - t0, lint, ...(failure ? { failure } : {}),
  });

  for (const family of families) {
    const budget = budgetOf(family);
    const found = family === 'recovery'
      ? await exploreRecovery(target, run, opts.seed, budget, (n) => (checked.recovery = n))
      : await exploreFamily(target, run, family, opts, budget, (n) => (checked[family] = n));
    if (found) return done(await finish(target, opts, found));
  }
  if (lint.length > 0 && (opts.lint ?? true)) {
    const v = lint[0]!;
    return done(await finish(target, opts, {
      family: 'lint', check: 'lint', message: v.message, state: `recording of ${run.recording.events.length} events`,
      ordering: `${describe(run.recording, v.dependency.dev, v.dependency.id)} had to be durable before ${describe(run.recording, v.superblock.dev, v.superblock.id)}`,
    }));
  }
  return done();
}

export type Found = Omit<Failure, 'target' | 'seed' | 'ops' | 'originalOps'>;

async function finish(target: CrashTarget, opts: ExploreOptions, found: Found): Promise<Failure> {
  const ops = opts.minimise ?? true ? await minimise(target, opts, found.family) : opts.workload;
  return { ...found, target: target.name, seed: opts.seed, ops, originalOps: opts.workload.length };
}

export async function exploreFamily(
  target: CrashTarget, run: Run, family: StateFamily, opts: ExploreOptions, budget: Budget, count: (n: number) => void,
): Promise<Found | undefined> {
  const start = performance.now();
  const states = generateStates(run.recording, { families: [family], seed: opts.seed, k: opts.k ?? 16, maxStates: budget.states });
  let n = 0;
  for (const { state, images, replay } of crashImages(run.recording, states)) {
    if (performance.now() - start > budget.ms) break;
    count(++n);
    const v = await checkState(target, run, state.cut, images, opts.seed + n);
    if (v) {
      return {
        family, ...v,
        state: describeState(run.recording, state, replay),
        ...(await ordering(target, run, state, replay, opts.seed + n)),
      };
    }
  }
  return undefined;
}

/**
 * Family 7 (R7): recover a crash state on recorded disks, crash that recovery
 * at its own cuts, recover again: the oracle must hold and the result must
 * equal the uninterrupted recovery's.
 */
async function exploreRecovery(target: CrashTarget, run: Run, seed: number, budget: Budget, count: (n: number) => void): Promise<Found | undefined> {
  const start = performance.now();
  const bases = generateStates(run.recording, {
    families: ['all-none', 'single'], seed, maxStates: Math.max(1, Math.ceil(budget.states / RECOVERY_STATES_PER_BASE)),
  });
  let n = 0;
  for (const { state: base, images } of crashImages(run.recording, bases)) {
    if (performance.now() - start > budget.ms || n >= budget.states) break;
    const rec = new Recording();
    const scheduler = new Scheduler({ seed: seed + base.cut });
    const disks = target.disks.map((spec, i) => {
      const image = images.get(i)!;
      return rec.record(new SimulatedDisk({ name: spec.name, image, scheduler, limits: spec.limits ?? {} }), image);
    });
    let first: Buffer;
    try {
      first = await readAll(await target.open(disks, scheduler.clock));
    } catch {
      continue; // the open failure itself is the business of the other families
    }
    const inner = generateStates(rec, { families: ['all-none', 'single', 'torn'], seed: seed + base.cut, maxStates: RECOVERY_STATES_PER_BASE });
    for (const { state, images: again, replay } of crashImages(rec, inner)) {
      if (performance.now() - start > budget.ms || n >= budget.states) break;
      count(++n);
      const v = await checkState(target, run, base.cut, again, seed + n, first);
      if (v) {
        return {
          family: 'recovery', ...v,
          state: `${describeState(run.recording, base, undefined)}; then recovery crashed: ${describeState(rec, state, replay)}`,
        };
      }
    }
  }
  return undefined;
}

/**
 * Rebuilds the target on the crash images, recovers, and checks the result.
 * `expect`: the top content an uninterrupted recovery gave (crash during recovery).
 */
async function checkState(
  target: CrashTarget, run: Run, cut: number, images: ReadonlyMap<number, SparseImage>, seed: number, expect?: Buffer,
): Promise<Verdict | undefined> {
  const opened = await openOn(target, images, seed);
  if ('check' in opened) return opened;
  const { top, disks } = opened;
  const got = await readRecovered(top);
  if (!Buffer.isBuffer(got)) return got;
  const v = run.model.check(cut, got);
  if (v) return { check: 'oracle', message: v };
  if (expect && !expect.equals(got)) {
    return { check: 'recovery-result', message: `recovering again after a crash during recovery gave other data (${firstDifference(expect, got)}) (R7)` };
  }
  const reread = await readRecovered(top);
  if (!Buffer.isBuffer(reread)) return reread;
  if (!reread.equals(got)) return { check: 'read-stability', message: 'reading the recovered device twice gave different data' };
  for (const checker of target.checkers ?? []) {
    const m = await checker({ top, disks, cut, recording: run.recording });
    if (m) return { check: 'checker', message: m };
  }
  // R7: recovering the just-recovered disks (power lost right after recovery) changes nothing.
  const second = await openOn(target, new Map(disks.map((d, i) => [i, d.crash({ volatile: 'none' })])), seed + 1);
  if ('check' in second) return { ...second, message: `second recovery: ${second.message}` };
  const again = await readRecovered(second.top);
  if (!Buffer.isBuffer(again)) return { ...again, message: `second recovery: ${again.message}` };
  if (!again.equals(got)) {
    return { check: 'idempotence', message: `recovering twice differs from recovering once (${firstDifference(got, again)}) (R7)` };
  }
  return undefined;
}

/** Reads the whole recovered device; a failed read is a verdict, not an exception out of the explorer. */
async function readRecovered(top: BlockDevice): Promise<Buffer | Verdict> {
  try {
    return await readAll(top);
  } catch (err) {
    return { check: 'read', message: `reading the recovered device failed: ${toIoError(err).message}` };
  }
}

async function openOn(target: CrashTarget, images: ReadonlyMap<number, SparseImage>, seed: number): Promise<{ top: BlockDevice; disks: SimulatedDisk[] } | Verdict> {
  const scheduler = new Scheduler({ seed });
  const disks = target.disks.map((spec, i) => new SimulatedDisk({ name: spec.name, image: images.get(i)!, scheduler, limits: spec.limits ?? {} }));
  try {
    return { top: await target.open(disks, scheduler.clock), disks };
  } catch (err) {
    return { check: 'open', message: `recovery failed: ${toIoError(err).message}` };
  }
}

function firstDifference(a: Buffer, b: Buffer): string {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `first at top sector ${Math.floor(i / 512)}`;
  return 'sizes differ';
}

/** The state's per-device volatile writes, explicitly: kept whole, torn, or lost. */
function explicit(replay: Replay, state: CrashState): Map<number, { id: number; kept?: KeptWrite }[]> {
  const out = new Map<number, { id: number; kept?: KeptWrite }[]>();
  for (const [dev, sel] of state.disks) {
    const vol = replay.disks.get(dev)!.volatileWrites();
    const chosen = new Map(sel.volatile === 'all' ? vol.map((w) => [w.req.id, { id: w.req.id }]) : sel.volatile === 'none' ? [] : sel.volatile.map((k) => [k.id, k]));
    out.set(dev, vol.map((w) => {
      const kept = chosen.get(w.req.id);
      return kept ? { id: w.req.id, kept } : { id: w.req.id };
    }));
  }
  return out;
}

function describeState(recording: Recording, state: CrashState, replay: Replay | undefined): string {
  const parts = [`${state.family}: ${state.note}`, `crash after event ${state.cut - 1} of ${recording.events.length}`];
  if (replay) {
    for (const [dev, writes] of explicit(replay, state)) {
      const name = recording.devices[dev]!.name;
      const kept = writes.filter((w) => w.kept && !w.kept.ranges).map((w) => `#${w.id}`);
      const torn = writes.filter((w) => w.kept?.ranges).map((w) => `#${w.id}`);
      const lost = writes.filter((w) => !w.kept).map((w) => `#${w.id}`);
      const sel = state.disks.get(dev)!;
      const inflight = (sel.inflight ?? []).map((k) => `#${k.id}`);
      parts.push(`${name}: kept [${kept.join(' ')}] torn [${torn.join(' ')}] lost [${lost.join(' ')}]` +
        (inflight.length ? ` in-flight landed in part [${inflight.join(' ')}]` : ''));
    }
  }
  return parts.join('; ');
}

/**
 * For an ordering bug: the lost write X that, kept, makes the state pass,
 * and a kept write Y that, also lost, makes it pass: X had to be durable before Y.
 */
async function ordering(target: CrashTarget, run: Run, state: CrashState, replay: Replay, seed: number): Promise<{ ordering?: string }> {
  const writes = explicit(replay, state);
  const select = (change: (dev: number, id: number) => KeptWrite | undefined | null) => {
    const images = new Map<number, SparseImage>();
    for (const [dev, list] of writes) {
      const sel: CrashSelection = {
        volatile: list.map((w) => {
          const c = change(dev, w.id);
          return c === null ? undefined : c ?? w.kept;
        }).filter((k): k is KeptWrite => k !== undefined),
        inflight: state.disks.get(dev)!.inflight,
      };
      images.set(dev, replay.disks.get(dev)!.crash(sel));
    }
    return images;
  };
  const passes = async (images: Map<number, SparseImage>) => (await checkState(target, run, state.cut, images, seed)) === undefined;
  const lost = [...writes].flatMap(([dev, list]) => list.filter((w) => !w.kept || w.kept.ranges).map((w) => ({ dev, id: w.id }))).slice(0, 24);
  const kept = [...writes].flatMap(([dev, list]) => list.filter((w) => w.kept && !w.kept.ranges).map((w) => ({ dev, id: w.id }))).slice(0, 24);
  for (const x of lost) {
    if (!(await passes(select((d, id) => (d === x.dev && id === x.id ? { id } : undefined))))) continue;
    const xs = describe(run.recording, x.dev, x.id);
    for (const y of kept) {
      if (await passes(select((d, id) => (d === y.dev && id === y.id ? null : undefined)))) {
        return { ordering: `${xs} had to be durable before ${describe(run.recording, y.dev, y.id)}` };
      }
    }
    const y = durableDependent(run.recording, replay, x, state.cut);
    return { ordering: y ? `${xs} had to be durable before ${y} (durable at the crash)` : `${xs} had to be durable at this point` };
  }
  return {};
}

/**
 * The write that made losing `x` visible when no volatile write did: the last
 * one submitted after x completed that is durable at the crash, preferring
 * superblock, then metadata writes.
 */
function durableDependent(recording: Recording, replay: Replay, x: { dev: number; id: number }, cut: number): string | undefined {
  const events = recording.events.slice(0, cut);
  const xDone = events.find((e) => e.type === 'complete' && e.dev === x.dev && e.id === x.id);
  if (!xDone) return undefined;
  const pending = (dev: number, id: number) => {
    const st = replay.disks.get(dev);
    return !st || [...st.volatileWrites(), ...st.inflightWrites()].some((w) => w.req.id === id);
  };
  const durable = events.filter((e): e is SubmitEvent => e.type === 'submit' && e.seq > xDone.seq && e.op !== 'flush' &&
    events.some((c) => c.type === 'complete' && c.dev === e.dev && c.id === e.id && c.ok) && !pending(e.dev, e.id));
  const rank = (e: SubmitEvent) => (e.tag === 'superblock' ? 2 : e.tag === 'metadata' ? 1 : 0);
  const best = durable.sort((a, b) => rank(b) - rank(a) || b.seq - a.seq)[0];
  return best ? describe(recording, best.dev, best.id) : undefined;
}

/** Greedy one-op-at-a-time shrinking of the workload, same seed and family. */
async function minimise(target: CrashTarget, opts: ExploreOptions, family: FamilyName | 'lint'): Promise<readonly TopOp[]> {
  const start = performance.now();
  const limit = opts.minimiseMs ?? 10000;
  let ops = [...opts.workload];
  for (let i = ops.length - 1; i >= 0 && performance.now() - start < limit; i--) {
    const candidate = ops.filter((_, j) => j !== i);
    const r = await explore(target, {
      ...opts, workload: candidate, minimise: false, lint: family === 'lint',
      families: family === 'lint' ? [] : [family],
    });
    if (r.failure) ops = candidate;
  }
  return ops;
}

/**
 * The §2.7 report of a failure. Its rerun line names the seed, target,
 * workload length and family; `rerunOptions` adds what else the run was
 * given (the crash CLI's --module and budget options).
 */
export function formatFailure(f: Failure, rerunOptions = ''): string {
  const family = f.family === 'lint' ? '' : ` --family ${f.family}`;
  return [
    `crash explorer: ${f.target}: ${f.check} check failed`,
    `  seed:     ${f.seed}`,
    `  family:   ${f.family}`,
    `  state:    ${f.state}`,
    `  violated: ${f.message}`,
    ...(f.ordering ? [`  ordering: ${f.ordering}`] : []),
    `  workload: ${f.ops.length} of ${f.originalOps} top-level ops: ${f.ops.map(formatOp).join('; ')}`,
    `  rerun:    npm run crash -- --seed ${f.seed} --target ${f.target} --ops ${f.originalOps}${family}${rerunOptions}`,
  ].join('\n');
}
