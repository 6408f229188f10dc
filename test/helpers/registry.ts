import { MemoryDevice } from '../../src/block/memory-device.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { TargetType } from '../../src/mapper/target.ts';
import { IoError } from '../../src/block/errors.ts';

/**
 * A DeviceRegistry whose backing "files" are MemoryDevices attached by path
 * (/dev/loop0 → 7:0, …); opening any other path fails as a missing file would.
 */
export function memoryRegistry(types: readonly TargetType[], disks: Record<string, number>): {
  registry: DeviceRegistry;
  disks: Record<string, MemoryDevice>;
} {
  const targets = new TargetRegistry();
  for (const t of types) targets.register(t);
  const registry = new DeviceRegistry({
    targets,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached in this test`);
    },
  });
  const out: Record<string, MemoryDevice> = {};
  for (const [path, sectors] of Object.entries(disks)) {
    out[path] = new MemoryDevice(sectors, { name: path });
    registry.attach(path, out[path]);
  }
  return { registry, disks: out };
}
