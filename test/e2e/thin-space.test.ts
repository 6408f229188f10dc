/**
 * A thin pool running out of data space, through a real `dmkit serve` and
 * qemu-io over NBD (issue 6, spec/thin-metadata.md §9.6, §9.8): the
 * low-water-mark event wakes `dmkit wait` and is logged; a full pool queues
 * writes (status `out_of_data_space`) until the data device grows — a
 * linear device over a second file, as LVM extends a pool's data LV — and
 * the pool is reloaded with the larger size; under `error_if_no_space` the
 * write fails at once with ENOSPC and nothing acknowledged is disturbed.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { type Daemon, Harness } from '../helpers/daemon.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
/** 64 KiB data blocks, 16 of them at first, a low water mark of 4 free blocks. */
const BLOCK_SECTORS = 128;
const LOW_WATER = 4;

const h = await Harness.create('dmkit-thin-space-');
let d: Daemon;
let meta: string;
let extentA: string;
let extentB: string;

before(async () => {
  await writeFile(h.path('empty.json'), '{"devices":[]}');
  d = await h.serve({ dataDir: h.path('data'), args: ['--config', h.path('empty.json')] });
  meta = await h.blankFile('meta.img', 4 * MiB);
  extentA = await h.blankFile('data-a.img', 1 * MiB);
  extentB = await h.blankFile('data-b.img', 1 * MiB);
});

after(async () => {
  await d?.stop();
  await h.cleanup();
});

const poolTable = (sectors: number, features = '') =>
  `0 ${sectors} thin-pool ${meta} /dev/mapper/pooldata ${BLOCK_SECTORS} ${LOW_WATER}${features ? ` ${features}` : ''}`;

async function poolStatus(): Promise<string[]> {
  // `0 LEN thin-pool` and then the pool's own words (spec §9.3).
  return (await d.dmkit('status', 'pool')).trim().split(' ').slice(3);
}

async function eventNr(name: string): Promise<number> {
  return Number(/^Event number: +(\d+)$/m.exec(await d.dmkit('info', name))![1]);
}

async function until(what: string, ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await ok()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('low water mark: dmkit wait wakes, status counts, log line', async () => {
  await d.dmkit('create', 'pooldata', '--table', `0 2048 linear ${extentA} 0`);
  await d.dmkit('create', 'pool', '--table', poolTable(2048));
  await d.dmkit('message', 'pool', '0', 'create_thin', '1');
  await d.dmkit('create', 'vol', '--table', '0 8192 thin /dev/mapper/pool 1');

  const waiting = d.cli(['wait', 'pool', String(await eventNr('pool'))]);
  // 12 of 16 blocks: 4 free, at the low water mark.
  await d.qemuIo('vol', 'write -P 0x11 0 768k', 'flush');
  const woke = await waiting;
  assert.deepEqual({ status: woke.status, stderr: woke.stderr }, { status: 0, stderr: '' });
  assert.equal((await poolStatus())[2], '12/16');
  assert.match(d.stderr(), /^dmkit: pool: warning: 253:1: reached low water mark for data device: sending event\.$/m);
});

test('a full pool queues writes until the data device grows and the pool is reloaded larger', async () => {
  const before = await eventNr('pool');
  // 8 blocks at 1 MiB: 4 fit, the rest wait for space (queue_if_no_space, 60 s timeout).
  const queued = h.qemuIoRun(d.uri('vol'), 'write -P 0x22 1M 512k', 'flush');
  await until('out_of_data_space', async () => (await poolStatus())[4] === 'out_of_data_space');
  assert.ok((await eventNr('pool')) > before, 'the mode switch raised an event');
  assert.match(d.stderr(), /^dmkit: pool: warning: 253:1: switching pool to out-of-data-space \(queue IO\) mode$/m);

  // LVM's lvextend: the data LV gains a second extent, then the pool table is reloaded with the new length.
  await d.dmkit('reload', 'pooldata', '--table', `0 2048 linear ${extentA} 0`, '--table', `2048 2048 linear ${extentB} 0`);
  await d.dmkit('resume', 'pooldata');
  await d.dmkit('reload', 'pool', '--table', poolTable(4096));
  await d.dmkit('resume', 'pool');

  const r = await queued;
  assert.equal(r.status, 0, r.stderr);
  assert.match(d.stderr(), /growing the data device from 16 to 32 blocks/);
  const status = await poolStatus();
  assert.deepEqual([status[2], status[4]], ['20/32', 'rw']);
  await d.qemuIo('vol', 'read -P 0x11 0 768k', 'read -P 0x22 1M 512k', 'read -P 0 768k 256k');
});

test('error_if_no_space: a write that needs a block fails with ENOSPC at once; mapped data still reads', async () => {
  await d.dmkit('reload', 'pool', '--table', poolTable(4096, '1 error_if_no_space'));
  await d.dmkit('resume', 'pool');
  // 12 free blocks: fill them, then one more block has nowhere to go.
  await d.qemuIo('vol', 'write -P 0x33 2M 768k', 'flush');
  const full = await h.qemuIoRun(d.uri('vol'), 'write -P 0x44 3M 64k');
  assert.match(full.stdout + full.stderr, /No space left on device/);
  const status = await poolStatus();
  assert.deepEqual([status[2], status[4], status[6]], ['32/32', 'out_of_data_space', 'error_if_no_space']);
  // Overwriting provisioned blocks needs no space.
  await d.qemuIo('vol', 'write -P 0x55 0 64k', 'flush', 'read -P 0x55 0 64k', 'read -P 0x11 64k 704k', 'read -P 0x33 2M 768k');
});
