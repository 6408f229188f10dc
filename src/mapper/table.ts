/**
 * A constructed table: targets tiling the device, the limits they add up to,
 * and the routing of each request to the targets it touches (basic-targets
 * §3 validation, §3.5 limits, §4 splitting).
 */
import {
  DEFAULT_MAX_TRANSFER, type Extent, type Limits, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions,
} from '../block/device.ts';
import { type Errno, IoError, symbolicErrno, toIoError } from '../block/errors.ts';
import { ChunkCursor, joinChunks } from '../block/vectored.ts';
import { splitArgs } from './args.ts';
import { lcm } from './limits.ts';
import type { TableLine } from './table-text.ts';
import type { Clock, DeviceRef, Logger, Target, TargetType } from './target.ts';

/** What building a table needs from the device registry. */
export interface TableEnv {
  /** The mapped device's name and `major:minor`. */
  readonly deviceName: string;
  readonly md: string;
  readonly readOnly: boolean;
  readonly clock: Clock;
  readonly log: Logger;
  lookupType(name: string): TargetType | undefined;
  /** Opens an underlying device for this table; the table releases it on close. */
  openDevice(arg: string): Promise<DeviceRef>;
  releaseDevice(ref: DeviceRef): void;
  /** A target of this table raised an event (counted only while the table is live). */
  raiseEvent(table: Table): void;
  /** The mapped device's internal suspend and resume, as TargetContext has them. */
  internalSuspend(): Promise<void>;
  internalResume(): Promise<void>;
}

export interface TableEntry {
  readonly begin: number;
  readonly length: number;
  readonly type: TargetType;
  readonly target: Target;
  /** The source line, as given: what state.json keeps. */
  readonly source: TableLine;
}

const DM_MAX_TARGETS = 1048576;
const MAX_DEVICE_SECTORS = (1n << 54n) - 1n;

export class Table {
  readonly entries: readonly TableEntry[];
  readonly readOnly: boolean;
  readonly sectors: number;
  readonly limits: Limits;
  /** Every underlying device, most recently first referenced first (as `deps` lists them). */
  readonly deps: readonly DeviceRef[];
  private readonly refs: readonly DeviceRef[];
  private readonly env: TableEnv;

  private constructor(env: TableEnv, entries: TableEntry[], refs: DeviceRef[]) {
    this.env = env;
    this.entries = entries;
    this.readOnly = env.readOnly;
    this.refs = refs;
    const last = entries[entries.length - 1]!;
    this.sectors = last.begin + last.length;
    const seen = new Set<string>();
    this.deps = [...refs].reverse().filter((r) => !seen.has(r.id) && seen.add(r.id));
    this.limits = combineLimits(entries, env.readOnly);
  }

  /**
   * Builds every target in order, with Linux's checks in Linux's order
   * (basic-targets §3.1). On any failure every target built so far is
   * destroyed and every device opened is released: nothing is left behind.
   */
  static async build(lines: readonly TableLine[], env: TableEnv): Promise<Table> {
    if (lines.length === 0) throw new IoError('EINVAL', 'populate_table: no targets specified');
    if (lines.length > DM_MAX_TARGETS) throw new IoError('EOVERFLOW', `table has ${lines.length} targets, more than ${DM_MAX_TARGETS}`);
    const entries: TableEntry[] = [];
    const refs: DeviceRef[] = [];
    let table: Table | undefined;
    try {
      let next = 0n;
      for (const line of lines) {
        const fail = (code: Errno, msg: string): never => {
          throw new IoError(code, `line ${line.line}: ${env.md}: ${msg}`);
        };
        const failType = (code: Errno, msg: string): never => fail(code, `${line.type}: ${msg} (${symbolicErrno(code)})`);
        const first = entries[0];
        if (first?.type.features?.singleton) fail('EINVAL', `target type ${first.type.name} must appear alone in table`);
        if (line.length === 0n) fail('EINVAL', 'zero-length target');
        if (line.start + line.length > MAX_DEVICE_SECTORS) fail('EINVAL', 'too large device');
        const type = env.lookupType(line.type) ?? fail('EINVAL', `${line.type}: unknown target type`);
        if (type.features?.singleton && entries.length > 0) failType('EINVAL', 'singleton target type must appear alone in table');
        if (type.features?.alwaysWriteable && env.readOnly) failType('EINVAL', 'target type may not be included in a read-only table');
        if (entries.length > 0 && (type.features?.immutable || first?.type.features?.immutable) && first?.type !== type) {
          failType('EINVAL', 'immutable target type cannot be mixed with other target types');
        }
        if (line.start !== next) failType('EINVAL', 'Gap in table');
        const begin = Number(line.start);
        const length = Number(line.length);
        const opened: DeviceRef[] = [];
        let target: Target;
        try {
          target = await type.construct(
            {
              deviceName: env.deviceName,
              md: env.md,
              begin,
              length,
              readOnly: env.readOnly,
              clock: env.clock,
              log: env.log,
              openDevice: async (arg) => {
                const ref = await env.openDevice(arg);
                opened.push(ref);
                return ref;
              },
              raiseEvent: () => table && env.raiseEvent(table),
              internalSuspend: () => env.internalSuspend(),
              internalResume: () => env.internalResume(),
            },
            splitArgs(line.params),
          );
        } catch (err) {
          for (const ref of opened) env.releaseDevice(ref);
          const e = toIoError(err);
          failType(e.code, e.message);
          throw e; // unreachable: failType throws
        }
        refs.push(...opened);
        entries.push({ begin, length, type, target, source: line });
        next = line.start + line.length;
      }
    } catch (err) {
      await destroy(entries, refs, env);
      throw err;
    }
    table = new Table(env, entries, refs);
    return table;
  }

  /**
   * The device-area and logical-block checks (basic-targets §3.3, §3.4), which
   * Linux runs when the queue limits are computed: at the first load, and at
   * resume for every later table.
   */
  checkDeviceAreas(): void {
    const md = this.env.md;
    for (const e of this.entries) {
      const b = e.target.limits().logicalBlockSize / SECTOR_SIZE;
      for (const area of e.target.areas()) {
        const size = area.ref.device.sectors;
        if (size === 0) continue;
        if (area.start >= size || area.start + area.length > size) {
          throw new IoError('EINVAL', `line ${e.source.line}: ${md}: ${area.ref.diskName} too small for target: start=${area.start}, len=${area.length}, dev_size=${size}`);
        }
        if (b > 1 && area.start % b !== 0) {
          throw new IoError('EINVAL', `line ${e.source.line}: ${md}: start=${area.start} not aligned to h/w logical block size ${b * SECTOR_SIZE} of ${area.ref.diskName}`);
        }
        if (b > 1 && area.length % b !== 0) {
          throw new IoError('EINVAL', `line ${e.source.line}: ${md}: len=${area.length} not aligned to h/w logical block size ${b * SECTOR_SIZE} of ${area.ref.diskName}`);
        }
      }
    }
    const B = this.limits.logicalBlockSize / SECTOR_SIZE;
    let pos = 0;
    const misaligned = (i: number, e: TableEntry): IoError =>
      new IoError('EINVAL', `line ${e.source.line}: ${md}: table line ${i} (start sect ${e.begin} len ${e.length}) not aligned to h/w logical block size ${B * SECTOR_SIZE}`);
    this.entries.forEach((e, i) => {
      const b = e.target.limits().logicalBlockSize / SECTOR_SIZE;
      const need = (B - pos) % B;
      if (need < e.length && need % b !== 0) throw misaligned(i, e);
      pos = (pos + e.length) % B;
    });
    if (pos !== 0) throw misaligned(this.entries.length, this.entries[this.entries.length - 1]!);
  }

  /** True when no target reports a device (an error-only table): Linux keeps the old limits (§3.2). */
  get hasNoDevices(): boolean {
    return this.entries.every((e) => e.target.areas().length === 0) && !this.entries.some((e) => e.type.name === 'zero');
  }

  /** Index of the entry holding `sector` (which must be inside the table). */
  find(sector: number): number {
    let lo = 0;
    let hi = this.entries.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.entries[mid]!.begin <= sector) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.mapData(sector, into.length / SECTOR_SIZE, into, bufferPieces, (t, rel, piece) => t.read(rel, piece));
  }

  write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.mapData(sector, data.length / SECTOR_SIZE, data, bufferPieces, (t, rel, piece) => t.write(rel, piece, opts));
  }

  /**
   * A vectored write: each target gets its part of the chunk list as views of
   * the same chunks, never a copy; a target without `writev` gets its part
   * joined into one buffer, so it sees the bytes a single-buffer write carries.
   */
  writev(sector: number, chunks: readonly Buffer[], count: number, opts: WriteOptions): Promise<void> {
    return this.mapData(sector, count, chunks, chunkPieces, (t, rel, piece) =>
      t.writev ? t.writev(rel, piece, opts) : t.write(rel, joinChunks(piece), opts));
  }

  /** An empty flush reaches every target at once (R6: the device's flush covers every underlying device). */
  flush(): Promise<void> {
    return settleAll(this.entries.map((e) => e.target.flush()));
  }

  discard(sector: number, count: number): Promise<void> {
    return this.mapRange(sector, count, (t, rel, n) => t.discard(rel, n));
  }

  writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void> {
    return this.mapRange(sector, count, (t, rel, n) => t.writeZeroes(rel, n, opts));
  }

  async extents(sector: number, count: number): Promise<Extent[]> {
    const parts: Promise<Extent[]>[] = [];
    this.forEachPiece(sector, count, false, (e, rel, n) => {
      const t = e.target;
      parts.push(
        t.extents
          ? t.extents(rel, n).then((xs) => xs.map((x) => ({ ...x, sector: x.sector + e.begin })))
          : Promise.resolve([{ sector: e.begin + rel, count: n, hole: false, zero: false }]),
      );
    });
    const out: Extent[] = [];
    for (const x of (await Promise.all(parts)).flat()) {
      const last = out[out.length - 1];
      if (last && last.hole === x.hole && last.zero === x.zero && last.sector + last.count === x.sector) last.count += x.count;
      else out.push({ ...x });
    }
    return out;
  }

  async close(): Promise<void> {
    await destroy([...this.entries], [...this.refs], this.env);
  }

  /**
   * Splits a data request at target boundaries and at each target's
   * maxIoSectors (basic-targets §4.2); pieces run concurrently and the request
   * fails with the last error if any piece failed. One piece (the common case)
   * goes straight through without allocating; otherwise `pieces(data)` hands
   * out the data of consecutive pieces, `n` sectors each, in order.
   */
  private mapData<D>(
    sector: number,
    count: number,
    data: D,
    pieces: (data: D) => (n: number) => D,
    io: (t: Target, rel: number, piece: D) => Promise<void>,
  ): Promise<void> {
    const e = this.entries[this.find(sector)]!;
    const rel = sector - e.begin;
    if (rel + count <= pieceLimit(e, rel)) return io(e.target, rel, data);
    const next = pieces(data);
    const pending: Promise<void>[] = [];
    this.forEachPiece(sector, count, true, (entry, r, n) => pending.push(io(entry.target, r, next(n))));
    return settleAll(pending);
  }

  private mapRange(sector: number, count: number, io: (t: Target, rel: number, n: number) => Promise<void>): Promise<void> {
    const pending: Promise<void>[] = [];
    this.forEachPiece(sector, count, false, (e, rel, n) => pending.push(io(e.target, rel, n)));
    return settleAll(pending);
  }

  private forEachPiece(
    sector: number,
    count: number,
    splitAtMaxIo: boolean,
    fn: (e: TableEntry, rel: number, n: number, offset: number) => void,
  ): void {
    let i = this.find(sector);
    for (let s = sector, end = sector + count; s < end; ) {
      let e = this.entries[i]!;
      if (s >= e.begin + e.length) e = this.entries[++i]!;
      const rel = s - e.begin;
      const limit = splitAtMaxIo ? pieceLimit(e, rel) : e.length;
      const n = Math.min(end - s, limit - rel);
      fn(e, rel, n, s - sector);
      s += n;
    }
  }
}

/** Consecutive pieces of one buffer, as subarrays. */
function bufferPieces(buf: Buffer): (n: number) => Buffer {
  let at = 0;
  return (n) => buf.subarray(at, (at += n * SECTOR_SIZE));
}

/** Consecutive pieces of a chunk list, as views of its chunks. */
function chunkPieces(chunks: readonly Buffer[]): (n: number) => readonly Buffer[] {
  const cursor = new ChunkCursor(chunks);
  return (n) => cursor.nextSectors(n);
}

/** End (target-relative) of the piece that starts at `rel`: the target end or the next maxIo multiple. */
function pieceLimit(e: TableEntry, rel: number): number {
  const m = e.target.maxIoSectors;
  return m ? Math.min(e.length, (Math.floor(rel / m) + 1) * m) : e.length;
}

/** Waits for every piece; fails with the last error recorded, as Linux's dm_io does. */
export async function settleAll(pending: Promise<void>[]): Promise<void> {
  if (pending.length === 1) return pending[0];
  const results = await Promise.allSettled(pending);
  let failure: PromiseRejectedResult | undefined;
  for (const r of results) if (r.status === 'rejected') failure = r;
  if (failure) throw failure.reason;
}

function combineLimits(entries: readonly TableEntry[], readOnly: boolean): Limits {
  const all = entries.map((e) => e.target.limits());
  return {
    logicalBlockSize: Math.max(...all.map((l) => l.logicalBlockSize)),
    physicalBlockSize: Math.max(...all.map((l) => l.physicalBlockSize)),
    ioMin: Math.max(...all.map((l) => l.ioMin)),
    ioOpt: all.reduce((acc, l) => lcm(acc, l.ioOpt), 0),
    maxTransfer: DEFAULT_MAX_TRANSFER,
    readOnly,
    flush: all.some((l) => l.flush),
    fua: all.some((l) => l.fua),
    discard: all.every((l) => l.discard),
    writeZeroes: all.every((l) => l.writeZeroes),
    discardZeroes: all.every((l) => l.discardZeroes),
  };
}

async function destroy(entries: TableEntry[], refs: DeviceRef[], env: TableEnv): Promise<void> {
  const results = await Promise.allSettled(entries.map((e) => e.target.close()));
  for (const ref of refs) env.releaseDevice(ref);
  for (const r of results) if (r.status === 'rejected') env.log.error(`target destructor failed: ${toIoError(r.reason).message}`);
}
