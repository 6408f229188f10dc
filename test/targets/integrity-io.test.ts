/**
 * dm-integrity I/O through the mapper (registry.open): the BlockDevice
 * conformance suite in modes J, B and D with and without meta_device, a
 * fast-check model test across remounts and mode changes, tag mismatches
 * (EILSEQ, the counter, the log line), corruption under the target (flakey's
 * corrupt_bio_byte, a flipped byte in an image file), journal replay of an
 * image taken without suspend, and discards.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';

import type { BlockDevice } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { FileDevice } from '../../src/block/file-device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { Logger } from '../../src/mapper/target.ts';
import { flakeyTarget } from '../../src/targets/flakey/flakey.ts';
import { integrityTarget } from '../../src/targets/integrity/integrity.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';
import { ManualClock } from '../helpers/target-context.ts';

const DATA = 8192;
const META = 2048;

interface Env {
  registry: DeviceRegistry;
  logs: string[];
}

function env(disks: Record<string, BlockDevice>): Env {
  const targets = new TargetRegistry();
  targets.register(integrityTarget);
  targets.register(flakeyTarget);
  const logs: string[] = [];
  const logger: Logger = { info: () => undefined, warn: (m) => logs.push(m), error: (m) => logs.push(m) };
  const registry = new DeviceRegistry({
    targets, logger: () => logger,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached in this test`);
    },
  });
  for (const [path, dev] of Object.entries(disks)) registry.attach(path, dev);
  return { registry, logs };
}

function providedOf(e: Env, name: string): number {
  return Number(e.registry.status(name, { type: 'info' })[0]!.params.split(' ')[1]);
}

/** Formats and wipes every provided sector in mode D, as `integritysetup format` does without --no-wipe. */
async function formatAndWipe(e: Env, params: (mode: string) => string): Promise<number> {
  await e.registry.create('fmt', { table: `0 8 integrity ${params('D')}` });
  const provided = providedOf(e, 'fmt');
  await e.registry.remove('fmt');
  await e.registry.create('wipe', { table: `0 ${provided} integrity ${params('D')}` });
  const h = e.registry.open('wipe');
  const zero = Buffer.alloc(1024 * 512);
  for (let s = 0; s < provided; s += 1024) await h.write(s, zero.subarray(0, Math.min(1024, provided - s) * 512));
  await h.close();
  await e.registry.remove('wipe');
  return provided;
}

const VARIANTS: { label: string; params: (mode: string) => string; meta: boolean }[] = [
  { label: 'crc32c, 512-byte blocks', params: (m) => `/d 0 4 ${m} 4 internal_hash:crc32c allow_discards fix_padding fix_hmac`, meta: false },
  { label: 'sha256, 4 KiB blocks, interleave 1024', params: (m) => `/d 0 32 ${m} 4 block_size:4096 interleave_sectors:1024 internal_hash:sha256 allow_discards`, meta: false },
  { label: 'crc32c, meta_device', params: (m) => `/d 0 4 ${m} 3 internal_hash:crc32c allow_discards meta_device:/m`, meta: true },
];

for (const v of VARIANTS) {
  for (const mode of ['J', 'B', 'D']) {
    blockDeviceConformance(`integrity ${mode} (${v.label})`, async () => {
      const disks: Record<string, BlockDevice> = { '/d': new MemoryDevice(DATA, { name: 'd' }) };
      if (v.meta) disks['/m'] = new MemoryDevice(META, { name: 'm' });
      const e = env(disks);
      const provided = await formatAndWipe(e, v.params);
      let n = 0;
      const open = async () => {
        const name = `i${n++}`;
        await e.registry.create(name, { table: `0 ${provided} integrity ${v.params(mode)}` });
        return { name, dev: e.registry.open(name) };
      };
      let cur = await open();
      const suspended: string[] = [];
      return {
        dev: cur.dev,
        // The old device stays (its size is still asked for), suspended: postsuspend leaves the volume consistent.
        reopen: async () => {
          await e.registry.suspend(cur.name);
          suspended.push(cur.name);
          cur = await open();
          return cur.dev;
        },
        cleanup: async () => {
          for (const name of suspended) await e.registry.remove(name);
          await e.registry.shutdown();
        },
      };
    });
  }
}

test('a mismatching tag fails the read with EILSEQ, counts, logs, and never returns the data', async () => {
  const d = new MemoryDevice(DATA, { name: 'd' });
  const e = env({ '/d': d });
  const params = (m: string) => `/d 0 4 ${m} 1 internal_hash:crc32c`;
  const provided = await formatAndWipe(e, params);
  await e.registry.create('x', { table: `0 ${provided} integrity ${params('D')}` });
  const h = e.registry.open('x');
  await h.write(16, Buffer.alloc(8 * 512, 0xab));
  await h.flush();
  // Flip one byte of the data of logical sector 19 (superblock 8 + journal 176 + run 256 = 440 sectors precede the data).
  const raw = Buffer.alloc(512);
  await d.read(440 + 19, raw);
  raw[100]! ^= 1;
  await d.write(440 + 19, raw);
  const got = Buffer.alloc(8 * 512, 0x11);
  await assert.rejects(h.read(16, got), (err: IoError) => err.code === 'EILSEQ' && err.sector === 19);
  assert.ok(got.every((b) => b === 0), 'the failed read left data in the buffer');
  assert.equal(e.registry.status('x', { type: 'info' })[0]!.params, `1 ${provided} -`);
  assert.deepEqual(e.logs, ['x: Checksum failed at sector 0x13']);
  // Blocks around it read fine; the bad one fails every time and counts every time.
  const one = Buffer.alloc(512);
  for (const s of [16, 17, 18, 20, 23]) {
    await h.read(s, one);
    assert.ok(one.every((b) => b === 0xab));
  }
  await assert.rejects(h.read(19, one), /integrity tag mismatch/);
  assert.equal(e.registry.status('x', { type: 'info' })[0]!.params, `2 ${provided} -`);
  // Rewriting the block repairs it.
  await h.write(19, Buffer.alloc(512, 3));
  await h.read(19, one);
  assert.ok(one.every((b) => b === 3));
  // Mode R reads without checks and refuses writes.
  await h.close();
  await e.registry.remove('x');
  await d.write(440 + 19, raw);
  await e.registry.create('r', { table: `0 ${provided} integrity ${params('R')}` });
  const r = e.registry.open('r');
  await r.read(19, one);
  assert.deepEqual(one, raw);
  await assert.rejects(r.write(0, one), (err: IoError) => err.code === 'EIO');
  await r.close();
  await e.registry.shutdown();
});

test("flakey's corrupt_bio_byte under the data device: every corrupted read is EILSEQ and counted", async () => {
  const e = env({ '/d': new MemoryDevice(DATA, { name: 'd' }), '/m': new MemoryDevice(META, { name: 'm' }) });
  // Up for an hour first, so the data can be written and read through the same stack.
  await e.registry.create('fl', { table: `0 ${DATA} flakey /d 0 3600 0` });
  const params = (m: string) => `/dev/mapper/fl 0 4 ${m} 2 internal_hash:crc32c meta_device:/m`;
  const provided = await formatAndWipe(e, params);
  await e.registry.create('x', { table: `0 ${provided} integrity ${params('J')}` });
  const h = e.registry.open('x');
  const data = Buffer.alloc(64 * 512, 0x42);
  await h.write(0, data);
  await h.flush();
  await h.close();
  await e.registry.remove('x'); // postsuspend writes the journal back to the data device
  await e.registry.create('y', { table: `0 ${provided} integrity ${params('D')}` });
  const y = e.registry.open('y');
  const got = Buffer.alloc(8 * 512);
  await y.read(0, got);
  assert.deepEqual(got, data.subarray(0, got.length));
  // Now corrupt byte 1 of every read bio of the data device.
  await e.registry.load('fl', `0 ${DATA} flakey /d 0 0 3600 5 corrupt_bio_byte 1 r 255 0`);
  await e.registry.resume('fl');
  for (let i = 0; i < 4; i++) {
    await assert.rejects(y.read(i * 8, got), (err: IoError) => err.code === 'EILSEQ');
    assert.ok(got.every((b) => b === 0));
  }
  assert.equal(e.registry.status('y', { type: 'info' })[0]!.params, `4 ${provided} -`);
  await y.close();
  await e.registry.shutdown();
});

test('a flipped byte in an image file: that block reads EILSEQ, every other block reads fine', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dmkit-integrity-'));
  const path = join(dir, 'img');
  try {
    const fd = openSync(path, 'w');
    writeSync(fd, Buffer.alloc(1), 0, 1, DATA * 512 - 1);
    closeSync(fd);
    const params = (m: string) => `/img 0 4 ${m} 3 internal_hash:crc32c fix_padding fix_hmac`;
    let e = env({ '/img': await FileDevice.open(path) });
    const provided = await formatAndWipe(e, params);
    await e.registry.create('x', { table: `0 ${provided} integrity ${params('J')}` });
    let h = e.registry.open('x');
    const pattern = Buffer.alloc(provided * 512);
    for (let s = 0; s < provided; s++) pattern.fill(s & 0xff, s * 512, s * 512 + 512);
    for (let s = 0; s < provided; s += 512) await h.write(s, pattern.subarray(s * 512, Math.min(provided, s + 512) * 512));
    await h.close();
    await e.registry.shutdown();

    // Data of area 0 starts after 8 superblock + 176 journal + 256 tag sectors (4 B × 32768 blocks, padded to 4 KiB).
    const victim = 1234;
    const fd2 = openSync(path, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd2, b, 0, 1, (440 + victim) * 512 + 7);
    b[0]! ^= 0x80;
    writeSync(fd2, b, 0, 1, (440 + victim) * 512 + 7);
    closeSync(fd2);

    e = env({ '/img': await FileDevice.open(path) });
    await e.registry.create('y', { table: `0 ${provided} integrity ${params('D')}` });
    h = e.registry.open('y');
    let failures = 0;
    const got = Buffer.alloc(256 * 512);
    for (let s = 0; s < provided; s += 256) {
      const n = Math.min(256, provided - s);
      const part = got.subarray(0, n * 512);
      try {
        await h.read(s, part);
        assert.deepEqual(part, pattern.subarray(s * 512, (s + n) * 512), `sectors ${s}+${n}`);
      } catch (err) {
        assert.ok(err instanceof IoError && err.code === 'EILSEQ' && err.sector === victim, String(err));
        failures++;
        for (let k = s; k < s + n; k++) {
          if (k === victim) continue;
          await h.read(k, got.subarray(0, 512));
          assert.deepEqual(got.subarray(0, 512), pattern.subarray(k * 512, k * 512 + 512));
        }
      }
    }
    assert.equal(failures, 1);
    assert.equal(e.registry.status('y', { type: 'info' })[0]!.params, `1 ${provided} -`);
    await h.close();
    await e.registry.shutdown();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A copy of a MemoryDevice's contents: what survives when the process dies after the last flush. */
async function snapshot(d: BlockDevice): Promise<MemoryDevice> {
  const copy = new MemoryDevice(d.sectors, { name: d.name });
  const buf = Buffer.alloc(d.sectors * 512);
  await d.read(0, buf);
  await copy.write(0, buf);
  return copy;
}

test('J mode: flushed data survives a stop without suspend (journal replay), with and without meta_device', async () => {
  for (const meta of [false, true]) {
    const disks: Record<string, BlockDevice> = { '/d': new MemoryDevice(DATA, { name: 'd' }) };
    if (meta) disks['/m'] = new MemoryDevice(META, { name: 'm' });
    const params = `/d 0 4 J ${meta ? 4 : 3} journal_sectors:704 internal_hash:crc32c journal_watermark:100${meta ? ' meta_device:/m' : ''}`;
    const e = env(disks);
    const provided = await formatAndWipe(e, (m) => params.replace(' J ', ` ${m} `));
    await e.registry.create('x', { table: `0 ${provided} integrity ${params}` });
    const h = e.registry.open('x');
    const a = Buffer.alloc(40 * 512, 0xa1);
    await h.write(100, a);
    await h.flush(); // committed to the journal, not written back (4 sections, watermark 100: the writer waits)
    // "Power off": take the disks as they are, without suspend.
    const copies: Record<string, BlockDevice> = { '/d': await snapshot(disks['/d']!) };
    if (meta) copies['/m'] = await snapshot(disks['/m']!);
    const before = Buffer.alloc(40 * 512);
    await copies['/d']!.read(meta ? 100 : 8 + 704 + 256 + 100, before);
    assert.ok(!before.equals(a), 'the data was already in place: the test would prove nothing');
    await h.close();
    await e.registry.shutdown();

    const e2 = env(copies);
    await e2.registry.create('y', { table: `0 ${provided} integrity ${params}` });
    const y = e2.registry.open('y');
    const got = Buffer.alloc(40 * 512);
    await y.read(100, got);
    assert.deepEqual(got, a);
    await y.close();
    await e2.registry.shutdown();
  }
});

type Op =
  | { kind: 'write'; sector: number; blocks: number; seed: number; fua: boolean }
  | { kind: 'read'; sector: number; blocks: number }
  | { kind: 'discard'; sector: number; blocks: number }
  | { kind: 'flush' }
  | { kind: 'reopen'; mode: 'J' | 'B' | 'D' };

test('property: any mix of writes, reads, discards, flushes, remounts and mode changes matches a model', async () => {
  const disks = { '/d': new MemoryDevice(DATA, { name: 'd' }) };
  const e = env(disks);
  const params = (m: string) => `/d 0 4 ${m} 4 internal_hash:crc32c allow_discards journal_sectors:352 interleave_sectors:2048`;
  const provided = await formatAndWipe(e, params);
  const blocks = provided;
  const range = fc.tuple(fc.integer({ min: 0, max: blocks - 1 }), fc.integer({ min: 1, max: 64 }))
    .map(([s, n]) => ({ sector: s, blocks: Math.min(n, blocks - s) }));
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(range, fc.nat(), fc.boolean()).map(([r, seed, fua]) => ({ kind: 'write' as const, ...r, seed, fua })) },
    { weight: 3, arbitrary: range.map((r) => ({ kind: 'read' as const, ...r })) },
    { weight: 1, arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constantFrom('J', 'B', 'D').map((mode) => ({ kind: 'reopen' as const, mode: mode as 'J' | 'B' | 'D' })) },
  );
  let n = 0;
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
    // The model: per sector, the values it may hold (a discard allows old data or zeroes).
    const model = new Map<number, Buffer[]>();
    let name = `p${n++}`;
    await e.registry.create(name, { table: `0 ${provided} integrity ${params('J')}` });
    let h = e.registry.open(name);
    const whole = Buffer.alloc(provided * 512);
    await h.read(0, whole.subarray(0, Math.min(provided, 4096) * 512));
    for (let s = 0; s < Math.min(provided, 4096); s++) model.set(s, [Buffer.from(whole.subarray(s * 512, s * 512 + 512))]);
    try {
      for (const o of ops) {
        switch (o.kind) {
          case 'write': {
            const data = Buffer.alloc(o.blocks * 512);
            for (let i = 0; i < o.blocks; i++) data.fill((o.seed + i * 7) & 0xff, i * 512, i * 512 + 512).writeUInt32LE(o.sector + i, i * 512);
            await h.write(o.sector, data, { fua: o.fua });
            for (let i = 0; i < o.blocks; i++) model.set(o.sector + i, [data.subarray(i * 512, i * 512 + 512)]);
            break;
          }
          case 'read': {
            const got = Buffer.alloc(o.blocks * 512);
            await h.read(o.sector, got);
            for (let i = 0; i < o.blocks; i++) {
              const allowed = model.get(o.sector + i);
              if (!allowed) continue;
              const s = got.subarray(i * 512, i * 512 + 512);
              assert.ok(allowed.some((b) => b.equals(s)), `sector ${o.sector + i} after ${JSON.stringify(ops)}`);
              model.set(o.sector + i, [Buffer.from(s)]);
            }
            break;
          }
          case 'discard':
            await h.discard(o.sector, o.blocks);
            for (let i = 0; i < o.blocks; i++) model.set(o.sector + i, [...(model.get(o.sector + i) ?? []), Buffer.alloc(512)]);
            break;
          case 'flush':
            await h.flush();
            break;
          case 'reopen':
            await h.close();
            await e.registry.remove(name);
            name = `p${n++}`;
            await e.registry.create(name, { table: `0 ${provided} integrity ${params(o.mode)}` });
            h = e.registry.open(name);
            break;
        }
      }
      assert.equal(e.registry.status(name, { type: 'info' })[0]!.params.split(' ')[0], '0', 'a mismatch was counted');
    } finally {
      await h.close();
      await e.registry.remove(name);
    }
  }), { numRuns: 40 });
  await e.registry.shutdown();
});

test('B mode: the bitmap bit is durable before the write; bitmap_flush_interval (ctx.clock) clears it after both flushes', async () => {
  const d = new MemoryDevice(DATA, { name: 'd' });
  const m = new MemoryDevice(META, { name: 'm' });
  const clock = new ManualClock();
  const targets = new TargetRegistry();
  targets.register(integrityTarget);
  const registry = new DeviceRegistry({ targets, clock, openFile: async (p) => Promise.reject(new IoError('ENOENT', p)) });
  registry.attach('/d', d);
  registry.attach('/m', m);
  const params = '/d 0 4 B 4 internal_hash:crc32c sectors_per_bit:512 bitmap_flush_interval:100 meta_device:/m';
  await registry.create('b', { table: `0 ${DATA} integrity ${params}` });
  const flushes = { d: 0, m: 0 };
  const dFlush = d.flush.bind(d);
  const mFlush = m.flush.bind(m);
  d.flush = () => (flushes.d++, dFlush());
  m.flush = () => (flushes.m++, mFlush());
  const bitmapByte = async () => {
    const b = Buffer.alloc(512);
    await m.read(8, b); // the bitmap starts at the journal area: offset 0 + 8 superblock sectors
    return b[0]!;
  };
  const sb = async () => {
    const b = Buffer.alloc(512);
    await m.read(0, b);
    return b.readUInt32LE(0x18);
  };
  assert.equal(await sb() & 0x04, 0x04, 'DIRTY_BITMAP is set while B mode is active');
  const h = registry.open('b');
  await h.write(512 * 2 + 3, Buffer.alloc(512, 9)); // region 2
  assert.equal(await bitmapByte(), 0b100);
  await h.write(512 * 5, Buffer.alloc(1024, 9)); // region 5
  assert.equal(await bitmapByte(), 0b100100);
  clock.advance(99);
  await new Promise((r) => setImmediate(r));
  assert.equal(await bitmapByte(), 0b100100);
  clock.advance(1);
  for (let i = 0; i < 20 && (await bitmapByte()) !== 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(await bitmapByte(), 0, 'bits cleared by the bitmap flush');
  assert.ok(flushes.d >= 1 && flushes.m >= 1, `both devices flushed before the bits were cleared (${JSON.stringify(flushes)})`);
  await h.close();
  await registry.remove('b');
  assert.equal(await sb() & 0x04, 0, 'a clean suspend clears DIRTY_BITMAP');
  await registry.shutdown();
});

test('discard: filler tags read back as zeroes with allow_discards, as a mismatch without it', async () => {
  const d = new MemoryDevice(DATA, { name: 'd' });
  const e = env({ '/d': d });
  const params = (m: string, discards: boolean) => `/d 0 4 ${m} ${discards ? 2 : 1} internal_hash:crc32c${discards ? ' allow_discards' : ''}`;
  const provided = await formatAndWipe(e, (m) => params(m, true));
  for (const mode of ['J', 'D']) {
    await e.registry.create('x', { table: `0 ${provided} integrity ${params(mode, true)}` });
    const h = e.registry.open('x');
    await h.write(64, Buffer.alloc(64 * 512, 0x77));
    await h.discard(80, 16);
    const got = Buffer.alloc(64 * 512);
    await h.read(64, got);
    assert.ok(got.subarray(0, 16 * 512).every((b) => b === 0x77));
    assert.ok(got.subarray(16 * 512, 32 * 512).every((b) => b === 0), `${mode}: a discarded block reads as zeroes`);
    assert.ok(got.subarray(32 * 512).every((b) => b === 0x77));
    await h.close();
    await e.registry.remove('x');
  }
  await e.registry.create('y', { table: `0 ${provided} integrity ${params('D', false)}` });
  const y = e.registry.open('y');
  await assert.rejects(y.read(80, Buffer.alloc(512)), (err: IoError) => err.code === 'EILSEQ');
  await assert.rejects(y.discard(80, 8), (err: IoError) => err.code === 'EOPNOTSUPP');
  assert.equal(y.limits.discard, false);
  await y.close();
  await e.registry.shutdown();
});
