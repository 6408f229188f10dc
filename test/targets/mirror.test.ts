/**
 * mirror: constructor acceptance and refusal with Linux's texts (spec §2),
 * table and status lines byte for byte (§10), and the disk log's on-disk
 * images (§5) checked against an independent decoder and the spec's dumps.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';

import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { setBit } from '../../src/targets/mirror/bits.ts';
import { decodeHeader, encodeHeader, logBufferSize } from '../../src/targets/mirror/disk-log.ts';
import { checkHeader } from '../../src/targets/mirror/disk-log-validate.ts';
import { mirrorTarget } from '../../src/targets/mirror/mirror.ts';
import { splitArgs } from '../../src/mapper/args.ts';
import {
  LENGTH, construct, decodeLogImage, dmContext, fromXxd, readBytes, syncProgress, until,
} from './mirror-helpers.ts';

/** 254:0 is a 4 MiB log device, 254:1… legs of 64 MiB (+ 2048 sectors for an offset). */
function devices(legs = 3, logSectors = 8192): Record<string, MemoryDevice> {
  const out: Record<string, MemoryDevice> = { '254:0': new MemoryDevice(logSectors, { name: 'log' }) };
  for (let i = 1; i <= legs; i++) out[`254:${i}`] = new MemoryDevice(LENGTH + 2048, { name: `leg${i}` });
  return out;
}

async function refuses(args: string, message: string, opts: { length?: number; logSectors?: number; logWarning?: string } = {}): Promise<void> {
  const ctx = dmContext(devices(3, opts.logSectors), { length: opts.length });
  await assert.rejects(mirrorTarget.construct(ctx, splitArgs(args)), (err: unknown) => {
    assert.ok(err instanceof IoError, `expected IoError, got ${String(err)}`);
    assert.equal(err.message, message, args);
    return true;
  });
  if (opts.logWarning) assert.ok(ctx.warnings.includes(`dirty region log: ${opts.logWarning}`), ctx.warnings.join('\n'));
}

describe('mirror constructor (§2.2, §2.5)', () => {
  it('accepts the spec examples and prints them back exactly (§10.1)', async () => {
    const lines: [string, string][] = [
      ['core 1 1024 2 254:1 0 254:2 0', 'core 1 1024 2 254:1 0 254:2 0'],
      ['core 2 1024 nosync 2 254:1 0 254:2 0 1 handle_errors', 'core 2 1024 nosync 2 254:1 0 254:2 0 1 handle_errors'],
      ['disk 2 254:0 4096 2 254:1 0 254:2 0 1 handle_errors', 'disk 2 254:0 4096 2 254:1 0 254:2 0 1 handle_errors'],
      ['disk 3 254:0 1024 sync 3 254:1 0 254:2 2048 254:3 0 2 handle_errors keep_log',
        'disk 3 254:0 1024 sync 3 254:1 0 254:2 2048 254:3 0 2 handle_errors keep_log'],
      // %u wraps modulo 2^32, leading zeros are fine, repeated features print once, 0 features print none.
      ['core 1 4294968320 2 254:1 0 254:2 0', 'core 1 1024 2 254:1 0 254:2 0'],
      ['core 1 01024 2 254:1 00 254:2 0 2 handle_errors handle_errors', 'core 1 1024 2 254:1 0 254:2 0 1 handle_errors'],
      ['core 2 1024 sync 2 254:1 0 254:2 0 0', 'core 2 1024 sync 2 254:1 0 254:2 0'],
    ];
    for (const [args, table] of lines) {
      const m = await construct(dmContext(devices()), args);
      assert.equal(m.status('table'), table);
      assert.equal(m.maxIoSectors, Number(/ (\d+) (?:n?o?sync )?\d /.exec(table)![1]));
      await m.close();
    }
  });

  it('refuses with Linux texts, in Linux order', async () => {
    await refuses('core', 'Insufficient mirror log arguments');
    await refuses('core x 1024', 'Invalid mirror log argument count');
    await refuses('core -1 1024', 'Invalid mirror log argument count');
    await refuses('core 1', 'Insufficient mirror log arguments');
    await refuses('core 4294967295 1024 2 254:1 0 254:2 0', 'Insufficient mirror log arguments');
    await refuses('core 1 1000 2 254:1 0 254:2 0', 'Error creating mirror dirty log', { logWarning: 'invalid region size 1000' });
    await refuses('core 1 1 2 254:1 0 254:2 0', 'Error creating mirror dirty log', { logWarning: 'invalid region size 1' });
    await refuses('core 1 1024k 2 254:1 0 254:2 0', 'Error creating mirror dirty log', { logWarning: 'invalid region size 1024k' });
    await refuses('core 2 1024 Nosync 2 254:1 0 254:2 0', 'Error creating mirror dirty log', {
      logWarning: 'unrecognised sync argument to dirty region log: Nosync',
    });
    // The sync keyword is checked before the region size.
    await refuses('core 2 1000 bad 2 254:1 0 254:2 0', 'Error creating mirror dirty log', {
      logWarning: 'unrecognised sync argument to dirty region log: bad',
    });
    await refuses('core 1 262144 2 254:1 0 254:2 0', 'Error creating mirror dirty log');
    await refuses('core 3 1024 2 254:1 0 254:2 0', 'Error creating mirror dirty log', { logWarning: 'wrong number of arguments to dirty region log' });
    await refuses('disk 1 254:0 2 254:1 0 254:2 0', 'Error creating mirror dirty log', {
      logWarning: 'wrong number of arguments to disk dirty region log',
    });
    await refuses('disk 2 254:7 1024 2 254:1 0 254:2 0', 'Error creating mirror dirty log');
    await refuses('disk 2 254:0 1024 2 254:1 0 254:2 0', 'Error creating mirror dirty log', {
      logSectors: 2, logWarning: 'log device 254:0 too small: need 1536 bytes',
    });
    await refuses('userspace 4 a b c d 2 254:1 0 254:2 0', 'Error creating mirror dirty log', {
      logWarning: 'Module for logging type "userspace" not found.',
    });
    // More than 2^32 - 1 regions (6.1.176+).
    await refuses('core 1 2 2 254:1 0 254:2 0', 'Error creating mirror dirty log', {
      length: 2 ** 33 + 2, logWarning: 'region count exceeds limit of 4294967295',
    });
    await refuses('core 1 1024', 'Invalid number of mirrors');
    await refuses('core 1 1024 1 254:1 0', 'Invalid number of mirrors');
    await refuses('core 1 1024 10 254:1 0', 'Invalid number of mirrors');
    await refuses('core 1 1024 x 254:1 0', 'Invalid number of mirrors');
    await refuses('core 1 1024 2 254:1 0 254:2', 'Too few mirror arguments');
    await refuses('core 1 1024 2 254:1 x 254:2 0', 'Invalid offset');
    // Legs are processed one at a time: the first leg's device fails before the second offset is read.
    await refuses('core 1 1024 2 254:8 0 254:2 x', 'Device lookup failure');
    await refuses('core 1 1024 2 254:1 0 254:2 x', 'Invalid offset');
    await refuses('core 1 1024 2 254:1 0 254:2 0 junk', 'Invalid number of features');
    await refuses('core 1 1024 2 254:1 0 254:2 0 2 handle_errors', 'Not enough arguments to support feature count');
    await refuses('core 1 1024 2 254:1 0 254:2 0 1 Handle_errors', 'Unrecognised feature requested');
    await refuses('core 1 1024 2 254:1 0 254:2 0 1 keep_log', 'keep_log feature requires the handle_errors feature');
    await refuses('core 1 1024 2 254:1 0 254:2 0 0 junk', 'Too many mirror arguments');
    await refuses('core 1 1024 2 254:1 0 254:2 0 1 handle_errors junk', 'Too many mirror arguments');
  });

  it('refuses with EINVAL, and a leg lookup keeps its errno', async () => {
    const ctx = dmContext(devices());
    await assert.rejects(mirrorTarget.construct(ctx, splitArgs('core 1 1000 2 254:1 0 254:2 0')), { code: 'EINVAL' });
    await assert.rejects(mirrorTarget.construct(ctx, splitArgs('core 1 1024 2 254:1 0 254:8 0')), { code: 'ENXIO', message: 'Device lookup failure' });
  });

  it('does no I/O on the log device at construction; the legs are its areas', async () => {
    const devs = devices();
    const m = await construct(dmContext(devs), 'disk 2 254:0 1024 2 254:1 0 254:2 2048');
    assert.deepEqual(await readBytes(devs['254:0']!, 1536), Buffer.alloc(1536));
    assert.deepEqual(m.areas().map((a) => [a.ref.id, a.start, a.length]), [['254:1', 0, LENGTH], ['254:2', 2048, LENGTH]]);
    const limits = m.limits();
    assert.equal(limits.writeZeroes, false);
    assert.equal(limits.discard, true);
    await m.close();
  });
});

describe('mirror status (§10.2)', () => {
  it('core log: 0/N before and during resync, N/N and one event when in sync', async () => {
    const ctx = dmContext(devices());
    const m = await construct(ctx, 'core 1 1024 2 254:1 0 254:2 0');
    assert.equal(m.status('info'), '2 254:1 254:2 0/128 1 AA 1 core');
    await m.resume();
    await until(() => syncProgress(m.status('info')).inSync === 128, 'sync');
    assert.equal(m.status('info'), '2 254:1 254:2 128/128 1 AA 1 core');
    await until(() => ctx.events === 1, 'the in-sync event');
    // A core mirror suspended and resumed does not restart a finished resync.
    await m.presuspend({ noflush: false });
    await m.postsuspend();
    await m.resume();
    assert.equal(m.status('info'), '2 254:1 254:2 128/128 1 AA 1 core');
    await m.presuspend({ noflush: false });
    await m.close();
  });

  it('nosync is N/N at once; disk log over a zeroed device starts 0/N; three legs', async () => {
    const m1 = await construct(dmContext(devices()), 'core 2 1024 nosync 2 254:1 0 254:2 0 1 handle_errors');
    assert.equal(m1.status('info'), '2 254:1 254:2 128/128 1 AA 1 core');
    await m1.close();
    const devs = devices();
    const m2 = await construct(dmContext(devs), 'disk 2 254:0 1024 3 254:1 0 254:2 0 254:3 0');
    assert.equal(m2.status('info'), '3 254:1 254:2 254:3 0/128 1 AAA 3 disk 254:0 A');
    await m2.resume();
    await until(() => syncProgress(m2.status('info')).inSync === 128, 'sync');
    assert.equal(m2.status('info'), '3 254:1 254:2 254:3 128/128 1 AAA 3 disk 254:0 A');
    await m2.presuspend({ noflush: false });
    await m2.close();
  });
});

describe('the disk log on disk (§5)', () => {
  it('sizes the buffer from the region count and the log block size (§5.1 table)', () => {
    const rows: [number, number, number, number][] = [
      [131072, 1024, 1536, 4096], [131072, 4096, 1536, 4096], [102400, 1024, 1536, 4096],
      [131072, 8, 3072, 4096], [2 ** 31, 1024, 263168, 266240],
    ];
    for (const [length, r, b512, b4k] of rows) {
      assert.equal(logBufferSize(Math.ceil(length / r), 512), b512);
      assert.equal(logBufferSize(Math.ceil(length / r), 4096), b4k);
    }
  });

  it('encode/decode agree with an independent decoder of the layout table', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.uniqueArray(fc.integer({ min: 0, max: 511 }), { maxLength: 40 }),
      (magic, version, nrRegions, bits) => {
        const buf = Buffer.alloc(logBufferSize(512, 512), 0x5a);
        encodeHeader(buf, { magic, version, nrRegions });
        const bitmap = buf.subarray(1024, 1024 + 64);
        bitmap.fill(0);
        for (const b of bits) setBit(bitmap, b);
        const d = decodeLogImage(buf);
        assert.equal(d.magicOk, magic === 0x4d695272);
        assert.equal(d.version, version);
        assert.equal(d.nrRegions, nrRegions);
        for (let n = 0; n < 512; n++) assert.equal(d.clean(n), bits.includes(n));
        assert.deepEqual(decodeHeader(buf), { magic, version, nrRegions });
        // Bytes 16..1023 and the padding are not touched by encoding.
        assert.ok(buf.subarray(16, 1024).every((x) => x === 0x5a));
      },
    ));
  });

  it('validates headers as read_header does (§5.3, §5.4 steps 2–4)', () => {
    const good = { magic: 0x4d695272, version: 2, nrRegions: 7n };
    assert.deepEqual(checkHeader(good, 'default'), { ok: true, header: good });
    assert.deepEqual(checkHeader({ ...good, version: 1 }, 'default'), { ok: true, header: good });
    assert.deepEqual(checkHeader({ ...good, magic: 0 }, 'default'), { ok: true, header: { ...good, nrRegions: 0n } });
    assert.deepEqual(checkHeader(good, 'nosync'), { ok: true, header: { ...good, nrRegions: 0n } });
    const bad = checkHeader({ ...good, version: 3 }, 'default');
    assert.equal(bad.ok, false);
    assert.equal(bad.header.version, 3);
  });

  const EXAMPLE_A = `
00000000: 7252 694d 0200 0000 8000 0000 0000 0000  rRiM............
00000010: 0000 0000 0000 0000 0000 0000 0000 0000  ................
*
000005f0: 0000 0000 0000 0000 0000 0000 0000 0000  ................`;
  const EXAMPLE_B = `
00000000: 7252 694d 0200 0000 8000 0000 0000 0000  rRiM............
00000010: 0000 0000 0000 0000 0000 0000 0000 0000  ................
*
00000400: ffff ffff ffff ffff ffff ffff ffff ffff  ................
00000410: 0000 0000 0000 0000 0000 0000 0000 0000  ................
*
000005f0: 0000 0000 0000 0000 0000 0000 0000 0000  ................`;
  const EXAMPLE_E = `
00000000: 7252 694d 0200 0000 2000 0000 0000 0000  rRiM.... .......
00000010: ffff ffff ffff ffff ffff ffff ffff ffff  ................
*
00000400: ffff ffff 0000 0000 ffff ffff ffff ffff  ................
00000410: ffff ffff ffff ffff ffff ffff ffff ffff  ................
*
000005f0: ffff ffff ffff ffff ffff ffff ffff ffff  ................`;

  it('example A: first resume over a zeroed log; B: after the resync and suspend', async () => {
    const devs = devices();
    const ctx = dmContext(devs);
    const m = await construct(ctx, 'disk 2 254:0 1024 2 254:1 0 254:2 0');
    await m.resume();
    assert.deepEqual(await readBytes(devs['254:0']!, 1536), fromXxd(EXAMPLE_A, 1536));
    assert.equal(m.status('info'), '2 254:1 254:2 0/128 1 AA 3 disk 254:0 A');
    await until(() => syncProgress(m.status('info')).inSync === 128, 'sync');
    await m.presuspend({ noflush: false });
    await m.postsuspend();
    assert.deepEqual(await readBytes(devs['254:0']!, 1536), fromXxd(EXAMPLE_B, 1536));
    // Bytes past buf_size are never touched.
    assert.ok((await readBytes(devs['254:0']!, 4096)).subarray(1536).every((x) => x === 0));
    await m.close();
  });

  it('nosync writes example B at the first resume; sync forces 0/N at every resume', async () => {
    const devs = devices();
    const m = await construct(dmContext(devs), 'disk 3 254:0 1024 nosync 2 254:1 0 254:2 0');
    await m.resume();
    assert.deepEqual(await readBytes(devs['254:0']!, 1536), fromXxd(EXAMPLE_B, 1536));
    assert.equal(m.status('info'), '2 254:1 254:2 128/128 1 AA 3 disk 254:0 A');
    await m.presuspend({ noflush: false });
    await m.postsuspend();
    await m.close();
    const forced = await construct(dmContext(devs), 'disk 3 254:0 1024 sync 2 254:1 0 254:2 0');
    await forced.resume();
    assert.equal(syncProgress(forced.status('info')).inSync < 128, true);
    const d = decodeLogImage(await readBytes(devs['254:0']!, 1536));
    assert.equal(d.clean(127), false);
    await forced.presuspend({ noflush: false });
    await forced.close();
  });

  it('example C: regions with writes in flight have their bits cleared on disk before the legs see the write (R1)', async () => {
    const devs = devices();
    const m = await construct(dmContext(devs), 'disk 3 254:0 1024 nosync 2 254:1 0 254:2 0');
    await m.resume();
    const log = devs['254:0']!;
    // Leg writes stall: the bits must already be 0 on disk while they are in flight.
    const seen: Buffer[] = [];
    const leg1 = devs['254:1']!;
    const origWrite = leg1.write.bind(leg1);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    leg1.write = async (s, d, o) => {
      seen.push(await readBytes(log, 1536));
      await gate;
      return origWrite(s, d, o);
    };
    const w1 = m.write(5 * 1024, Buffer.alloc(4096, 1), {});
    const w2 = m.write(77 * 1024 + 8, Buffer.alloc(4096, 2), {});
    await until(() => seen.length === 2, 'both leg writes issued');
    const img = seen[1]!;
    assert.equal(img.subarray(0x400, 0x410).toString('hex'), 'dfffffffffffffffffdfffffffffffff');
    release();
    await Promise.all([w1, w2]);
    await m.presuspend({ noflush: false });
    await m.postsuspend();
    // Both regions became clean again once every leg completed them (and the legs were flushed).
    assert.deepEqual(await readBytes(log, 1536), fromXxd(EXAMPLE_B, 1536));
    await m.close();
  });

  it('example D: a 50 MiB mirror (100 regions) in sync', async () => {
    const devs = devices();
    const m = await construct(dmContext(devs, { length: 102400 }), 'disk 3 254:0 1024 nosync 2 254:1 0 254:2 0');
    await m.resume();
    const img = await readBytes(devs['254:0']!, 1536);
    assert.equal(img.subarray(8, 16).toString('hex'), '6400000000000000');
    assert.equal(img.subarray(0x400, 0x410).toString('hex'), 'ffffffffffffffffffffffff0f000000');
    await m.presuspend({ noflush: false });
    await m.close();
  });

  it('example E: an LVM --nosync log image is accepted, in sync at once, padding preserved', async () => {
    const devs = devices();
    const log = devs['254:0']!;
    const wipe = Buffer.alloc(4 * 1024 * 1024 / 2, 0xff);
    await log.write(0, wipe);
    await log.write(4096, wipe);
    await log.write(0, Buffer.concat([Buffer.from('7252694d02000000ffffffffffffffff', 'hex'), Buffer.alloc(496, 0xff)]));
    const ctx = dmContext(devs);
    const m = await construct(ctx, 'disk 2 254:0 4096 2 254:1 0 254:2 0');
    await m.resume();
    assert.equal(m.status('info'), '2 254:1 254:2 32/32 1 AA 3 disk 254:0 A');
    await m.presuspend({ noflush: false });
    await m.postsuspend();
    assert.deepEqual(await readBytes(log, 1536), fromXxd(EXAMPLE_E, 1536));
    await m.close();
  });

  it('a grown device: regions past the header count resync, the rest keep their bits (§14.4 iv)', async () => {
    const devs = devices();
    const log = devs['254:0']!;
    const img = Buffer.alloc(1536);
    img.write('7252694d020000004000000000000000', 0, 'hex');
    img.fill(0xff, 0x400, 0x408); // regions 0–63 clean
    await log.write(0, img);
    const m = await construct(dmContext(devs), 'disk 2 254:0 1024 2 254:1 0 254:2 0');
    await m.resume();
    assert.equal(syncProgress(m.status('info')).inSync >= 64, true);
    const after = decodeLogImage(await readBytes(log, 1536));
    assert.equal(after.nrRegions, 128n);
    await until(() => syncProgress(m.status('info')).inSync === 128, 'sync');
    await m.presuspend({ noflush: false });
    await m.close();
  });

  it('an unknown version fails the log (status D, one event), every region out of sync, version kept', async () => {
    const devs = devices();
    const log = devs['254:0']!;
    const img = Buffer.alloc(1536, 0xff);
    img.write('7252694d03000000', 0, 'hex');
    await log.write(0, img);
    const ctx = dmContext(devs);
    const m = await construct(ctx, 'disk 2 254:0 1024 2 254:1 0 254:2 0');
    await m.resume();
    assert.match(m.status('info'), /^2 254:1 254:2 \d+\/128 1 AA 3 disk 254:0 D$/);
    assert.ok(ctx.warnings.some((w) => w.includes('incompatible disk log version')));
    assert.equal(ctx.events, 1);
    const d = decodeLogImage(await readBytes(log, 1536));
    assert.equal(d.version, 3);
    assert.equal(d.clean(0), false);
    await m.presuspend({ noflush: false });
    await m.close();
  });
});
