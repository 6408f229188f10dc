/**
 * `dmkit thin check` against Debian's `thin_check` on the same metadata of
 * about 1M mappings, in one run: four thin devices, the second a snapshot of
 * the first (its mappings share the origin's data blocks, a tenth of them
 * remapped since), in a mix of range and single mappings. The metadata is
 * written by `thin_restore` from generated XML into /dev/shm (so both checkers
 * read from the page cache) and removed at the end. The two checkers take
 * turns, ROUNDS times (default 3); each line gives wall time, CPU time and
 * peak RSS of the process, and the ratio of the best wall times.
 * `--data-blocks=N` sizes the data device (default 2M blocks; dmkit, unlike
 * thin_check 0.9.0, compares every data block's count with its space map);
 * `--keep` leaves the metadata in place for profiling and prints its path.
 *
 *   node --import tsx bench/micro/thin-check.ts [ROUNDS] [--data-blocks=N] [--keep]
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = process.argv.slice(2);
const option = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const ROUNDS = Number(args.find((a) => !a.startsWith('--')) ?? 3);
const NR_DATA_BLOCKS = Number(option('data-blocks') ?? 2_000_000);
const KEEP = args.includes('--keep');
const DEVICE_MAPPINGS = [300_000, 300_000, 250_000, 150_000]; // device 1 is the snapshot of device 0
const METADATA_BYTES = 256 << 20;
const dmkit = join(import.meta.dirname, '../../bin/dmkit.js');

/** xorshift32, so every run checks the same metadata. */
let seed = 2463534242;
function rand(n: number): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
}

interface Run {
  origin: number;
  data: number;
  length: number;
}

/** A device's mappings as runs: lengths 1 (single_mapping) to 64, with holes between them. */
function layout(count: number, nextData: { at: number }): Run[] {
  const runs: Run[] = [];
  let origin = 0;
  for (let mapped = 0; mapped < count; ) {
    const length = Math.min(count - mapped, rand(3) === 0 ? 1 : 1 + rand(64));
    origin += rand(4) === 0 ? 1 + rand(100) : 0;
    runs.push({ origin, data: nextData.at, length });
    nextData.at += length;
    origin += length;
    mapped += length;
  }
  return runs;
}

/** The snapshot: the origin's runs, every tenth block remapped to a fresh data block. */
function snapshotOf(origin: Run[], nextData: { at: number }): Run[] {
  const runs: Run[] = [];
  for (const r of origin) {
    for (let start = 0; start < r.length; ) {
      if (rand(10) === 0) {
        runs.push({ origin: r.origin + start, data: nextData.at++, length: 1 });
        start++;
        continue;
      }
      const length = Math.min(r.length - start, 1 + rand(r.length));
      runs.push({ origin: r.origin + start, data: r.data + start, length });
      start += length;
    }
  }
  return runs;
}

function writeXml(path: string): number {
  const nextData = { at: 0 };
  const devices: Run[][] = [];
  devices.push(layout(DEVICE_MAPPINGS[0]!, nextData));
  devices.push(snapshotOf(devices[0]!, nextData));
  for (const count of DEVICE_MAPPINGS.slice(2)) devices.push(layout(count, nextData));
  if (nextData.at > NR_DATA_BLOCKS) throw new Error(`generated ${nextData.at} data blocks, more than ${NR_DATA_BLOCKS}`);
  const fd = openSync(path, 'w');
  const lines: string[] = [];
  const flush = (): void => {
    writeSync(fd, lines.join(''));
    lines.length = 0;
  };
  let total = 0;
  lines.push(`<superblock uuid="" time="4" transaction="7" flags="0" version="2" data_block_size="128" nr_data_blocks="${NR_DATA_BLOCKS}">\n`);
  devices.forEach((runs, id) => {
    const mapped = runs.reduce((n, r) => n + r.length, 0);
    total += mapped;
    lines.push(`  <device dev_id="${id}" mapped_blocks="${mapped}" transaction="${id}" creation_time="${id}" snap_time="${id}">\n`);
    for (const r of runs) {
      const time = id === 1 ? 3 : id;
      lines.push(
        r.length === 1
          ? `    <single_mapping origin_block="${r.origin}" data_block="${r.data}" time="${time}"/>\n`
          : `    <range_mapping origin_begin="${r.origin}" data_begin="${r.data}" length="${r.length}" time="${time}"/>\n`,
      );
      if (lines.length > 10_000) flush();
    }
    lines.push('  </device>\n');
  });
  lines.push('</superblock>\n');
  flush();
  closeSync(fd);
  return total;
}

interface Sample {
  wallMs: number;
  cpuMs: number;
  peakRssMiB: number;
}

/** Runs one checker under /usr/bin/time for its CPU time and peak RSS; it must pass. */
function timeCheck(argv: string[]): Sample {
  const start = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', ...argv], { encoding: 'utf8' });
  const wallMs = performance.now() - start;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  const [user, sys, rssKiB] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
  return { wallMs, cpuMs: (user! + sys!) * 1000, peakRssMiB: rssKiB! / 1024 };
}

const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'dmkit-thin-check-'));
const xml = join(dir, 'metadata.xml');
const meta = join(dir, 'metadata.bin');
try {
  const mappings = writeXml(xml);
  writeFileSync(meta, '');
  truncateSync(meta, METADATA_BYTES);
  const restore = spawnSync('thin_restore', ['-i', xml, '-o', meta, '-q'], { encoding: 'utf8' });
  if (restore.status !== 0) throw new Error(`thin_restore failed: ${restore.stderr}`);
  rmSync(xml);
  console.log(`metadata: ${mappings} mappings in 4 thin devices (one a snapshot), ${NR_DATA_BLOCKS} data blocks, ${METADATA_BYTES >> 20} MiB file in ${dir}`);
  const checkers: [string, string[]][] = [
    ['thin_check', ['thin_check', meta]],
    ['dmkit thin check', [process.execPath, dmkit, 'thin', 'check', meta]],
  ];
  const best = new Map<string, number>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, argv] of checkers) {
      const s = timeCheck(argv);
      best.set(name, Math.min(best.get(name) ?? Infinity, s.wallMs));
      console.log(`round ${round} ${name.padEnd(16)} wall ${(s.wallMs / 1000).toFixed(2)} s  cpu ${(s.cpuMs / 1000).toFixed(2)} s  peak RSS ${s.peakRssMiB.toFixed(0)} MiB`);
    }
  }
  const ours = best.get('dmkit thin check')!;
  const theirs = best.get('thin_check')!;
  console.log(`best wall: thin_check ${(theirs / 1000).toFixed(2)} s, dmkit ${(ours / 1000).toFixed(2)} s: dmkit/thin_check ${(ours / theirs).toFixed(2)}×`);
} finally {
  if (KEEP) console.log(`kept ${meta}`);
  else rmSync(dir, { recursive: true, force: true });
}
