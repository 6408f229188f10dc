/**
 * The I/O-error sweep (CRASH-TESTING §2.6): run a workload once to count each
 * disk's requests, then run it again failing each request in turn, and hold
 * every faulted run to the crash oracle at its persistence points and cuts.
 * A target that swallows an error — acknowledges a flush after a failed
 * flush, commits a superblock after a failed metadata write (R2) — has
 * acknowledged data that a crash then loses, and the oracle says so.
 */
import type { Errno } from '../block/errors.ts';
import type { FaultOp } from '../sim/faults.ts';
import type { StateFamily } from './families.ts';
import {
  type Budget, type CrashTarget, type ExploreOptions, type Failure, type InjectedFault, exploreFamily, recordRun,
} from './explorer.ts';
import type { TopOp } from './workload.ts';

export interface SweepOptions {
  seed: number;
  workload: readonly TopOp[];
  concurrency?: number;
  /** Request kinds to fail (default write and flush). */
  ops?: readonly FaultOp[];
  errno?: Errno;
  /** Families checked on each faulted run (default persistence and all-none). */
  families?: readonly StateFamily[];
  /** States per family per faulted run (default 40). */
  statesPerRun?: number;
  /** Faulted runs at most, and wall-clock limit (defaults 200 runs, 20 s). */
  maxRuns?: number;
  ms?: number;
}

export interface SweepFailure extends Failure {
  /** "flush #3 of meta failed with EIO". */
  readonly fault: string;
}

export interface SweepResult {
  /** Requests per disk and kind in the clean run. */
  readonly counts: readonly Record<FaultOp, number>[];
  readonly runs: number;
  /** Faulted runs whose open or workload could not even start (the error surfaced at open). */
  readonly openFailures: number;
  readonly failure?: SweepFailure;
}

export async function ioErrorSweep(target: CrashTarget, opts: SweepOptions): Promise<SweepResult> {
  const start = performance.now();
  const clean = await recordRun(target, opts.seed, opts.workload, opts.concurrency);
  const counts = clean.disks.map((d) => ({ ...d.counts }));
  const kinds = opts.ops ?? ['write', 'flush'];
  const families = opts.families ?? ['persistence', 'all-none'];
  const budget: Budget = { states: opts.statesPerRun ?? 40, ms: Infinity };
  const faults: { fault: InjectedFault; text: string }[] = [];
  counts.forEach((c, disk) => {
    for (const op of kinds) {
      for (let nth = 1; nth <= c[op]; nth++) {
        faults.push({
          fault: { disk, rule: { op, action: 'fail', nth, errno: opts.errno ?? 'EIO' } },
          text: `${op} #${nth} of ${target.disks[disk]!.name} failed with ${opts.errno ?? 'EIO'}`,
        });
      }
    }
  });
  let runs = 0;
  let openFailures = 0;
  for (const { fault, text } of faults) {
    if (runs >= (opts.maxRuns ?? 200) || performance.now() - start > (opts.ms ?? 20000)) break;
    runs++;
    let run;
    try {
      run = await recordRun(target, opts.seed, opts.workload, opts.concurrency, [fault]);
    } catch {
      openFailures++;
      continue;
    }
    const exploreOpts: ExploreOptions = { seed: opts.seed, workload: opts.workload };
    for (const family of families) {
      const found = await exploreFamily(target, run, family, exploreOpts, budget, () => undefined);
      if (found) {
        return {
          counts, runs, openFailures,
          failure: { ...found, fault: text, target: target.name, seed: opts.seed, ops: opts.workload, originalOps: opts.workload.length },
        };
      }
    }
  }
  return { counts, runs, openFailures };
}
