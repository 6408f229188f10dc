import { SECTOR_SIZE } from '../block/device.ts';
import type { Errno } from '../block/errors.ts';
import { DiskState } from '../sim/disk-state.ts';
import type { RecordedEvent, Recording, SubmitEvent } from './recording.ts';

/** Failures where the device refused the request before doing anything: nothing is in doubt. */
const REFUSED = new Set<Errno>(['EINVAL', 'ENOSPC', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP']);

/**
 * Replays a recording through the disk model, one DiskState per recorded
 * underlying device (devices without an initial image, i.e. the top device,
 * are not disks). Advances only forward: the explorer visits cuts in order.
 */
export class Replay {
  /** Device index → its disk state; only devices with an initial image. */
  readonly disks = new Map<number, DiskState>();
  /** Events applied so far: the current cut. */
  position = 0;
  private readonly submitted = new Map<string, SubmitEvent>();

  constructor(private readonly recording: Recording) {
    for (const d of recording.devices) {
      if (!d.initial) continue;
      this.disks.set(d.index, new DiskState(d.initial, {
        name: d.name,
        atomicSectors: d.limits.logicalBlockSize / SECTOR_SIZE,
        volatileCache: d.limits.flush,
      }));
    }
  }

  advanceTo(cut: number): void {
    const { events } = this.recording;
    if (cut < this.position || cut > events.length) throw new RangeError(`replay cannot go from event ${this.position} to ${cut}`);
    for (; this.position < cut; this.position++) this.apply(events[this.position] as RecordedEvent);
  }

  private apply(ev: RecordedEvent): void {
    const state = this.disks.get(ev.dev);
    if (!state) return;
    const key = `${ev.dev}:${ev.id}`;
    if (ev.type === 'submit') {
      this.submitted.set(key, ev);
      if (ev.op === 'flush') state.submitFlush(ev.id);
      // A discard is replayed as zeroes: §1.10 allows it on any device.
      else state.submitWrite({ id: ev.id, sector: ev.sector, count: ev.count, data: ev.data, fua: ev.fua, tag: ev.tag });
      return;
    }
    const sub = this.submitted.get(key);
    if (!sub) throw new RangeError(`recording: completion of request #${ev.id} on device ${ev.dev} without a submission`);
    this.submitted.delete(key);
    if (sub.op === 'flush') {
      if (ev.ok) state.completeFlush(ev.id);
      else state.failFlush(ev.id);
    } else if (ev.ok) {
      state.completeWrite(ev.id);
    } else if (ev.code && REFUSED.has(ev.code)) {
      state.cancelWrite(ev.id);
    } else {
      state.failWrite(ev.id);
    }
  }
}
