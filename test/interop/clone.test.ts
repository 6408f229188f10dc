/**
 * A clone device whose source is another host's NBD export (`nbd://` in the
 * table), itself served over NBD and driven by the real Debian clients while
 * background hydration runs: qemu-io patterns and fio --verify=crc32c. Every
 * check looks at data; at the end the destination holds the whole device.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { BlockDevice } from '../../src/block/device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { IoError } from '../../src/block/errors.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import { NbdDevice } from '../../src/nbd/client-device.ts';
import { cloneTarget } from '../../src/targets/clone/clone.ts';
import { type Served, run, serve } from '../nbd/helpers.ts';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
let sourceServer: Served;
let cloneServer: Served;
let registry: DeviceRegistry;
let dest: MemoryDevice;
let eventsAtStart: number;
let served: BlockDevice;

before(async () => {
  const source = new MemoryDevice(SIZE / 512, { name: 'source' });
  await source.write(0, Buffer.alloc(8 * MiB, 0x11));
  await source.write((8 * MiB) / 512, Buffer.alloc(8 * MiB, 0x22));
  sourceServer = await serve({ source }, { readOnly: new Set(['source']) });
  const targets = new TargetRegistry();
  targets.register(cloneTarget);
  registry = new DeviceRegistry({
    targets,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached`);
    },
    openers: { nbd: (uri) => NbdDevice.connect(uri) },
  });
  dest = new MemoryDevice(SIZE / 512, { name: 'dest' });
  registry.attach('/dev/meta', new MemoryDevice(8192, { name: 'meta' }));
  registry.attach('/dev/dest', dest);
  await registry.create('clone', {
    table: [`0 ${SIZE / 512} clone /dev/meta /dev/dest ${sourceServer.uri('source')} 128 1 no_hydration 2 hydration_batch_size 2`],
  });
  eventsAtStart = registry.get('clone').eventNr;
  served = registry.open('clone');
  cloneServer = await serve({ clone: served });
});

after(async () => {
  await cloneServer.close();
  await served.close();
  await registry.shutdown();
  await sourceServer.close();
});

function hydrated(): [number, number] {
  const words = registry.status('clone', { type: 'info' })[0]!.params.split(' ');
  const [done, total] = words[3]!.split('/').map(Number) as [number, number];
  return [done, total];
}

describe('clone over an nbd:// source, served over NBD', () => {
  it('qemu-io sees the source, its own partial and whole-region writes, while hydration runs', async () => {
    await registry.message('clone', 0, ['enable_hydration']);
    const r = await run('qemu-io', ['-f', 'raw',
      '-c', 'read -P 0x11 0 1M', '-c', 'read -P 0x22 8M 1M', '-c', 'read -P 0 16M 1M',
      '-c', 'write -P 0xcd 20484k 4k', '-c', 'write -P 0xab 24M 64k', '-c', 'flush',
      '-c', 'read -P 0 20480k 4k', '-c', 'read -P 0xcd 20484k 4k', '-c', 'read -P 0 20488k 56k', '-c', 'read -P 0xab 24M 64k',
      cloneServer.uri('clone')]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    assert.ok(dest.peek(20484 * 1024, 4096).equals(Buffer.alloc(4096, 0xcd)), 'the partial write reached the destination');
    const wrong = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x22 0 4k', cloneServer.uri('clone')]);
    assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed at offset 0/);
  });

  it('fio random writes verify with crc32c while hydration runs', async () => {
    const [before] = hydrated();
    const r = await run('fio', ['--name=verify', '--ioengine=nbd', `--uri=${cloneServer.uri('clone')}`, '--rw=randwrite',
      '--offset=2M', '--bs=4k', '--size=8M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0',
      '--output-format=terse'], 60_000);
    assert.equal(r.code, 0, r.stderr);
    const fields = r.stdout.trim().split('\n').pop()!.split(';');
    assert.equal(fields[4], '0', 'fio reports no error');
    assert.ok(Number(fields[5]) >= 8 * 1024, `fio read back ${fields[5]} KiB for verification`);
    const [after, total] = hydrated();
    assert.ok(after > before && after <= total, `hydration made progress: ${before} → ${after} of ${total}`);
  });

  it('hydration completes, raises an event, and the destination then holds the whole device', async () => {
    for (let i = 0; i < 600 && hydrated()[0] < hydrated()[1]; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(hydrated()[0], hydrated()[1]);
    // The commit that finds every region hydrated raises the event (within the 1 s commit period).
    await registry.wait('clone', eventsAtStart);
    const dir = await mkdtemp(join(tmpdir(), 'dmkit-clone-'));
    try {
      const copy = await run('nbdcopy', [cloneServer.uri('clone'), join(dir, 'clone.img')], 60_000);
      assert.equal(copy.code, 0, copy.stderr);
      const top = await readFile(join(dir, 'clone.img'));
      const back = Buffer.alloc(SIZE);
      await dest.read(0, back);
      assert.ok(back.equals(top), 'the destination holds what nbdcopy read from the clone device');
      assert.ok(top.subarray(0, 2 * MiB).equals(Buffer.alloc(2 * MiB, 0x11)));
      assert.ok(top.subarray(12 * MiB, 16 * MiB).equals(Buffer.alloc(4 * MiB, 0x22)));
      assert.ok(top.subarray(24 * MiB, 24 * MiB + 65536).equals(Buffer.alloc(65536, 0xab)));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
