/**
 * Every basic target, through the mapper, passes the BlockDevice
 * conformance suite (ARCHITECTURE §3), opened as a program opens
 * /dev/mapper/NAME. (zero is left out: it drops writes by definition, §8.3.)
 */
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { BUILTIN_TARGETS } from '../../src/targets/index.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';
import { memoryRegistry } from '../helpers/registry.ts';

function mapped(table: string[], disks: Record<string, number> = { '/dev/loop0': 16384, '/dev/loop1': 16384 }) {
  return async () => {
    const { registry } = memoryRegistry(BUILTIN_TARGETS, disks);
    await registry.create('dev', { table });
    return { dev: registry.open('dev'), cleanup: () => registry.shutdown() };
  };
}

blockDeviceConformance('linear', mapped(['0 8000 linear /dev/loop0 100']));
blockDeviceConformance('striped 3 × 24', mapped(['0 9072 striped 3 24 /dev/loop0 0 /dev/loop1 16 /dev/loop0 8000']));
blockDeviceConformance('linear + striped + linear', mapped([
  '0 1000 linear /dev/loop1 5000',
  '1000 4096 striped 2 128 /dev/loop0 0 /dev/loop1 0',
  '5096 3000 linear /dev/loop0 10000',
]));
// Many short targets, so requests (vectored writes among them) cross
// boundaries between targets that take chunk lists (linear, striped) and
// targets that get them joined (delay, flakey).
blockDeviceConformance('five targets, short ones first', mapped([
  '0 40 linear /dev/loop0 0',
  '40 64 striped 2 8 /dev/loop1 0 /dev/loop0 1000',
  '104 48 delay /dev/loop0 2000 0',
  '152 56 flakey /dev/loop1 3000 1 0',
  '208 7984 linear /dev/loop1 5000',
]));
blockDeviceConformance('delay 0 0 0', mapped(['0 8192 delay /dev/loop0 0 0 /dev/loop0 0 0 /dev/loop0 0 0']));
blockDeviceConformance('flakey, always up', mapped(['0 8192 flakey /dev/loop0 0 1 0']));
blockDeviceConformance('linear, read-only table', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, { '/dev/loop0': 16384 });
  await registry.create('dev', { table: ['0 8192 linear /dev/loop0 0'], readOnly: true });
  return { dev: registry.open('dev'), cleanup: () => registry.shutdown() };
});
blockDeviceConformance('linear over 4096-byte blocks', async () => {
  const { registry } = memoryRegistry(BUILTIN_TARGETS, {});
  registry.attach('/dev/big', new MemoryDevice(16384, { limits: { logicalBlockSize: 4096 } }));
  await registry.create('dev', { table: ['0 8192 linear /dev/big 4096'] });
  return { dev: registry.open('dev'), cleanup: () => registry.shutdown() };
});
