/**
 * Shared pieces of the mirror tests: a context whose devices carry the
 * `major:minor` names of the spec's examples (254:N), an independent decoder
 * of the disk log written from the spec's layout table (§5.1), and waiting
 * helpers.
 */
import type { BlockDevice, WriteOptions } from '../../src/block/device.ts';
import { MemoryDevice as MemoryDeviceBase } from '../../src/block/memory-device.ts';
import { IoError } from '../../src/block/errors.ts';
import { joinChunks } from '../../src/block/vectored.ts';
import { silentLogger } from '../../src/mapper/clock.ts';
import { splitArgs } from '../../src/mapper/args.ts';
import type { Clock, DeviceRef, Logger } from '../../src/mapper/target.ts';
import { type MirrorOptions, type MirrorSet, makeMirrorTarget } from '../../src/targets/mirror/mirror.ts';
import { type FakeContext, ManualClock } from '../helpers/target-context.ts';

export const LENGTH = 131072; // 64 MiB, the spec's examples

/** A context whose devices are named `254:N` (or any `maj:min` key) as in the spec's examples. */
export function dmContext(
  devices: Record<string, BlockDevice>,
  opts: { length?: number; clock?: Clock; log?: Logger } = {},
): FakeContext & { warnings: string[] } {
  const refs = new Map<string, DeviceRef>();
  for (const [id, device] of Object.entries(devices)) {
    const [major, minor] = id.split(':').map(Number) as [number, number];
    refs.set(id, { device, major, minor, id, diskName: `dm-${minor}` });
  }
  const warnings: string[] = [];
  const ctx: FakeContext & { warnings: string[] } = {
    deviceName: 'm',
    md: '254:9',
    begin: 0,
    length: opts.length ?? LENGTH,
    readOnly: false,
    clock: opts.clock ?? new ManualClock(),
    log: opts.log ?? { ...silentLogger, warn: (m) => warnings.push(m), error: (m) => warnings.push(m) },
    events: 0,
    opened: [],
    warnings,
    async openDevice(arg) {
      const ref = refs.get(arg);
      if (!ref) throw new IoError('ENXIO', `${arg}: no such device`);
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

export async function construct(ctx: FakeContext, args: string, opts: MirrorOptions = {}): Promise<MirrorSet> {
  return (await makeMirrorTarget(opts).construct(ctx, splitArgs(args))) as MirrorSet;
}

/** Lets queued callbacks and promise chains run until `cond` holds (a bounded number of turns). */
export async function until(cond: () => boolean, what: string, turns = 200000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Lets every queued callback run a number of event-loop turns. */
export async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** `in/total` of an info status line. */
export function syncProgress(status: string): { inSync: number; total: number } {
  const m = / (\d+)\/(\d+) 1 /.exec(status);
  if (!m) throw new Error(`not a mirror status line: ${status}`);
  return { inSync: Number(m[1]), total: Number(m[2]) };
}

// ---- an independent reading of the disk log (spec §5.1 layout table) ----

export interface DecodedLog {
  magicOk: boolean;
  version: number;
  nrRegions: bigint;
  /** Region n is clean when bit n of the bitmap at byte 1024 is set (LSB first). */
  clean(n: number): boolean;
}

export function decodeLogImage(img: Buffer): DecodedLog {
  const magicBytes = img.subarray(0, 4);
  return {
    magicOk: magicBytes.equals(Buffer.from([0x72, 0x52, 0x69, 0x4d])),
    version: img[4]! + img[5]! * 0x100 + img[6]! * 0x10000 + img[7]! * 0x1000000,
    nrRegions: [...img.subarray(8, 16)].reduceRight((acc, b) => acc * 256n + BigInt(b), 0n),
    clean: (n) => ((img[1024 + Math.floor(n / 8)]! >> (n % 8)) & 1) === 1,
  };
}

/** Reads `bytes` bytes from the start of a device. */
export async function readBytes(dev: BlockDevice, bytes: number, sector = 0): Promise<Buffer> {
  const buf = Buffer.alloc(Math.ceil(bytes / 512) * 512);
  await dev.read(sector, buf);
  return buf.subarray(0, bytes);
}

/** Parses an `xxd` dump (with `*` repeat lines, as the spec prints them) into bytes. */
export function fromXxd(dump: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let last: Buffer | undefined;
  let lastOff = -16;
  let repeating = false;
  for (const line of dump.trim().split('\n').map((l) => l.trim())) {
    if (line === '*') {
      repeating = true;
      continue;
    }
    const m = /^([0-9a-f]{8}): ((?:[0-9a-f]{4} ?){8})/.exec(line)!;
    const off = parseInt(m[1]!, 16);
    const bytes = Buffer.from(m[2]!.replace(/ /g, ''), 'hex');
    if (repeating && last) for (let o = lastOff + 16; o < off; o += 16) last.copy(out, o);
    bytes.copy(out, off);
    last = bytes;
    lastOff = off;
    repeating = false;
  }
  if (repeating && last) for (let o = lastOff + 16; o < size; o += 16) last.copy(out, o);
  return out;
}

// ---- a traced, gateable, failable memory device ----

export type TraceOp = 'read' | 'write' | 'flush' | 'discard';

/**
 * A MemoryDevice that appends `submit <name> <op>[@sector]` and `done <name>
 * <op>` to a shared trace, can hold writes until released, and fails the ops
 * in `failing` (optionally only in a sector range) with EIO.
 */
export class TraceDevice extends MemoryDeviceBase {
  readonly failing = new Set<TraceOp>();
  failRange: { sector: number; count: number } | undefined;
  holdWrites = false;
  private held: (() => void)[] = [];

  constructor(sectors: number, readonly label: string, readonly trace: string[] = [], limits = {}) {
    super(sectors, { name: label, limits });
  }

  release(): void {
    this.holdWrites = false;
    for (const go of this.held.splice(0)) go();
  }

  get heldCount(): number {
    return this.held.length;
  }

  private async step(op: TraceOp, sector: number, count: number, run: () => Promise<void>, fua = false): Promise<void> {
    const where = op === 'flush' ? '' : `@${sector}+${count}${fua ? ' fua' : ''}`;
    this.trace.push(`submit ${this.label} ${op}${where}`);
    if (op === 'write' && this.holdWrites) await new Promise<void>((go) => this.held.push(go));
    const inRange = !this.failRange || (sector < this.failRange.sector + this.failRange.count && sector + count > this.failRange.sector);
    if (this.failing.has(op) && (op === 'flush' || inRange)) {
      this.trace.push(`fail ${this.label} ${op}${where}`);
      throw new IoError('EIO', `${this.label}: injected ${op} failure`, { device: this.label, sector });
    }
    await run();
    this.trace.push(`done ${this.label} ${op}${where}`);
  }

  override read(sector: number, into: Buffer): Promise<void> {
    return this.step('read', sector, into.length / 512, () => super.read(sector, into));
  }

  override write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    const copy = Buffer.from(data);
    return this.step('write', sector, data.length / 512, () => super.write(sector, copy, opts), opts?.fua);
  }

  /** Vectored writes too go through the recorded write (MemoryDevice's own writev would bypass it). */
  override writev(sector: number, chunks: readonly Buffer[], opts?: WriteOptions): Promise<void> {
    return this.write(sector, joinChunks(chunks), opts);
  }

  override flush(): Promise<void> {
    return this.step('flush', 0, 0, () => super.flush());
  }

  override discard(sector: number, count: number): Promise<void> {
    return this.step('discard', sector, count, () => super.discard(sector, count));
  }
}
