/**
 * The basic targets through the real mapper: the spec's worked examples
 * (basic-targets §8) as `dmsetup table`/`status` would print them, the
 * device-area and alignment checks (§3.3, §3.4), and suspend with held I/O.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { BUILTIN_TARGETS } from '../../src/targets/index.ts';
import { memoryRegistry } from '../helpers/registry.ts';

function lines(registry: ReturnType<typeof memoryRegistry>['registry'], name: string, type: 'info' | 'table'): string[] {
  return registry.status(name, { type }).map((l) => `${l.start} ${l.length} ${l.type} ${l.params}`);
}

test('worked examples: linear, striped, zero, error, delay', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, { '/dev/loop0': 8192, '/dev/loop1': 8192 });
  await registry.create('lin', { table: '0 2048 linear /dev/loop0 1024' });
  await registry.create('str', { table: '0 4096 striped 2 128 /dev/loop0 4096 /dev/loop1 4096' });
  await registry.create('z', { table: '0 8192 zero' });
  await registry.create('e', { table: '0 8192 error' });
  await registry.create('d9', { table: '0 8192 delay /dev/loop0 0 50 /dev/loop0 0 100 /dev/loop0 0 333' });
  assert.deepEqual(lines(registry, 'lin', 'table'), ['0 2048 linear 7:0 1024']);
  assert.deepEqual(lines(registry, 'lin', 'info'), ['0 2048 linear ']);
  assert.deepEqual(lines(registry, 'str', 'table'), ['0 4096 striped 2 128 7:0 4096 7:1 4096']);
  assert.deepEqual(lines(registry, 'str', 'info'), ['0 4096 striped 2 7:0 7:1 1 AA']);
  assert.deepEqual(lines(registry, 'z', 'table'), ['0 8192 zero ']);
  assert.deepEqual(lines(registry, 'e', 'info'), ['0 8192 error ']);
  assert.deepEqual(lines(registry, 'd9', 'table'), ['0 8192 delay 7:0 0 50 7:0 0 100 7:0 0 333']);
  assert.deepEqual(lines(registry, 'd9', 'info'), ['0 8192 delay 0 0 0']);
  assert.deepEqual(registry.deps('str').map((r) => r.id), ['7:1', '7:0']);
  assert.deepEqual(registry.deps('d9').map((r) => r.id), ['7:0']);
  assert.equal(registry.info('str').readAhead, 512);
  assert.equal(registry.info('lin').readAhead, 256);
  await registry.shutdown();
});

test('striped: a table whose length is not a multiple of the chunk is refused with the ctr text', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, { '/dev/loop0': 8192, '/dev/loop1': 8192 });
  await assert.rejects(registry.create('s', { table: '0 4000 striped 2 128 /dev/loop0 0 /dev/loop1 0' }), {
    code: 'EINVAL',
    message: 'line 1: 253:0: striped: Target length not divisible by chunk size (-EINVAL)',
  });
  assert.equal(registry.list().length, 0);
});

test('zero, error: flush succeeds at once; zero reads zeroes and discards writes; error fails I/O with EIO', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, {});
  await registry.create('z', { table: '0 64 zero\n64 64 error' });
  const md = registry.get('z');
  await md.flush();
  await md.write(0, Buffer.alloc(1024, 9));
  const back = Buffer.alloc(1024, 1);
  await md.read(0, back);
  assert.ok(back.every((b) => b === 0));
  await assert.rejects(md.read(60, Buffer.alloc(8 * 512)), { code: 'EIO' });
  assert.equal(md.limits.flush, false);
  await registry.shutdown();
});

test('logical block alignment across targets (§3.4): the spec example is refused', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, {});
  registry.attach('/dev/big', new MemoryDevice(4096, { limits: { logicalBlockSize: 4096 } }));
  await assert.rejects(registry.create('x', { table: ['0 4 zero', '4 8 linear /dev/big 0'] }), {
    code: 'EINVAL',
    message: 'line 2: 253:0: table line 1 (start sect 4 len 8) not aligned to h/w logical block size 4096',
  });
  await assert.rejects(registry.create('x', { table: ['0 8 linear /dev/big 4'] }), {
    message: /start=4 not aligned to h\/w logical block size 4096 of loop0/,
  });
  await registry.create('ok', { table: ['0 8 zero', '8 8 linear /dev/big 8'] });
  assert.equal(registry.get('ok').limits.logicalBlockSize, 4096);
  await registry.shutdown();
});

test('delay: suspend submits every held request and waits for it (§8.5.3)', async () => {
  const { registry, disks } = memoryRegistry(BUILTIN_TARGETS, { '/dev/loop0': 8192 });
  await registry.create('d', { table: '0 8192 delay /dev/loop0 0 60000' });
  const md = registry.get('d');
  const write = md.write(8, Buffer.alloc(512, 5));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(lines(registry, 'd', 'info'), ['0 8192 delay 0 1 0']);
  await registry.suspend('d');
  await write;
  assert.equal(disks['/dev/loop0']!.peek(8 * 512, 1)[0], 5);
  assert.deepEqual(lines(registry, 'd', 'info'), ['0 8192 delay 0 0 0']);
  await registry.resume('d');
  await registry.shutdown();
});

test('striped over stacked linear devices round-trips data across chunk and target boundaries', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, { '/dev/loop0': 8192, '/dev/loop1': 8192 });
  await registry.create('a', { table: '0 4096 linear /dev/loop0 0' });
  await registry.create('b', { table: '0 4096 linear /dev/loop1 100' });
  await registry.create('s', { table: '0 1920 striped 2 24 /dev/mapper/a 0 /dev/mapper/b 8\n1920 1152 linear /dev/mapper/a 2900' });
  const md = registry.get('s');
  const data = Buffer.alloc(3072 * 512);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
  await md.write(0, data);
  const back = Buffer.alloc(data.length);
  await md.read(0, back);
  assert.ok(back.equals(data));
  await registry.shutdown();
});
