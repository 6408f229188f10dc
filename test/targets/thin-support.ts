/**
 * A thin pool over in-memory disks, through the mapper as a user builds it:
 * `pool` (thin-pool over /meta and /data) and thin volumes opened as
 * /dev/mapper/NAME. Log lines are kept so tests can check them.
 */
import type { BlockDevice } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { Clock, TargetType } from '../../src/mapper/target.ts';
import { linearTarget } from '../../src/targets/linear/linear.ts';
import { thinPoolTarget } from '../../src/targets/thin/pool.ts';
import { thinTarget } from '../../src/targets/thin/thin.ts';
import { ManualClock } from '../helpers/target-context.ts';

export interface PoolSetup {
  metaSectors?: number;
  dataSectors?: number;
  /** Pool table length (default: the whole data device). */
  poolSectors?: number;
  blockSectors?: number;
  lowWater?: number;
  features?: string[];
  meta?: BlockDevice;
  data?: BlockDevice;
  clock?: Clock;
  poolType?: TargetType;
}

export class ThinStack {
  readonly logs: string[] = [];
  readonly registry: DeviceRegistry;
  readonly meta: BlockDevice;
  readonly data: BlockDevice;
  readonly clock: Clock;
  readonly blockSectors: number;
  private readonly handles: BlockDevice[] = [];

  constructor(readonly setup: PoolSetup = {}) {
    const targets = new TargetRegistry();
    for (const t of [linearTarget, setup.poolType ?? thinPoolTarget, thinTarget]) targets.register(t);
    this.clock = setup.clock ?? new ManualClock();
    const log = (level: string) => (msg: string) => this.logs.push(`${level}: ${msg}`);
    this.registry = new DeviceRegistry({
      targets,
      clock: this.clock,
      logger: () => ({ info: log('info'), warn: log('warn'), error: log('error') }),
      openFile: async (path) => {
        throw new IoError('ENOENT', `${path}: not attached in this test`);
      },
    });
    this.meta = setup.meta ?? new MemoryDevice(setup.metaSectors ?? 8192, { name: 'meta' });
    this.data = setup.data ?? new MemoryDevice(setup.dataSectors ?? 65536, { name: 'data' });
    this.registry.attach('/meta', keepOpen(this.meta));
    this.registry.attach('/data', keepOpen(this.data));
    this.blockSectors = setup.blockSectors ?? 128;
  }

  poolLine(sectors = this.setup.poolSectors ?? this.data.sectors, features = this.setup.features ?? []): string {
    const f = features.length ? ` ${features.length} ${features.join(' ')}` : '';
    return `0 ${sectors} thin-pool /meta /data ${this.blockSectors} ${this.setup.lowWater ?? 0}${f}`;
  }

  async createPool(): Promise<this> {
    await this.registry.create('pool', { table: [this.poolLine()] });
    return this;
  }

  message(...words: string[]): Promise<string | undefined> {
    return this.registry.message('pool', 0, words);
  }

  /** A thin volume `name` of device `id` (created with create_thin unless `existing`). */
  async volume(name: string, id: number, sectors: number, opts: { existing?: boolean; origin?: string } = {}): Promise<BlockDevice> {
    if (!opts.existing) await this.message('create_thin', String(id));
    await this.registry.create(name, { table: [`0 ${sectors} thin /dev/mapper/pool ${id}${opts.origin ? ` ${opts.origin}` : ''}`] });
    const handle = this.registry.open(name);
    this.handles.push(handle);
    return handle;
  }

  status(name = 'pool'): string {
    return this.registry.status(name, { type: 'info' })[0]!.params;
  }

  table(name = 'pool'): string {
    return this.registry.status(name, { type: 'table' })[0]!.params;
  }

  /** Closes the volumes' handles and shuts the registry down; the disks stay open for another stack. */
  async close(): Promise<void> {
    for (const h of this.handles.splice(0)) await h.close();
    await this.registry.shutdown();
  }
}

/** `sectors` sectors of a pattern naming `tag` and each sector, so misplaced data never matches. */
export function pattern(tag: number, sectors: number, firstSector = 0): Buffer {
  const buf = Buffer.alloc(sectors * 512);
  for (let i = 0; i < sectors; i++) {
    buf.fill((tag * 37 + firstSector + i) & 0xff, i * 512, (i + 1) * 512);
    buf.writeUInt32LE(tag, i * 512);
    buf.writeUInt32LE(firstSector + i, i * 512 + 4);
  }
  return buf;
}

export async function readSectors(dev: BlockDevice, sector: number, count: number): Promise<Buffer> {
  const buf = Buffer.alloc(count * 512);
  await dev.read(sector, buf);
  return buf;
}

/** The device as a registry sees it, minus close: the test keeps the disk for the next stack. */
export function keepOpen(dev: BlockDevice): BlockDevice {
  return new Proxy(dev, {
    get(target, prop) {
      if (prop === 'close') return async () => undefined;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
