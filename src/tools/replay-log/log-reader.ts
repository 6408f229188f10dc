/**
 * Reading and replaying a dm-log-writes log (log-writes §5), step for step as
 * fstests' src/log-writes/log-writes.c does it — the same positions, the same
 * validation, the same messages — over dmkit BlockDevices.
 *
 * Positions: `pos` is the byte offset of the log cursor; messages print it in
 * blocks of the log's sectorsize.
 */
import { SECTOR_SIZE, type BlockDevice } from '../../block/device.ts';
import { IoError, errnoNumber, toIoError } from '../../block/errors.ts';
import {
  ENTRY_HEADER_SIZE, LOG_DISCARD_FLAG, LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG, LOG_METADATA_FLAG,
  SUPER_SIZE, decodeEntry, decodeSuper, payloadBlocks, type LogEntry,
} from '../../targets/log-writes/log-format.ts';
import { isValidEntry, superProblem } from '../../targets/log-writes/log-validate.ts';
import { readAt, writeAt } from './image-io.ts';
import type { Output } from './options.ts';

/** sizeof(struct log_write_entry) in replay-log: the header plus one probe byte, padded to 8. */
const SEEK_ENTRY_SIZE = 40;
/** Discards are issued in pieces of at most 1 GiB. */
const DISCARD_CHUNK = 1 << 30;
/** Without discard support, zeroing larger pieces is skipped (log->max_zero_size). */
const MAX_ZERO_SIZE = 128 * 1024 * 1024;
const ZERO_CHUNK = 1 << 20;

/** Outcome of one step: 'ok' (an entry was handled), 'end' (no entries left), 'error' (message printed). */
export type Step = 'ok' | 'end' | 'error';

export interface ReplayTarget {
  device: BlockDevice;
  /** BLKDISCARD works on it (a block device that discards); otherwise replay writes zeroes. */
  discard: boolean;
}

export interface LogIo {
  stdout: Output;
  stderr: Output;
}

const FLAG_NAMES: readonly [number, string][] = [
  [LOG_FLUSH_FLAG, 'FLUSH'],
  [LOG_FUA_FLAG, 'FUA'],
  [LOG_DISCARD_FLAG, 'DISCARD'],
  [LOG_MARK_FLAG, 'MARK'],
  [LOG_METADATA_FLAG, 'METADATA'],
];

/** entry_flags_to_str: `FUA|METADATA`, unknown bits as `UNKNOWN.0x…`, none as `NONE`. */
export function flagsToString(flags: bigint): string {
  const parts: string[] = [];
  let rest = flags;
  for (const [bit, name] of FLAG_NAMES) {
    if (rest & BigInt(bit)) {
      parts.push(name);
      rest &= ~BigInt(bit);
    }
  }
  if (rest) parts.push(`UNKNOWN.0x${rest.toString(16)}`);
  return parts.length ? parts.join('|') : 'NONE';
}

/**
 * should_stop: the entry has one of the stop flags; when MARK is among them,
 * only a MARK whose name equals `mark` stops (strncmp over data_len + 1 bytes,
 * so the stored name's terminating zero takes part).
 */
export function shouldStop(entry: LogEntry, block: Buffer, stopFlags: number, mark?: Buffer): boolean {
  if (!(entry.flags & BigInt(stopFlags))) return false;
  if (!(stopFlags & LOG_MARK_FLAG)) return true;
  if (!(entry.flags & BigInt(LOG_MARK_FLAG)) || !mark) return false;
  const n = entry.dataLen + 1n;
  for (let i = 0; BigInt(i) < n; i++) {
    const a = mark[i] ?? 0;
    const b = block[ENTRY_HEADER_SIZE + i] ?? 0;
    if (a !== b) return false;
    if (a === 0) return true;
  }
  return true;
}

const errno = (err: unknown): number => errnoNumber(toIoError(err).code);

export class LogReader {
  readonly sectorSize: number;
  readonly nrEntries: bigint;
  /** Index of the next entry. */
  curEntry = 0n;
  /** Byte offset of the cursor in the log. */
  pos: number;
  verbose = 0;
  ignoreDiscard = false;
  startSector = 0n;
  endSector = (1n << 64n) - 1n;
  /** The header block of the entry handled last (sectorsize bytes). */
  readonly block: Buffer;
  entry: LogEntry = { sector: 0n, nrSectors: 0n, flags: 0n, dataLen: 0n };
  /** LOG_DISCARD_NOT_SUPP: set when the first discard fails; zeroes from then on. */
  private discardNotSupported = false;

  private constructor(
    private readonly log: BlockDevice,
    private readonly replay: ReplayTarget | undefined,
    readonly io: LogIo,
    sectorSize: number,
    nrEntries: bigint,
  ) {
    this.sectorSize = sectorSize;
    this.nrEntries = nrEntries;
    this.pos = sectorSize;
    this.block = Buffer.alloc(sectorSize);
  }

  /** log_open after the files are open: read and check the super block. */
  static async open(log: BlockDevice, replay: ReplayTarget | undefined, io: LogIo): Promise<LogReader | undefined> {
    const raw = Buffer.alloc(SUPER_SIZE);
    let got: number;
    try {
      got = await readAt(log, 0, raw);
    } catch (err) {
      io.stderr.write(`Error reading super: ${errno(err)}\n`);
      return undefined;
    }
    if (got < SUPER_SIZE) {
      io.stderr.write('Error reading super: 0\n');
      return undefined;
    }
    const sb = decodeSuper(raw);
    const problem = superProblem(sb);
    if (problem) {
      io.stderr.write(`${problem}\n`);
      return undefined;
    }
    // replay-log seeks to sectorsize; dmkit also needs whole 512-byte sectors
    // to address a block device, so other sizes are refused the same way.
    if (sb.sectorSize < SUPER_SIZE || sb.sectorSize % 512 !== 0) {
      io.stderr.write(`Error seeking to first entry: ${errnoNumber('EINVAL')}\n`);
      return undefined;
    }
    return new LogReader(log, replay, io, sb.sectorSize, sb.nrEntries);
  }

  private blockAt(pos: number): bigint {
    return BigInt(Math.floor(pos / this.sectorSize));
  }

  /** Reads the header block at the cursor into `block`; false after printing an error. */
  private async readHeader(bytes: number): Promise<boolean> {
    let got: number;
    try {
      got = await readAt(this.log, this.pos, this.block.subarray(0, bytes));
    } catch (err) {
      this.io.stderr.write(`Error reading entry: ${errno(err)}\n`);
      return false;
    }
    if (got !== bytes) {
      this.io.stderr.write('Error reading entry: 0\n');
      return false;
    }
    this.entry = decodeEntry(this.block);
    if (!isValidEntry(this.entry, this.block)) {
      this.io.stderr.write(`Malformed entry @${this.blockAt(this.pos)}\n`);
      return false;
    }
    return true;
  }

  /** log_seek_entry: position before entry `n`, walking headers from the start. */
  async seekEntry(n: bigint): Promise<boolean> {
    if (n >= this.nrEntries) {
      this.io.stderr.write('Invalid entry number\n');
      return false;
    }
    this.pos = this.sectorSize;
    this.curEntry = 0n;
    for (let i = 0n; i < n; i++) {
      if (!(await this.readHeader(SEEK_ENTRY_SIZE))) return false;
      const e = this.entry;
      if (this.verbose > 1) {
        this.io.stdout.write(
          `seek entry ${i}@${this.blockAt(this.pos)}: ${e.sector}, size ${e.nrSectors}, flags 0x${e.flags.toString(16)}\n`,
        );
      }
      this.pos += this.sectorSize + this.blocksBytes(payloadBlocks(e));
      this.curEntry++;
    }
    return true;
  }

  /** log_seek_next_entry: step over one entry, reading its header block. */
  async seekNextEntry(): Promise<Step> {
    if (this.curEntry >= this.nrEntries) return 'end';
    if (!(await this.readHeader(this.sectorSize))) return 'error';
    this.curEntry++;
    this.pos += this.sectorSize;
    const e = this.entry;
    if (this.verbose > 1) {
      this.io.stdout.write(
        `seek entry ${this.curEntry - 1n}@${this.blockAt(this.pos)}: ${e.sector}, size ${e.nrSectors}, ` +
          `flags 0x${e.flags.toString(16)}(${flagsToString(e.flags)})\n`,
      );
    }
    this.pos += this.blocksBytes(payloadBlocks(e));
    return 'ok';
  }

  /** log_should_skip: entries outside --start-sector/--end-sector (flushes and marks never are). */
  private outsideWindow(e: LogEntry): boolean {
    if (e.nrSectors === 0n) return false;
    return e.sector + e.nrSectors <= this.startSector || e.sector > this.endSector;
  }

  /** log_replay_next_entry: read one entry and apply it to the replay target. */
  async replayNextEntry(): Promise<Step> {
    if (this.curEntry >= this.nrEntries) return 'end';
    if (!(await this.readHeader(this.sectorSize))) return 'error';
    this.curEntry++;
    this.pos += this.sectorSize;
    const e = this.entry;
    const size = this.payloadBytes();
    const skip = this.outsideWindow(e);
    if (this.verbose > 1 || (this.verbose && !skip)) {
      this.io.stdout.write(
        `${skip ? 'skipping' : 'replaying'} ${this.curEntry - 1n}@${this.blockAt(this.pos)}: sector ${e.sector}, ` +
          `size ${size}, flags 0x${e.flags.toString(16)}(${flagsToString(e.flags)})\n`,
      );
    }
    if (size === 0) return 'ok';
    // Discards are carried out even outside the sector window, as replay-log does.
    if (e.flags & BigInt(LOG_DISCARD_FLAG)) return (await this.applyDiscard(e)) ? 'ok' : 'error';
    if (skip) {
      this.pos += size;
      return 'ok';
    }
    const ok = await this.applyData(e, this.pos);
    this.pos += size;
    return ok ? 'ok' : 'error';
  }

  /** Reads an entry's payload from byte `payloadPos` of the log and writes it to the replay target. */
  async applyData(e: LogEntry, payloadPos: number): Promise<boolean> {
    const size = this.payloadBytes(e);
    const buf = Buffer.alloc(size);
    let got: number;
    try {
      got = await readAt(this.log, payloadPos, buf);
    } catch (err) {
      this.io.stderr.write(`Error reading data: ${errno(err)}\n`);
      return false;
    }
    if (got !== size) {
      // A short read leaves errno as it was: replay-log prints 0.
      this.io.stderr.write('Error reading data: 0\n');
      return false;
    }
    try {
      await writeAt(this.target().device, this.byteOffset(e), buf);
    } catch (err) {
      this.io.stderr.write(`Error writing data: ${errno(err)}\n`);
      return false;
    }
    return true;
  }

  /** Where an entry's data lives on the replay target, in bytes. */
  byteOffset(e: LogEntry): number {
    return Number(e.sector * BigInt(this.sectorSize));
  }

  /** Bytes an entry covers on the data device. */
  payloadBytes(e: LogEntry = this.entry): number {
    return this.blocksBytes(e.nrSectors);
  }

  private blocksBytes(blocks: bigint): number {
    return Number(blocks * BigInt(this.sectorSize));
  }

  private target(): ReplayTarget {
    if (!this.replay) throw new IoError('EINVAL', 'replay-log: no replay target was opened');
    return this.replay;
  }

  /**
   * log_discard: pieces of at most 1 GiB; BLKDISCARD until it fails once,
   * then zeroes for good — but a piece over 128 MiB is then skipped (§5.2 step 4).
   */
  async applyDiscard(e: LogEntry): Promise<boolean> {
    if (this.ignoreDiscard) return true;
    let start = this.byteOffset(e);
    let size = this.payloadBytes(e);
    while (size > 0) {
      const len = Math.min(size, DISCARD_CHUNK);
      if (!this.discardNotSupported && !(await this.tryDiscard(start, len))) {
        if (this.verbose) this.io.stdout.write("replay device doesn't support discard, switching to writing zeros\n");
        this.discardNotSupported = true;
      }
      if (this.discardNotSupported && !(await this.zeroRange(start, len))) return false;
      size -= len;
      start += len;
    }
    return true;
  }

  /** discard_range: the BLKDISCARD ioctl, which only a discarding block device accepts. */
  private async tryDiscard(start: number, len: number): Promise<boolean> {
    const t = this.target();
    if (!t.discard) return false;
    try {
      await t.device.discard(start / SECTOR_SIZE, len / SECTOR_SIZE);
      return true;
    } catch {
      return false;
    }
  }

  /** zero_range */
  private async zeroRange(start: number, len: number): Promise<boolean> {
    if (len > MAX_ZERO_SIZE) {
      if (this.verbose) this.io.stdout.write(`discard len ${len} larger than max ${MAX_ZERO_SIZE}\n`);
      return true;
    }
    const zero = Buffer.alloc(Math.min(len, ZERO_CHUNK));
    try {
      for (let done = 0; done < len; done += zero.length) {
        await writeAt(this.target().device, start + done, zero.subarray(0, Math.min(zero.length, len - done)));
      }
    } catch (err) {
      this.io.stderr.write(`Error zeroing file: ${errno(err)}\n`);
      return false;
    }
    return true;
  }
}
