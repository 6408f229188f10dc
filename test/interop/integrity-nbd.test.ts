/**
 * integrity devices (J, B and D modes) served over NBD to the real Debian
 * clients: qemu-io patterns, including an unaligned write, and fio
 * --verify=crc32c; then a flipped byte in the backing device comes back to
 * qemu-io as an I/O error while its neighbours read fine.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { MemoryDevice } from '../../src/block/memory-device.ts';
import { IoError } from '../../src/block/errors.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import { integrityTarget } from '../../src/targets/integrity/integrity.ts';
import { type Served, run, serve } from '../nbd/helpers.ts';

const MiB = 1024 * 1024;
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Formats an integrity device over a fresh 64 MiB disk (first an 8-sector load, as integritysetup does), then serves it. */
async function servedIntegrity(mode: 'J' | 'B' | 'D'): Promise<{ served: Served; disk: MemoryDevice; registry: DeviceRegistry }> {
  const targets = new TargetRegistry();
  targets.register(integrityTarget);
  const registry = new DeviceRegistry({
    targets,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached`);
    },
  });
  const disk = new MemoryDevice((64 * MiB) / 512, { name: 'disk' });
  registry.attach('/dev/disk', disk);
  const args = `integrity /dev/disk 0 4 ${mode} 2 block_size:4096 internal_hash:crc32c`;
  await registry.create('int', { table: `0 8 ${args}` });
  const provided = Number(registry.status('int', { type: 'info' })[0]!.params.split(' ')[1]);
  await registry.load('int', `0 ${provided} ${args}`);
  await registry.resume('int');
  const handle = registry.open('int');
  const served = await serve({ int: handle });
  cleanups.push(async () => {
    await served.close();
    await handle.close();
    await registry.shutdown();
  });
  return { served, disk, registry };
}

for (const mode of ['J', 'B', 'D'] as const) {
  describe(`integrity ${mode} over NBD`, () => {
    it('qemu-io patterns and fio --verify=crc32c read back what was written', async () => {
      const { served } = await servedIntegrity(mode);
      const q = await run('qemu-io', ['-f', 'raw',
        '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x33 100 1000', '-c', 'flush',
        '-c', 'read -P 0x5a 0 100', '-c', 'read -P 0x33 100 1000', '-c', 'read -P 0x5a 1100 1047476',
        served.uri('int')]);
      assert.equal(q.code, 0, q.stderr + q.stdout);
      assert.doesNotMatch(q.stdout, /Pattern verification failed|error/i);
      const f = await run('fio', ['--name=v', '--ioengine=nbd', `--uri=${served.uri('int')}`, '--rw=randwrite', '--bs=4k',
        '--offset=2M', '--size=8M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=terse']);
      assert.equal(f.code, 0, f.stderr);
      const fields = f.stdout.trim().split('\n').pop()!.split(';');
      assert.equal(fields[4], '0', 'fio reports no error');
      assert.ok(Number(fields[5]) >= 8 * 1024, `fio read back ${fields[5]} KiB to verify`);
    });
  });
}

describe('integrity D over NBD: corruption', () => {
  it('a flipped byte under the device is an I/O error for that block only, and is counted', async () => {
    const { served, disk, registry } = await servedIntegrity('D');
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'flush', served.uri('int')]);
    assert.equal(w.code, 0, w.stderr);
    const image = disk.peek(0, 64 * MiB);
    const at = image.indexOf(Buffer.alloc(4096, 0xab));
    assert.ok(at >= 0, 'the data block is on the disk');
    await disk.write(Math.floor(at / 512), Buffer.concat([Buffer.from([0]), image.subarray(at + 1, at + 512)]));
    const bad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 0 4k', served.uri('int')]);
    assert.match(bad.stdout + bad.stderr, /Input\/output error/);
    const good = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 4k 60k', served.uri('int')]);
    assert.equal(good.code, 0, good.stderr);
    assert.doesNotMatch(good.stdout, /Pattern verification failed|error/i);
    assert.equal(registry.status('int', { type: 'info' })[0]!.params.split(' ')[0], '1', 'one mismatch counted');
  });
});
