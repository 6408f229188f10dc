/**
 * The legs of a mirror and their error state (Linux dm-raid1.c struct
 * mirror, fail_mirror's bookkeeping, device_status_char; mirror spec §7.7).
 */
import type { BlockDevice } from '../../block/device.ts';
import type { DeviceRef } from '../../mapper/target.ts';

/** DM_RAID1_{WRITE,FLUSH,SYNC,READ}_ERROR */
export type LegError = 'write' | 'flush' | 'sync' | 'read';

export class Leg {
  /** Errors of any type; a leg with errors is skipped by choose(). */
  errorCount = 0;
  private readonly types = new Set<LegError>();

  constructor(readonly index: number, readonly ref: DeviceRef, readonly offset: number) {}

  get device(): BlockDevice {
    return this.ref.device;
  }

  get healthy(): boolean {
    return this.errorCount === 0;
  }

  /** Counts an error; true when this is the leg's first error of that type. */
  recordError(type: LegError): boolean {
    this.errorCount++;
    if (this.types.has(type)) return false;
    this.types.add(type);
    return true;
  }

  /** reset_ms_flags, when the mirror becomes fully in sync. */
  reset(): void {
    this.errorCount = 0;
    this.types.clear();
  }

  /** device_status_char: A alive, else the first of F, D, S, R set, else U. */
  statusChar(): string {
    if (this.errorCount === 0) return 'A';
    if (this.types.has('flush')) return 'F';
    if (this.types.has('write')) return 'D';
    if (this.types.has('sync')) return 'S';
    if (this.types.has('read')) return 'R';
    return 'U';
  }
}
