/**
 * A TargetContext for unit tests of one target: underlying devices are
 * registered by path and handed out as loop-style 7:N refs, like losetup.
 */
import type { BlockDevice } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { parseDevT } from '../../src/mapper/args.ts';
import { silentLogger } from '../../src/mapper/clock.ts';
import type { Clock, DeviceRef, TargetContext } from '../../src/mapper/target.ts';

export class ManualClock implements Clock {
  private t = 0;
  private waiters: { at: number; wake: () => void }[] = [];
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      this.waiters.push({ at: this.t + ms, wake });
    });
  }
  /** Moves time forward and wakes every sleeper that is due, in due order. */
  advance(ms: number): void {
    this.t += ms;
    const due = this.waiters.filter((w) => w.at <= this.t).sort((a, b) => a.at - b.at);
    this.waiters = this.waiters.filter((w) => w.at > this.t);
    for (const w of due) w.wake();
  }
}

export interface FakeContext extends TargetContext {
  events: number;
  opened: DeviceRef[];
  /** Internal suspends in effect: counted, as a unit test has no mapped device to hold. */
  internalSuspends: number;
}

export function fakeContext(
  devices: Record<string, BlockDevice>,
  opts: { length?: number; begin?: number; clock?: Clock; readOnly?: boolean } = {},
): FakeContext {
  const refs = new Map<string, DeviceRef>();
  Object.entries(devices).forEach(([path, device], minor) => {
    refs.set(path, { device, major: 7, minor, id: `7:${minor}`, diskName: `loop${minor}` });
  });
  const ctx: FakeContext = {
    deviceName: 'test',
    md: '253:0',
    begin: opts.begin ?? 0,
    length: opts.length ?? 0,
    readOnly: opts.readOnly ?? false,
    clock: opts.clock ?? new ManualClock(),
    log: silentLogger,
    events: 0,
    opened: [],
    async openDevice(arg: string): Promise<DeviceRef> {
      const devt = parseDevT(arg);
      const ref = devt
        ? [...refs.values()].find((r) => r.major === devt.major && r.minor === devt.minor)
        : refs.get(arg);
      if (!ref) throw new IoError('ENOENT', `${arg}: no such device`);
      ctx.opened.push(ref);
      return ref;
    },
    raiseEvent() {
      ctx.events++;
    },
    internalSuspends: 0,
    async internalSuspend() {
      ctx.internalSuspends++;
    },
    async internalResume() {
      ctx.internalSuspends--;
    },
  };
  return ctx;
}
