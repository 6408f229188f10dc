/**
 * The fio side of the benchmark: the workloads of issue 7 and one fio run,
 * against an NBD URI (`--ioengine=nbd`, one connection per job) or directly
 * on a file (psync, io_uring) as the local limit.
 */
import { run } from '../test/nbd/helpers.ts';

export interface Workload {
  id: string;
  label: string;
  rw: 'randread' | 'randwrite' | 'read' | 'write' | 'randrw';
  bs: string;
  iodepth: number;
  /** Extra fio options (mix, fsync cadence, alignment). */
  extra: string[];
  /**
   * One pass over each job's share instead of a timed loop (no ramp; the
   * runtime only caps it): every block is written once, so a fresh thin
   * volume sees only first writes.
   */
  singlePass?: boolean;
}

export const WORKLOADS: readonly Workload[] = [
  { id: 'randread-4k-qd1', label: '4k randread qd1', rw: 'randread', bs: '4k', iodepth: 1, extra: [] },
  { id: 'randread-4k-qd32', label: '4k randread qd32', rw: 'randread', bs: '4k', iodepth: 32, extra: [] },
  { id: 'randwrite-4k-qd1', label: '4k randwrite qd1', rw: 'randwrite', bs: '4k', iodepth: 1, extra: [] },
  { id: 'randwrite-4k-qd32', label: '4k randwrite qd32', rw: 'randwrite', bs: '4k', iodepth: 32, extra: [] },
  { id: 'read-1m-qd8', label: '1M seq read qd8', rw: 'read', bs: '1M', iodepth: 8, extra: [] },
  { id: 'write-1m-qd8', label: '1M seq write qd8', rw: 'write', bs: '1M', iodepth: 8, extra: [] },
  {
    id: 'randrw-4k-qd16-fsync32', label: '4k 70/30 rw qd16 fsync=32', rw: 'randrw', bs: '4k', iodepth: 16,
    extra: ['--rwmixread=70', '--fsync=32'],
  },
];

/**
 * The workloads of the target rows (issues 6, 11, 12, 13). The `-pass`
 * variants write each job's share once (fio's random map: every 4 KiB block
 * exactly once), so on a fresh thin volume the first write into each 64 KiB
 * thin block provisions it, and after a snapshot it breaks the sharing; the
 * other 15 writes of that block find it already done. (`--blockalign=64k`
 * does not spread the writes one per block: fio's random map still covers
 * every 4 KiB block.)
 */
export const TARGET_WORKLOADS: readonly Workload[] = [
  { id: 'randwrite-4k-qd32-pass', label: '4k randwrite qd32, one pass', rw: 'randwrite', bs: '4k', iodepth: 32, extra: [], singlePass: true },
  { id: 'write-1m-qd8-pass', label: '1M seq write qd8, one pass', rw: 'write', bs: '1M', iodepth: 8, extra: [], singlePass: true },
];

/** Every workload by id. */
export function workload(id: string): Workload {
  const w = [...WORKLOADS, ...TARGET_WORKLOADS].find((x) => x.id === id);
  if (!w) throw new Error(`bench: no workload "${id}"`);
  return w;
}

/** Where fio sends its I/O. */
export type FioTarget =
  | { kind: 'nbd'; uri: string }
  | { kind: 'file'; path: string; engine: 'psync' | 'io_uring' };

export interface FioOptions {
  /** Seconds measured, after `rampSeconds` not measured. */
  runtimeSeconds: number;
  rampSeconds: number;
  /** Bytes of the device or file; each job works on its own 1/jobs of it. */
  sizeBytes: number;
  /** fio jobs: with NBD, one connection each (multi-conn). */
  jobs: number;
  /** Goes before `fio` (`taskset -c 0` with --pin). */
  prefix: string[];
}

export interface FioResult {
  iops: number;
  /** Read plus write, 10^6 bytes per second. */
  mbps: number;
  /** Completion latency percentiles of the main direction (reads for the mixed workload), µs. */
  p50us: number;
  p99us: number;
  /** Reads plus writes completed in the measured part of the job. */
  ios: number;
}

interface FioSide {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  clat_ns: { percentile?: Record<string, number> };
}

export function fioArgs(target: FioTarget, w: Workload, o: FioOptions): string[] {
  const share = Math.floor(o.sizeBytes / o.jobs / 1048576) * 1048576;
  const where = target.kind === 'nbd'
    ? ['--ioengine=nbd', `--uri=${target.uri}`]
    : [`--ioengine=${target.engine}`, `--filename=${target.path}`];
  return [
    '--name=bench', ...where, `--rw=${w.rw}`, `--bs=${w.bs}`, `--iodepth=${w.iodepth}`, ...w.extra,
    `--numjobs=${o.jobs}`, '--group_reporting', `--size=${share}`, `--offset_increment=${share}`,
    ...(w.singlePass ? [`--runtime=${o.runtimeSeconds * 8}`] : ['--time_based', `--runtime=${o.runtimeSeconds}`, `--ramp_time=${o.rampSeconds}`]),
    '--randrepeat=0', '--output-format=json',
  ];
}

export async function runFio(target: FioTarget, w: Workload, o: FioOptions): Promise<FioResult> {
  const args = fioArgs(target, w, o);
  const [cmd, ...rest] = [...o.prefix, 'fio', ...args];
  const r = await run(cmd!, rest, (o.runtimeSeconds * 8 + o.rampSeconds + 60) * 1000);
  const json = r.stdout.indexOf('{');
  if (r.code !== 0 || json < 0) throw new Error(`fio ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const job = JSON.parse(r.stdout.slice(json)).jobs[0] as { error: number; read: FioSide; write: FioSide };
  if (job.error) throw new Error(`fio ${args.join(' ')}: job error ${job.error}: ${r.stderr.trim()}`);
  const main = w.rw === 'randwrite' || w.rw === 'write' ? job.write : job.read;
  const pct = main.clat_ns.percentile ?? {};
  return {
    iops: job.read.iops + job.write.iops,
    mbps: (job.read.bw_bytes + job.write.bw_bytes) / 1e6,
    p50us: (pct['50.000000'] ?? NaN) / 1000,
    p99us: (pct['99.000000'] ?? NaN) / 1000,
    ios: job.read.total_ios + job.write.total_ios,
  };
}

/** Whether fio can use io_uring here (kernels and sandboxes may refuse it). */
export async function ioUringWorks(path: string): Promise<boolean> {
  const r = await run('fio', ['--name=probe', '--ioengine=io_uring', `--filename=${path}`, '--rw=read', '--bs=4k',
    '--size=64k', '--output-format=json'], 30_000);
  return r.code === 0 && !/error/i.test(r.stderr);
}
