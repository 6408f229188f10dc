/**
 * One row of the table: a fio job against one contender, with the server's
 * CPU time and peak memory over the job read from /proc.
 */
import { type FioOptions, type FioTarget, runFio, workload } from './fio.ts';
import { cpuSeconds, peakRss, resetPeakRss } from './proc.ts';
import type { Role, Row } from './report.ts';
import type { BenchServer } from './servers.ts';

export interface Contender {
  server: string;
  role: Role;
  target: FioTarget;
  /** The process whose CPU and memory the row reports. */
  process?: BenchServer;
  /** dmkit rows: the server name of the row to compare with. */
  peer?: string;
}

export async function measure(backing: string, c: Contender, workloadId: string, fioOptions: FioOptions): Promise<Row> {
  const w = workload(workloadId);
  const pid = c.process?.pid;
  const peakResettable = pid !== undefined && resetPeakRss(pid);
  const cpuBefore = pid === undefined ? 0 : cpuSeconds(pid);
  const result = await runFio(c.target, w, fioOptions);
  const row: Row = { backing, workload: workloadId, server: c.server, role: c.role, ...result };
  if (pid !== undefined) {
    row.cpuSeconds = cpuSeconds(pid) - cpuBefore;
    // A timed job's CPU includes its ramp, whose I/Os fio does not count: estimate them at the measured rate.
    const ios = w.singlePass ? result.ios : result.iops * (fioOptions.runtimeSeconds + fioOptions.rampSeconds);
    row.cpuUsPerIo = (row.cpuSeconds / ios) * 1e6;
    if (peakResettable) row.peakRssBytes = peakRss(pid);
  }
  return row;
}
