import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IoError } from '../../src/block/errors.ts';
import type { Clock, Target } from '../../src/mapper/target.ts';
import { delayTarget } from '../../src/targets/delay/delay.ts';
import { fakeContext, ManualClock } from '../helpers/target-context.ts';
import { assertIoError, assertRefused, pattern, TestDevice } from './support.ts';

function setup(length = 8192, opts: { discard?: boolean; clock?: Clock } = {}) {
  const loop0 = new TestDevice(8192, { name: 'loop0', limits: { discard: opts.discard ?? true } });
  const loop1 = new TestDevice(8192, { name: 'loop1' });
  const clock = new ManualClock();
  const ctx = fakeContext({ '/dev/loop0': loop0, '/dev/loop1': loop1 }, { length, clock: opts.clock ?? clock });
  return { ctx, clock, loop0, loop1 };
}

/** Lets promise callbacks (timer wake-ups, device completions) run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Tracks whether a request has completed, without awaiting it. */
function track(p: Promise<void>): { done: () => boolean; promise: Promise<void> } {
  let done = false;
  const promise = p.then(() => {
    done = true;
  });
  return { done: () => done, promise };
}

describe('delay: constructor (§8.5.1)', () => {
  it('prints the worked-example tables and an idle status (§8.5.4)', async () => {
    const d3 = await delayTarget.construct(setup().ctx, ['/dev/loop0', '0', '500']);
    assert.equal(d3.status('table'), '7:0 0 500');
    assert.equal(d3.status('info'), '0 0 0');
    const d6 = await delayTarget.construct(setup(4096).ctx, ['/dev/loop0', '2048', '0', '/dev/loop1', '4096', '400']);
    assert.equal(d6.status('table'), '7:0 2048 0 7:1 4096 400');
    const d9 = await delayTarget.construct(setup().ctx, ['/dev/loop0', '0', '50', '/dev/loop0', '0', '100', '7:0', '0', '333']);
    assert.equal(d9.status('table'), '7:0 0 50 7:0 0 100 7:0 0 333');
    assert.deepEqual(delayTarget.version, [1, 5, 0]);
  });

  it('reports one area per class (d6: 7:0 at 2048, 7:1 at 4096 twice)', async () => {
    const { ctx } = setup(4096);
    const d6 = await delayTarget.construct(ctx, ['/dev/loop0', '2048', '0', '/dev/loop1', '4096', '400']);
    assert.deepEqual(
      d6.areas().map((a) => [a.ref.id, a.start, a.length]),
      [['7:0', 2048, 4096], ['7:1', 4096, 4096], ['7:1', 4096, 4096]],
    );
  });

  it('refuses argument counts other than 3, 6 or 9', async () => {
    for (const n of [0, 1, 2, 4, 5, 7, 8, 10, 12]) {
      const argv = Array.from({ length: n }, () => '0');
      await assertRefused(delayTarget, setup().ctx, argv, 'Requires exactly 3, 6 or 9 arguments', 'EINVAL');
    }
  });

  it('checks each triple offset, then delay, then device', async () => {
    const { ctx } = setup();
    await assertRefused(delayTarget, ctx, ['/dev/missing', '1k', 'x'], 'Invalid device sector', 'EINVAL');
    await assertRefused(delayTarget, ctx, ['/dev/missing', '0', '1.5'], 'Invalid delay', 'EINVAL');
    assert.equal(ctx.opened.length, 0);
    for (const bad of ['-1', '+5', '5ms', '0x10']) {
      await assertRefused(delayTarget, setup().ctx, ['/dev/loop0', '0', bad], 'Invalid delay', 'EINVAL');
    }
    await assertRefused(delayTarget, setup().ctx, ['/dev/missing', '0', '5'], 'Device lookup failed', 'ENOENT');
  });

  it('builds classes read, write, flush: a bad write or flush triple is found after the read device is opened', async () => {
    const six = setup();
    await assertRefused(delayTarget, six.ctx, ['/dev/loop0', '0', '5', '/dev/loop1', '0', 'x'], 'Invalid delay', 'EINVAL');
    assert.equal(six.ctx.opened.length, 1);
    const nine = setup();
    await assertRefused(delayTarget, nine.ctx, ['/dev/loop0', '0', '5', '/dev/loop1', '0', '5', '/dev/gone', '0', '5'],
      'Device lookup failed', 'ENOENT');
    assert.deepEqual(nine.ctx.opened.map((r) => r.id), ['7:0', '7:1']);
  });

  it('parses a shared triple once per class it serves', async () => {
    const three = setup();
    await delayTarget.construct(three.ctx, ['/dev/loop0', '0', '5']);
    assert.deepEqual(three.ctx.opened.map((r) => r.id), ['7:0', '7:0', '7:0']);
    const six = setup();
    await delayTarget.construct(six.ctx, ['/dev/loop0', '0', '5', '/dev/loop1', '0', '5']);
    assert.deepEqual(six.ctx.opened.map((r) => r.id), ['7:0', '7:1', '7:1']);
  });

  it('truncates delays to 32 bits (4294967296 → 0) and has no upper bound', async () => {
    const t = await delayTarget.construct(setup().ctx, ['/dev/loop0', '0', '4294967296']);
    assert.equal(t.status('table'), '7:0 0 0');
    const max = await delayTarget.construct(setup().ctx, ['/dev/loop0', '0', '4294967295']);
    assert.equal(max.status('table'), '7:0 0 4294967295');
  });
});

describe('delay: holding and releasing (§8.5.2)', () => {
  it('holds a write for its delay, counting it in the status (d3: "0 1 0")', async () => {
    const { ctx, clock, loop0 } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '500']);
    const data = pattern(4, 9);
    const w = track(t.write(16, data, {}));
    await settle();
    assert.equal(t.status('info'), '0 1 0');
    assert.deepEqual(loop0.log, [], 'nothing reached the device');
    clock.advance(499);
    await settle();
    assert.equal(w.done(), false);
    clock.advance(1);
    await w.promise;
    assert.deepEqual(loop0.peek(16 * 512, data.length), data);
    assert.equal(t.status('info'), '0 0 0');
  });

  it('sends each class to its own device and offset; delay 0 is immediate and not counted', async () => {
    const { ctx, clock, loop0, loop1 } = setup(4096);
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '2048', '0', '/dev/loop1', '4096', '400']);
    await t.read(10, Buffer.alloc(512));
    assert.deepEqual(loop0.log, ['read@2058+1']);
    const w = track(t.write(10, pattern(1, 1), { fua: true }));
    const f = track(t.flush());
    const d = track(t.discard(20, 8));
    await settle();
    assert.equal(t.status('info'), '0 2 1', 'the flush class counts apart even when it shares the write triple');
    clock.advance(400);
    await Promise.all([w.promise, f.promise, d.promise]);
    assert.deepEqual(loop1.log, ['write@4106+1 fua', 'flush', 'discard@4116+8']);
  });

  it('holds flushes in the flush class (d9: "0 0 1")', async () => {
    const { ctx, clock, loop0 } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '50', '/dev/loop0', '0', '100', '/dev/loop0', '0', '333']);
    const f = track(t.flush());
    await settle();
    assert.equal(t.status('info'), '0 0 1');
    clock.advance(332);
    await settle();
    assert.equal(f.done(), false);
    clock.advance(1);
    await f.promise;
    assert.deepEqual(loop0.log, ['flush']);
  });

  it('keeps arrival order within a class and lets a shorter class overtake', async () => {
    const { ctx, clock, loop0 } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '100', '/dev/loop0', '0', '50']);
    const r = track(t.read(0, Buffer.alloc(512)));
    const w1 = track(t.write(0, Buffer.alloc(512, 1), {}));
    const w2 = track(t.write(0, Buffer.alloc(512, 2), {}));
    await settle();
    assert.equal(t.status('info'), '1 2 0');
    clock.advance(50);
    await Promise.all([w1.promise, w2.promise]);
    assert.equal(r.done(), false);
    clock.advance(50);
    await r.promise;
    assert.deepEqual(loop0.log, ['write@0+1', 'write@0+1', 'read@0+1']);
    assert.deepEqual(loop0.peek(0, 512), Buffer.alloc(512, 2));
  });

  it('submits everything due at one wake-up in arrival order, across classes', async () => {
    const { ctx, clock, loop0 } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '100', '/dev/loop0', '0', '50']);
    const all = [t.read(0, Buffer.alloc(512)), t.write(0, Buffer.alloc(512, 1), {})];
    clock.advance(100);
    await Promise.all(all);
    assert.deepEqual(loop0.log, ['read@0+1', 'write@0+1']);
  });

  it('wakes for a request due earlier than the armed wake-up', async () => {
    const { ctx, clock } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '50', '/dev/loop0', '0', '500']);
    const w = track(t.write(0, pattern(1, 0), {}));
    clock.advance(10);
    const r = track(t.read(0, Buffer.alloc(512)));
    clock.advance(50);
    await r.promise;
    assert.equal(w.done(), false);
    assert.equal(t.status('info'), '0 1 0');
    clock.advance(440);
    await w.promise;
  });

  it('passes a device error back to the held request', async () => {
    const { ctx, clock, loop0 } = setup();
    loop0.failing.add('write');
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '20']);
    const w = t.write(0, pattern(1, 0), {});
    clock.advance(20);
    await assertIoError(w, 'EIO');
  });

  it('keeps dispatching when a device throws instead of rejecting', async () => {
    const { ctx, clock, loop0 } = setup();
    const write = loop0.write.bind(loop0);
    loop0.write = (sector, data, opts) => {
      if (sector === 0) throw new IoError('EIO', 'synchronous failure');
      return write(sector, data, opts);
    };
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '20']);
    const first = t.write(0, pattern(1, 0), {});
    const second = t.write(8, pattern(1, 1), {});
    clock.advance(20);
    await assertIoError(first, 'EIO');
    await second;
    assert.deepEqual(loop0.peek(8 * 512, 512), pattern(1, 1));
  });

  it('supports discard through the write class only when every class device does; never write-zeroes', async () => {
    const { ctx } = setup(4096, { discard: false });
    const t = await delayTarget.construct(ctx, ['/dev/loop1', '0', '0', '/dev/loop1', '0', '0', '/dev/loop0', '0', '0']);
    assert.equal(t.limits().discard, false);
    await assertIoError(t.discard(0, 8), 'EOPNOTSUPP');
    await assertIoError(t.writeZeroes(0, 8, {}), 'EOPNOTSUPP');
    assert.equal(t.limits().writeZeroes, false);
  });
});

describe('delay: suspend and resume (§8.5.3, §10.2 bugs 2 and 3)', () => {
  async function heldThree(): Promise<{ t: Target; clock: ManualClock; loop0: TestDevice; all: Promise<void>[] }> {
    const { ctx, clock, loop0 } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '1000']);
    const all = [t.read(0, Buffer.alloc(512)), t.write(8, pattern(1, 0), {}), t.flush()];
    return { t, clock, loop0, all };
  }

  it('presuspend submits everything held at once, without the clock moving', async () => {
    const { t, loop0, all } = await heldThree();
    assert.equal(t.status('info'), '1 1 1');
    await t.presuspend!({ noflush: false });
    assert.equal(t.status('info'), '0 0 0');
    await Promise.all(all);
    assert.deepEqual(loop0.log, ['read@0+1', 'write@8+1', 'flush']);
  });

  it('holds nothing that arrives after presuspend started, until resume', async () => {
    const { t, clock } = await heldThree();
    const suspending = t.presuspend!({ noflush: true });
    const late = t.write(0, pattern(1, 3), {});
    assert.equal(t.status('info'), '0 0 0');
    await late;
    await suspending;
    await t.resume!();
    const again = track(t.write(0, pattern(1, 4), {}));
    await settle();
    assert.equal(t.status('info'), '0 1 0', 'delaying is on again after resume');
    clock.advance(1000);
    await again.promise;
  });

  it('never leaves a request held that raced presuspend', async () => {
    const { ctx } = setup();
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '1000']);
    const racing = t.write(0, pattern(1, 0), {});
    await t.presuspend!({ noflush: false });
    await settle();
    assert.equal(t.status('info'), '0 0 0');
    await racing; // completes although the clock never moved
  });

  it('cancels its wake-up when nothing is held any more', async () => {
    const signals: AbortSignal[] = [];
    const clock = new ManualClock();
    const recording: Clock = {
      now: () => clock.now(),
      sleep: (ms, signal) => {
        signals.push(signal!);
        return clock.sleep(ms);
      },
    };
    const { ctx } = setup(8192, { clock: recording });
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '1000']);
    const w = t.write(0, pattern(1, 0), {});
    assert.equal(signals.length, 1);
    assert.equal(signals[0]!.aborted, false);
    await t.presuspend!({ noflush: false });
    assert.equal(signals[0]!.aborted, true);
    await w;
  });

  it('submits anything still held when the table is destroyed', async () => {
    const { t, all } = await heldThree();
    await t.close();
    await Promise.all(all);
    assert.equal(t.status('info'), '0 0 0');
  });

  it('works on the system clock', async () => {
    const { systemClock } = await import('../../src/mapper/clock.ts');
    const { ctx, loop0 } = setup(8192, { clock: systemClock });
    const t = await delayTarget.construct(ctx, ['/dev/loop0', '0', '1']);
    await t.write(0, pattern(1, 5), {});
    assert.deepEqual(loop0.peek(0, 512), pattern(1, 5));
    const held = t.write(0, pattern(1, 6), {});
    await t.presuspend!({ noflush: false }); // cancels the armed timer: the test process exits at once
    await held;
  });

  it('reports IoErrors, not strings, for refused operations', async () => {
    const t = await delayTarget.construct(setup().ctx, ['/dev/loop0', '0', '0']);
    await assert.rejects(t.writeZeroes(4, 8, {}), (err: unknown) => err instanceof IoError && err.sector === 4);
  });
});
