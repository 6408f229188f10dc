/**
 * log-writes (Linux dm-log-writes.c, target version 1.1.0): passes I/O to the
 * data device and records every write, discard, flush and FUA in a log device
 * in the order a worst-case write-back cache could have made them durable
 * (log-writes.md §4), in Linux's on-disk format (log-format.ts).
 *
 *   table:   <dev> <log_dev>
 *   status:  <logged entries> <highest allocated log sector>[ logging_disabled]
 *   message: mark <name>
 *
 * Ordering, per request (§4.2, §4.3):
 *   submission  — a write's payload is copied; a flush takes the whole
 *                 unflushed list with it;
 *   completion  — a flush queues its list and then itself for logging; a FUA
 *                 write queues itself alone; anything else joins the
 *                 unflushed list. Completion status is not examined (§7 rule 8).
 */
import { SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions } from '../../block/device.ts';
import { IoError, toIoError } from '../../block/errors.ts';
import { inheritLimits } from '../../mapper/limits.ts';
import type {
  DeviceArea, DeviceRef, StatusType, Target, TargetContext, TargetLimits, TargetType,
} from '../../mapper/target.ts';
import { ctrError, lookupDevice } from '../common/dev-offset.ts';
import { unsupported } from '../common/io.ts';
import { isMetadataWrite } from '../flakey/bio-opf.ts';
import {
  LOG_DISCARD_FLAG, LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG, LOG_METADATA_FLAG, maxMarkLength,
} from './log-format.ts';
import { LogWriter, type PendingBlock } from './log-writer.ts';

const TYPE = 'log-writes';
/** The mark Linux queues at teardown. */
export const END_MARK = 'dm-log-writes-end';

// ---- constructor -----------------------------------------------------------

async function logWritesCtr(ctx: TargetContext, argv: string[]): Promise<Target> {
  if (argv.length < 2) throw ctrError('Invalid argument count');
  const data = await lookupDevice(ctx, argv[0]!, 'Device lookup failed');
  const logdev = await lookupDevice(ctx, argv[1]!, 'Log device lookup failed');
  // Extra arguments are ignored, as in Linux.
  if (ctx.begin !== 0) {
    ctx.log.warn(
      `log-writes target starts at sector ${ctx.begin}: like Linux it does not subtract the start, ` +
        'so data-device sectors equal mapped-device sectors',
    );
  }
  return new LogWritesTarget(ctx, data, logdev);
}

// ---- I/O mapping -----------------------------------------------------------

export class LogWritesTarget implements Target {
  /** The data device's logical block size: the log's block unit. */
  private readonly sectorSize: number;
  /** Completed writes and discards not yet covered by a flush, in completion order. */
  private unflushed: PendingBlock[] = [];
  private readonly writer: LogWriter;

  constructor(
    private readonly ctx: TargetContext,
    private readonly data: DeviceRef,
    private readonly logdev: DeviceRef,
  ) {
    this.sectorSize = data.device.limits.logicalBlockSize;
    // Nothing is written at construction: the first super block goes out with
    // the first FUA or MARK entry (§2.1).
    this.writer = new LogWriter(logdev.device, this.sectorSize, ctx.log);
  }

  /** Linux does not remove the target's start (§2.1). */
  private map(sector: number): number {
    return this.ctx.begin + sector;
  }

  /** A pending item for a request at target-relative `sector`, in units of the log's sectorsize. */
  private pending(flags: number, sector: number, count: number): PendingBlock {
    const per = this.sectorSize / SECTOR_SIZE;
    return { flags, sector: this.map(sector) / per, nrSectors: count / per };
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.data.device.read(this.map(sector), into);
  }

  async write(sector: number, data: Buffer, opts: WriteOptions): Promise<void> {
    if (!this.writer.enabled) return this.data.device.write(this.map(sector), data, opts);
    const flags = (opts.fua ? LOG_FUA_FLAG : 0) | (isMetadataWrite(opts) ? LOG_METADATA_FLAG : 0);
    const block = this.pending(flags, sector, data.length / SECTOR_SIZE);
    // Copied now: the caller may reuse its buffer once the write completes,
    // long before the logger gets to it (§7 rule 7).
    block.data = Buffer.from(data);
    await this.submit(block, this.data.device.write(this.map(sector), data, opts), sector);
  }

  /** An empty flush takes the whole unflushed list with it, at submission (§4.2). */
  async flush(): Promise<void> {
    if (!this.writer.enabled) return this.data.device.flush();
    const block: PendingBlock = { flags: LOG_FLUSH_FLAG, sector: 0, nrSectors: 0 };
    const covered = this.unflushed;
    this.unflushed = [];
    await this.submit(block, this.data.device.flush(), 0, covered);
  }

  /**
   * Discards are always offered; if the data device has none they complete at
   * once without touching it, and are logged all the same (§1).
   */
  async discard(sector: number, count: number): Promise<void> {
    const device = this.data.device;
    // Logging off: Linux maps the discard to the data device unconditionally.
    if (!this.writer.enabled) return device.discard(this.map(sector), count);
    const passDown = device.limits.discard;
    const block = this.pending(LOG_DISCARD_FLAG, sector, count);
    await this.submit(block, passDown ? device.discard(this.map(sector), count) : Promise.resolve(), sector);
  }

  /** No write-zeroes bios: the core turns it off and callers write zero buffers, logged as writes (§1). */
  async writeZeroes(sector: number, _count: number, _opts: WriteZeroesOptions): Promise<void> {
    throw unsupported(this.ctx, TYPE, 'write-zeroes', sector);
  }

  /**
   * normal_end_io, run whether the request succeeded or not (§4.3, §7 rule 8):
   * the failure is reported to the caller and noted in the log, and the item
   * is logged as Linux logs it.
   */
  private async submit(block: PendingBlock, io: Promise<void>, sector: number, covered?: PendingBlock[]): Promise<void> {
    try {
      await io;
    } catch (err) {
      this.ctx.log.warn(
        `${this.ctx.deviceName}: request at sector ${this.map(sector)} failed (${toIoError(err).code}); ` +
          'logged as if it had succeeded, as Linux does',
      );
      throw err;
    } finally {
      if (block.flags & LOG_FLUSH_FLAG) this.writer.enqueue(...(covered ?? []), block);
      else if (block.flags & LOG_FUA_FLAG) this.writer.enqueue(block);
      else this.unflushed.push(block);
    }
  }

  /**
   * log_writes_io_hints: block sizes from the data device, io_min = physical
   * block size; flush and FUA always (the target is flush-capable, §1);
   * discard always, reading back as zeroes only when it is passed down.
   */
  limits(): TargetLimits {
    const l = inheritLimits([this.data]);
    return {
      ...l,
      ioMin: l.physicalBlockSize,
      flush: true,
      fua: true,
      discard: true,
      writeZeroes: false,
      discardZeroes: this.data.device.limits.discard && l.discardZeroes,
    };
  }

  /** log_writes_iterate_devices reports the data device only, from 0. */
  areas(): DeviceArea[] {
    return [{ ref: this.data, start: 0, length: this.ctx.length }];
  }

  // ---- status and messages -------------------------------------------------

  status(type: StatusType): string {
    if (type === 'table') return `${this.data.id} ${this.logdev.id}`;
    const w = this.writer;
    return `${w.loggedEntries} ${w.nextSector - 1}${w.enabled ? '' : ' logging_disabled'}`;
  }

  /** `mark <name>`: queued straight for logging, not held for a flush (§2.4, §4.4). */
  async message(argv: string[]): Promise<string | undefined> {
    const refuse = (text: string): never => {
      this.ctx.log.warn(text);
      throw new IoError('EINVAL', text);
    };
    if (argv.length !== 2) refuse(`Invalid log-writes message arguments, expect 2 arguments, got ${argv.length}`);
    if (argv[0]!.toLowerCase() !== 'mark') refuse(`Unrecognised log writes target message received: ${argv[0]}`);
    this.mark(argv[1]!);
    return undefined;
  }

  /** log_mark: kstrndup to sectorsize − 33 bytes (a C string: it also ends at a NUL). */
  private mark(name: string): void {
    let bytes = Buffer.from(name, 'utf8');
    const nul = bytes.indexOf(0);
    if (nul >= 0) bytes = bytes.subarray(0, nul);
    const mark = Buffer.from(bytes.subarray(0, maxMarkLength(this.sectorSize)));
    this.writer.enqueue({ flags: LOG_MARK_FLAG, sector: 0, nrSectors: 0, mark });
  }

  /** Resolves when everything queued so far has been written to the log device. */
  idle(): Promise<void> {
    return this.writer.drain();
  }

  /**
   * log_writes_dtr: the unflushed writes go to the head of the logging queue,
   * then the end mark; wait until all of it is on the log device, then flush
   * the log device once (see log-writer.ts).
   */
  async close(): Promise<void> {
    this.writer.enqueueFront(this.unflushed);
    this.unflushed = [];
    this.mark(END_MARK);
    await this.writer.drain();
    await this.writer.flushLog();
  }
}

export const logWritesTarget: TargetType = {
  name: TYPE,
  version: [1, 1, 0],
  construct: logWritesCtr,
};
