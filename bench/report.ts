/**
 * Results of one benchmark run: the rows, the machine they ran on, and the
 * Markdown table bench/README.md shows.
 */
import { execFileSync } from 'node:child_process';
import { cpus, release, totalmem } from 'node:os';
import type { FioResult } from './fio.ts';

export type Role = 'dmkit' | 'peer' | 'local';

export interface Row extends FioResult {
  /** What the servers serve: "file in /dev/shm", "memory", … */
  backing: string;
  workload: string;
  server: string;
  role: Role;
  /** Server CPU (user + system) over the job including its ramp; undefined for local rows. */
  cpuSeconds?: number;
  /** Server CPU per I/O in µs (cpuSeconds over the I/Os of the whole job). */
  cpuUsPerIo?: number;
  peakRssBytes?: number;
  /** What else the row needs said (e.g. how far hydration got during the job). */
  note?: string;
  /** dmkit rows: dmkit over the peer row of the same backing and workload (mbps: for copy rows, which have no IOPS). */
  vsPeer?: { peer: string; iops: number; mbps: number; p99: number; cpuPerIo: number };
}

export interface Machine {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  fio: string;
  nbdkit: string;
}

export interface Report {
  date: string;
  quick: boolean;
  /** --pin: servers on the last CPU, fio on the others. */
  pinned: boolean;
  runtimeSeconds: number;
  rampSeconds: number;
  jobs: number;
  sizeBytes: number;
  machine: Machine;
  rows: Row[];
}

export function describeMachine(): Machine {
  const version = (cmd: string): string => execFileSync(cmd, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  return {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    fio: version('fio'),
    nbdkit: version('nbdkit'),
  };
}

/** Adds vsPeer to each dmkit row from the peer row of the same backing and workload. */
export function attachRatios(rows: Row[], peerOf: (row: Row) => string | undefined): void {
  for (const row of rows) {
    const peerName = peerOf(row);
    const peer = peerName && rows.find((r) => r.backing === row.backing && r.workload === row.workload && r.server === peerName);
    if (!peer) continue;
    row.vsPeer = {
      peer: peer.server,
      iops: row.iops / peer.iops,
      mbps: row.mbps / peer.mbps,
      p99: row.p99us / peer.p99us,
      cpuPerIo: (row.cpuUsPerIo ?? NaN) / (peer.cpuUsPerIo ?? NaN),
    };
  }
}

const fixed = (v: number | undefined, digits: number): string => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(digits));
const count = (v: number): string => (Number.isNaN(v) ? '—' : v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0));

export function markdown(report: Report, workloadLabel: (id: string) => string): string {
  const m = report.machine;
  const out = [
    `Run ${report.date}${report.quick ? ' (--quick)' : ''}${report.pinned ? ' (--pin)' : ''}: ${report.runtimeSeconds} s per job after ${report.rampSeconds} s ramp, ` +
      `${report.jobs} fio jobs (NBD: one connection each), ${report.sizeBytes / 2 ** 20} MiB devices.`,
    `Machine: ${m.nproc} × ${m.cpu}, ${m.memoryGiB} GiB, Linux ${m.kernel}, ${m.fio}, ${m.nbdkit}, Node.js ${m.node}.`,
    '',
  ];
  for (const backing of [...new Set(report.rows.map((r) => r.backing))]) {
    out.push(`### ${backing}`, '',
      '| workload | server | IOPS | MB/s | p50 µs | p99 µs | CPU s | CPU µs/IO | peak RSS MiB | dmkit/peer IOPS |',
      '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const r of report.rows.filter((x) => x.backing === backing)) {
      const ratio = !r.vsPeer ? ''
        : Number.isNaN(r.vsPeer.iops) ? `**${r.vsPeer.mbps.toFixed(2)}** (MB/s) vs ${r.vsPeer.peer}`
        : `**${r.vsPeer.iops.toFixed(2)}** vs ${r.vsPeer.peer}`;
      const server = r.note ? `${r.server} (${r.note})` : r.server;
      const rss = r.peakRssBytes === undefined ? undefined : r.peakRssBytes / 2 ** 20;
      out.push(`| ${workloadLabel(r.workload)} | ${server} | ${count(r.iops)} | ${fixed(r.mbps, 1)} | ${fixed(r.p50us, 1)} | ` +
        `${fixed(r.p99us, 1)} | ${fixed(r.cpuSeconds, 2)} | ${fixed(r.cpuUsPerIo, 1)} | ${fixed(rss, 0)} | ${ratio} |`);
    }
    out.push('');
  }
  return out.join('\n');
}
