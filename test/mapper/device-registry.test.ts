import assert from 'node:assert/strict';
import { test } from 'node:test';
import { memoryRegistry } from '../helpers/registry.ts';
import { hookLog, nodevTarget, testmapTarget } from '../helpers/test-targets.ts';

const TYPES = [testmapTarget, nodevTarget];

test('create with a table: live, active, numbered 253:N from 0, deps as 7:N', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096, '/dev/loop1': 4096 });
  await registry.create('a', { table: '0 100 testmap /dev/loop0 0\n100 100 testmap /dev/loop1 0' });
  await registry.create('b');
  const a = registry.info('a');
  assert.deepEqual([a.minor, a.liveTable, a.inactiveTable, a.suspended, a.targetCount, a.readAhead], [0, true, false, false, 2, 256]);
  const b = registry.info('b');
  assert.deepEqual([b.minor, b.liveTable, b.targetCount, b.readAhead], [1, false, 0, undefined]);
  assert.deepEqual(registry.deps('a').map((r) => r.id), ['7:1', '7:0']);
  assert.deepEqual(registry.status('a', { type: 'table' }).map((l) => `${l.start} ${l.length} ${l.type} ${l.params}`), [
    '0 100 testmap 7:0 0',
    '100 100 testmap 7:1 0',
  ]);
  assert.deepEqual(registry.list().map((d) => d.name), ['a', 'b']);
  await registry.shutdown();
});

test('bad names, duplicate names and uuids are refused', async () => {
  const { registry } = memoryRegistry(TYPES, {});
  await registry.create('x', { uuid: 'U' });
  for (const bad of ['', 'a/b', 'control', '.', '..', 'n'.repeat(128)]) {
    await assert.rejects(registry.create(bad), { code: 'EINVAL' }, bad);
  }
  await assert.rejects(registry.create('x'), { code: 'EBUSY' });
  await assert.rejects(registry.create('y', { uuid: 'U' }), { code: 'EBUSY' });
  assert.deepEqual(registry.list().map((d) => d.name), ['x']);
});

test('a failed create leaves nothing behind and releases what it opened', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await assert.rejects(
    registry.create('x', { table: ['0 100 testmap /dev/loop0 0', '100 100 testmap /nonexistent 0'] }),
    { code: 'ENOENT', message: /^line 2: 253:0: testmap: .*\(-ENOENT\)$/ },
  );
  assert.equal(registry.has('x'), false);
  await assert.rejects(registry.create('y', { table: ['0 100 testmap /dev/loop0 0', '50 100 testmap /dev/loop0 0'] }), {
    message: 'line 2: 253:0: testmap: Gap in table (-EINVAL)',
  });
  await assert.rejects(registry.create('y', { table: ['0 100 nosuch'] }), { message: 'line 1: 253:0: nosuch: unknown target type' });
  await assert.rejects(registry.create('y', { table: ['0 0 testmap /dev/loop0 0'] }), { message: 'line 1: 253:0: zero-length target' });
  await assert.rejects(registry.create('y', { table: ['0 8 testmap /dev/loop0 5000'] }), {
    message: 'line 1: 253:0: loop0 too small for target: start=5000, len=8, dev_size=4096',
  });
  assert.equal(registry.list().length, 0);
  // the minor and the device are free again
  await registry.create('z', { table: ['0 100 testmap /dev/loop0 0'] });
  assert.equal(registry.info('z').minor, 0);
});

test('load stages, resume swaps; a reload whose devices are too small fails at resume and leaves the device suspended with the old table', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0'] });
  await registry.load('x', ['0 200 testmap /dev/loop0 0']);
  assert.equal(registry.info('x').inactiveTable, true);
  assert.equal(registry.get('x').sectors, 100);
  await registry.resume('x');
  assert.equal(registry.get('x').sectors, 200);
  assert.equal(registry.info('x').inactiveTable, false);

  await registry.load('x', ['0 200 testmap /dev/loop0 4000']); // load succeeds: checked at resume
  await assert.rejects(registry.resume('x'), { code: 'EINVAL', message: /too small for target/ });
  const info = registry.info('x');
  assert.deepEqual([info.suspended, info.inactiveTable, info.liveTable], [true, false, true]);
  assert.equal(registry.status('x', { type: 'table' })[0]!.params, '7:0 0');
  await registry.resume('x');
  assert.equal(registry.info('x').suspended, false);

  await registry.load('x', ['0 300 testmap /dev/loop0 0']);
  await registry.clear('x');
  assert.equal(registry.info('x').inactiveTable, false);
});

test('I/O waits while suspended and is mapped through the new table after resume', async () => {
  const { registry, disks } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0'] });
  hookLog.length = 0;
  await registry.suspend('x');
  assert.deepEqual(hookLog, ['presuspend 0', 'postsuspend 0']);
  const md = registry.get('x');
  let done = false;
  const w = md.write(0, Buffer.alloc(512, 7)).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(done, false);
  await registry.load('x', ['0 100 testmap /dev/loop0 1000']);
  await registry.resume('x');
  await w;
  assert.equal(disks['/dev/loop0']!.peek(1000 * 512, 1)[0], 7);
  assert.equal(disks['/dev/loop0']!.peek(0, 1)[0], 0);
  assert.ok(hookLog.includes('close 0') && hookLog.includes('resume 0'));
});

test('suspend waits for in-flight I/O', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0'] });
  const md = registry.get('x');
  const io = md.write(0, Buffer.alloc(4096));
  await registry.suspend('x');
  await io; // completed before suspend resolved: the drain waited for it
  assert.equal(registry.info('x').suspended, true);
});

test('no live table: I/O fails with EIO; resume without a table fails', async () => {
  const { registry } = memoryRegistry(TYPES, {});
  await registry.create('x');
  await assert.rejects(registry.get('x').read(0, Buffer.alloc(512)), { code: 'EIO' });
  await registry.suspend('x');
  await assert.rejects(registry.resume('x'), { code: 'EINVAL' });
});

test('stacking: /dev/mapper/NAME holds the lower device; remove of a held device is EBUSY; no cycles', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('low', { table: ['0 1000 testmap /dev/loop0 0'] });
  await registry.create('top', { table: ['0 500 testmap /dev/mapper/low 100'] });
  assert.equal(registry.info('low').openCount, 1);
  assert.deepEqual(registry.deps('top').map((r) => r.id), ['253:0']);
  await assert.rejects(registry.remove('low'), { code: 'EBUSY' });
  await assert.rejects(registry.load('low', ['0 1000 testmap /dev/mapper/top 0']), { code: 'EINVAL', message: /depends on it/ });
  await assert.rejects(registry.load('low', ['0 1000 testmap /dev/mapper/low 0']), { code: 'EINVAL' });
  await registry.get('top').write(0, Buffer.alloc(512, 3));
  const back = Buffer.alloc(512);
  await registry.get('low').read(100, back);
  assert.equal(back[0], 3);
  await registry.remove('top');
  assert.equal(registry.info('low').openCount, 0);
  await registry.remove('low');
  assert.equal(registry.list().length, 0);
});

test('an export handle counts as open; removing after release works; removed devices answer ESHUTDOWN', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0'] });
  const h = registry.acquire('x');
  await assert.rejects(registry.remove('x'), { code: 'EBUSY' });
  h.release();
  h.release();
  await registry.remove('x');
  await assert.rejects(h.device.read(0, Buffer.alloc(512)), { code: 'ESHUTDOWN' });
  assert.throws(() => registry.get('x'), { code: 'ENXIO' });
});

test('messages reach the target covering the sector; events count only from the live table', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0', '100 100 nodev'] });
  assert.equal(await registry.message('x', 5, ['hello', 'world']), 'hello+world');
  await assert.rejects(registry.message('x', 150, ['hi']), { message: 'x: nodev: Target type does not support messages' });
  await assert.rejects(registry.message('x', 200, ['hi']), { message: 'x: Target message sector outside device.' });
  await assert.rejects(registry.message('x', 0, ['@stats_list']), { message: /Unsupported message sent to DM core/ });
  await assert.rejects(registry.message('x', 0, []), { code: 'EINVAL' });
  const waiting = registry.wait('x', 0);
  await registry.message('x', 0, ['event']);
  assert.equal(await waiting, 1);
  assert.equal(await registry.wait('x', 0), 1);
});

test('an error-only table keeps the previous limits and skips the area checks (§3.2)', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0'] });
  await registry.load('x', ['0 100000 nodev']);
  await registry.resume('x');
  assert.equal(registry.get('x').sectors, 100000);
});

test('snapshot keeps the source text of every live table in creation order', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('b', { table: ['0 100 testmap /dev/loop0 0  # comment'] });
  await registry.create('a', { uuid: 'u1' });
  assert.deepEqual(registry.snapshot(), [
    { name: 'b', uuid: '', readOnly: false, table: ['0 100 testmap /dev/loop0 0'] },
    { name: 'a', uuid: 'u1', readOnly: false, table: [] },
  ]);
});

test('shutdown removes stacked devices top first', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('low', { table: ['0 1000 testmap /dev/loop0 0'] });
  await registry.create('top', { table: ['0 500 testmap /dev/mapper/low 0'] });
  await registry.shutdown();
  assert.equal(registry.list().length, 0);
});

test('a request a target hands back on a noflush suspend is reissued through the table live after resume', async () => {
  const { RequeueRequest } = await import('../../src/mapper/requeue.ts');
  const held: { reject: (e: Error) => void }[] = [];
  const holdingTarget = {
    name: 'holding',
    version: [0, 0, 1] as const,
    async construct(ctx: import('../../src/mapper/target.ts').TargetContext) {
      const { inheritLimits } = await import('../../src/mapper/limits.ts');
      const never = () => Promise.reject(new Error('not used'));
      return {
        read: never,
        write: () => new Promise<void>((_, reject) => held.push({ reject })),
        flush: () => Promise.resolve(),
        discard: never,
        writeZeroes: never,
        limits: () => inheritLimits([]),
        areas: () => [],
        status: () => '',
        async presuspend(opts: { noflush: boolean }) {
          for (const h of held.splice(0)) h.reject(opts.noflush ? new RequeueRequest(ctx.deviceName) : new Error('EIO'));
        },
        close: () => Promise.resolve(),
      };
    },
  };
  const { registry, disks } = memoryRegistry([testmapTarget, holdingTarget], { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 holding'] });
  const write = registry.get('x').write(3, Buffer.alloc(512, 0x42));
  await new Promise((r) => setImmediate(r));
  assert.equal(held.length, 1);
  await registry.load('x', ['0 100 testmap /dev/loop0 0']);
  await registry.suspend('x', { noflush: true });
  await registry.resume('x');
  await write;
  assert.equal(disks['/dev/loop0']!.peek(3 * 512, 1)[0], 0x42);
});

test('internal suspends nest and hold I/O without showing in info; the user\'s suspend and resume wait them out', async () => {
  const { registry } = memoryRegistry(TYPES, { '/dev/loop0': 4096 });
  await registry.create('x', { table: ['0 100 testmap /dev/loop0 0'] });
  const md = registry.get('x');
  const turns = async () => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  };
  const track = <T>(p: Promise<T>) => {
    const t = { done: false, p: p.then(() => void (t.done = true)) };
    return t;
  };
  hookLog.length = 0;
  await md.internalSuspend();
  await md.internalSuspend();
  assert.deepEqual(hookLog, ['presuspend 0', 'postsuspend 0'], 'the nested one only counts');
  assert.equal(registry.info('x').suspended, false);
  const write = track(md.write(0, Buffer.alloc(512, 1)));
  await md.internalResume();
  await turns();
  assert.equal(write.done, false, 'held until the last internal resume');
  await md.internalResume();
  await write.p;
  assert.deepEqual(hookLog.slice(2), ['resume 0']);

  // A user suspend during an internal one waits for it, then suspends.
  await md.internalSuspend();
  const userSuspend = track(registry.suspend('x'));
  await turns();
  assert.equal(userSuspend.done, false);
  await md.internalResume();
  await userSuspend.p;
  assert.equal(registry.info('x').suspended, true);

  // An internal suspend of a suspended device only counts; its resume leaves the user's suspend in place.
  await md.internalSuspend();
  const userResume = track(registry.resume('x'));
  await turns();
  assert.equal(userResume.done, false, 'the user\'s resume waits for the internal resume');
  const held = track(md.write(0, Buffer.alloc(512, 2)));
  await md.internalResume();
  await userResume.p;
  await held.p;
  assert.equal(registry.info('x').suspended, false);
  await assert.rejects(md.internalResume(), { code: 'EINVAL', message: 'x: internal resume without an internal suspend' });

  // Removal does not wait for an internal resume, nor suspends the targets a second time (__dm_destroy).
  await md.internalSuspend();
  hookLog.length = 0;
  await registry.remove('x');
  assert.deepEqual(hookLog.filter((h) => h.includes('suspend')), []);
  await md.internalResume();
  assert.equal(registry.has('x'), false);
});
