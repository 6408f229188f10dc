/**
 * clone: constructor refusals, table and status texts, messages, the
 * metadata format and reopen rules, I/O routing, flush/FUA commits,
 * background hydration and the metadata failure modes (spec/clone.md).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MemoryDevice } from '../../src/block/memory-device.ts';
import { cloneTarget } from '../../src/targets/clone/clone.ts';
import { CloneMetadata } from '../../src/targets/clone/metadata.ts';
import { memoryRegistry } from '../helpers/registry.ts';
import { fakeContext } from '../helpers/target-context.ts';
import { cloneRig, readBack, settle, sourceData, statusWords } from './clone-support.ts';
import { assertIoError, assertRefused, daemonStatus, pattern } from './support.ts';

const GiB_SECTORS = 2097152;

function bigDevices(destSectors = GiB_SECTORS, sourceSectors = GiB_SECTORS, metaSectors = 8192) {
  return {
    '/m': new MemoryDevice(metaSectors, { name: 'meta' }),
    '/d': new MemoryDevice(destSectors, { name: 'dest' }),
    '/s': new MemoryDevice(sourceSectors, { name: 'src' }),
  };
}

describe('clone constructor', () => {
  const refusals: [string, string[], string, string, Record<string, number>?][] = [
    ['too few arguments', ['/m', '/d', '/s'], 'Invalid number of arguments', 'EINVAL'],
    ['missing metadata device', ['/x', '/d', '/s', '8'], 'Error opening metadata device', 'ENOENT'],
    ['missing destination', ['/m', '/x', '/s', '8'], 'Error opening destination device', 'ENOENT'],
    ['missing source', ['/m', '/d', '/x', '8'], 'Error opening source device', 'ENOENT'],
    ['region size not a number', ['/m', '/d', '/s', '0x8'], 'Invalid region size', 'EINVAL'],
    ['region size below 8', ['/m', '/d', '/s', '4'], 'Invalid region size', 'EINVAL'],
    ['region size above 2097152', ['/m', '/d', '/s', '4194304'], 'Invalid region size', 'EINVAL'],
    ['region size not a power of two', ['/m', '/d', '/s', '24'], 'Region size is not a power of 2', 'EINVAL'],
    ['feature count too high', ['/m', '/d', '/s', '8', '3', 'a', 'b', 'c'], 'Invalid number of feature arguments', 'EINVAL'],
    ['feature count past the end', ['/m', '/d', '/s', '8', '2', 'no_hydration'], 'Invalid number of feature arguments', 'EINVAL'],
    ['unknown feature', ['/m', '/d', '/s', '8', '1', 'yes_hydration'], 'Invalid feature argument', 'EINVAL'],
    ['core count too high', ['/m', '/d', '/s', '8', '0', '6', 'a', '1', 'b', '2', 'c', '3'], 'Invalid number of core arguments', 'EINVAL'],
    ['odd core count', ['/m', '/d', '/s', '8', '0', '1', 'hydration_threshold'], 'Number of core arguments must be even', 'EINVAL'],
    ['bad threshold', ['/m', '/d', '/s', '8', '0', '2', 'hydration_threshold', '-1'], "Invalid value for argument `hydration_threshold'", 'EINVAL'],
    ['bad batch size', ['/m', '/d', '/s', '8', '0', '2', 'hydration_batch_size', '4294967296'], "Invalid value for argument `hydration_batch_size'", 'EINVAL'],
    ['unknown core key', ['/m', '/d', '/s', '8', '0', '2', 'hydration_speed', '1'], 'Invalid core argument', 'EINVAL'],
  ];
  for (const [what, argv, message, code] of refusals) {
    it(`refuses ${what}: ${message}`, async () => {
      const ctx = fakeContext(bigDevices(8192, 8192), { length: 8192 });
      await assertRefused(cloneTarget, ctx, argv, message, code as 'EINVAL');
    });
  }

  it('refuses devices shorter than the target, in Linux order (destination first)', async () => {
    const both = fakeContext(bigDevices(4096, 4096), { length: 8192 });
    await assertRefused(cloneTarget, both, ['/m', '/d', '/s', '8'], 'Device size larger than destination device', 'EINVAL');
    const src = fakeContext(bigDevices(8192, 4096), { length: 8192 });
    await assertRefused(cloneTarget, src, ['/m', '/d', '/s', '8'], 'Device size larger than source device', 'EINVAL');
  });

  it('refuses a region size that is not a multiple of a device logical block size', async () => {
    const ctx = fakeContext({
      '/m': new MemoryDevice(8192), '/d': new MemoryDevice(8192, { limits: { logicalBlockSize: 4096 } }), '/s': new MemoryDevice(8192),
    }, { length: 8192 });
    await assertRefused(cloneTarget, ctx, ['/m', '/d', '/s', '4'], 'Invalid region size', 'EINVAL');
    const t = await cloneTarget.construct(ctx, ['/m', '/d', '/s', '8']);
    await t.close();
    const big = fakeContext({
      '/m': new MemoryDevice(8192), '/d': new MemoryDevice(8192), '/s': new MemoryDevice(8192, { limits: { logicalBlockSize: 8192 } }),
    }, { length: 8192 });
    await assertRefused(cloneTarget, big, ['/m', '/d', '/s', '8'], 'Region size is not a multiple of device logical block size', 'EINVAL');
  });

  it('refuses metadata whose region size or target size disagree, and never reformats it', async () => {
    const devs = bigDevices(8192, 8192);
    const t = await cloneTarget.construct(fakeContext(devs, { length: 8192 }), ['/m', '/d', '/s', '8', '1', 'no_hydration']);
    await t.write(0, pattern(8, 1), {});
    await t.flush();
    await t.close();
    const logs: string[] = [];
    const ctx = fakeContext(devs, { length: 4096 });
    const logged = { ...ctx, log: { info() {}, warn() {}, error: (m: string) => logs.push(m) } };
    await assertRefused(cloneTarget, logged, ['/m', '/d', '/s', '8'], 'Failed to load metadata', 'EINVAL');
    assert.match(logs[0]!, /^clone metadata: .*Region and\/or target size don't match the ones in metadata/);
    await assertRefused(cloneTarget, fakeContext(devs, { length: 8192 }), ['/m', '/d', '/s', '16'], 'Failed to load metadata', 'EINVAL');
    const again = await cloneTarget.construct(fakeContext(devs, { length: 8192 }), ['/m', '/d', '/s', '8', '1', 'no_hydration']);
    assert.equal(statusWords(again)[3], '1/1024', 'region 0 is still hydrated: the metadata was reopened');
    await again.close();
  });

  it('refuses corrupt metadata and an unknown version', async () => {
    const devs = bigDevices(8192, 8192);
    const t = await cloneTarget.construct(fakeContext(devs, { length: 8192 }), ['/m', '/d', '/s', '8']);
    await t.close();
    const sb = devs['/m'].peek(0, 4096);
    const bad = Buffer.from(sb);
    bad[100] ^= 1;
    await devs['/m'].write(0, bad);
    await assertRefused(cloneTarget, fakeContext(devs, { length: 8192 }), ['/m', '/d', '/s', '8'], 'Failed to load metadata', 'EILSEQ');
    await devs['/m'].write(0, sb);
    const md = await CloneMetadata.open(devs['/m'], { regionSize: 8, targetSize: 8192 });
    assert.equal(md.nrRegions, 1024);
    await md.close();
  });
});

describe('clone table and status texts', () => {
  it('prints Linux status for a fresh 1 GiB clone (spec §4.2) and echoes every argument from the region size on', async () => {
    const ctx = fakeContext(bigDevices(), { length: GiB_SECTORS });
    const t = await cloneTarget.construct(ctx, ['/m', '/d', '/s', '8', '1', 'no_hydration']);
    assert.equal(t.status('info'), '8 14/1024 8 0/262144 0 1 no_hydration 4 hydration_threshold 1 hydration_batch_size 1 rw');
    assert.equal(t.status('table'), '7:0 7:1 7:2 8 1 no_hydration');
    await t.close();
    const u = await cloneTarget.construct(ctx, ['/m', '/d', '/s', '8', '2', 'NO_HYDRATION', 'No_Discard_Passdown', '4',
      'hydration_threshold', '256', 'HYDRATION_BATCH_SIZE', '032', 'left', 'over']);
    assert.equal(u.status('info'),
      '8 14/1024 8 0/262144 0 2 no_hydration no_discard_passdown 4 hydration_threshold 256 hydration_batch_size 32 rw');
    assert.equal(u.status('table'), '7:0 7:1 7:2 8 2 NO_HYDRATION No_Discard_Passdown 4 hydration_threshold 256 HYDRATION_BATCH_SIZE 032 left over');
    await u.close();
  });

  it('lays out fresh metadata as Linux does (spec §11.7)', async () => {
    const devs = bigDevices();
    const t = await cloneTarget.construct(fakeContext(devs, { length: GiB_SECTORS }), ['/m', '/d', '/s', '8']);
    await t.close();
    const sb = devs['/m'].peek(0, 4096);
    assert.equal(sb.readUInt32LE(32), 0x8af27f64);
    assert.equal(sb.readUInt32LE(40), 1);
    assert.deepEqual([44, 52, 60, 68, 172, 180, 188].map((o) => sb.readUInt32LE(o)), [1024, 14, 1, 2, 8, GiB_SECTORS, 4]);
    assert.ok(sb.subarray(196).every((b) => b === 0));
    const index = devs['/m'].peek(4096, 4096);
    assert.deepEqual([index.readUInt32LE(16), index.readUInt32LE(24), index.readUInt32LE(28)], [3, 16306, 14]);
    const arrayBlock = devs['/m'].peek(5 * 4096, 4096);
    assert.deepEqual([arrayBlock.readUInt32LE(4), arrayBlock.readUInt32LE(8), arrayBlock.readUInt32LE(12), arrayBlock.readUInt32LE(16)], [509, 509, 8, 5]);
  });

  it('a short last region and a partial feature group', async () => {
    const ctx = fakeContext(bigDevices(10000, 10000), { length: 10000 });
    const t = await cloneTarget.construct(ctx, ['/m', '/d', '/s', '64', '0']);
    assert.equal(t.status('info'), '8 6/1024 64 0/157 0 0 4 hydration_threshold 1 hydration_batch_size 1 rw');
    assert.equal(t.status('table'), '7:0 7:1 7:2 64 0');
    await t.close();
  });

  it('turns discard passdown off, with Linux warning, when the destination has no discard', async () => {
    const warnings: string[] = [];
    const ctx = fakeContext({ '/m': new MemoryDevice(8192), '/d': new MemoryDevice(8192, { limits: { discard: false } }), '/s': new MemoryDevice(8192) }, { length: 8192 });
    const t = await cloneTarget.construct({ ...ctx, log: { info() {}, error() {}, warn: (m: string) => warnings.push(m) } }, ['/m', '/d', '/s', '8']);
    assert.equal(t.limits().discard, true);
    assert.deepEqual(warnings, ['Destination device (loop1) discard unsupported: Disabling discard passdown.']);
    assert.match(t.status('info'), / 1 no_discard_passdown 4 hydration_threshold/);
    await t.close();
  });
});

describe('clone messages', () => {
  it('change the status, never the table; bad messages are EINVAL', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '1', 'no_hydration']);
    const table = t.status('table');
    assert.equal(await t.message!(['enable_hydration', 'ignored']), undefined);
    assert.match(t.status('info'), / 0 4 hydration_threshold 1 /);
    await t.message!(['DISABLE_HYDRATION']);
    await t.message!(['hydration_threshold', '+16']);
    await t.message!(['Hydration_Batch_Size', '8']);
    assert.match(t.status('info'), / 1 no_hydration 4 hydration_threshold 16 hydration_batch_size 8 rw$/);
    assert.equal(t.status('table'), table);
    for (const bad of [[], ['hydration_threshold'], ['hydration_threshold', 'x'], ['hydration_batch_size', '1', '2'], ['frobnicate', '1']]) {
      await assertIoError(t.message!(bad), 'EINVAL');
    }
    await t.close();
  });
});

describe('clone I/O', () => {
  it('reads the source until a region is hydrated; a partial write copies its region first', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['16', '1', 'no_hydration']);
    assert.ok((await readBack(t, 0, 64)).equals(sourceData(0, 64)));
    assert.deepEqual(rig.dest.log, []);
    await t.write(20, pattern(2, 99), {});
    assert.deepEqual(rig.dest.log, ['write@16+16', 'write@20+2']);
    const want = sourceData(16, 16);
    pattern(2, 99).copy(want, 4 * 512);
    assert.ok((await readBack(t, 16, 16)).equals(want));
    assert.ok(rig.dest.peek(16 * 512, 16 * 512).equals(want));
    assert.equal(statusWords(t)[3], '1/256');
    await t.close();
  });

  it('a whole-region write is not copied; a discard marks whole regions and passes them down', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['16', '1', 'no_hydration']);
    await t.write(32, pattern(16, 5), {});
    assert.deepEqual(rig.dest.log, ['write@32+16']);
    await t.discard(40, 60);
    assert.deepEqual(rig.dest.log.slice(1), ['discard@48+48']);
    await t.discard(100, 8);
    assert.equal(rig.dest.log.length, 2, 'a discard inside one region does nothing');
    assert.equal(statusWords(t)[3], '4/256');
    assert.ok((await readBack(t, 32, 16)).equals(pattern(16, 5)));
    assert.ok((await readBack(t, 48, 48)).equals(Buffer.alloc(48 * 512)));
    assert.ok((await readBack(t, 96, 16)).equals(sourceData(96, 16)));
    await assertIoError(t.writeZeroes(0, 8, {}), 'EOPNOTSUPP');
    await t.close();
  });

  it('a flush commits (destination flushed first) and the bits survive reopening; FUA writes commit before completing', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '1', 'no_hydration']);
    await t.write(0, pattern(1, 1), {});
    rig.dest.log.length = 0;
    rig.meta.log.length = 0;
    await t.flush();
    assert.equal(rig.dest.log[0], 'flush');
    assert.deepEqual(rig.dest.log, ['flush'], 'the commit flushed the destination; the flush is not sent twice');
    assert.ok(rig.meta.log.length > 0);
    await t.flush();
    assert.deepEqual(rig.dest.log, ['flush', 'flush'], 'nothing changed: the flush goes to the destination');
    rig.meta.log.length = 0;
    await t.write(8, pattern(8, 2), { fua: true });
    assert.ok(rig.meta.log.includes('write@0+8'), 'the superblock was written before the FUA write completed');
    await t.close();
    const again = await rig.open(['8', '1', 'no_hydration']);
    assert.equal(statusWords(again)[3], '2/512');
    assert.ok((await readBack(again, 0, 16)).equals(Buffer.concat([pattern(1, 1), sourceData(1, 7), pattern(8, 2)])));
    await again.close();
  });

  it('writes to a region being hydrated wait for it; reads still go to the source', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['64', '1', 'no_hydration']);
    const a = t.write(0, pattern(1, 1), {});
    const b = t.write(1, pattern(1, 2), {});
    const r = readBack(t, 0, 64);
    await Promise.all([a, b]);
    const copies = rig.dest.log.filter((l) => l === 'write@0+64');
    assert.equal(copies.length, 1, 'one copy serves both writes');
    assert.ok((await r).equals(sourceData(0, 64)));
    const want = sourceData(0, 64);
    pattern(1, 1).copy(want, 0);
    pattern(1, 2).copy(want, 512);
    assert.ok((await readBack(t, 0, 64)).equals(want));
    await t.close();
  });
});

describe('clone background hydration', () => {
  it('hydrates in batches once resumed, commits every second, and raises an event when done', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '0', '4', 'hydration_threshold', '4', 'hydration_batch_size', '4']);
    await settle();
    assert.equal(rig.dest.log.length, 0, 'nothing is copied before the first resume');
    await t.resume!();
    await settle(200);
    assert.equal(statusWords(t)[3], '512/512');
    const copies = rig.dest.log.filter((l) => l.startsWith('write@'));
    assert.ok(copies.every((l) => l.endsWith('+32')), `batches of 4 adjacent regions: ${copies.slice(0, 4).join(' ')}`);
    assert.equal(rig.ctx.events, 0);
    rig.clock.advance(1000);
    await settle();
    assert.equal(rig.ctx.events, 1, 'the commit that finds every region hydrated raises an event');
    assert.ok(rig.dest.peek(0, 4096 * 512).equals(sourceData(0, 4096)));
    assert.match(t.status('info'), / 512\/512 0 0 4 /);
    await t.presuspend!({ noflush: false });
    await t.postsuspend!({ noflush: false });
    await t.close();
  });

  it('disable_hydration pauses it, threshold 0 never starts it, and user I/O is served first', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '0', '2', 'hydration_threshold', '0']);
    await t.resume!();
    await settle(50);
    assert.equal(statusWords(t)[3], '0/512');
    await t.message!(['disable_hydration']);
    await t.message!(['hydration_threshold', '2']);
    await settle(50);
    assert.equal(statusWords(t)[3], '0/512');
    await t.message!(['enable_hydration']);
    await settle(400);
    assert.equal(statusWords(t)[3], '512/512');
    await t.presuspend!({ noflush: false });
    await t.postsuspend!({ noflush: false });
    await t.close();
  });

  it('a status request commits first, --noflush does not; suspend waits for copies and commits', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '1', 'no_hydration']);
    await t.resume!();
    await t.write(0, pattern(1, 1), {});
    rig.meta.log.length = 0;
    t.status('info'); // what --noflush runs
    await settle();
    assert.ok(!rig.meta.log.includes('write@0+8'), 'no superblock for a --noflush status');
    await t.prepareStatus!();
    assert.ok(rig.meta.log.includes('write@0+8'), 'the superblock was written before the status');
    await t.write(64, pattern(1, 1), {});
    rig.meta.log.length = 0;
    await t.presuspend!({ noflush: false });
    await t.postsuspend!({ noflush: false });
    assert.ok(rig.meta.log.includes('write@0+8'));
    await t.close();
  });
});

describe('clone status through the mapper', () => {
  it('a plain status commits the hydrated regions to disk first; --noflush does not (clone_status)', async () => {
    const { registry, disks } = memoryRegistry([cloneTarget], { '/dev/meta': 8192, '/dev/dest': 4096, '/dev/source': 4096 });
    await registry.create('cl', { table: ['0 4096 clone /dev/meta /dev/dest /dev/source 8 1 no_hydration'] });
    const hydrated = async (noflush: boolean): Promise<string> => (await daemonStatus(registry, 'cl', { noflush })).split(' ')[3]!;
    const onDisk = async (): Promise<number> => {
      const md = await CloneMetadata.open(disks['/dev/meta']!, { regionSize: 8, targetSize: 4096, readOnly: true });
      try {
        return md.nrHydrated;
      } finally {
        await md.close();
      }
    };
    const dev = registry.open('cl');
    try {
      await dev.write(0, pattern(1, 1));
      assert.equal(await hydrated(true), '1/512', 'the in-core count');
      assert.equal(await onDisk(), 0, '--noflush: the region is not committed');
      assert.equal(await hydrated(false), '1/512');
      assert.equal(await onDisk(), 1, 'a plain status committed it');
    } finally {
      await dev.close();
      await registry.shutdown();
    }
  });
});

describe('clone metadata failures', () => {
  it('a failed commit switches to read-only, reverts uncommitted regions to the source and keeps the last commit', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '1', 'no_hydration']);
    await t.resume!();
    await t.write(0, pattern(1, 1), {});
    await t.flush();
    await t.write(8, pattern(1, 2), {});
    rig.meta.failing.add('write');
    await assertIoError(t.flush(), 'EIO');
    rig.meta.failing.clear();
    assert.match(t.status('info'), / 1\/512 0 1 no_hydration 4 hydration_threshold 1 hydration_batch_size 1 ro$/);
    assert.equal(rig.ctx.events, 1, 'the mode change raised an event');
    assert.ok((await readBack(t, 0, 16)).equals(Buffer.concat([pattern(1, 1), sourceData(1, 15)])));
    await assertIoError(t.write(16, pattern(1, 3), {}), 'EIO');
    await t.write(1, pattern(1, 4), {});
    await assertIoError(t.flush(), 'EIO');
    await assertIoError(t.write(2, pattern(1, 4), { fua: true }), 'EIO');
    await t.discard(16, 8);
    assert.equal(statusWords(t)[3], '1/512');
    await t.close();
    const again = await rig.open(['8', '1', 'no_hydration']);
    assert.match(again.status('info'), / 1\/512 .* rw$/);
    await again.close();
  });

  it('a failed abort is fail mode: status Fail and every request fails', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '1', 'no_hydration']);
    await t.write(0, pattern(1, 1), {});
    rig.meta.failing.add('write');
    rig.meta.failing.add('read');
    await assertIoError(t.flush(), 'EIO');
    assert.equal(t.status('info'), 'Fail');
    await assertIoError(t.read(0, Buffer.alloc(512)), 'EIO');
    await assertIoError(t.write(0, Buffer.alloc(512), {}), 'EIO');
    await t.close();
  });

  it('a failed destination flush also aborts the commit', async () => {
    const rig = await cloneRig(4096);
    const t = await rig.open(['8', '1', 'no_hydration']);
    await t.write(0, pattern(1, 1), {});
    rig.meta.log.length = 0;
    rig.dest.failing.add('flush');
    await assertIoError(t.flush(), 'EIO');
    assert.ok(!rig.meta.log.includes('write@0+8'), 'no superblock after a failed destination flush (R1)');
    assert.match(t.status('info'), / ro$/);
    await t.close();
  });
});
