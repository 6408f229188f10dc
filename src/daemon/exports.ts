/**
 * Every mapped device is an NBD export named after it (ARCHITECTURE §8). An
 * open export holds the device (it counts in the open count), so `remove`
 * fails with EBUSY while a client is connected, as on Linux.
 */
import type { DeviceRegistry } from '../mapper/device-registry.ts';
import type { MappedDevice } from '../mapper/mapped-device.ts';
import type { ExportHandle, ExportInfo, ExportProvider } from '../nbd/exports.ts';

export class RegistryExports implements ExportProvider {
  constructor(
    private readonly registry: DeviceRegistry,
    /** `dmkit serve --read-only`: every export is read-only. */
    private readonly readOnly: boolean,
  ) {}

  list(): ExportInfo[] {
    return this.registry.list().map((md) => ({ name: md.name, description: describe(md) }));
  }

  /** The empty export name means the first device by name, so `nbd://host` alone reaches something. */
  defaultExport(): string | undefined {
    return this.registry.list()[0]?.name;
  }

  open(name: string): ExportHandle | undefined {
    if (!this.registry.has(name)) return undefined;
    const held = this.registry.acquire(name);
    return {
      device: held.device,
      description: describe(held.device),
      readOnly: this.readOnly || held.device.info().readOnly,
      release: held.release,
    };
  }
}

/** `dm-0 (253:0): linear, striped`: the kernel disk name, dev_t and target types. */
function describe(md: MappedDevice): string {
  const types = [...new Set((md.live?.entries ?? []).map((e) => e.type.name))];
  return `dm-${md.minor} (${md.id}): ${types.length > 0 ? types.join(', ') : 'no table'}`;
}
