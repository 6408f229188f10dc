/**
 * fio --ioengine=nbd against dmkit's NbdServer and against `nbdkit file`,
 * both serving the same file in /dev/shm, side by side.
 *   node --import tsx bench/nbd-fio.ts [--runtime=SECONDS] [--size=MiB]
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDevice } from '../src/block/file-device.ts';
import { NbdServer, StaticExports } from '../src/nbd/server.ts';
import { freePort, run } from '../test/nbd/helpers.ts';

const arg = (name: string, def: number): number => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : def;
};
const runtime = arg('runtime', 5);
const sizeMiB = arg('size', 256);

interface Job { label: string; rw: string; bs: string; iodepth: number }
const JOBS: Job[] = [
  { label: '4k randread  qd1', rw: 'randread', bs: '4k', iodepth: 1 },
  { label: '4k randread  qd32', rw: 'randread', bs: '4k', iodepth: 32 },
  { label: '4k randwrite qd1', rw: 'randwrite', bs: '4k', iodepth: 1 },
  { label: '4k randwrite qd32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { label: '1M seq read  qd4', rw: 'read', bs: '1M', iodepth: 4 },
];

interface Result { iops: number; mibs: number; latUs: number }

async function fio(uri: string, job: Job): Promise<Result> {
  const r = await run('fio', ['--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`, `--size=${sizeMiB}M`, `--runtime=${runtime}`, '--time_based', '--output-format=json'],
  (runtime + 30) * 1000);
  if (r.code !== 0) throw new Error(`fio failed on ${uri}: ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const side = job.rw.includes('write') ? j.write : j.read;
  return { iops: side.iops, mibs: side.bw_bytes / 1048576, latUs: side.clat_ns.mean / 1000 };
}

async function main(): Promise<void> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const path = join(base, `dmkit-nbd-bench-${process.pid}.img`);
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(1 << 20, 0xa5);
  for (let i = 0; i < sizeMiB; i++) await fh.write(chunk, 0, chunk.length, i << 20);
  await fh.close();

  const device = await FileDevice.open(path, { name: 'bench' });
  const server = new NbdServer(new StaticExports(new Map([['bench', device]])));
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  const dmkitUri = `nbd://127.0.0.1:${typeof addr === 'string' ? 0 : addr.port}/bench`;

  const kport = await freePort();
  const nbdkit = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(kport), 'file', path], { stdio: 'ignore' });
  const nbdkitExited = new Promise<void>((r) => nbdkit.on('exit', () => r()));
  await new Promise((r) => setTimeout(r, 500));
  const nbdkitUri = `nbd://127.0.0.1:${kport}/`;

  try {
    console.log(`fio ${runtime}s per job, ${sizeMiB} MiB file in ${base}`);
    console.log('job                 | dmkit IOPS   MiB/s  lat µs | nbdkit IOPS   MiB/s  lat µs | dmkit/nbdkit');
    for (const job of JOBS) {
      const d = await fio(dmkitUri, job);
      const k = await fio(nbdkitUri, job);
      const col = (x: Result): string =>
        `${x.iops.toFixed(0).padStart(10)} ${x.mibs.toFixed(1).padStart(7)} ${x.latUs.toFixed(1).padStart(7)}`;
      console.log(`${job.label.padEnd(19)} |${col(d)} | ${col(k)} | ${(d.iops / k.iops).toFixed(2).padStart(6)}`);
    }
  } finally {
    nbdkit.kill('SIGTERM');
    await nbdkitExited;
    await server.close();
    await device.close();
    await rm(path, { force: true });
  }
}

await main();
