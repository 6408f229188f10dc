import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import type { Target } from '../../src/mapper/target.ts';
import { stripeMapRange, stripeMapSector, stripedTarget } from '../../src/targets/striped/striped.ts';
import { fakeContext, type FakeContext } from '../helpers/target-context.ts';
import { assertIoError, assertRefused, pattern, splitIo, TestDevice } from './support.ts';

function setup(length = 4096, opts: { discard?: boolean } = {}) {
  const loop0 = new TestDevice(8192, { name: 'loop0', limits: { discard: opts.discard ?? true } });
  const loop1 = new TestDevice(8192, { name: 'loop1' });
  const ctx = fakeContext({ '/dev/loop0': loop0, '/dev/loop1': loop1 }, { length });
  return { ctx, loop0, loop1 };
}

const WORKED = ['2', '128', '/dev/loop0', '4096', '/dev/loop1', '4096'];

describe('striped: constructor (§8.2.1, every row in order)', () => {
  it('accepts the worked example and prints its table and status (§8.2.7)', async () => {
    const { ctx } = setup();
    const t = await stripedTarget.construct(ctx, WORKED);
    assert.equal(t.status('table'), '2 128 7:0 4096 7:1 4096');
    assert.equal(t.status('info'), '2 7:0 7:1 1 AA');
    assert.equal(t.maxIoSectors, 128);
    assert.deepEqual(stripedTarget.version, [1, 7, 0]);
    assert.deepEqual(t.areas(), [
      { ref: ctx.opened[0], start: 4096, length: 2048 },
      { ref: ctx.opened[1], start: 4096, length: 2048 },
    ]);
  });

  it('1: fewer than 2 arguments → "Not enough arguments"', async () => {
    await assertRefused(stripedTarget, setup().ctx, [], 'Not enough arguments', 'EINVAL');
    await assertRefused(stripedTarget, setup().ctx, ['2'], 'Not enough arguments', 'EINVAL');
  });

  it('2: a #stripes that kstrtouint refuses, or 0 → "Invalid stripe count" (checked before the chunk)', async () => {
    for (const bad of ['0', '-1', 'x', '2k', '4294967296', ' 2', '2\n\n', '++2']) {
      await assertRefused(stripedTarget, setup().ctx, [bad, 'bad'], 'Invalid stripe count', 'EINVAL');
    }
  });

  it('2: kstrtouint takes a leading + and one trailing newline', async () => {
    const t = await stripedTarget.construct(setup().ctx, ['+2', '128\n', '/dev/loop0', '0', '/dev/loop1', '0']);
    assert.equal(t.status('table'), '2 128 7:0 0 7:1 0');
  });

  it('3: a bad or zero chunk size → "Invalid chunk_size"', async () => {
    for (const bad of ['0', 'abc', '-8', '4294967296', '8.0']) {
      await assertRefused(stripedTarget, setup().ctx, ['2', bad], 'Invalid chunk_size', 'EINVAL');
    }
    await assertRefused(stripedTarget, setup(4097).ctx, ['2', '0'], 'Invalid chunk_size', 'EINVAL');
  });

  it('4: length not divisible by #stripes (checked before the destination count)', async () => {
    await assertRefused(stripedTarget, setup(4097).ctx, ['2', '1'], 'Target length not divisible by number of stripes', 'EINVAL');
  });

  it('5: length / #stripes not divisible by chunk (the spec\'s rejected example)', async () => {
    await assertRefused(stripedTarget, setup(4000).ctx, ['2', '128', '/dev/loop0', '0', '/dev/loop1', '0'],
      'Target length not divisible by chunk size', 'EINVAL');
    await assertRefused(stripedTarget, setup(4000).ctx, ['2', '128'], 'Target length not divisible by chunk size', 'EINVAL');
  });

  it('6: too few or too many destination arguments → "Not enough destinations specified"', async () => {
    for (const argv of [WORKED.slice(0, 5), WORKED.slice(0, 4), [...WORKED, 'extra'], [...WORKED, '/dev/loop0', '0']]) {
      const { ctx } = setup();
      await assertRefused(stripedTarget, ctx, argv, 'Not enough destinations specified', 'EINVAL');
      assert.equal(ctx.opened.length, 0, 'no device is looked up before the count check');
    }
  });

  it('7: a stripe context kmalloc cannot provide → ENOMEM, including the 32-bit wrap of 2 + 2 × #stripes', async () => {
    // 2^31 stripes: 2 + 2 × 2^31 wraps to 2, so two arguments pass the count check.
    await assertRefused(stripedTarget, setup(2 ** 31).ctx, [String(2 ** 31), '1'],
      'Memory allocation for striped context failed', 'ENOMEM');
    // (2^31 + 1) stripes need 4 arguments after the wrap.
    await assertRefused(stripedTarget, setup(2 ** 31 + 1).ctx, [String(2 ** 31 + 1), '1', 'a', 'b'],
      'Memory allocation for striped context failed', 'ENOMEM');
    // 64 + 24 × 174761 bytes is just above 4 MiB; 174760 stripes still fit and fail later, at the first device.
    const many = (n: number) => [String(n), '1', ...Array.from({ length: n }, () => ['/dev/none', '0']).flat()];
    await assertRefused(stripedTarget, setup(174761).ctx, many(174761), 'Memory allocation for striped context failed', 'ENOMEM');
    await assertRefused(stripedTarget, setup(174760).ctx, many(174760), "Couldn't parse stripe destination", 'ENOENT');
  });

  it('9: a bad stripe offset or device → "Couldn\'t parse stripe destination", offset first, stripes in order', async () => {
    await assertRefused(stripedTarget, setup().ctx, ['2', '128', '/dev/loop0', '0', '/dev/loop1', '4k'],
      "Couldn't parse stripe destination", 'EINVAL');
    await assertRefused(stripedTarget, setup().ctx, ['2', '128', '/dev/loop0', '0', '/dev/missing', '0'],
      "Couldn't parse stripe destination", 'ENOENT');
    const { ctx } = setup();
    await assertRefused(stripedTarget, ctx, ['2', '128', '/dev/missing', 'x', '/dev/loop1', '0'],
      "Couldn't parse stripe destination", 'EINVAL');
    assert.equal(ctx.opened.length, 0);
  });

  it('accepts chunk sizes that are not powers of two and any 32-bit chunk', async () => {
    const t = await stripedTarget.construct(setup(3 * 5 * 4).ctx, ['3', '5', '/dev/loop0', '0', '/dev/loop1', '0', '7:0', '100']);
    assert.equal(t.status('table'), '3 5 7:0 0 7:1 0 7:0 100');
    assert.equal(t.status('info'), '3 7:0 7:1 7:0 1 AAA');
    const big = await stripedTarget.construct(setup(4294967295).ctx, ['1', '4294967295', '/dev/loop0', '0']);
    assert.equal(big.status('table'), '1 4294967295 7:0 0');
  });
});

describe('striped: mapping (§8.2.2)', () => {
  it('maps the spec example x = 300 (c 128, n 2) to stripe 0, sector 172', () => {
    assert.deepEqual(stripeMapSector({ stripes: 2, chunk: 128 }, 300), { stripe: 0, sector: 172 });
  });

  it('writes land at the striped locations of the backing devices and read back', async () => {
    const { ctx, loop0, loop1 } = setup();
    const t = await stripedTarget.construct(ctx, WORKED);
    const data = pattern(512, 7);
    await splitIo(t, 'write', 100, data);
    // target [100,128) → loop0 4096+100; [128,256) → loop1 4096; [256,384) → loop0 4096+128; [384,612) …
    assert.deepEqual(loop0.peek((4096 + 100) * 512, 28 * 512), data.subarray(0, 28 * 512));
    assert.deepEqual(loop1.peek(4096 * 512, 128 * 512), data.subarray(28 * 512, 156 * 512));
    assert.deepEqual(loop0.peek((4096 + 128) * 512, 128 * 512), data.subarray(156 * 512, 284 * 512));
    assert.deepEqual(loop1.log.slice(0, 2), ['write@4096+128', 'write@4224+128']);
    const back = Buffer.alloc(data.length);
    await splitIo(t, 'read', 100, back);
    assert.deepEqual(back, data);
  });

  it('passes FUA with each piece', async () => {
    const { ctx, loop1 } = setup();
    const t = await stripedTarget.construct(ctx, WORKED);
    await t.write(130, pattern(2, 0), { fua: true });
    assert.deepEqual(loop1.log, ['write@4098+2 fua']);
  });

  it('refuses a piece that crosses a chunk (the mapper must split at maxIoSectors)', async () => {
    const t = await stripedTarget.construct(setup().ctx, WORKED);
    await assertIoError(t.write(120, pattern(16, 0), {}), 'EINVAL');
  });
});

describe('striped: flush, discard, write-zeroes (§8.2.4, §8.2.5)', () => {
  it('sends one flush per stripe, duplicates included', async () => {
    const loop0 = new TestDevice(8192);
    const ctx = fakeContext({ '/dev/loop0': loop0 }, { length: 512 });
    const t = await stripedTarget.construct(ctx, ['2', '128', '/dev/loop0', '0', '/dev/loop0', '4096']);
    await t.flush();
    assert.deepEqual(loop0.log, ['flush', 'flush']);
  });

  it('maps discard [100, 400) to stripe 0 [100, 256) and stripe 1 [0, 144) (spec example)', async () => {
    const loop0 = new TestDevice(8192);
    const loop1 = new TestDevice(8192);
    const ctx = fakeContext({ '/dev/loop0': loop0, '/dev/loop1': loop1 }, { length: 1024 });
    const t = await stripedTarget.construct(ctx, ['2', '128', '/dev/loop0', '0', '/dev/loop1', '0']);
    await t.discard(100, 300);
    assert.deepEqual(loop0.log, ['discard@100+156']);
    assert.deepEqual(loop1.log, ['discard@0+144']);
    assert.deepEqual(stripeMapRange({ stripes: 2, chunk: 128 }, 100, 400, 0), [100, 256]);
  });

  it('skips stripes that hold none of the range and adds the stripe offset', async () => {
    const { ctx, loop0, loop1 } = setup();
    const t = await stripedTarget.construct(ctx, WORKED);
    await t.writeZeroes(130, 20, { mayUnmap: true });
    assert.deepEqual(loop0.log, []);
    assert.deepEqual(loop1.log, ['write-zeroes@4098+20']);
  });

  it('fails discard with EOPNOTSUPP unless every stripe device supports it, without counting an error', async () => {
    const { ctx, loop0, loop1 } = setup(4096, { discard: false });
    const t = await stripedTarget.construct(ctx, WORKED);
    await assertIoError(t.discard(0, 256), 'EOPNOTSUPP');
    assert.deepEqual([...loop0.log, ...loop1.log], []);
    assert.equal(t.limits().discard, false);
    assert.equal(t.status('info'), '2 7:0 7:1 1 AA');
  });
});

describe('striped: errors and events (§8.2.6)', () => {
  async function failing(): Promise<{ t: Target; ctx: FakeContext; loop1: TestDevice }> {
    const { ctx, loop1 } = setup();
    const t = await stripedTarget.construct(ctx, WORKED);
    return { t, ctx, loop1 };
  }

  it('marks the failing stripe D and raises an event (spec: "1 AD" after a write error from 7:1)', async () => {
    const { t, ctx, loop1 } = await failing();
    loop1.failing.add('write');
    await assertIoError(t.write(128, pattern(1, 0), {}), 'EIO');
    assert.equal(t.status('info'), '2 7:0 7:1 1 AD');
    assert.equal(ctx.events, 1);
    await t.write(0, pattern(1, 0), {});
    assert.equal(t.status('info'), '2 7:0 7:1 1 AD', 'a success does not clear the counter');
  });

  it('raises events for the first 14 errors of a stripe only', async () => {
    const { t, ctx, loop1 } = await failing();
    loop1.failing.add('read');
    for (let i = 0; i < 20; i++) await assertIoError(t.read(128, Buffer.alloc(512)), 'EIO');
    assert.equal(ctx.events, 14);
  });

  it('counts flush and discard copy failures, but not "operation not supported"', async () => {
    const { t, ctx, loop1 } = await failing();
    loop1.failing.add('flush');
    await assertIoError(t.flush(), 'EIO');
    assert.equal(ctx.events, 1);
    loop1.failing.add('discard');
    await assertIoError(t.discard(0, 512), 'EIO');
    assert.equal(ctx.events, 2);
    loop1.failCode = 'EOPNOTSUPP';
    await assertIoError(t.discard(0, 512), 'EOPNOTSUPP');
    assert.equal(ctx.events, 2);
  });

  it('counts an error for every stripe entry on the failing device', async () => {
    const loop0 = new TestDevice(8192);
    const loop1 = new TestDevice(8192);
    const ctx = fakeContext({ '/dev/loop0': loop0, '/dev/loop1': loop1 }, { length: 768 });
    const t = await stripedTarget.construct(ctx, ['3', '128', '/dev/loop0', '0', '/dev/loop1', '0', '/dev/loop0', '1024']);
    loop0.failing.add('write');
    await assertIoError(t.write(0, pattern(1, 0), {}), 'EIO');
    assert.equal(t.status('info'), '3 7:0 7:1 7:0 1 DAD');
    assert.equal(ctx.events, 2);
  });

  it('waits for every piece of a failed discard before failing it', async () => {
    const { ctx, loop0, loop1 } = setup();
    const t = await stripedTarget.construct(ctx, WORKED);
    loop1.failing.add('discard');
    let slowCopyDone = false;
    const discard = loop0.discard.bind(loop0);
    loop0.discard = async (s, n) => {
      await new Promise((r) => setImmediate(r));
      await discard(s, n);
      slowCopyDone = true;
    };
    await assertIoError(t.discard(0, 512), 'EIO');
    assert.ok(slowCopyDone, 'the stripe-0 copy completed before the request failed');
  });
});

describe('striped: limits', () => {
  it('sets io_min = chunk × 512 and io_opt = io_min × #stripes', async () => {
    const t = await stripedTarget.construct(setup().ctx, WORKED);
    const l = t.limits();
    assert.equal(l.ioMin, 65536);
    assert.equal(l.ioOpt, 131072);
  });

  it('leaves io_min and io_opt inherited when they do not fit 32 bits (§10.2 bug 5)', async () => {
    const dev = new MemoryDevice(8192, { limits: { ioMin: 4096, ioOpt: 8192 } });
    const ctxOf = (length: number) => fakeContext({ '/dev/a': dev }, { length });
    // io_min fits (2^31) but io_opt = 2^32 does not: neither is set.
    const a = await stripedTarget.construct(ctxOf(2 ** 23), ['2', String(2 ** 22), '/dev/a', '0', '/dev/a', '0']);
    assert.deepEqual([a.limits().ioMin, a.limits().ioOpt], [4096, 8192]);
    const b = await stripedTarget.construct(ctxOf(4294967295), ['1', '4294967295', '/dev/a', '0']);
    assert.deepEqual([b.limits().ioMin, b.limits().ioOpt], [4096, 8192]);
    // The largest that fits: 2^23 - 1 sectors × 512 < 2^32.
    const c = await stripedTarget.construct(ctxOf(2 ** 23 - 1), ['1', String(2 ** 23 - 1), '/dev/a', '0']);
    assert.deepEqual([c.limits().ioMin, c.limits().ioOpt], [(2 ** 23 - 1) * 512, (2 ** 23 - 1) * 512]);
  });

  it('inherits block sizes, cache and write-zeroes from all stripe devices', async () => {
    const a = new MemoryDevice(8192, { limits: { logicalBlockSize: 4096, flush: false, writeZeroes: false } });
    const b = new MemoryDevice(8192, { limits: { flush: true } });
    const ctx = fakeContext({ '/dev/a': a, '/dev/b': b }, { length: 4096 });
    const t = await stripedTarget.construct(ctx, ['2', '128', '/dev/a', '0', '/dev/b', '0']);
    const l = t.limits();
    assert.equal(l.logicalBlockSize, 4096);
    assert.equal(l.flush, true);
    assert.equal(l.writeZeroes, false);
    await assertIoError(t.writeZeroes(0, 8, {}), 'EOPNOTSUPP');
  });
});
