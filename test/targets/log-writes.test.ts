import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { BlockDevice, WriteOptions } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import type { Logger } from '../../src/mapper/target.ts';
import { LogWritesTarget, logWritesTarget } from '../../src/targets/log-writes/log-writes.ts';
import { runReplayLog } from '../../src/tools/replay-log/replay-log.ts';
import { fakeContext } from '../helpers/target-context.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { applyLog, buildLog, decodeLog, type DecodedEntry, type TestEntry } from '../tools/log-image.ts';

const dir = tempDir('dmkit-log-writes-');

interface Setup {
  data: BlockDevice;
  logdev: MemoryDevice;
  target: LogWritesTarget;
  messages: string[];
}

async function setup(opts: { data?: BlockDevice; logSectors?: number; begin?: number; args?: string[] } = {}): Promise<Setup> {
  const data = opts.data ?? new MemoryDevice(8192, { name: 'sdb' });
  const logdev = new MemoryDevice(opts.logSectors ?? 8192, { name: 'sdc' });
  const ctx = fakeContext({ '/dev/sdb': data, '/dev/sdc': logdev }, { length: data.sectors, begin: opts.begin ?? 0 });
  const messages: string[] = [];
  const log: Logger = {
    info: (m) => messages.push(m),
    warn: (m) => messages.push(m),
    error: (m) => messages.push(m),
  };
  const target = await logWritesTarget.construct({ ...ctx, log }, opts.args ?? ['/dev/sdb', '/dev/sdc']);
  assert.ok(target instanceof LogWritesTarget);
  return { data, logdev, target, messages };
}

const fill = (bytes: number, v: number) => Buffer.alloc(bytes, v);

/** Decodes the log device as it stands, reading as many entries as the target has logged. */
async function logged(s: Setup): Promise<DecodedEntry[]> {
  await s.target.idle();
  const count = Number(s.target.status('info').split(' ')[0]);
  const img = s.logdev.peek(0, s.logdev.sectors * 512);
  // The super block lags while the target is live (§4.8): read what was logged.
  buildLog(s.data.limits.logicalBlockSize, [], count).copy(img, 0, 0, 32);
  return decodeLog(img).entries;
}

const describeEntry = (e: DecodedEntry) =>
  e.flags === 8 ? `mark:${e.mark}` : `${e.sector}+${e.nr}:${e.flags.toString(16)}${e.data.length ? `=${e.data[0]}` : ''}`;

/** A data device whose writes, flushes and discards complete only when the test says so. */
class GatedDevice implements BlockDevice {
  readonly inner = new MemoryDevice(8192, { name: 'gated', limits: { discard: true } });
  readonly pending: { what: string; done: () => Promise<void> }[] = [];
  get name() { return this.inner.name; }
  get sectors() { return this.inner.sectors; }
  get limits() { return this.inner.limits; }
  read(sector: number, into: Buffer) { return this.inner.read(sector, into); }
  private gate(what: string, op: () => Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ what, done: () => op().then(resolve, reject) });
    });
  }
  write(sector: number, data: Buffer, opts?: WriteOptions) {
    const copy = Buffer.from(data);
    return this.gate(`W${sector}`, () => this.inner.write(sector, copy, opts));
  }
  flush() { return this.gate('F', () => this.inner.flush()); }
  discard(sector: number, count: number) { return this.gate(`D${sector}`, () => this.inner.discard(sector, count)); }
  writeZeroes(sector: number, count: number) { return this.inner.writeZeroes(sector, count); }
  close() { return this.inner.close(); }
  /** Completes the pending request named `what`. */
  async complete(what: string): Promise<void> {
    const i = this.pending.findIndex((p) => p.what === what);
    assert.ok(i >= 0, `no pending ${what}`);
    await this.pending.splice(i, 1)[0]!.done();
  }
}

describe('log-writes constructor, table, status', () => {
  it('identifies as log-writes v1.1.0', () => {
    assert.equal(logWritesTarget.name, 'log-writes');
    assert.deepEqual(logWritesTarget.version, [1, 1, 0]);
  });

  it('refuses bad tables with Linux texts; extra arguments are ignored', async () => {
    const data = new MemoryDevice(64);
    const ctx = fakeContext({ '/dev/sdb': data, '/dev/sdc': new MemoryDevice(64) }, { length: 64 });
    const refuses = async (argv: string[], message: string, code: string) =>
      assert.rejects(logWritesTarget.construct(ctx, argv), (e: unknown) => e instanceof IoError && e.message === message && e.code === code);
    await refuses(['/dev/sdb'], 'Invalid argument count', 'EINVAL');
    await refuses(['/dev/nope', '/dev/sdc'], 'Device lookup failed', 'ENOENT');
    await refuses(['/dev/sdb', '/dev/nope'], 'Log device lookup failed', 'ENOENT');
    const t = await logWritesTarget.construct(ctx, ['/dev/sdb', '7:1', 'junk']);
    assert.equal(t.status('table'), '7:0 7:1');
  });

  it('status follows the worked example of §2.5 and nothing is written at construction', async () => {
    const s = await setup();
    assert.equal(s.target.status('info'), '0 0');
    assert.equal(s.logdev.allocatedBytes, 0);
    await s.target.write(2048, fill(4096, 0x41), {});
    assert.equal(s.target.status('info'), '0 0');
    await s.target.flush();
    assert.equal(s.target.status('info'), '2 10');
    await s.target.message(['mark', 'mkfs']);
    assert.equal(s.target.status('info'), '3 11');
    await s.target.idle();
    assert.equal(s.logdev.peek(16, 8).readBigUInt64LE(0), 3n, 'super block counts 3 entries');
    assert.equal(s.target.status('table'), '7:0 7:1');
  });

  it('a 4096-byte data device logs in 4096-byte blocks: fresh status is "0 7"', async () => {
    const data = new MemoryDevice(8192, { limits: { logicalBlockSize: 4096 } });
    const s = await setup({ data });
    assert.equal(s.target.status('info'), '0 7');
    await s.target.write(8, fill(8192, 1), {});
    await s.target.flush();
    // header (8 sectors) + 2 blocks of payload (16) + flush header (8): next_sector = 8 + 32 = 40.
    assert.equal(s.target.status('info'), '2 39');
    const [w] = await logged(s);
    assert.deepEqual([w!.sector, w!.nr], [1, 2]);
    assert.equal(s.target.limits().logicalBlockSize, 4096);
  });

  it('advertises flush, FUA and discard always; no write-zeroes; io_min = physical block', async () => {
    const noDiscard = new MemoryDevice(64, { limits: { discard: false, flush: false, fua: false, physicalBlockSize: 4096 } });
    const s = await setup({ data: noDiscard });
    const l = s.target.limits();
    assert.deepEqual([l.flush, l.fua, l.discard, l.writeZeroes, l.discardZeroes, l.ioMin], [true, true, true, false, false, 4096]);
    await assert.rejects(s.target.writeZeroes(0, 1, {}), (e: unknown) => e instanceof IoError && e.code === 'EOPNOTSUPP');
    assert.deepEqual(s.target.areas().map((a) => [a.ref.id, a.start, a.length]), [['7:0', 0, 64]]);
  });
});

describe('log-writes on-disk format', () => {
  it('writes the same bytes as the spec layout for a known request sequence (byte-exact image)', async () => {
    const s = await setup({ logSectors: 64 });
    await s.target.write(2048, fill(4096, 0x41), {});
    await s.target.flush();
    await s.target.message(['mark', 'mkfs']);
    await s.target.write(100, fill(512, 0x42), { fua: true, tag: 'metadata' });
    await s.target.discard(4096, 16);
    await s.target.write(3000, fill(1024, 0x43), {});
    await s.target.close();
    const want: TestEntry[] = [
      { sector: 2048, nr: 8, flags: 0x0, fill: 0x41 },
      { sector: 0, nr: 0, flags: 0x1 },
      { sector: 0, nr: 0, flags: 0x8, mark: 'mkfs' },
      { sector: 100, nr: 1, flags: 0x12, fill: 0x42 },
      { sector: 4096, nr: 16, flags: 0x4 },
      { sector: 3000, nr: 2, flags: 0x0, fill: 0x43 },
      { sector: 0, nr: 0, flags: 0x8, mark: 'dm-log-writes-end' },
    ];
    const golden = buildLog(512, want);
    assert.deepEqual(s.logdev.peek(0, golden.length), golden);
    assert.ok(s.logdev.peek(golden.length, 512).every((b) => b === 0));
    assert.equal(s.target.status('info'), `7 ${golden.length / 512 - 1}`);
  });

  it('truncates mark names to sectorsize − 33 bytes and takes MARK case-insensitively', async () => {
    const s = await setup();
    await s.target.message(['MARK', 'x'.repeat(600)]);
    const [m] = await logged(s);
    assert.equal(m!.mark, 'x'.repeat(479));
  });

  it('refuses bad messages with EINVAL', async () => {
    const s = await setup();
    const einval = (e: unknown) => e instanceof IoError && e.code === 'EINVAL';
    await assert.rejects(s.target.message!(['mark']), einval);
    await assert.rejects(s.target.message!(['mark', 'a', 'b']), einval);
    await assert.rejects(s.target.message!(['note', 'a']), einval);
    assert.deepEqual(s.messages, [
      'Invalid log-writes message arguments, expect 2 arguments, got 1',
      'Invalid log-writes message arguments, expect 2 arguments, got 3',
      'Unrecognised log writes target message received: note',
    ]);
  });
});

describe('log-writes ordering (§4.7)', () => {
  it('W1 W2 W3 C3 C2 Wflush C1 Cflush → W3 W2 FLUSH; W1 goes with the next flush', async () => {
    const gate = new GatedDevice();
    const s = await setup({ data: gate });
    const w1 = s.target.write(8, fill(512, 1), {});
    const w2 = s.target.write(16, fill(512, 2), {});
    const w3 = s.target.write(24, fill(512, 3), {});
    await gate.complete('W24');
    await w3;
    await gate.complete('W16');
    await w2;
    const f = s.target.flush();
    await gate.complete('W8');
    await w1;
    await gate.complete('F');
    await f;
    assert.deepEqual((await logged(s)).map(describeEntry), ['24+1:0=3', '16+1:0=2', '0+0:1']);
    const f2 = s.target.flush();
    await gate.complete('F');
    await f2;
    assert.deepEqual((await logged(s)).map(describeEntry).slice(3), ['8+1:0=1', '0+0:1']);
  });

  it('W1 C1 Wfua2 Cfua2 Wflush Cflush → FUA2 W1 FLUSH', async () => {
    const gate = new GatedDevice();
    const s = await setup({ data: gate });
    const w1 = s.target.write(8, fill(512, 1), {});
    await gate.complete('W8');
    await w1;
    const w2 = s.target.write(16, fill(512, 2), { fua: true });
    await gate.complete('W16');
    await w2;
    const f = s.target.flush();
    await gate.complete('F');
    await f;
    assert.deepEqual((await logged(s)).map(describeEntry), ['16+1:2=2', '8+1:0=1', '0+0:1']);
  });

  it('Wa Wb Wc Cc Ca FLUSH FUAd Cb Cflush Cfuad → c a FLUSH FUAd, b after the next flush', async () => {
    const gate = new GatedDevice();
    const s = await setup({ data: gate });
    const a = s.target.write(8, fill(512, 0xa), {});
    const b = s.target.write(16, fill(512, 0xb), {});
    const c = s.target.write(24, fill(512, 0xc), {});
    await gate.complete('W24');
    await c;
    await gate.complete('W8');
    await a;
    const f = s.target.flush();
    const d = s.target.write(32, fill(512, 0xd), { fua: true });
    await gate.complete('W16');
    await b;
    await gate.complete('F');
    await f;
    await gate.complete('W32');
    await d;
    assert.deepEqual((await logged(s)).map(describeEntry), ['24+1:0=12', '8+1:0=10', '0+0:1', '32+1:2=13']);
    const f2 = s.target.flush();
    await gate.complete('F');
    await f2;
    assert.deepEqual((await logged(s)).map(describeEntry).slice(4), ['16+1:0=11', '0+0:1']);
  });

  it('discards keep completion order; a failed write is still logged (and reported)', async () => {
    const gate = new GatedDevice();
    const s = await setup({ data: gate });
    const w = s.target.write(8, fill(512, 1), {});
    await gate.complete('W8');
    await w;
    const d = s.target.discard(8, 8);
    await gate.complete('D8');
    await d;
    const f = s.target.flush();
    await gate.complete('F');
    await f;
    assert.deepEqual((await logged(s)).map(describeEntry), ['8+1:0=1', '8+8:4', '0+0:1']);
  });

  it('logs failed writes like Linux, and says so', async () => {
    const ro = new MemoryDevice(64, { limits: { readOnly: true } });
    const s = await setup({ data: ro });
    await assert.rejects(s.target.write(8, fill(512, 1), {}), (e: unknown) => e instanceof IoError && e.code === 'EPERM');
    await s.target.flush();
    assert.deepEqual((await logged(s)).map(describeEntry), ['8+1:0=1', '0+0:1']);
    assert.match(s.messages[0]!, /failed \(EPERM\); logged as if it had succeeded/);
  });

  it('the payload is the data at submission, even if the caller reuses its buffer afterwards', async () => {
    const s = await setup();
    const buf = fill(512, 5);
    await s.target.write(8, buf, {});
    buf.fill(6);
    await s.target.flush();
    assert.equal((await logged(s))[0]!.data[0], 5);
  });

  it('emulates discard when the data device has none: completes, touches nothing, is logged', async () => {
    const data = new MemoryDevice(64, { limits: { discard: false } });
    await data.write(0, fill(4096, 9));
    const s = await setup({ data });
    await s.target.discard(0, 8);
    await s.target.flush();
    assert.deepEqual(data.peek(0, 4096), fill(4096, 9));
    assert.deepEqual((await logged(s)).map(describeEntry), ['0+8:4', '0+0:1']);
  });

  it('teardown logs unflushed writes ahead of the end mark and counts everything in the super block', async () => {
    const s = await setup();
    await s.target.write(8, fill(512, 1), {});
    await s.target.write(16, fill(512, 2), { tag: 'journal' });
    await s.target.close();
    const img = s.logdev.peek(0, s.logdev.sectors * 512);
    const log = decodeLog(img);
    assert.equal(log.nrEntries, 3);
    assert.deepEqual(log.entries.map(describeEntry), ['8+1:0=1', '16+1:10=2', 'mark:dm-log-writes-end']);
  });

  it('does not subtract a non-zero target start (Linux), with a warning', async () => {
    const s = await setup({ begin: 100 });
    assert.match(s.messages[0]!, /starts at sector 100/);
    await s.target.write(0, fill(512, 7), {});
    await s.target.flush();
    assert.deepEqual((s.data as MemoryDevice).peek(100 * 512, 1), Buffer.from([7]));
    assert.equal((await logged(s))[0]!.sector, 100);
  });
});

describe('log-writes when the log fails', () => {
  it('running out of log space disables logging for good; writes pass through', async () => {
    const s = await setup({ logSectors: 16 });
    await s.target.write(0, fill(4096, 1), {});
    await s.target.flush();
    assert.equal(s.target.status('info'), '2 10');
    await s.target.write(8, fill(4096, 2), {});
    await s.target.flush();
    await s.target.idle();
    assert.equal(s.target.status('info'), '2 19 logging_disabled');
    assert.deepEqual(s.messages, ['Ran out of space on the logdev']);
    await s.target.write(16, fill(512, 3), {});
    await s.target.message(['mark', 'late']);
    await s.target.close();
    assert.equal(s.target.status('info'), '2 19 logging_disabled');
    assert.equal((s.data as MemoryDevice).peek(16 * 512, 1)[0], 3);
    assert.equal(s.logdev.peek(0, 8).readBigUInt64LE(0), 0n, 'no FUA or MARK was logged: no super block');
  });

  it('an entry ending exactly at the end of the log device is refused (>=)', async () => {
    const s = await setup({ logSectors: 11 });
    await s.target.write(0, fill(4096, 1), {});
    await s.target.flush();
    await s.target.idle();
    // W takes blocks 1–9; the flush header would be block 10, ending at 11 = end: refused.
    assert.equal(s.target.status('info'), '1 10 logging_disabled');
  });

  it('a failing log device disables logging without failing the writer', async () => {
    const data = new MemoryDevice(64);
    const logdev = new MemoryDevice(64, { limits: { readOnly: true } });
    const ctx = fakeContext({ d: data, l: logdev }, { length: 64 });
    const errors: string[] = [];
    const t = (await logWritesTarget.construct({ ...ctx, log: { info() {}, warn() {}, error: (m) => errors.push(m) } }, ['d', 'l'])) as LogWritesTarget;
    await t.write(0, fill(512, 1), { fua: true });
    await t.idle();
    assert.match(t.status('info'), / logging_disabled$/);
    assert.match(errors[0]!, /^Error writing (log block|super block), error=EPERM$/);
    assert.equal(data.peek(0, 1)[0], 1);
  });
});

describe('log-writes + dmkit replay-log', () => {
  type Op =
    | { op: 'write'; sector: number; blocks: number; value: number; fua: boolean }
    | { op: 'discard'; sector: number; blocks: number }
    | { op: 'flush' }
    | { op: 'mark' };
  const SECTORS = 256;
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('write' as const), sector: fc.integer({ min: 0, max: SECTORS - 8 }), blocks: fc.integer({ min: 1, max: 8 }), value: fc.integer({ min: 1, max: 255 }), fua: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('discard' as const), sector: fc.integer({ min: 0, max: SECTORS - 8 }), blocks: fc.integer({ min: 1, max: 8 }) }) },
    { weight: 2, arbitrary: fc.constant({ op: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'mark' as const }) },
  );

  async function replay(args: string[]): Promise<number> {
    const sink = { write: () => true };
    return runReplayLog(args, { stdout: sink, stderr: sink });
  }

  it('the log orders entries as the model says, and replaying to every entry and mark reproduces the image', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        run++;
        const data = new MemoryDevice(SECTORS, { limits: { discard: true, discardZeroes: true } });
        const s = await setup({ data });
        const expected: string[] = [];
        let unflushed: string[] = [];
        const images = new Map<string, Buffer>();
        let marks = 0;
        for (const o of ops) {
          if (o.op === 'write') {
            await s.target.write(o.sector, fill(o.blocks * 512, o.value), { fua: o.fua });
            const e = `${o.sector}+${o.blocks}:${o.fua ? 2 : 0}=${o.value}`;
            if (o.fua) expected.push(e);
            else unflushed.push(e);
          } else if (o.op === 'discard') {
            await s.target.discard(o.sector, o.blocks);
            unflushed.push(`${o.sector}+${o.blocks}:4`);
          } else if (o.op === 'flush') {
            await s.target.flush();
            expected.push(...unflushed, '0+0:1');
            unflushed = [];
          } else {
            // fsync, then mark: the image at the mark is everything written so far.
            await s.target.flush();
            expected.push(...unflushed, '0+0:1');
            unflushed = [];
            const name = `m${marks++}`;
            await s.target.message(['mark', name]);
            expected.push(`mark:${name}`);
            images.set(name, data.peek(0, SECTORS * 512));
          }
        }
        await s.target.close();
        expected.push(...unflushed, 'mark:dm-log-writes-end');

        const img = s.logdev.peek(0, s.logdev.sectors * 512);
        const log = decodeLog(img);
        assert.deepEqual(log.entries.map(describeEntry), expected);

        const L = join(dir, `log${run}`);
        const T = join(dir, `target${run}`);
        await writeFile(L, img.subarray(0, (log.entries.at(-1)!.at + 1) * 512));
        for (let k = 1; k <= log.entries.length; k++) {
          await writeFile(T, Buffer.alloc(SECTORS * 512));
          assert.equal(await replay(['--log', L, '--replay', T, '--limit', String(k)]), 0);
          const want = Buffer.alloc(SECTORS * 512);
          applyLog(log, want, k);
          assert.deepEqual(await readFile(T), want, `replay to entry ${k - 1}`);
        }
        for (const [name, image] of images) {
          await writeFile(T, Buffer.alloc(SECTORS * 512));
          assert.equal(await replay(['--log', L, '--replay', T, '--end-mark', name]), 0);
          assert.deepEqual(await readFile(T), image, `replay to mark ${name}`);
        }
        await writeFile(T, Buffer.alloc(SECTORS * 512));
        assert.equal(await replay(['--log', L, '--replay', T]), 0);
        assert.deepEqual(await readFile(T), data.peek(0, SECTORS * 512), 'replay of the whole log');
        await rm(L);
        await rm(T);
      }),
      { numRuns: 12, seed: 4242 },
    );
  });
});
