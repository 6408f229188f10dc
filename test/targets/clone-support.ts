/** Shared pieces of the clone tests: a clone over test devices, and waiting for it to settle. */
import { MemoryDevice } from '../../src/block/memory-device.ts';
import type { Target } from '../../src/mapper/target.ts';
import { type CloneTarget, type CloneTestOptions, makeCloneTarget } from '../../src/targets/clone/clone.ts';
import { type FakeContext, ManualClock, fakeContext } from '../helpers/target-context.ts';
import { TestDevice, pattern } from './support.ts';

export interface CloneRig {
  ctx: FakeContext;
  clock: ManualClock;
  meta: TestDevice;
  dest: TestDevice;
  source: MemoryDevice;
  /** Constructs a clone over the rig's devices (reopening the same metadata each time). */
  open(args?: string[], opts?: { length?: number; test?: CloneTestOptions }): Promise<CloneTarget>;
}

/** A source filled with a per-sector pattern, a blank destination and metadata device. */
export async function cloneRig(sectors: number, metaSectors = 8192): Promise<CloneRig> {
  const meta = new TestDevice(metaSectors, { name: 'meta' });
  const dest = new TestDevice(sectors, { name: 'dest' });
  const source = new MemoryDevice(sectors, { name: 'source' });
  await source.write(0, sourceData(0, sectors));
  const clock = new ManualClock();
  const ctx = fakeContext({ '/dev/meta': meta, '/dev/dest': dest, '/dev/source': source }, { length: sectors, clock });
  return {
    ctx, clock, meta, dest, source,
    async open(args = ['8'], opts = {}) {
      const c = { ...ctx, length: opts.length ?? sectors } as FakeContext;
      const t = await makeCloneTarget(opts.test).construct(c, ['/dev/meta', '/dev/dest', '/dev/source', ...args]);
      return t as CloneTarget;
    },
  };
}

/** The source's content: every sector distinct. */
export function sourceData(sector: number, count: number): Buffer {
  const buf = pattern(count, sector + 7);
  for (let i = 0; i < count; i++) buf.writeUInt32LE(sector + i, i * 512);
  return buf;
}

/** Lets every queued promise chain and MemoryDevice request run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

export async function readBack(t: Target, sector: number, count: number): Promise<Buffer> {
  const buf = Buffer.alloc(count * 512);
  const max = t.maxIoSectors ?? count;
  const pieces: Promise<void>[] = [];
  for (let s = sector; s < sector + count; ) {
    const next = Math.min(sector + count, (Math.floor(s / max) + 1) * max);
    pieces.push(t.read(s, buf.subarray((s - sector) * 512, (next - sector) * 512)));
    s = next;
  }
  await Promise.all(pieces);
  return buf;
}

/** The status fields after `start length type`, split. */
export function statusWords(t: Target): string[] {
  return t.status('info').split(' ');
}
