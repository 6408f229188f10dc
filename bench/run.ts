/**
 * dmkit side by side with nbdkit and the raw file (issue 7): fio over NBD
 * against `dmkit serve` and `nbdkit` serving the same backing, and fio
 * straight on the file as the local limit. Prints a Markdown table and
 * writes bench/results/<date>.json (and .md).
 *
 *   npm run bench                       full run, about 13 minutes
 *   npm run bench -- --quick            1 s jobs on smaller devices, under 3 minutes
 *   npm run bench -- --only=REGEX       only rows whose "backing/server/workload" matches
 *   npm run bench -- --only='thin|integrity|mirror|clone'   only the target rows (bench/targets.ts)
 *   npm run bench -- --cpu-prof=DIR     dmkit servers write V8 CPU profiles into DIR on exit
 *   npm run bench -- --pin              servers on the last CPU, fio on the others (taskset)
 *
 * See bench/README.md for how to read the table.
 */
import { randomFillSync } from 'node:crypto';
import { mkdirSync, openSync, closeSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type FioOptions, WORKLOADS, ioUringWorks, workload } from './fio.ts';
import { type Contender, measure } from './measure.ts';
import { type Report, type Row, attachRatios, describeMachine, markdown } from './report.ts';
import { type BenchServer, type Launch, startDmkitMemory, startDmkitServe, startNbdkit } from './servers.ts';
import { COPY_LABELS, targetRows } from './targets.ts';

interface Backing {
  name: string;
  contenders: Contender[];
}

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = argv.includes('--quick');
const only = option('only') === undefined ? undefined : new RegExp(option('only')!);
const cpuProfDir = option('cpu-prof') === undefined ? undefined : resolve(option('cpu-prof')!);
const pin = argv.includes('--pin');
const lastCpu = availableParallelism() - 1;
if (pin && lastCpu < 1) throw new Error('--pin needs at least 2 CPUs');

const fioOptions: FioOptions = {
  ...(quick
    ? { runtimeSeconds: 1, rampSeconds: 0, sizeBytes: 256 * 2 ** 20 }
    : { runtimeSeconds: 8, rampSeconds: 1, sizeBytes: 1024 * 2 ** 20 }),
  jobs: 2,
  prefix: pin ? ['taskset', '-c', lastCpu === 1 ? '0' : `0-${lastCpu - 1}`] : [],
};
const launch: Launch = {
  prefix: pin ? ['taskset', '-c', String(lastCpu)] : [],
  nodeArgs: cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [],
};
const SECTORS = fioOptions.sizeBytes / 512;

/** A file of `bytes` non-zero bytes, so reads hit real pages and no server can answer from holes. */
function createBackingFile(path: string, bytes: number): void {
  const chunk = randomFillSync(Buffer.alloc(1 << 20));
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < bytes; at += chunk.length) writeSync(fd, chunk, 0, chunk.length, at);
  } finally {
    closeSync(fd);
  }
}

async function main(): Promise<void> {
  const date = new Date().toISOString().slice(0, 10);
  const shmDir = join('/dev/shm', `dmkit-bench-${process.pid}`);
  const diskDir = join(tmpdir(), `dmkit-bench-${process.pid}`);
  const shmFile = join(shmDir, 'disk.img');
  const diskFile = join(diskDir, 'disk.img');
  const configFile = join(diskDir, 'bench.json');
  mkdirSync(shmDir, { recursive: true });
  mkdirSync(diskDir, { recursive: true });
  const servers: BenchServer[] = [];
  try {
    createBackingFile(shmFile, fioOptions.sizeBytes);
    createBackingFile(diskFile, fioOptions.sizeBytes);
    writeFileSync(configFile, JSON.stringify({
      devices: [
        { name: 'shm', table: [`0 ${SECTORS} linear ${shmFile} 0`] },
        { name: 'disk', table: [`0 ${SECTORS} linear ${diskFile} 0`] },
        { name: 'zero', table: [`0 ${SECTORS} zero`] },
      ],
    }));
    const start = async (s: Promise<BenchServer>): Promise<BenchServer> => {
      servers.push(await s);
      return servers[servers.length - 1]!;
    };
    const dmkit = await start(startDmkitServe(join(diskDir, 'data'), configFile, launch));
    const dmkitMemory = await start(startDmkitMemory(SECTORS, launch));
    const nbdkitShm = await start(startNbdkit(['file', shmFile], join(diskDir, 'nbdkit-shm.pid'), launch));
    const nbdkitDisk = await start(startNbdkit(['file', diskFile], join(diskDir, 'nbdkit-disk.pid'), launch));
    const nbdkitMemory = await start(startNbdkit(['memory', `size=${fioOptions.sizeBytes}`], join(diskDir, 'nbdkit-memory.pid'), launch));
    const uring = await ioUringWorks(shmFile);

    const fileBacking = (name: string, path: string, nbdkit: BenchServer, exportName: string): Backing => ({
      name,
      contenders: [
        { server: 'fio psync (local)', role: 'local', target: { kind: 'file', path, engine: 'psync' } },
        ...(uring ? [{ server: 'fio io_uring (local)', role: 'local' as const, target: { kind: 'file' as const, path, engine: 'io_uring' as const } }] : []),
        { server: 'nbdkit file', role: 'peer', target: { kind: 'nbd', uri: nbdkit.uri() }, process: nbdkit },
        { server: 'dmkit linear', role: 'dmkit', target: { kind: 'nbd', uri: dmkit.uri(exportName) }, process: dmkit, peer: 'nbdkit file' },
      ],
    });
    const backings: Backing[] = [
      fileBacking('file in /dev/shm', shmFile, nbdkitShm, 'shm'),
      fileBacking(`file on disk (${tmpdir()})`, diskFile, nbdkitDisk, 'disk'),
      {
        name: 'memory',
        contenders: [
          { server: 'nbdkit memory', role: 'peer', target: { kind: 'nbd', uri: nbdkitMemory.uri() }, process: nbdkitMemory },
          { server: 'dmkit zero', role: 'dmkit', target: { kind: 'nbd', uri: dmkit.uri('zero') }, process: dmkit, peer: 'nbdkit memory' },
          { server: 'dmkit linear over MemoryDevice', role: 'dmkit', target: { kind: 'nbd', uri: dmkitMemory.uri('mem') }, process: dmkitMemory, peer: 'nbdkit memory' },
        ],
      },
    ];

    if (!uring) console.error('bench: fio cannot use io_uring here; those rows are left out');
    const rows: Row[] = [];
    for (const backing of backings) {
      for (const w of WORKLOADS) {
        for (const c of backing.contenders) {
          if (only && !only.test(`${backing.name}/${c.server}/${w.id}`)) continue;
          console.error(`bench: ${backing.name} / ${w.id} / ${c.server}`);
          rows.push(await measure(backing.name, c, w.id, fioOptions));
        }
      }
    }
    const peers = new Map(backings.flatMap((b) => b.contenders.map((c) => [c.server, c.peer] as const)));
    const targetPeers = new Map<string, string>();
    rows.push(...await targetRows({
      dmkit, socket: join(diskDir, 'data', 'dmkit.sock'), shmDir, fio: fioOptions, launch, peers: targetPeers,
      wanted: (row) => !only || only.test(row),
    }));
    for (const [server, peer] of targetPeers) peers.set(server, peer);
    attachRatios(rows, (row) => peers.get(row.server));

    const { runtimeSeconds, rampSeconds, sizeBytes, jobs } = fioOptions;
    const report: Report = { date, quick, pinned: pin, runtimeSeconds, rampSeconds, sizeBytes, jobs, machine: describeMachine(), rows };
    const table = markdown(report, (id) => COPY_LABELS[id] ?? workload(id).label);
    console.log(table);
    const results = join(import.meta.dirname, 'results');
    mkdirSync(results, { recursive: true });
    const base = join(results, `${date}${quick ? '-quick' : ''}${pin ? '-pinned' : ''}${only ? '-partial' : ''}`);
    writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(`${base}.md`, `${table}\n`);
    console.error(`bench: wrote ${base}.json and ${base}.md`);
  } finally {
    for (const s of servers.reverse()) await s.stop();
    rmSync(shmDir, { recursive: true, force: true });
    rmSync(diskDir, { recursive: true, force: true });
  }
}

await main();
