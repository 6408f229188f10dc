/**
 * The target rows (issues 6, 11, 12, 13): thin, integrity, mirror and clone
 * served by the same `dmkit serve` as the other rows, each next to `linear`
 * on the same kind of backing (and nbdkit's cow filter, nbdcopy) from the
 * same run. Devices are made and removed with the real CLI (`dmkit create`,
 * `message`, `suspend`, `resume`, `remove`) between fio jobs, so a job that
 * needs a fresh volume gets one.
 */
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../test/nbd/helpers.ts';
import { type FioOptions, runFio, workload } from './fio.ts';
import { type Contender, measure } from './measure.ts';
import type { Row } from './report.ts';
import { type BenchServer, type Launch, startNbdkit } from './servers.ts';

const REPO = join(import.meta.dirname, '..');
const MiB = 2 ** 20;
/** Thin block size: 64 KiB, Linux's smallest. */
const THIN_BLOCK_SECTORS = 128;
const STATUS_POLL_MS = 50;
const PASSES = ['randwrite-4k-qd32-pass', 'write-1m-qd8-pass'];
const TIMED = ['randwrite-4k-qd32', 'write-1m-qd8'];

/** The rows that time a copy instead of running fio. */
export const COPY_LABELS: Readonly<Record<string, string>> = {
  resync: 'initial resync, legs differ',
  hydrate: 'copy of the whole source',
};

export interface TargetRun {
  dmkit: BenchServer;
  socket: string;
  /** A directory in /dev/shm the rows may fill and empty. */
  shmDir: string;
  fio: FioOptions;
  launch: Launch;
  /** Whether a "backing/server/workload" row is wanted (--only). */
  wanted: (row: string) => boolean;
  /** Filled in: the peer of each dmkit row's server, for attachRatios. */
  peers: Map<string, string>;
}

/** `dmkit ARGS` against the bench daemon; its stdout, or an error with its stderr. */
async function dmkit(r: TargetRun, ...args: string[]): Promise<string> {
  const res = await run(process.execPath, [join(REPO, 'bin/dmkit.js'), '--socket', r.socket, ...args], 120_000);
  if (res.code !== 0) throw new Error(`dmkit ${args.join(' ')}: ${res.stderr.trim()}`);
  return res.stdout;
}

/** Random bytes, so that no copy can skip holes or zeroes. */
export function randomFile(path: string, bytes: number): void {
  const chunk = randomFillSync(Buffer.alloc(MiB));
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < bytes; at += chunk.length) writeSync(fd, chunk, 0, chunk.length, at);
  } finally {
    closeSync(fd);
  }
}

/** A sparse file of `bytes` zeroes (metadata devices must start zeroed). */
function blankFile(path: string, bytes: number): string {
  closeSync(openSync(path, 'w'));
  truncateSync(path, bytes);
  return path;
}

/** Polls `dmkit status NAME` until `done` accepts it; resolves with the seconds that took. */
async function waitStatus(r: TargetRun, name: string, done: (status: string) => boolean): Promise<number> {
  const start = process.hrtime.bigint();
  while (!done(await dmkit(r, 'status', name))) await new Promise((res) => setTimeout(res, STATUS_POLL_MS));
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** `A/B` in word `index` of a status line as a fraction. */
function progress(status: string, index: number): number {
  const [a, b] = status.trim().split(/\s+/)[index]!.split('/').map(Number) as [number, number];
  return a / b;
}

/** A row that is a copy, not a fio job: MB/s only. */
function copyRow(r: TargetRun, backing: string, workloadId: string, c: Omit<Contender, 'target'>, bytes: number, seconds: number): Row {
  if (c.peer) r.peers.set(c.server, c.peer);
  return { backing, workload: workloadId, server: c.server, role: c.role, iops: NaN, mbps: bytes / seconds / 1e6, p50us: NaN, p99us: NaN, ios: 0 };
}

/** Runs the fio rows of `backing`: for each workload, each contender after its own setup. */
async function fioRows(
  r: TargetRun, backing: string, workloads: string[],
  contenders: { c: Contender; setup?: () => Promise<void>; teardown?: () => Promise<string | undefined> }[],
): Promise<Row[]> {
  const rows: Row[] = [];
  for (const w of workloads) {
    for (const { c, setup, teardown } of contenders) {
      if (!r.wanted(`${backing}/${c.server}/${w}`)) continue;
      if (c.peer) r.peers.set(c.server, c.peer);
      console.error(`bench: ${backing} / ${w} / ${c.server}`);
      await setup?.();
      const row = await measure(backing, c, w, r.fio);
      const note = await teardown?.();
      if (note) row.note = note;
      rows.push(row);
    }
  }
  return rows;
}

const nbd = (s: BenchServer, exportName?: string) => ({ kind: 'nbd' as const, uri: s.uri(exportName) });

/**
 * Issue 6: a thin volume in a pool over /dev/shm files. Unprovisioned: a
 * fresh volume per job; provisioned: the same after a first pass; snapshot:
 * the origin written once, snapshotted (suspended around create_snap, as
 * Linux requires), then written again so every write breaks sharing.
 * Peers: linear over a /dev/shm file, nbdkit's cow filter (fresh overlay per
 * job, in /dev/shm) for first writes.
 */
async function thinRows(r: TargetRun): Promise<Row[]> {
  const backing = 'thin pool over /dev/shm files';
  const bytes = r.fio.sizeBytes;
  const sectors = bytes / 512;
  const dataFile = blankFile(join(r.shmDir, 'thin-data.img'), 2 * bytes);
  const metaFile = blankFile(join(r.shmDir, 'thin-meta.img'), 64 * MiB);
  const linearFile = join(r.shmDir, 'thin-linear.img');
  randomFile(linearFile, bytes);
  await dmkit(r, 'create', 'tpool', '--table', `0 ${(2 * bytes) / 512} thin-pool ${metaFile} ${dataFile} ${THIN_BLOCK_SECTORS} 0`);
  await dmkit(r, 'create', 'tlinear', '--table', `0 ${sectors} linear ${linearFile} 0`);
  let cow: BenchServer | undefined;
  const volume = async (id: number): Promise<void> => {
    await dmkit(r, 'message', 'tpool', '0', 'create_thin', String(id));
    await dmkit(r, 'create', 'tvol', '--table', `0 ${sectors} thin /dev/mapper/tpool ${id}`);
  };
  const dropVolume = async (ids: number[]): Promise<undefined> => {
    await dmkit(r, 'remove', 'tvol');
    for (const id of ids) await dmkit(r, 'message', 'tpool', '0', 'delete', String(id));
    return undefined;
  };
  /** Writes the whole volume once (not measured). */
  const fill = (): Promise<unknown> => runFio(nbd(r.dmkit, 'tvol'), workload('write-1m-qd8-pass'), r.fio);
  const cowPeer: Contender = { server: 'nbdkit cow file', role: 'peer', target: { kind: 'nbd', uri: '' } };
  try {
    return await fioRows(r, backing, PASSES, [
      { c: { server: 'dmkit linear', role: 'peer', target: nbd(r.dmkit, 'tlinear'), process: r.dmkit } },
      {
        c: cowPeer,
        setup: async () => {
          rmSync(join(r.shmDir, 'nbdkit-cow.pid'), { force: true });
          cow = await startNbdkit(['--filter=cow', 'file', linearFile], join(r.shmDir, 'nbdkit-cow.pid'), r.launch, { TMPDIR: r.shmDir });
          cowPeer.target = nbd(cow);
          cowPeer.process = cow;
        },
        teardown: async () => { await cow!.stop(); cow = undefined; return undefined; },
      },
      {
        c: { server: 'dmkit thin, unprovisioned', role: 'dmkit', target: nbd(r.dmkit, 'tvol'), process: r.dmkit, peer: 'nbdkit cow file' },
        setup: () => volume(1),
        teardown: () => dropVolume([1]),
      },
      {
        c: { server: 'dmkit thin, provisioned', role: 'dmkit', target: nbd(r.dmkit, 'tvol'), process: r.dmkit, peer: 'dmkit linear' },
        setup: async () => { await volume(1); await fill(); },
        teardown: () => dropVolume([1]),
      },
      {
        c: { server: 'dmkit thin, snapshot CoW', role: 'dmkit', target: nbd(r.dmkit, 'tvol'), process: r.dmkit, peer: 'nbdkit cow file' },
        setup: async () => {
          await volume(1);
          await fill();
          await dmkit(r, 'suspend', 'tvol');
          await dmkit(r, 'message', 'tpool', '0', 'create_snap', '2', '1');
          await dmkit(r, 'resume', 'tvol');
        },
        teardown: () => dropVolume([1, 2]),
      },
    ]);
  } finally {
    await cow?.stop();
    await dmkit(r, 'remove', '-f', 'tvol').catch(() => undefined);
    await dmkit(r, 'remove', 'tlinear', 'tpool');
  }
}

/** Issue 12: integrity in J, B and D modes (crc32c, 4 KiB blocks) over /dev/shm files, next to linear. */
async function integrityRows(r: TargetRun): Promise<Row[]> {
  const backing = 'integrity over /dev/shm files';
  const bytes = r.fio.sizeBytes;
  const modes = ['J', 'B', 'D'];
  const names: string[] = [];
  const linearFile = join(r.shmDir, 'int-linear.img');
  randomFile(linearFile, bytes);
  await dmkit(r, 'create', 'ilinear', '--table', `0 ${bytes / 512} linear ${linearFile} 0`);
  names.push('ilinear');
  try {
    for (const mode of modes) {
      const file = blankFile(join(r.shmDir, `int-${mode}.img`), bytes);
      const params = `${file} 0 4 ${mode} 2 block_size:4096 internal_hash:crc32c`;
      // The first load formats the device; its status then says how many sectors it provides.
      await dmkit(r, 'create', `i${mode}`, '--table', `0 8 integrity ${params}`);
      const provided = (await dmkit(r, 'status', `i${mode}`)).trim().split(/\s+/)[4]!;
      await dmkit(r, 'remove', `i${mode}`);
      await dmkit(r, 'create', `i${mode}`, '--table', `0 ${provided} integrity ${params}`);
      names.push(`i${mode}`);
    }
    return await fioRows(r, backing, TIMED, [
      { c: { server: 'dmkit linear', role: 'peer', target: nbd(r.dmkit, 'ilinear'), process: r.dmkit } },
      ...modes.map((mode) => ({
        c: { server: `dmkit integrity ${mode}`, role: 'dmkit' as const, target: nbd(r.dmkit, `i${mode}`), process: r.dmkit, peer: 'dmkit linear' },
      })),
    ]);
  } finally {
    await dmkit(r, 'remove', ...names);
  }
}

/**
 * Issue 13: a two-leg mirror over /dev/shm files (core log; disk log),
 * writes next to linear, and the initial resync of legs that differ: from
 * create until status shows every region in sync.
 */
async function mirrorRows(r: TargetRun): Promise<Row[]> {
  const backing = 'mirror over /dev/shm files';
  const bytes = r.fio.sizeBytes;
  const sectors = bytes / 512;
  const legs = [0, 1].map((i) => join(r.shmDir, `mirror-leg${i}.img`));
  for (const leg of legs) randomFile(leg, bytes);
  const log = blankFile(join(r.shmDir, 'mirror-log.img'), MiB);
  const tables: Record<string, string> = {
    core: `0 ${sectors} mirror core 1 1024 2 ${legs[0]} 0 ${legs[1]} 0`,
    disk: `0 ${sectors} mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0`,
  };
  const inSync = (s: string): boolean => progress(s, 6) === 1;
  const rows: Row[] = [];
  for (const [log, table] of Object.entries(tables)) {
    const server = `dmkit mirror ${log} log`;
    if (!r.wanted(`${backing}/${server}/resync`)) continue;
    console.error(`bench: ${backing} / resync / ${server}`);
    await dmkit(r, 'create', 'mir', '--table', table);
    const seconds = await waitStatus(r, 'mir', inSync);
    await dmkit(r, 'remove', 'mir');
    rows.push(copyRow(r, backing, 'resync', { server, role: 'dmkit' }, bytes, seconds));
  }
  await dmkit(r, 'create', 'mlinear', '--table', `0 ${sectors} linear ${legs[0]} 0`);
  const mirror = (log: string) => ({
    c: { server: `dmkit mirror ${log} log`, role: 'dmkit' as const, target: nbd(r.dmkit, 'mir'), process: r.dmkit, peer: 'dmkit linear' },
    setup: async () => { await dmkit(r, 'create', 'mir', '--table', tables[log]!); await waitStatus(r, 'mir', inSync); },
    teardown: async () => { await dmkit(r, 'remove', 'mir'); return undefined; },
  });
  try {
    rows.push(...await fioRows(r, backing, TIMED, [
      { c: { server: 'dmkit linear', role: 'peer', target: nbd(r.dmkit, 'mlinear'), process: r.dmkit } },
      mirror('core'),
      mirror('disk'),
    ]));
  } finally {
    await dmkit(r, 'remove', 'mlinear');
  }
  return rows;
}

/**
 * Issue 11: clone hydration of a random source in /dev/shm into a
 * destination file there, next to nbdcopy copying the same source (served
 * by the same daemon through `linear`) into the same kind of file; then fio
 * on the clone while it hydrates and after.
 */
async function cloneRows(r: TargetRun): Promise<Row[]> {
  const backing = 'clone of a /dev/shm file';
  const bytes = r.fio.sizeBytes;
  const sectors = bytes / 512;
  const source = join(r.shmDir, 'clone-src.img');
  randomFile(source, bytes);
  const dest = join(r.shmDir, 'clone-dest.img');
  const meta = join(r.shmDir, 'clone-meta.img');
  const hydrated = (s: string): boolean => progress(s, 6) === 1;
  const fresh = async (hydrate: boolean): Promise<void> => {
    blankFile(dest, bytes);
    blankFile(meta, 4 * MiB);
    await dmkit(r, 'create', 'clone', '--table', `0 ${sectors} clone ${meta} ${dest} /dev/mapper/csrc 8${hydrate ? '' : ' 1 no_hydration'}`);
  };
  await dmkit(r, 'create', 'csrc', '--table', `0 ${sectors} linear ${source} 0`);
  const rows: Row[] = [];
  try {
    if (r.wanted(`${backing}/nbdcopy/hydrate`)) {
      console.error(`bench: ${backing} / hydrate / nbdcopy`);
      const copy = join(r.shmDir, 'clone-nbdcopy.img');
      blankFile(copy, bytes);
      const start = process.hrtime.bigint();
      const res = await run('nbdcopy', [r.dmkit.uri('csrc'), copy], 600_000);
      if (res.code !== 0) throw new Error(`nbdcopy: ${res.stderr.trim()}`);
      rows.push(copyRow(r, backing, 'hydrate', { server: 'nbdcopy', role: 'peer' }, bytes, Number(process.hrtime.bigint() - start) / 1e9));
      rmSync(copy);
    }
    if (r.wanted(`${backing}/dmkit clone/hydrate`)) {
      console.error(`bench: ${backing} / hydrate / dmkit clone`);
      await fresh(true);
      const seconds = await waitStatus(r, 'clone', hydrated);
      await dmkit(r, 'remove', 'clone');
      rows.push(copyRow(r, backing, 'hydrate', { server: 'dmkit clone', role: 'dmkit', peer: 'nbdcopy' }, bytes, seconds));
    }
    rows.push(...await fioRows(r, backing, ['randread-4k-qd32', 'randwrite-4k-qd32'], [
      {
        c: { server: 'dmkit clone, hydrated', role: 'peer', target: nbd(r.dmkit, 'clone'), process: r.dmkit },
        setup: async () => { await fresh(true); await waitStatus(r, 'clone', hydrated); },
        teardown: async () => { await dmkit(r, 'remove', 'clone'); return undefined; },
      },
      {
        c: { server: 'dmkit clone, hydrating', role: 'dmkit', target: nbd(r.dmkit, 'clone'), process: r.dmkit, peer: 'dmkit clone, hydrated' },
        setup: async () => { await fresh(false); await dmkit(r, 'message', 'clone', '0', 'enable_hydration'); },
        teardown: async () => {
          const done = progress(await dmkit(r, 'status', 'clone'), 6);
          await dmkit(r, 'remove', 'clone');
          return `${(done * 100).toFixed(0)}% hydrated at the end`;
        },
      },
    ]));
  } finally {
    await dmkit(r, 'remove', '-f', 'clone').catch(() => undefined);
    await dmkit(r, 'remove', 'csrc');
  }
  return rows;
}

/** The target rows; a backing is set up only when --only matches "BACKING/" (e.g. --only=thin). */
export async function targetRows(r: TargetRun): Promise<Row[]> {
  const groups: [string, (r: TargetRun) => Promise<Row[]>][] = [
    ['thin pool over /dev/shm files', thinRows],
    ['integrity over /dev/shm files', integrityRows],
    ['mirror over /dev/shm files', mirrorRows],
    ['clone of a /dev/shm file', cloneRows],
  ];
  const rows: Row[] = [];
  for (const [backing, rowsOf] of groups) {
    if (r.wanted(`${backing}/`)) rows.push(...await rowsOf(r));
  }
  return rows;
}
