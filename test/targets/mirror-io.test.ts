/**
 * mirror I/O paths on traced memory devices (spec §7, §8, §11): the log is
 * marked and flushed before legs are written (R1/R3), cleaned only after a
 * leg flush, never cleaned by user I/O on an out-of-sync region (R4, the seed
 * bug), reads only from legs in sync, leg and log failures as Linux handles
 * them, flush/FUA/discard fan-out, and resync that yields to user I/O, stops
 * at suspend and resumes from the log.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { IoError } from '../../src/block/errors.ts';
import type { MirrorOptions, MirrorSet } from '../../src/targets/mirror/mirror.ts';
import { ManualClock } from '../helpers/target-context.ts';
import { TraceDevice, construct, decodeLogImage, dmContext, readBytes, syncProgress, turns, until } from './mirror-helpers.ts';

/** 8 MiB mirror of 128 regions of 64 KiB. */
const LEN = 16384;
const R = 128;

interface Rig {
  trace: string[];
  log: TraceDevice;
  legs: TraceDevice[];
  ctx: ReturnType<typeof dmContext>;
  clock: ManualClock;
  m: MirrorSet;
  /** Builds another mirror over the same devices (a reload or a restart). */
  again(args?: string, opts?: MirrorOptions): Promise<MirrorSet>;
}

async function fill(dev: TraceDevice, byte: number): Promise<void> {
  for (let s = 0; s < LEN; s += 4096) await dev.write(s, Buffer.alloc(4096 * 512, byte));
}

async function rig(args: string, opts: MirrorOptions & { legs?: number; differ?: boolean } = {}): Promise<Rig> {
  const trace: string[] = [];
  const log = new TraceDevice(64, 'log', trace);
  const legs = Array.from({ length: opts.legs ?? 2 }, (_, i) => new TraceDevice(LEN, `leg${i}`, trace));
  if (opts.differ) for (const [i, leg] of legs.entries()) await fill(leg, 0xaa + 0x11 * i);
  trace.length = 0;
  const devs = Object.fromEntries([['254:0', log], ...legs.map((l, i) => [`254:${i + 1}`, l])]);
  const clock = new ManualClock();
  const ctx = dmContext(devs, { length: LEN, clock });
  const m = await construct(ctx, args, opts);
  return { trace, log, legs, ctx, clock, m, again: (a = args, o = opts) => construct(ctx, a, o) };
}

const legArgs = (n: number) => `${n} ${Array.from({ length: n }, (_, i) => `254:${i + 1} 0`).join(' ')}`;

async function suspend(m: MirrorSet): Promise<void> {
  await m.presuspend({ noflush: false });
  await m.postsuspend();
}

async function bytesAt(dev: TraceDevice, sector: number, count: number): Promise<Buffer> {
  return readBytes(dev, count * 512, sector);
}

const isCode = (code: string) => (err: unknown) => err instanceof IoError && err.code === code;

describe('mirror write ordering (§11.2)', () => {
  it('marks and flushes the log before any leg write; cleans only after every leg was flushed (R1, R3, rule 3)', async () => {
    const { m, trace, log } = await rig(`disk 3 254:0 ${R} nosync ${legArgs(2)}`);
    await m.resume();
    await turns(); // the first pass writes what resume touched (§4: touched flags are per log)
    trace.length = 0;
    await m.write(3 * R + 8, Buffer.alloc(4096, 7), {});
    const firstLeg = trace.findIndex((t) => /^submit leg\d write/.test(t));
    const logWrite = trace.indexOf('done log write@0+3');
    const logFlush = trace.indexOf('done log flush');
    assert.ok(logWrite >= 0 && logFlush > logWrite && firstLeg > logFlush, trace.join('\n'));
    // The region's bit is 0 on disk while the write is in flight and afterwards, until cleaned.
    await until(() => trace.filter((t) => t === 'done log write@0+3').length === 2, 'the clean write');
    const cleanWrite = trace.lastIndexOf('submit log write@0+3');
    for (const leg of ['leg0', 'leg1']) assert.ok(trace.indexOf(`done ${leg} flush`) < cleanWrite, trace.join('\n'));
    // The clean mark is lazy: no log flush after it.
    assert.equal(trace.slice(cleanWrite).includes('submit log flush'), false, trace.slice(cleanWrite).join('\n'));
    assert.equal(decodeLogImage(await readBytes(log, 1536)).clean(3), true);
    await suspend(m);
    await m.close();
  });

  it('FLUSH reaches every leg; FUA reaches every leg written (R6)', async () => {
    const { m, trace } = await rig(`core 2 ${R} nosync ${legArgs(3)}`, { legs: 3 });
    await m.resume();
    trace.length = 0;
    await m.write(8, Buffer.alloc(512), { fua: true });
    await m.flush();
    for (const leg of ['leg0', 'leg1', 'leg2']) {
      assert.ok(trace.includes(`done ${leg} write@8+1 fua`), trace.join('\n'));
      assert.ok(trace.includes(`done ${leg} flush`), trace.join('\n'));
    }
    await suspend(m);
    await m.close();
  });

  it('discards go to every leg uncounted; a failed discard is EOPNOTSUPP and fails no leg', async () => {
    const { m, trace, legs } = await rig(`disk 3 254:0 ${R} nosync ${legArgs(2)} 1 handle_errors`);
    await m.resume();
    await turns();
    trace.length = 0;
    await m.discard(0, 3 * R);
    assert.deepEqual(trace.filter((t) => t.startsWith('submit')), ['submit leg0 discard@0+384', 'submit leg1 discard@0+384']);
    legs[1]!.failing.add('discard');
    await assert.rejects(m.discard(0, 8), isCode('EOPNOTSUPP'));
    assert.equal(m.status('info'), '2 254:1 254:2 128/128 1 AA 3 disk 254:0 A');
    await suspend(m);
    await m.close();
  });
});

describe('the seed bug: interrupted recovery must not mark regions in sync (§11.4, R4)', () => {
  async function scenario(opts: MirrorOptions) {
    const r = await rig(`disk 2 254:0 ${R} ${legArgs(2)}`, { ...opts, differ: true });
    await r.m.resume();
    // User I/O right away: the throttled resync waits on the (manual) clock and does not reach region 100.
    const at = 100 * R;
    await r.m.write(at, Buffer.alloc(4096, 0xcc), {});
    await r.m.flush();
    await turns(50);
    await suspend(r.m);
    const onDisk = decodeLogImage(await readBytes(r.log, 1536));
    const status = r.m.status('info');
    await r.m.close();
    return { ...r, at, onDisk, status };
  }

  it('the fixed region hash keeps region 100 out of sync; the restarted resync copies it', async () => {
    const r = await scenario({});
    assert.equal(r.onDisk.clean(100), false);
    assert.equal(syncProgress(r.status).inSync < 100, true, r.status);
    // Restart from the log: region 100 is resynchronised from leg 0.
    const m = await r.again();
    await m.resume();
    await until(() => syncProgress(m.status('info')).inSync === 128, 'sync after restart');
    const want = Buffer.concat([Buffer.alloc(4096, 0xcc), Buffer.alloc(R * 512 - 4096, 0xaa)]);
    for (const leg of r.legs) assert.deepEqual(await bytesAt(leg, r.at, R), want);
    await suspend(m);
    await m.close();
  });

  it('the deliberately broken variant (RH_NOSYNC → CLEAN on I/O end) sets the bit and leaves the legs different', async () => {
    const r = await scenario({ seedBug: true });
    assert.equal(r.onDisk.clean(100), true);
    const m = await r.again();
    await m.resume();
    await until(() => syncProgress(m.status('info')).inSync === 128, 'sync after restart');
    assert.notDeepEqual(await bytesAt(r.legs[0]!, r.at, R), await bytesAt(r.legs[1]!, r.at, R));
    await suspend(m);
    await m.close();
  });
});

describe('mirror reads (§7.3)', () => {
  it('reads an out-of-sync region from the primary only', async () => {
    const { m, trace } = await rig(`core 1 ${R} ${legArgs(2)}`, { differ: true });
    await m.resume();
    const buf = Buffer.alloc(4096);
    await m.read(90 * R, buf);
    assert.ok(buf.every((b) => b === 0xaa));
    assert.equal(trace.some((t) => t.startsWith('submit leg1 read')), false);
    await m.presuspend({ noflush: false });
    await m.close();
  });

  it('a read error on the default leg of an in-sync mirror retries on the other, fails the leg (R) and switches the default', async () => {
    const { m, legs, trace, ctx } = await rig(`core 2 ${R} nosync ${legArgs(2)} 1 handle_errors`, { differ: true });
    await m.resume();
    await turns();
    legs[0]!.failing.add('read');
    const events = ctx.events;
    const buf = Buffer.alloc(4096);
    await m.read(8, buf);
    assert.ok(buf.every((b) => b === 0xbb), 'served by leg 1');
    assert.equal(m.status('info'), '2 254:1 254:2 128/128 1 RA 1 core');
    assert.equal(ctx.events, events + 1);
    trace.length = 0;
    await m.read(16, buf);
    assert.deepEqual(trace.filter((t) => t.startsWith('submit')), ['submit leg1 read@16+8']);
    await m.presuspend({ noflush: false });
    await m.close();
  });

  it('fails a read with EIO when no leg can serve it', async () => {
    const { m, legs } = await rig(`core 2 ${R} nosync ${legArgs(2)} 1 handle_errors`);
    await m.resume();
    for (const leg of legs) leg.failing.add('read');
    await assert.rejects(m.read(0, Buffer.alloc(512)), isCode('EIO'));
    await m.presuspend({ noflush: false });
    await m.close();
  });
});

describe('mirror write failures (§2.4, §7.6)', () => {
  const inSyncRig = async (features: string) => {
    const r = await rig(`disk 3 254:0 ${R} nosync ${legArgs(2)}${features}`);
    await r.m.resume();
    await turns();
    const base = r.ctx.events;
    r.legs[1]!.failing.add('write');
    // The fake context counts the construction's in-sync event, which a real table drops (spec §12 #15).
    return { ...r, events: () => r.ctx.events - base };
  };

  it('handle_errors: leg D, region out of sync, one event, the write held until suspend (then EIO)', async () => {
    const { m, events } = await inSyncRig(' 1 handle_errors');
    let settled: string | undefined;
    const w = m.write(0, Buffer.alloc(512, 1), {}).then(() => (settled = 'ok'), (e: IoError) => (settled = e.code));
    await turns(50);
    assert.equal(settled, undefined, 'the write is held');
    assert.equal(m.status('info'), '2 254:1 254:2 127/128 1 AD 3 disk 254:0 A');
    assert.equal(events(), 1);
    await m.presuspend({ noflush: false });
    await w;
    assert.equal(settled, 'EIO');
    await m.postsuspend();
    await m.close();
  });

  it('keep_log: the write succeeds, leg D, region out of sync; no features: succeeds without an event', async () => {
    for (const [features, events] of [[' 2 handle_errors keep_log', 1], ['', 0]] as const) {
      const { m, events: seen, legs, log } = await inSyncRig(features);
      await m.write(0, Buffer.alloc(512, 1), {});
      assert.equal(m.status('info'), '2 254:1 254:2 127/128 1 AD 3 disk 254:0 A');
      assert.equal(seen(), events);
      assert.deepEqual(await bytesAt(legs[0]!, 0, 1), Buffer.alloc(512, 1));
      // Later writes to the now out-of-sync region go to the primary only.
      await m.write(1, Buffer.alloc(512, 2), {});
      await suspend(m);
      assert.equal(decodeLogImage(await readBytes(log, 1536)).clean(0), false, 'never cleaned without a resync');
      await m.close();
    }
  });

  it('a write that failed on every leg is EIO in every mode', async () => {
    for (const features of ['', ' 1 handle_errors', ' 2 handle_errors keep_log']) {
      const { m, legs } = await inSyncRig(features);
      legs[0]!.failing.add('write');
      await assert.rejects(m.write(0, Buffer.alloc(512), {}), isCode('EIO'));
      await m.presuspend({ noflush: false });
      await m.close();
    }
  });

  it('a log-triggered leg flush failure: leg F, every clean bit cleared, nothing becomes clean again (rule 4)', async () => {
    const { m, legs, log } = await inSyncRig('');
    legs[1]!.failing.delete('write');
    legs[1]!.failing.add('flush');
    await m.write(0, Buffer.alloc(512), {});
    await until(() => m.status('info').includes(' AF '), 'the flush failure');
    await m.write(5 * R, Buffer.alloc(512), {});
    await suspend(m);
    const d = decodeLogImage(await readBytes(log, 1536));
    assert.equal([...Array(128).keys()].some((r) => d.clean(r)), false);
    await m.close();
  });

  it('a log write failure: log D, one event; handle_errors holds writes, keep_log fails them', async () => {
    for (const [features, want] of [[' 1 handle_errors', 'held'], [' 2 handle_errors keep_log', 'EIO']] as const) {
      const { m, log, events, legs } = await inSyncRig(features);
      legs[1]!.failing.delete('write');
      log.failing.add('write');
      let settled = 'held';
      const w = m.write(7 * R, Buffer.alloc(512), {}).then(() => (settled = 'ok'), (e: IoError) => (settled = e.code));
      await turns(50);
      assert.equal(settled, want);
      assert.match(m.status('info'), / 3 disk 254:0 D$/);
      assert.equal(events(), 1);
      // Rule 9: the unmarked write never reached a leg.
      assert.deepEqual(await bytesAt(legs[1]!, 7 * R, 1), Buffer.alloc(512));
      await m.presuspend({ noflush: false });
      await w;
      await m.close();
    }
  });
});

describe('mirror resync (§8)', () => {
  it('a failed resync write with handle_errors: leg S, count stays short, clean bit 0', async () => {
    const { m, legs, log } = await rig(`disk 2 254:0 ${R} ${legArgs(2)} 1 handle_errors`);
    legs[1]!.failing.add('write');
    legs[1]!.failRange = { sector: 5 * R, count: R };
    await m.resume();
    await until(() => /AS/.test(m.status('info')) && syncProgress(m.status('info')).inSync === 127, 'the resync pass');
    await suspend(m);
    assert.equal(decodeLogImage(await readBytes(log, 1536)).clean(5), false);
    await m.close();
  });

  it('without handle_errors a failed resync counts as in sync, legs reset to A, but the clean bit stays 0', async () => {
    const { m, legs, log, ctx } = await rig(`disk 2 254:0 ${R} ${legArgs(2)}`);
    legs[1]!.failing.add('write');
    legs[1]!.failRange = { sector: 5 * R, count: R };
    await m.resume();
    await until(() => syncProgress(m.status('info')).inSync === 128, 'sync');
    assert.equal(m.status('info'), '2 254:1 254:2 128/128 1 AA 3 disk 254:0 A');
    assert.equal(ctx.events, 1);
    await suspend(m);
    assert.equal(decodeLogImage(await readBytes(log, 1536)).clean(5), false);
    assert.equal(decodeLogImage(await readBytes(log, 1536)).clean(6), true);
    await m.close();
  });

  it('a write to a region being recovered waits for its copy, then reaches every leg', async () => {
    const { m, legs, clock } = await rig(`core 1 ${R} ${legArgs(2)}`, { differ: true });
    await m.resume();
    // User I/O now: the copy of region 0 waits for a quiet moment on the manual clock.
    await m.read(100 * R, Buffer.alloc(512));
    await turns(20);
    let done = false;
    const w = m.write(0, Buffer.alloc(512, 0x77), {}).then(() => (done = true));
    await turns(20);
    assert.equal(done, false, 'delayed while RECOVERING');
    clock.advance(1000);
    await w;
    for (const leg of legs) assert.deepEqual(await bytesAt(leg, 0, 1), Buffer.alloc(512, 0x77));
    assert.deepEqual(await bytesAt(legs[1]!, 1, 1), Buffer.alloc(512, 0xaa), 'the rest of region 0 was copied');
    await m.presuspend({ noflush: false });
    await m.close();
  });

  it('suspend finishes the region being copied and starts no other; a restart resumes from the log', async () => {
    const { m, again, clock, trace } = await rig(`disk 2 254:0 ${R} ${legArgs(2)}`, { differ: true });
    await m.resume();
    await m.read(0, Buffer.alloc(512)); // keeps the resync waiting on the clock
    await turns(20);
    await suspend(m);
    const k = syncProgress(m.status('info')).inSync;
    assert.ok(k >= 1 && k < 128, `in sync after suspend: ${k}`);
    const quiet = trace.length;
    clock.advance(10000);
    await turns(50);
    assert.equal(trace.length, quiet, 'no I/O after postsuspend');
    await m.close();
    const m2 = await again();
    await m2.resume();
    assert.equal(syncProgress(m2.status('info')).inSync, k, 'restarted from the on-disk log');
    await until(() => syncProgress(m2.status('info')).inSync === 128, 'sync');
    await suspend(m2);
    await m2.close();
  });
});
