import type { BlockDevice } from '../block/device.ts';

/** An export opened by one NBD connection; released when the connection ends. */
export interface ExportHandle {
  readonly device: BlockDevice;
  readonly description: string;
  readonly readOnly: boolean;
  /** Called exactly once, after the connection's last request finished. */
  release(): void;
}

export interface ExportInfo {
  name: string;
  description: string;
}

/**
 * Where the server finds its exports. The daemon implements it over the
 * device registry (and counts open handles as a mapped device's open count);
 * StaticExports serves a fixed set of devices.
 */
export interface ExportProvider {
  list(): ExportInfo[];
  /** The export an empty export name means, if any. */
  defaultExport(): string | undefined;
  open(name: string): ExportHandle | undefined;
}

export interface StaticExportOptions {
  /** Export served for the empty name; default: the first one. */
  defaultName?: string;
  readOnly?: ReadonlySet<string>;
  descriptions?: ReadonlyMap<string, string>;
}

/** A fixed set of devices, for tests and for serving without the daemon. */
export class StaticExports implements ExportProvider {
  private readonly openCounts = new Map<string, number>();

  constructor(
    private readonly devices: ReadonlyMap<string, BlockDevice>,
    private readonly opts: StaticExportOptions = {},
  ) {}

  list(): ExportInfo[] {
    return [...this.devices.keys()].map((name) => ({ name, description: this.describe(name) }));
  }

  defaultExport(): string | undefined {
    return this.opts.defaultName ?? this.devices.keys().next().value;
  }

  open(name: string): ExportHandle | undefined {
    const device = this.devices.get(name);
    if (!device) return undefined;
    this.openCounts.set(name, this.openCount(name) + 1);
    let released = false;
    return {
      device,
      description: this.describe(name),
      readOnly: device.limits.readOnly || (this.opts.readOnly?.has(name) ?? false),
      release: () => {
        if (released) return;
        released = true;
        this.openCounts.set(name, this.openCount(name) - 1);
      },
    };
  }

  /** Handles of `name` not yet released. */
  openCount(name: string): number {
    return this.openCounts.get(name) ?? 0;
  }

  private describe(name: string): string {
    return this.opts.descriptions?.get(name) ?? '';
  }
}
