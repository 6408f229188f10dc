/**
 * Recording (CRASH-TESTING §2.1): a Recorder wraps each device of a stack and
 * logs, in one order across all of them, the submission and completion of
 * every write, FUA write, flush, discard and write-zeroes, with the tag the
 * target set. The recording plus the initial images is all the explorer needs
 * to rebuild any crash state.
 */
import {
  type BlockDevice, type Extent, type IoTag, type Limits, type WriteOptions, type WriteZeroesOptions,
  SECTOR_SIZE,
} from '../block/device.ts';
import { type Errno, toIoError } from '../block/errors.ts';
import type { SparseImage } from '../sim/sparse-image.ts';

export type RecordedOp = 'write' | 'write-zeroes' | 'discard' | 'flush';

export interface SubmitEvent {
  readonly seq: number;
  readonly type: 'submit';
  readonly dev: number;
  readonly id: number;
  readonly op: RecordedOp;
  readonly sector: number;
  readonly count: number;
  readonly fua: boolean;
  readonly tag?: IoTag | undefined;
  /** A private copy of a write's bytes; null for every other op. */
  readonly data: Buffer | null;
}

export interface CompleteEvent {
  readonly seq: number;
  readonly type: 'complete';
  readonly dev: number;
  readonly id: number;
  readonly ok: boolean;
  readonly code?: Errno | undefined;
}

export type RecordedEvent = SubmitEvent | CompleteEvent;

export interface RecordedDevice {
  readonly index: number;
  readonly name: string;
  readonly sectors: number;
  readonly limits: Limits;
  /** The device's durable content when recording began; absent for the top device, which the oracle reads instead. */
  readonly initial?: SparseImage | undefined;
}

/** One run's devices and events. Events are in the order they happened. */
export class Recording {
  readonly devices: RecordedDevice[] = [];
  readonly events: RecordedEvent[] = [];

  /** Wraps a device; its requests are logged here from now on. */
  record(inner: BlockDevice, initial?: SparseImage): Recorder {
    const index = this.devices.length;
    this.devices.push({ index, name: inner.name, sectors: inner.sectors, limits: inner.limits, initial });
    return new Recorder(inner, this, index);
  }

  /** The submit event of request `id` on device `dev`. */
  submitOf(dev: number, id: number): SubmitEvent | undefined {
    return this.events.find((e): e is SubmitEvent => e.type === 'submit' && e.dev === dev && e.id === id);
  }
}

/** A BlockDevice that forwards to `inner` and logs each modifying request (reads are not logged). */
export class Recorder implements BlockDevice {
  readonly name: string;
  readonly sectors: number;
  readonly limits: Limits;
  private nextId = 1;

  constructor(readonly inner: BlockDevice, private readonly recording: Recording, readonly index: number) {
    this.name = inner.name;
    this.sectors = inner.sectors;
    this.limits = inner.limits;
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.inner.read(sector, into);
  }

  write(sector: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    const copy = Buffer.from(data);
    return this.logged('write', sector, data.length / SECTOR_SIZE, opts.fua ?? false, opts.tag, copy,
      () => this.inner.write(sector, data, opts));
  }

  writeZeroes(sector: number, count: number, opts: WriteZeroesOptions = {}): Promise<void> {
    return this.logged('write-zeroes', sector, count, opts.fua ?? false, opts.tag, null,
      () => this.inner.writeZeroes(sector, count, opts));
  }

  discard(sector: number, count: number): Promise<void> {
    return this.logged('discard', sector, count, false, undefined, null, () => this.inner.discard(sector, count));
  }

  flush(): Promise<void> {
    return this.logged('flush', 0, 0, false, undefined, null, () => this.inner.flush());
  }

  extents(sector: number, count: number): Promise<Extent[]> {
    if (!this.inner.extents) return Promise.resolve([{ sector, count, hole: false, zero: false }]);
    return this.inner.extents(sector, count);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async logged(
    op: RecordedOp, sector: number, count: number, fua: boolean, tag: IoTag | undefined, data: Buffer | null,
    run: () => Promise<void>,
  ): Promise<void> {
    const { events } = this.recording;
    const id = this.nextId++;
    const dev = this.index;
    events.push({ seq: events.length, type: 'submit', dev, id, op, sector, count, fua, tag, data });
    try {
      await run();
    } catch (err) {
      events.push({ seq: events.length, type: 'complete', dev, id, ok: false, code: toIoError(err).code });
      throw err;
    }
    events.push({ seq: events.length, type: 'complete', dev, id, ok: true });
  }
}
