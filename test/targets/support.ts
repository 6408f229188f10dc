/** Shared pieces of the basic-target tests. */
import assert from 'node:assert/strict';
import type { WriteOptions, WriteZeroesOptions } from '../../src/block/device.ts';
import { IoError, type Errno } from '../../src/block/errors.ts';
import { MemoryDevice, type MemoryDeviceOptions } from '../../src/block/memory-device.ts';
import { joinChunks } from '../../src/block/vectored.ts';
import { runOp } from '../../src/daemon/operations.ts';
import type { DeviceRegistry, StatusLine } from '../../src/mapper/device-registry.ts';
import type { Target, TargetContext, TargetType } from '../../src/mapper/target.ts';

/** Asserts that a constructor refuses `argv` with exactly Linux's ti->error and errno. */
export async function assertRefused(
  type: TargetType,
  ctx: TargetContext,
  argv: string[],
  message: string,
  code: Errno,
): Promise<void> {
  await assert.rejects(type.construct(ctx, argv), (err: unknown) => {
    assert.ok(err instanceof IoError, `expected an IoError, got ${String(err)}`);
    assert.equal(err.message, message);
    assert.equal(err.code, code);
    return true;
  });
}

/** Asserts that a promise rejects with an IoError of `code`. */
export async function assertIoError(p: Promise<unknown>, code: Errno): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IoError, `expected an IoError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

export type Op = 'read' | 'write' | 'flush' | 'discard' | 'write-zeroes';

/**
 * A MemoryDevice that records every request reaching it (`op@sector+count`,
 * with `fua` when set) and fails the operations named in `failing` with `failCode`.
 */
export class TestDevice extends MemoryDevice {
  readonly log: string[] = [];
  readonly failing = new Set<Op>();
  failCode: Errno = 'EIO';

  constructor(sectors: number, opts: MemoryDeviceOptions = {}) {
    super(sectors, opts);
  }

  private record(op: Op, sector: number, count: number, extra = ''): void {
    this.log.push(op === 'flush' ? 'flush' : `${op}@${sector}+${count}${extra}`);
    if (this.failing.has(op)) {
      throw new IoError(this.failCode, `${this.name}: injected ${op} failure`, { device: this.name, sector });
    }
  }

  override async read(sector: number, into: Buffer): Promise<void> {
    this.record('read', sector, into.length / 512);
    return super.read(sector, into);
  }

  override async write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    this.record('write', sector, data.length / 512, opts?.fua ? ' fua' : '');
    return super.write(sector, data, opts);
  }

  /** Vectored writes too go through the recorded write (MemoryDevice's own writev would bypass it). */
  override writev(sector: number, chunks: readonly Buffer[], opts?: WriteOptions): Promise<void> {
    return this.write(sector, joinChunks(chunks), opts);
  }

  override async flush(): Promise<void> {
    this.record('flush', 0, 0);
    return super.flush();
  }

  override async discard(sector: number, count: number): Promise<void> {
    this.record('discard', sector, count);
    return super.discard(sector, count);
  }

  override async writeZeroes(sector: number, count: number, opts?: WriteZeroesOptions): Promise<void> {
    this.record('write-zeroes', sector, count);
    return super.writeZeroes(sector, count, opts);
  }
}

/** `count` sectors, sector i filled with byte (seed + i) & 0xff. */
export function pattern(count: number, seed: number): Buffer {
  const buf = Buffer.alloc(count * 512);
  for (let i = 0; i < count; i++) buf.fill((seed + i) & 0xff, i * 512, (i + 1) * 512);
  return buf;
}

/**
 * Issues a read or write the way the mapper does: split at every multiple of
 * the target's maxIoSectors counted from the target start.
 */
export async function splitIo(
  target: Target,
  op: 'read' | 'write',
  sector: number,
  buf: Buffer,
): Promise<void> {
  const max = target.maxIoSectors ?? Infinity;
  const end = sector + buf.length / 512;
  const pieces: Promise<void>[] = [];
  for (let s = sector; s < end; ) {
    const next = Math.min(end, max === Infinity ? end : (Math.floor(s / max) + 1) * max);
    const piece = buf.subarray((s - sector) * 512, (next - sector) * 512);
    pieces.push(op === 'read' ? target.read(s, piece) : target.write(s, piece, {}));
    s = next;
  }
  await Promise.all(pieces);
}

/** `dmkit status [--noflush] NAME` as the daemon runs it: the first target's status words. */
export async function daemonStatus(registry: DeviceRegistry, name: string, opts: { noflush: boolean }): Promise<string> {
  const ops = { registry, endExport: async () => undefined };
  const reply = await runOp(ops, { id: 1, op: 'status', args: { name, noflush: opts.noflush } }, new AbortController().signal);
  return (reply as { targets: StatusLine[] }).targets[0]!.params;
}
