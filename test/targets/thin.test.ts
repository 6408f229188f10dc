/**
 * thin-pool and thin through the mapper: constructor errors, table and
 * status lines and message replies exactly as Linux prints them
 * (spec/thin-metadata.md §9), provisioning, zeroing, sharing, discards,
 * extents, commits (status's included), a pool suspend holding its thin
 * devices, out-of-space and metadata-failure modes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { BlockDevice, WriteOptions } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { Scheduler, SimulatedDisk } from '../../src/sim/index.ts';
import { checkThinMetadata } from '../../src/tools/thin/check.ts';
import { ManualClock } from '../helpers/target-context.ts';
import { daemonStatus } from './support.ts';
import { ThinStack, pattern, readSectors } from './thin-support.ts';

const MiB = 2048; // sectors

async function rejects(p: Promise<unknown>, code: string, text: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IoError, String(err));
    assert.equal(err.code, code, err.message);
    if (typeof text === 'string') assert.ok(err.message.includes(text), `"${err.message}" lacks "${text}"`);
    else assert.match(err.message, text);
    return true;
  });
}

/** Mapped blocks of thin device `id` as the superblock on disk has them: the last commit. */
async function committedMapped(meta: BlockDevice, id: number): Promise<number> {
  const md = await ThinMetadata.open(meta, { readOnly: true });
  try {
    return (await md.deviceDetails(id))?.mappedBlocks ?? -1;
  } finally {
    await md.close();
  }
}

/** Lets queued callbacks and promise chains run. */
async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** Holds every write to `dev` until the returned release() is called; restore() puts the device back. */
function holdWrites(dev: Spy): { release: () => void; restore: () => void } {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const write = dev.write.bind(dev);
  dev.write = async (sec, buf, o) => {
    await held;
    return write(sec, buf, o);
  };
  return { release, restore: () => (dev.write = write) };
}

/** Counts what reaches a device. */
class Spy implements BlockDevice {
  writtenBytes = 0;
  discards: [number, number][] = [];
  constructor(readonly inner: BlockDevice) {}
  get name() { return this.inner.name; }
  get sectors() { return this.inner.sectors; }
  get limits() { return this.inner.limits; }
  read(s: number, b: Buffer) { return this.inner.read(s, b); }
  write(s: number, b: Buffer, o?: WriteOptions) { this.writtenBytes += b.length; return this.inner.write(s, b, o); }
  flush() { return this.inner.flush(); }
  discard(s: number, n: number) { this.discards.push([s, n]); return this.inner.discard(s, n); }
  writeZeroes(s: number, n: number) { this.writtenBytes += n * 512; return this.inner.writeZeroes(s, n); }
  close() { return this.inner.close(); }
}

describe('thin-pool constructor', () => {
  const cases: [string, string][] = [
    ['0 1024 thin-pool /meta /data 128', 'Invalid argument count'],
    ['0 1024 thin-pool /meta /meta 128 0', 'Error setting metadata or data device'],
    ['0 1024 thin-pool /meta /data 128 0 5 a b c d e', 'Invalid number of pool feature arguments'],
    ['0 1024 thin-pool /meta /data 128 0 2 read_only', 'Invalid number of pool feature arguments'],
    ['0 1024 thin-pool /meta /data 128 0 x', 'Invalid number of pool feature arguments'],
    ['0 1024 thin-pool /meta /data 128 0 1 bogus', 'Unrecognised pool feature requested'],
    ['0 1024 thin-pool /nope /data 128 0', 'Error opening metadata block device'],
    ['0 1024 thin-pool /meta /nope 128 0', 'Error getting data device'],
    ['0 1024 thin-pool /meta /data 64 0', 'Invalid block size'],
    ['0 1024 thin-pool /meta /data 129 0', 'Invalid block size'],
    ['0 1024 thin-pool /meta /data 2097280 0', 'Invalid block size'],
    ['0 1024 thin-pool /meta /data 12k 0', 'Invalid block size'],
    ['0 1024 thin-pool /meta /data 128 -1', 'Invalid low water mark'],
  ];
  for (const [line, text] of cases) {
    it(`refuses "${line.slice(7)}": ${text}`, async () => {
      const s = new ThinStack();
      try {
        await rejects(s.registry.create('pool', { table: [line] }), /bogus|nope/.test(line) && !line.includes('bogus') ? 'ENOENT' : 'EINVAL', `thin-pool: ${text} (`);
        assert.equal(s.registry.has('pool'), false);
      } finally {
        await s.close();
      }
    });
  }

  it('is a singleton target', async () => {
    const s = new ThinStack();
    try {
      await rejects(s.registry.create('pool', { table: ['0 1024 thin-pool /meta /data 128 0', '1024 1024 linear /data 0'] }), 'EINVAL', 'must appear alone in table');
    } finally {
      await s.close();
    }
  });

  it('accepts 384-sector blocks and features in any case and order; the table lists them in Linux order', async () => {
    const s = new ThinStack({ blockSectors: 384, features: ['ERROR_IF_NO_SPACE', 'skip_block_zeroing'] });
    try {
      await s.createPool();
      assert.equal(s.table(), '7:0 7:1 384 0 2 skip_block_zeroing error_if_no_space ');
      assert.match(s.status(), / rw discard_passdown error_if_no_space - \d+ $/);
    } finally {
      await s.close();
    }
  });

  it('refuses metadata of another block size, and unreadable metadata, with a clear log line', async () => {
    const meta = new MemoryDevice(8192);
    const first = await new ThinStack({ meta }).createPool();
    await first.close();
    const s = new ThinStack({ meta, blockSectors: 256 });
    try {
      await rejects(s.createPool(), 'EINVAL', 'thin-pool: Error creating metadata object (-EINVAL)');
      assert.ok(s.logs.some((l) => l.includes('changing the data block size (from 128 to 256) is not supported')), s.logs.join('\n'));
    } finally {
      await s.close();
    }
    const junk = new MemoryDevice(8192);
    await junk.write(0, Buffer.alloc(4096, 1));
    const t = new ThinStack({ meta: junk });
    try {
      await rejects(t.createPool(), 'EINVAL', 'Error creating metadata object');
    } finally {
      await t.close();
    }
  });

  it('refuses a pool table smaller than the metadata\'s data device', async () => {
    const meta = new MemoryDevice(8192);
    const data = new MemoryDevice(2048);
    await (await new ThinStack({ meta, data }).createPool()).close();
    const s = new ThinStack({ meta, data, poolSectors: 1024 });
    try {
      await rejects(s.createPool(), 'EINVAL', 'pool target (8 blocks) too small: expected 16');
    } finally {
      await s.close();
    }
  });

  it('grows into a larger metadata device at resume, and leaves out-of-metadata-space mode', async () => {
    const small = new MemoryDevice(256 * 8);
    const s = await new ThinStack({ meta: small }).createPool();
    let id = 0;
    while (!/ ro /.test(s.status()) && id < 1000) await s.message('create_thin', String(++id)).catch(() => undefined);
    assert.match(s.status(), / \d+\/256 .* ro /);
    await s.close();
    const big = new MemoryDevice(1024 * 8);
    await big.write(0, await readSectors(small, 0, 256 * 8));
    const t = await new ThinStack({ meta: big, data: s.data }).createPool();
    try {
      assert.match(t.status(), / \d+\/1024 .* rw /);
      assert.ok(t.logs.some((l) => l.includes('growing the metadata device from 256 to 1024 blocks')));
      await t.message('create_thin', '5000');
      assert.deepEqual((await checkThinMetadata(big)).errors, []);
    } finally {
      await t.close();
    }
  });

  it('read_only cannot format blank metadata', async () => {
    const s = new ThinStack({ features: ['read_only'] });
    try {
      await rejects(s.createPool(), 'EPERM', 'Error creating metadata object');
    } finally {
      await s.close();
    }
  });
});

describe('thin-pool status and messages', () => {
  it('prints Linux\'s worked example for a fresh 4 MiB / 1 GiB pool (spec §9.3)', async () => {
    const s = await new ThinStack({ metaSectors: 4 * MiB, dataSectors: 1024 * MiB }).createPool();
    try {
      assert.equal(s.status(), '0 112/1024 0/16384 - rw discard_passdown queue_if_no_space - 256 ');
      assert.equal(s.table(), '7:0 7:1 128 0 0 ');
    } finally {
      await s.close();
    }
  });

  it('a status commits first; --noflush, a suspended pool and a thin device\'s status do not (spec §9.3)', async () => {
    const s = await new ThinStack().createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      const status = (name: string, noflush: boolean) => daemonStatus(s.registry, name, { noflush });
      await v.write(0, pattern(1, 8));
      assert.match(await status('pool', true), /^0 \d+\/1024 1\/512 /, 'the figures count the new block');
      assert.equal(await committedMapped(s.meta, 1), 0, '--noflush: the mapping is not on disk');
      assert.match(await status('pool', false), /^0 \d+\/1024 1\/512 /);
      assert.equal(await committedMapped(s.meta, 1), 1, 'a plain status committed the mapping');
      await v.write(128, pattern(2, 8));
      assert.equal(await status('v', false), '256 255');
      assert.equal(await committedMapped(s.meta, 1), 1, 'thin_status does not commit');
      await s.registry.suspend('pool');
      await status('pool', false);
      assert.equal(await committedMapped(s.meta, 1), 2, 'the suspend committed');
      await s.registry.resume('pool');
    } finally {
      await s.close();
    }
  });

  it('a status whose commit fails prints what Linux then prints: ro and needs_check', async () => {
    const meta = new SimulatedDisk({ name: 'meta', sectors: 8192, scheduler: new Scheduler({ seed: 1 }) });
    const s = await new ThinStack({ meta }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 8));
      const fault = meta.addFault({ op: 'write', action: 'fail', nth: 1 });
      await s.registry.prepareStatus('pool');
      fault.remove();
      assert.match(s.status(), /^0 \d+\/1024 0\/512 - ro discard_passdown queue_if_no_space needs_check /);
      assert.ok(s.logs.some((l) => l.includes("metadata operation 'commit' failed")));
    } finally {
      await s.close();
    }
  });

  it('a status whose commit fails the pool prints Error, as Linux, and Fail after', async () => {
    const meta = new SimulatedDisk({ name: 'meta', sectors: 8192, scheduler: new Scheduler({ seed: 1 }) });
    const s = await new ThinStack({ meta }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 8));
      meta.addFault({ op: 'write', action: 'fail', sticky: true }); // NEEDS_CHECK cannot be written either
      await s.registry.prepareStatus('pool');
      assert.equal(s.status(), 'Error');
      await s.registry.prepareStatus('pool');
      assert.equal(s.status(), 'Fail');
    } finally {
      await s.close();
    }
  });

  it('answers each message as Linux does', async () => {
    const s = await new ThinStack().createPool();
    try {
      await s.message('create_thin', '1');
      await s.message('CREATE_THIN', '2');
      await rejects(s.message('create_thin', '1'), 'EEXIST', 'Creation of new thinly-provisioned device with id 1 failed.');
      await rejects(s.message('create_thin'), 'EINVAL', 'Message received with 1 arguments instead of 2.');
      await rejects(s.message('create_thin', 'x'), 'EINVAL', 'Message received with invalid device id: x');
      await rejects(s.message('create_thin', '16777216'), 'EINVAL', 'Message received with invalid device id: 16777216');
      await rejects(s.message('frobnicate'), 'EINVAL', 'Unrecognised thin pool target message received: frobnicate');
      await rejects(s.message('create_snap', '3', '9'), 'ENODATA', 'Creation of new snapshot 3 of device 9 failed.');
      await s.message('create_snap', '3', '1');
      await rejects(s.message('delete', '7'), 'ENODATA', 'Deletion of thin device 7 failed.');
      await s.volume('v2', 2, 1024, { existing: true });
      await rejects(s.message('delete', '2'), 'EBUSY', 'Deletion of thin device 2 failed.');
      await s.message('delete', '3');
      await s.message('set_transaction_id', '0', '5');
      await rejects(s.message('set_transaction_id', '0', '6'), 'EINVAL', 'error setting transaction id from 0 to 6');
      await rejects(s.message('set_transaction_id', 'a', '6'), 'EINVAL', 'set_transaction_id message: Unrecognised id a.');
      assert.match(s.status(), /^5 /);
      await s.message('reserve_metadata_snap');
      const held = s.status().split(' ')[3]!;
      assert.match(held, /^\d+$/);
      await rejects(s.message('reserve_metadata_snap'), 'EBUSY', 'Pool metadata snapshot already exists: release this before taking another.');
      await s.message('release_metadata_snap');
      assert.equal(s.status().split(' ')[3], '-');
      await rejects(s.message('release_metadata_snap'), 'EINVAL', 'No pool metadata snapshot found: nothing to release.');
      // Everything above was committed: a fresh open of the metadata sees it.
      const md = await ThinMetadata.open(s.meta, { readOnly: true });
      assert.deepEqual(await md.deviceIds(), [1, 2]);
      assert.equal(md.transactionId, 5);
      await md.close();
    } finally {
      await s.close();
    }
  });
});

describe('thin constructor, table and status', () => {
  it('refuses bad tables with Linux\'s texts', async () => {
    const s = await new ThinStack().createPool();
    try {
      await s.registry.create('lin', { table: ['0 1024 linear /data 0'] });
      await s.message('create_thin', '1');
      const cases: [string, string, string][] = [
        ['/dev/mapper/pool', 'EINVAL', 'Invalid argument count'],
        ['/dev/mapper/pool 1 /dev/mapper/pool', 'EINVAL', 'Error setting origin device'],
        ['/dev/mapper/pool 1 /nope', 'ENOENT', 'Error opening origin device'],
        ['/dev/mapper/none 1', 'ENOENT', 'Error opening pool device'],
        ['/dev/mapper/pool 16777216', 'EINVAL', 'Invalid device id'],
        ['/data 1', 'EINVAL', "Couldn't get pool mapped device"],
        ['/dev/mapper/lin 1', 'EINVAL', "Couldn't find pool object"],
        ['/dev/mapper/pool 2', 'ENODATA', "Couldn't open thin internal device"],
      ];
      for (const [args, code, text] of cases) await rejects(s.registry.create('t', { table: [`0 1024 thin ${args}`] }), code, `thin: ${text} (`);
      await s.registry.suspend('pool');
      await rejects(s.registry.create('t', { table: ['0 1024 thin 253:0 1'] }), 'EINVAL', 'Unable to activate thin device while pool is suspended');
      await s.registry.resume('pool');
    } finally {
      await s.close();
    }
  });

  it('reports mapped sectors and the highest mapped sector (spec §9.4 examples)', async () => {
    const s = await new ThinStack().createPool();
    try {
      const v = await s.volume('v', 1, 8 * MiB);
      assert.equal(s.table('v'), '253:0 1');
      assert.equal(s.status('v'), '0 -');
      await v.write(0, pattern(1, 1280));
      assert.equal(s.status('v'), '1280 1279');
      await v.write(20 * 128 + 5, pattern(2, 1));
      assert.equal(s.status('v'), '1408 2687');
      await v.close();
    } finally {
      await s.close();
    }
  });
});

describe('thin I/O', () => {
  /** A data device full of another volume's old bytes. */
  async function staleData(sectors: number): Promise<MemoryDevice> {
    const d = new MemoryDevice(sectors, { name: 'data' });
    await d.write(0, Buffer.alloc(sectors * 512, 0xee));
    return d;
  }

  it('zeroes the rest of a newly provisioned block; a full-block write is not zeroed first', async () => {
    const data = new Spy(await staleData(4 * MiB));
    const s = await new ThinStack({ data }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      assert.ok((await readSectors(v, 0, 256)).every((b) => b === 0), 'unprovisioned blocks read as zeroes');
      data.writtenBytes = 0;
      await v.write(10, pattern(1, 8));
      assert.equal(data.writtenBytes, 64 * 1024, 'one block written: the data and the zeroes around it');
      const block = await readSectors(v, 0, 128);
      assert.ok(block.subarray(0, 10 * 512).every((b) => b === 0));
      assert.deepEqual(block.subarray(10 * 512, 18 * 512), pattern(1, 8));
      assert.ok(block.subarray(18 * 512).every((b) => b === 0), 'no stale byte of the data device shows');
      data.writtenBytes = 0;
      await v.write(128, pattern(2, 128));
      assert.equal(data.writtenBytes, 64 * 1024, 'a full-block write is written once');
      data.writtenBytes = 0;
      await v.write(130, pattern(3, 4));
      assert.equal(data.writtenBytes, 4 * 512, 'a mapped block is written in place');
      await v.close();
    } finally {
      await s.close();
    }
  });

  it('skip_block_zeroing leaves the rest of a new block as the data device had it', async () => {
    const s = await new ThinStack({ data: await staleData(4 * MiB), features: ['skip_block_zeroing'] }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(10, pattern(1, 8));
      const block = await readSectors(v, 0, 128);
      assert.ok(block.subarray(0, 10 * 512).every((b) => b === 0xee));
      await v.close();
    } finally {
      await s.close();
    }
  });

  it('a snapshot keeps its data while the origin and the snapshot are written (copy on write)', async () => {
    const s = await new ThinStack().createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 256));
      await s.message('create_snap', '2', '1');
      const snap = await s.volume('snap', 2, 4 * MiB, { existing: true });
      assert.match(s.status(), / 2\/512 /);
      await v.write(4, pattern(2, 2));
      await snap.write(200, pattern(3, 1));
      assert.match(s.status(), / 4\/512 /, 'one new block each for the broken sharing');
      const o = await readSectors(v, 0, 256);
      const t = await readSectors(snap, 0, 256);
      const expectOrigin = pattern(1, 256);
      pattern(2, 2).copy(expectOrigin, 4 * 512);
      const expectSnap = pattern(1, 256);
      pattern(3, 1).copy(expectSnap, 200 * 512);
      assert.deepEqual(o, expectOrigin);
      assert.deepEqual(t, expectSnap);
      assert.equal(s.status('v'), '256 255');
      assert.equal(s.status('snap'), '256 255');
      await v.close();
      await snap.close();
    } finally {
      await s.close();
    }
  });

  it('create_snap quiesces an active origin: it waits for the origin\'s writes in flight', async () => {
    const data = new Spy(new MemoryDevice(4 * MiB, { name: 'data' }));
    const s = await new ThinStack({ data }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 128));
      const hold = holdWrites(data);
      const inflight = v.write(8, pattern(2, 8));
      await new Promise((r) => setImmediate(r));
      let snapped = false;
      const snap = s.message('create_snap', '2', '1').then(() => (snapped = true));
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal(snapped, false, 'create_snap waits for the write in flight');
      hold.release();
      await inflight;
      await snap;
      hold.restore();
      const snapVol = await s.volume('snap', 2, 4 * MiB, { existing: true });
      assert.deepEqual(await readSectors(snapVol, 8, 8), pattern(2, 8), 'the snapshot holds the write that was in flight');
      await v.write(8, pattern(3, 8));
      assert.deepEqual(await readSectors(snapVol, 8, 8), pattern(2, 8), 'and not the one after it');
    } finally {
      await s.close();
    }
  });

  it('reads an external origin where nothing is provisioned, and copies it into a new block', async () => {
    const s = await new ThinStack().createPool();
    const origin = new MemoryDevice(200, { name: 'origin' });
    await origin.write(0, pattern(9, 200));
    s.registry.attach('/origin', origin);
    try {
      const v = await s.volume('v', 1, 4 * MiB, { origin: '/origin' });
      assert.equal(s.table('v'), '253:0 1 7:2');
      assert.deepEqual(await readSectors(v, 0, 200), pattern(9, 200));
      assert.ok((await readSectors(v, 200, 56)).every((b) => b === 0), 'past the origin: zeroes');
      await v.write(150, pattern(4, 2));
      const expect = pattern(9, 200);
      pattern(4, 2).copy(expect, 150 * 512);
      assert.deepEqual(await readSectors(v, 0, 200), expect);
      assert.ok((await readSectors(v, 200, 56)).every((b) => b === 0));
      const ext = await v.extents!(0, 512);
      assert.deepEqual(ext.map((e) => [e.sector, e.count, e.hole]), [[0, 256, false], [256, 256, true]], 'origin-backed and provisioned blocks are data');
      await v.close();
    } finally {
      await s.close();
    }
  });

  it('discards whole blocks, passes them down after the commit, and reports holes in extents', async () => {
    const data = new Spy(new MemoryDevice(4 * MiB, { name: 'data' }));
    const s = await new ThinStack({ data }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 512));
      assert.deepEqual((await v.extents!(0, 1024)).map((e) => [e.sector, e.count, e.hole, e.zero]), [[0, 512, false, false], [512, 512, true, true]]);
      await v.discard(100, 200); // whole blocks 1 only (128..256)
      assert.equal(s.status('v'), '384 511');
      assert.deepEqual(data.discards, [[128, 128]]);
      assert.ok((await readSectors(v, 128, 128)).every((b) => b === 0));
      assert.deepEqual(await readSectors(v, 100, 28), pattern(1, 28, 100), 'the partial block is untouched');
      await v.discard(384, 128);
      assert.equal(s.status('v'), '256 383');
      const md = await ThinMetadata.open(s.meta, { readOnly: true });
      assert.equal((await md.deviceDetails(1))!.mappedBlocks, 2, 'the unmapping was committed before the passdown');
      await md.close();
      await v.close();
    } finally {
      await s.close();
    }
  });

  it('no_discard_passdown unmaps without discarding; ignore_discard has no discards', async () => {
    const data = new Spy(new MemoryDevice(4 * MiB, { name: 'data' }));
    const s = await new ThinStack({ data, features: ['no_discard_passdown'] }).createPool();
    try {
      assert.match(s.status(), / no_discard_passdown /);
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 128));
      await v.discard(0, 128);
      assert.equal(s.status('v'), '0 -');
      assert.deepEqual(data.discards, []);
      await v.close();
    } finally {
      await s.close();
    }
    const t = await new ThinStack({ features: ['ignore_discard'] }).createPool();
    try {
      assert.match(t.status(), / ignore_discard /);
      const v = await t.volume('v', 1, 4 * MiB);
      await rejects(v.discard(0, 128), 'EOPNOTSUPP', 'not supported');
      await v.close();
      await rejects(t.registry.load('pool', t.poolLine(undefined, [])), 'EINVAL', 'Discard support cannot be disabled once enabled');
    } finally {
      await t.close();
    }
  });

  it('write-zeroes unmaps whole blocks and zeroes partial ones', async () => {
    const s = await new ThinStack().createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 384));
      await v.writeZeroes(64, 256);
      assert.equal(s.status('v'), '256 383');
      const all = await readSectors(v, 0, 384);
      assert.deepEqual(all.subarray(0, 64 * 512), pattern(1, 64));
      assert.ok(all.subarray(64 * 512, 320 * 512).every((b) => b === 0));
      assert.deepEqual(all.subarray(320 * 512), pattern(1, 64, 320));
      await v.close();
    } finally {
      await s.close();
    }
  });
});

describe('thin durability', () => {
  it('commits on flush, on FUA and once a second; a reopened pool reads everything back', async () => {
    const clock = new ManualClock();
    const s = await new ThinStack({ clock }).createPool();
    const meta = s.meta;
    const data = s.data;
    const v = await s.volume('v', 1, 4 * MiB);
    await v.write(0, pattern(1, 8));
    assert.equal(await committedMapped(meta, 1), 0, 'not committed before a flush or the timer');
    await v.flush();
    assert.equal(await committedMapped(meta, 1), 1);
    await v.write(128, pattern(2, 8), { fua: true });
    assert.equal(await committedMapped(meta, 1), 2);
    await v.write(256, pattern(3, 8));
    clock.advance(1000);
    for (let i = 0; i < 50 && (await committedMapped(meta, 1)) !== 3; i++) await new Promise((r) => setImmediate(r));
    assert.equal(await committedMapped(meta, 1), 3, 'the 1-second commit ran');
    await v.close();
    await s.close();

    const again = await new ThinStack({ meta, data }).createPool();
    try {
      const w = await again.volume('v', 1, 4 * MiB, { existing: true });
      assert.deepEqual(await readSectors(w, 0, 8), pattern(1, 8));
      assert.deepEqual(await readSectors(w, 128, 8), pattern(2, 8));
      assert.deepEqual(await readSectors(w, 256, 8), pattern(3, 8));
      await w.close();
    } finally {
      await again.close();
    }
    const report = await checkThinMetadata(meta);
    assert.deepEqual([...report.errors, ...report.warnings], []);
  });
});

describe('thin devices while their pool is suspended (spec §9.7)', () => {
  it('holds their writes and reads, shows them active, and lets them go at the pool\'s resume', async () => {
    const data = new Spy(new MemoryDevice(4 * MiB, { name: 'data' }));
    const s = await new ThinStack({ data }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 128));
      await s.registry.suspend('pool');
      assert.equal(s.registry.info('v').suspended, false, 'info shows the thin device active, as Linux does');
      const written = data.writtenBytes;
      let done = 0;
      const io = [v.write(8, pattern(2, 8)), v.write(512, pattern(3, 8)), readSectors(v, 0, 8)].map((p) => p.then(() => done++));
      await turns();
      assert.equal(done, 0, 'held');
      assert.equal(data.writtenBytes, written, 'nothing reached the data device');
      await s.registry.resume('pool');
      await Promise.all(io);
      assert.deepEqual(await readSectors(v, 8, 8), pattern(2, 8));
      assert.deepEqual(await readSectors(v, 512, 8), pattern(3, 8));
      assert.equal(s.status('v'), '256 639');
    } finally {
      await s.close();
    }
  });

  it('a pool suspend waits for the thin I/O in flight; its commit maps what that I/O provisioned', async () => {
    const data = new Spy(new MemoryDevice(4 * MiB, { name: 'data' }));
    const s = await new ThinStack({ data }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 128));
      await v.flush();
      for (const [sector, tag] of [[8, 2], [256, 3]] as const) {
        // An overwrite of a mapped block, then a write that provisions block 2.
        const hold = holdWrites(data);
        const order: string[] = [];
        const write = v.write(sector, pattern(tag, 8)).then(() => order.push('write'));
        await turns();
        const suspend = s.registry.suspend('pool').then(() => order.push('suspend'));
        await turns();
        assert.deepEqual(order, [], 'the suspend waits for the write in flight');
        hold.release();
        await Promise.all([write, suspend]);
        hold.restore();
        assert.deepEqual(order, ['write', 'suspend']);
        await s.registry.resume('pool');
      }
      assert.equal(await committedMapped(s.meta, 1), 2, 'the commit at suspend saw the provisioning complete');
      assert.deepEqual(await readSectors(v, 256, 8), pattern(3, 8));
    } finally {
      await s.close();
    }
  });

  it('a thin device the user suspended stays suspended across the pool\'s suspend and resume, in either order', async () => {
    const s = await new ThinStack().createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      const heldWrite = async (): Promise<void> => {
        let done = false;
        const w = v.write(0, pattern(4, 8)).then(() => (done = true));
        await turns();
        assert.equal(done, false, 'held while the user has the device suspended');
        await s.registry.resume('v');
        await w;
      };
      await s.registry.suspend('v');
      await s.registry.suspend('pool');
      await s.registry.resume('pool');
      assert.equal(s.registry.info('v').suspended, true);
      await heldWrite();
      // Pool first: the user's suspend waits for the pool's resume (dm_suspend waits out an internal suspend).
      await s.registry.suspend('pool');
      let suspended = false;
      const userSuspend = s.registry.suspend('v').then(() => (suspended = true));
      await turns();
      assert.equal(suspended, false);
      await s.registry.resume('pool');
      await userSuspend;
      assert.equal(s.registry.info('v').suspended, true);
      await heldWrite();
      assert.equal(s.registry.info('v').suspended, false);
    } finally {
      await s.close();
    }
  });

  it('a thin device can be removed while its pool is suspended (removal does not wait for the pool)', async () => {
    const s = await new ThinStack().createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 8));
      await v.close();
      await s.registry.suspend('pool');
      await s.registry.remove('v');
      assert.equal(s.registry.has('v'), false);
      await s.registry.resume('pool');
      assert.match(s.status(), / rw /);
      await s.message('delete', '1'); // no longer active
      assert.equal(await committedMapped(s.meta, 1), -1);
    } finally {
      await s.close();
    }
  });
});

describe('thin out of space', () => {
  it('queues writes when the pool is full, raises the events, and resumes them when the data device grows', async () => {
    const s = await new ThinStack({ dataSectors: 8 * 128, poolSectors: 4 * 128, lowWater: 1 }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      const events = s.registry.info('pool').eventNr;
      for (let b = 0; b < 4; b++) await v.write(b * 128, pattern(b, 128));
      assert.ok(s.registry.info('pool').eventNr > events, 'low water event');
      assert.ok(s.logs.some((l) => l.includes('reached low water mark for data device: sending event.')));
      let done = false;
      const queued = v.write(4 * 128, pattern(4, 128)).then(() => (done = true));
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal(done, false, 'the write waits');
      assert.match(s.status(), / 4\/4 - out_of_data_space discard_passdown queue_if_no_space - /);
      // A noflush suspend of the volume hands the waiting write back; it waits again after the resume.
      await s.registry.suspend('v', { noflush: true });
      await s.registry.resume('v');
      await turns();
      assert.equal(done, false, 'reissued, the write waits again');
      // The reload suspends the pool, which holds the volume: the waiting write is handed back, then reissued.
      await s.registry.load('pool', s.poolLine(8 * 128));
      await s.registry.resume('pool');
      await queued;
      assert.match(s.status(), / 5\/8 - rw /);
      assert.ok(s.logs.some((l) => l.includes('growing the data device from 4 to 8 blocks')));
      assert.deepEqual(await readSectors(v, 4 * 128, 128), pattern(4, 128));
      await v.close();
    } finally {
      await s.close();
    }
  });

  it('error_if_no_space fails at once; queue_if_no_space fails after no_space_timeout', async () => {
    const s = await new ThinStack({ dataSectors: 2 * 128, features: ['error_if_no_space'] }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 256));
      await rejects(v.write(256, pattern(2, 8)), 'ENOSPC', 'no free data block');
      assert.match(s.status(), / out_of_data_space discard_passdown error_if_no_space /);
      await v.write(0, pattern(3, 8));
      await v.discard(0, 128);
      await v.flush();
      assert.match(s.status(), / rw /, 'a commit that frees blocks returns to write mode');
      await v.write(256, pattern(2, 8));
      await v.close();
    } finally {
      await s.close();
    }
    const clock = new ManualClock();
    const t = await new ThinStack({ dataSectors: 128, clock }).createPool();
    try {
      const v = await t.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 128));
      const queued = v.write(128, pattern(2, 8));
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      clock.advance(60_000);
      await rejects(queued, 'ENOSPC', 'no_space_timeout');
      assert.match(t.status(), / out_of_data_space discard_passdown error_if_no_space /);
      await v.close();
    } finally {
      await t.close();
    }
  });

  it('full metadata turns the pool read-only, never corrupt', async () => {
    const s = await new ThinStack({ metaSectors: 256 * 8 }).createPool();
    try {
      let id = 0;
      let refused: unknown;
      while (!refused && id < 1000) await s.message('create_thin', String(++id)).catch((err) => (refused = err));
      assert.ok(refused instanceof IoError, 'creating devices stopped');
      assert.match(s.status(), / ro /);
      assert.ok(s.logs.some((l) => l.includes('reached low water mark for metadata device: sending event.')));
      assert.ok(s.logs.some((l) => l.includes('switching pool to out-of-metadata-space mode')));
      await rejects(s.message('create_thin', '5000'), 'EOPNOTSUPP', 'unable to service pool target messages in READ_ONLY or FAIL mode');
      const report = await checkThinMetadata(s.meta);
      assert.deepEqual(report.errors, []);
    } finally {
      await s.close();
    }
  });
});

describe('thin-pool read_only', () => {
  it('opens the metadata read-only, serves mapped blocks, refuses provisioning, and a reload without it writes again', async () => {
    const first = await new ThinStack().createPool();
    const v = await first.volume('v', 1, 4 * MiB);
    await v.write(0, pattern(1, 128));
    await v.flush();
    await first.close();
    const s = await new ThinStack({ meta: first.meta, data: first.data, features: ['read_only'] }).createPool();
    try {
      assert.equal(s.table(), '7:0 7:1 128 0 1 read_only ');
      assert.match(s.status(), /^0 \d+\/1024 1\/512 - ro discard_passdown queue_if_no_space - 256 $/);
      const w = await s.volume('v', 1, 4 * MiB, { existing: true });
      assert.deepEqual(await readSectors(w, 0, 128), pattern(1, 128));
      await w.write(0, pattern(2, 8));
      await rejects(w.write(128, pattern(3, 8)), 'EIO', 'read-only');
      await w.discard(0, 128); // completes as a no-op
      assert.equal(s.status('v'), '128 127');
      await rejects(s.message('create_thin', '2'), 'EOPNOTSUPP', 'READ_ONLY or FAIL');
      await s.registry.load('pool', s.poolLine(undefined, []));
      await s.registry.resume('pool');
      assert.match(s.status(), / rw /);
      await w.write(128, pattern(3, 8));
      await w.flush();
      assert.equal(s.status('v'), '256 255');
    } finally {
      await s.close();
    }
  });
});

describe('thin metadata failures', () => {
  it('a failed commit aborts, sets needs_check, goes read-only, and the disk keeps the last commit', async () => {
    const meta = new SimulatedDisk({ name: 'meta', sectors: 8192, scheduler: new Scheduler({ seed: 1 }) });
    const s = await new ThinStack({ meta }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 128));
      await v.flush();
      await v.write(128, pattern(2, 8));
      const fault = meta.addFault({ op: 'write', action: 'fail', nth: 1 });
      await rejects(v.flush(), 'EIO', "metadata operation 'commit' failed");
      fault.remove();
      assert.match(s.status(), / ro discard_passdown queue_if_no_space needs_check /);
      assert.ok(s.logs.some((l) => l.includes('aborting current metadata transaction')));
      await rejects(v.flush(), 'EIO', 'lost by a metadata abort');
      await rejects(v.write(512, pattern(3, 8)), 'EIO', 'read-only');
      assert.deepEqual(await readSectors(v, 0, 128), pattern(1, 128), 'committed data still reads');
      assert.ok((await readSectors(v, 128, 8)).every((b) => b === 0), 'the aborted mapping is gone');
      await v.write(0, pattern(4, 8)); // a mapped, unshared block is still writable
      await rejects(s.message('create_thin', '2'), 'EOPNOTSUPP', 'READ_ONLY or FAIL');
      // The superblock on disk: the last commit, with NEEDS_CHECK.
      const md = await ThinMetadata.open(meta, { readOnly: true });
      assert.equal(md.superblock.flags & 1, 1);
      assert.equal((await md.deviceDetails(1))!.mappedBlocks, 1);
      await md.close();
      // Reloading without read_only does not return to write mode while NEEDS_CHECK is set.
      await s.registry.load('pool', s.poolLine());
      await s.registry.resume('pool');
      assert.match(s.status(), / ro /);
      assert.ok(s.logs.some((l) => l.includes('unable to switch pool to write mode until repaired.')));
      await v.close();
    } finally {
      await s.close();
    }
    // A new pool on that metadata starts read-only too (Linux's set_pool_mode refuses write mode).
    const again = await new ThinStack({ meta, data: s.data }).createPool();
    try {
      assert.match(again.status(), /^0 \d+\/1024 1\/512 - ro discard_passdown queue_if_no_space needs_check /);
      assert.ok(again.logs.some((l) => l.includes('unable to switch pool to write mode until repaired.')));
      const v = await again.volume('v', 1, 4 * MiB, { existing: true });
      assert.deepEqual(await readSectors(v, 8, 120), pattern(1, 128).subarray(8 * 512), 'the last commit reads');
      await rejects(v.write(512, pattern(3, 8)), 'EIO', 'read-only');
      await rejects(again.message('create_thin', '2'), 'EOPNOTSUPP', 'READ_ONLY or FAIL');
      await v.close();
    } finally {
      await again.close();
    }
  });

  it('when even NEEDS_CHECK cannot be written, the pool fails: status Fail, every request EIO', async () => {
    const meta = new SimulatedDisk({ name: 'meta', sectors: 8192, scheduler: new Scheduler({ seed: 1 }) });
    const s = await new ThinStack({ meta }).createPool();
    try {
      const v = await s.volume('v', 1, 4 * MiB);
      await v.write(0, pattern(1, 8));
      meta.addFault({ op: 'write', action: 'fail', sticky: true });
      await rejects(v.flush(), 'EIO', "metadata operation 'commit' failed");
      assert.equal(s.status(), 'Fail');
      assert.equal(s.status('v'), 'Fail');
      await rejects(readSectors(v, 0, 8), 'EIO', 'fail mode');
      await rejects(v.flush(), 'EIO', '');
      await rejects(s.message('create_thin', '2'), 'EOPNOTSUPP', 'READ_ONLY or FAIL');
      await rejects(s.registry.create('t2', { table: ['0 1024 thin /dev/mapper/pool 1'] }), 'EINVAL', "Couldn't open thin device, Pool is in fail mode");
    } finally {
      await s.close();
    }
  });

  it('a metadata block with a bad checksum makes the pool read-only with needs_check', async () => {
    const meta = new SimulatedDisk({ name: 'meta', sectors: 8192, scheduler: new Scheduler({ seed: 1 }) });
    const first = await new ThinStack({ meta }).createPool();
    const v = await first.volume('v', 1, 64 * MiB);
    for (let b = 0; b < 300; b++) await v.write(b * 128, pattern(b, 8));
    await v.close();
    await first.close();
    const s = await new ThinStack({ meta, data: first.data }).createPool();
    try {
      const w = await s.volume('v', 1, 64 * MiB, { existing: true });
      meta.addFault({ op: 'read', action: 'corrupt' });
      await rejects(readSectors(w, 0, 8), 'EIO', "metadata operation 'lookup' failed");
      assert.match(s.status(), / ro discard_passdown queue_if_no_space needs_check /);
      assert.ok(s.logs.some((l) => /metadata operation 'lookup' failed: error = -\d+/.test(l)), s.logs.join('\n'));
      assert.deepEqual(await readSectors(w, 128, 8), pattern(1, 8), 'reads go on from the reopened metadata');
      await w.close();
    } finally {
      await s.close();
    }
  });
});
