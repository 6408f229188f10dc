import type { BlockDevice, Extent, Limits, WriteOptions, WriteZeroesOptions } from '../block/device.ts';
import { IoError } from '../block/errors.ts';
import type { MappedDevice } from './mapped-device.ts';

/**
 * One opener's hold on a mapped device, as a file descriptor on
 * /dev/mapper/NAME is: it counts in the open count until closed, and I/O
 * through it after close fails with ESHUTDOWN. Closing it does not touch the
 * device or any other opener.
 */
export class DeviceHandle implements BlockDevice {
  private closed = false;

  constructor(
    private readonly md: MappedDevice,
    private readonly onClose: () => void,
  ) {}

  get name(): string {
    return this.md.name;
  }

  get sectors(): number {
    return this.md.sectors;
  }

  get limits(): Limits {
    return this.md.limits;
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.closed ? this.rejectClosed(sector) : this.md.read(sector, into);
  }

  write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    return this.closed ? this.rejectClosed(sector) : this.md.write(sector, data, opts);
  }

  writev(sector: number, chunks: readonly Buffer[], opts?: WriteOptions): Promise<void> {
    return this.closed ? this.rejectClosed(sector) : this.md.writev(sector, chunks, opts);
  }

  flush(): Promise<void> {
    return this.closed ? this.rejectClosed(0) : this.md.flush();
  }

  discard(sector: number, count: number): Promise<void> {
    return this.closed ? this.rejectClosed(sector) : this.md.discard(sector, count);
  }

  writeZeroes(sector: number, count: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.closed ? this.rejectClosed(sector) : this.md.writeZeroes(sector, count, opts);
  }

  extents(sector: number, count: number): Promise<Extent[]> {
    return this.closed ? this.rejectClosed(sector) : this.md.extents(sector, count);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
  }

  private rejectClosed<T>(sector: number): Promise<T> {
    return Promise.reject(new IoError('ESHUTDOWN', `${this.md.name}: handle is closed`, { device: this.md.name, sector }));
  }
}
