/**
 * A BlockDevice over a regular file or a block device node, like Linux's loop
 * driver over a file (buffered I/O, no O_DIRECT): the page cache is the
 * volatile write-back cache of ARCHITECTURE §1, `flush` is fdatasync and a FUA
 * write is a write followed by fdatasync.
 *
 * Positional I/O uses the callback form of fs.read/fs.writev: it costs less
 * per request than FileHandle.read/write (bench/micro/file-device.ts measures
 * both). Every write is one pwritev of its pieces, so a vectored write (the
 * NBD server's received chunks, vectored.ts) reaches the file without being
 * joined first. Hole punching and SEEK_DATA/SEEK_HOLE come from the native
 * addon; everything runs on libuv's thread pool, except that a read first tries
 * preadv2(RWF_NOWAIT) on the main thread: the kernel then copies what the
 * page cache holds and answers EAGAIN rather than start or wait for any
 * I/O, so the event loop still never blocks (ARCHITECTURE §9) and a cached
 * read skips the pool's round trip (two thread wake-ups). Whatever it could
 * not read goes to the pool as before.
 *
 * Size: a regular file's comes from fstat. A block device's st_size is 0 and
 * Node cannot issue the BLKGETSIZE64 ioctl nor lseek(SEEK_END), so it is read
 * from sysfs (`/sys/dev/block/MAJ:MIN/size`, always in 512-byte sectors),
 * together with the queue limits next to it.
 */
import { constants, close, fdatasync, fstat, ftruncate, open, read, writev } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

import { constants as osConstants } from 'node:os';
import { punchHole, readNowait, seekData, seekHole } from '../native/index.ts';
import {
  type BlockDevice, type Extent, type Limits, type WriteOptions, type WriteZeroesOptions,
  SECTOR_SIZE, checkLength, checkRequest, makeLimits,
} from './device.ts';
import { IoError, toIoError } from './errors.ts';
import { ChunkCursor, chunksLength } from './vectored.ts';

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);
const ftruncateAsync = promisify(ftruncate);
const closeAsync = promisify(close);
const fdatasyncAsync = promisify(fdatasync);

/** Largest write of zeroes issued at once; the one zero buffer every device shares. */
const ZERO_CHUNK = 1 << 20;
let zeroBuffer: Buffer | undefined;
function zeroes(): Buffer {
  zeroBuffer ??= Buffer.alloc(ZERO_CHUNK);
  return zeroBuffer;
}

export interface FileDeviceOptions {
  /** Open O_RDONLY; writes, discards and write-zeroes reject with EPERM. */
  readOnly?: boolean;
  /** Device name in messages; defaults to the path. */
  name?: string;
  /**
   * Device size in sectors. A regular file is created, or extended sparsely,
   * to hold it; a longer file or block device is used up to this size only.
   */
  sectors?: number;
}

/** What open() learned about the thing behind the path. */
interface Geometry {
  sectors: number;
  limits: Partial<Limits>;
  /** fallocate(PUNCH_HOLE) works, so a punched range reads back as zeroes. */
  holes: boolean;
  /** lseek(SEEK_DATA/SEEK_HOLE) works: regular files only; a block device answers EINVAL. */
  seekable: boolean;
}

export class FileDevice implements BlockDevice {
  readonly name: string;
  readonly path: string;
  readonly sectors: number;
  readonly limits: Limits;
  private readonly fd: number;
  private holes: boolean;
  private readonly seekable: boolean;
  private closed = false;
  private closing: Promise<void> | undefined;
  private inflight = 0;
  private drained: (() => void) | undefined;
  /** preadv2(RWF_NOWAIT) works here; the first EOPNOTSUPP (tmpfs) turns it off. */
  private nowaitReads = true;
  /**
   * One byte range [start, end) SEEK_DATA/SEEK_HOLE last found to be data.
   * Writes never turn data into a hole, so it stays true until a hole is
   * punched into it (discard, write-zeroes with unmap), which drops it. On
   * tmpfs SEEK_HOLE walks the page cache up to the next hole, milliseconds
   * for a large file, and the NBD server asks for extents before each large
   * read: this answers those from memory (qemu's file-posix does the same).
   */
  private knownData: { start: number; end: number } | undefined;
  /** Holes punched so far: a walk that saw one land meanwhile caches nothing. */
  private punches = 0;

  private constructor(path: string, name: string, fd: number, geometry: Geometry, readOnly: boolean) {
    this.path = path;
    this.name = name;
    this.fd = fd;
    this.sectors = geometry.sectors;
    this.holes = geometry.holes;
    this.seekable = geometry.seekable;
    this.limits = makeLimits({
      ...geometry.limits,
      readOnly,
      flush: true,
      fua: true,
      discard: true,
      writeZeroes: true,
      discardZeroes: geometry.holes,
    });
  }

  static async open(path: string, opts: FileDeviceOptions = {}): Promise<FileDevice> {
    const readOnly = opts.readOnly ?? false;
    const name = opts.name ?? path;
    if (opts.sectors !== undefined && (!Number.isSafeInteger(opts.sectors) || opts.sectors <= 0)) {
      throw new IoError('EINVAL', `${name}: device size ${opts.sectors} is not a positive whole number of sectors`, { device: name });
    }
    const flags = readOnly ? constants.O_RDONLY : constants.O_RDWR | (opts.sectors === undefined ? 0 : constants.O_CREAT);
    let fd: number;
    try {
      fd = await openAsync(path, flags, 0o644);
    } catch (err) {
      throw toIoError(err, { device: name });
    }
    try {
      const st = await fstatAsync(fd);
      let geometry: Geometry;
      if (st.isFile()) geometry = await fileGeometry(fd, name, st.size, opts.sectors, readOnly);
      else if (st.isBlockDevice()) geometry = await blockGeometry(name, st.rdev, opts.sectors, readOnly);
      else throw new IoError('ENOTBLK', `${name}: ${path} is neither a regular file nor a block device`, { device: name });
      return new FileDevice(path, name, fd, geometry, readOnly);
    } catch (err) {
      await closeAsync(fd);
      throw toIoError(err, { device: name });
    }
  }

  read(sector: number, into: Buffer): Promise<void> {
    return this.submit('read', sector, into.length, () => this.readAll(sector, into));
  }

  write(sector: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    return this.writev(sector, [data], opts);
  }

  writev(sector: number, chunks: readonly Buffer[], opts: WriteOptions = {}): Promise<void> {
    const io = () => this.writeAll(sector, chunks);
    return this.submit('write', sector, chunksLength(chunks), opts.fua ? () => this.synced(sector, io) : io);
  }

  /** Validates a data request of `length` bytes and starts it; validation failures reject, never throw. */
  private submit(op: 'read' | 'write', sector: number, length: number, io: () => Promise<void>): Promise<void> {
    try {
      this.checkOpen(sector);
      checkLength(this, op, sector, length);
    } catch (err) {
      return Promise.reject(err);
    }
    return io();
  }

  /** A write, then fdatasync: durable when it resolves (ARCHITECTURE §1.3). */
  private async synced(sector: number, write: () => Promise<void>): Promise<void> {
    this.begin(sector);
    try {
      await write();
      await this.sync('write', sector);
    } finally {
      this.end();
    }
  }

  async flush(): Promise<void> {
    this.begin(0);
    try {
      await this.sync('flush', 0);
    } finally {
      this.end();
    }
  }

  /** Punches a hole where the OS can (then the range reads as zeroes), else writes zeroes. */
  async discard(sector: number, count: number): Promise<void> {
    this.begin(sector);
    try {
      checkRequest(this, 'discard', sector, count);
      if (!(await this.punch('discard', sector, count))) await this.fillZeroes(sector, count);
      this.forgetData(sector, count);
    } finally {
      this.end();
    }
  }

  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions = {}): Promise<void> {
    this.begin(sector);
    try {
      checkRequest(this, 'write-zeroes', sector, count);
      const punched = opts.mayUnmap === true && (await this.punch('write-zeroes', sector, count));
      if (!punched) await this.fillZeroes(sector, count);
      if (punched) this.forgetData(sector, count);
      if (opts.fua) await this.sync('write-zeroes', sector);
    } finally {
      this.end();
    }
  }

  /**
   * Allocation map from SEEK_DATA/SEEK_HOLE. File systems report holes in
   * their own block size; a sector that is only partly data counts as data.
   * Where the file system has no hole support the kernel reports everything
   * as data; a block device has no allocation map and is all data.
   */
  async extents(sector: number, count: number): Promise<Extent[]> {
    this.begin(sector);
    try {
      checkRequest(this, 'extents', sector, count);
      if (!this.seekable) return [{ sector, count, hole: false, zero: false }];
      const out: Extent[] = [];
      const end = sector + count;
      const push = (from: number, to: number, hole: boolean) => {
        if (to > from) out.push({ sector: from, count: to - from, hole, zero: hole });
      };
      for (let s = sector; s < end; ) {
        const known = this.knownData;
        if (known && known.start <= s * SECTOR_SIZE && s * SECTOR_SIZE < known.end) {
          const to = Math.min(end, Math.ceil(known.end / SECTOR_SIZE));
          push(s, to, false);
          s = to;
          continue;
        }
        const punches = this.punches;
        const data = await this.seek(seekData, s);
        const dataSector = data === undefined ? end : Math.min(end, Math.floor(data / SECTOR_SIZE));
        push(s, dataSector, true);
        if (dataSector >= end) break;
        const hole = await this.seek(seekHole, dataSector);
        // At least one sector, so a file changing under us cannot stall the walk.
        const holeSector = hole === undefined ? end : Math.min(end, Math.max(dataSector + 1, Math.ceil(hole / SECTOR_SIZE)));
        // Remember what the file system said (bytes [data, hole)), not the clipped walk.
        if (data !== undefined && hole !== undefined && hole > data && punches === this.punches) {
          this.knownData = { start: data, end: hole };
        }
        push(dataSector, holeSector, false);
        s = holeSector;
      }
      return out;
    } finally {
      this.end();
    }
  }

  /**
   * Drops the cached data range if [sector, sector+count) may now hold a hole.
   * Called after the punch completed; a walk whose seeks overlapped it does
   * not cache what it found (the punch count moved).
   */
  private forgetData(sector: number, count: number): void {
    this.punches++;
    const k = this.knownData;
    if (k && sector * SECTOR_SIZE < k.end && (sector + count) * SECTOR_SIZE > k.start) this.knownData = undefined;
  }

  /**
   * Refuses new requests, waits for those in flight (the fd must stay valid
   * under them: a closed fd number is soon reused), then closes the fd.
   * Every call returns the same promise.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    try {
      await closeAsync(this.fd);
    } catch (err) {
      throw this.osError('close', 0, err);
    }
  }

  private checkOpen(sector: number): void {
    if (this.closed) throw new IoError('ESHUTDOWN', `${this.name}: device is closed`, { device: this.name, sector });
  }

  /** Counts a request in flight: close waits until none is. */
  private begin(sector: number): void {
    this.checkOpen(sector);
    this.inflight++;
  }

  private end(): void {
    if (--this.inflight === 0 && this.drained) this.drained();
  }

  /**
   * Fills the whole buffer, looping because the kernel may read less than
   * asked, and counts itself in flight meanwhile. Callbacks rather than
   * async/await: this is the hot path, and every promise costs.
   */
  private readAll(sector: number, buf: Buffer): Promise<void> {
    const position = sector * SECTOR_SIZE;
    const cached = this.nowaitReads ? this.readCached(buf, position) : 0;
    if (cached === buf.length) return Promise.resolve();
    this.inflight++;
    return new Promise((resolve, reject) => {
      let done = cached;
      const moved = (err: NodeJS.ErrnoException | null, n: number) => {
        if (!err && n > 0 && done + n < buf.length) {
          done += n;
          read(this.fd, buf, done, buf.length - done, position + done, moved);
          return;
        }
        this.end();
        if (err) {
          reject(this.osError('read', sector, err));
          return;
        }
        // n === 0: the file was truncated under us. Like loop's
        // lo_read_simple, reads past the end of the backing file return zeroes.
        if (n === 0) buf.fill(0, done);
        resolve();
      };
      read(this.fd, buf, done, buf.length - done, position + done, moved);
    });
  }

  /**
   * Writes the pieces in order at the sector, one pwritev for all of them
   * (libuv splits at IOV_MAX), looping over the rest if the kernel wrote
   * less; counts itself in flight meanwhile.
   */
  private writeAll(sector: number, chunks: readonly Buffer[]): Promise<void> {
    const position = sector * SECTOR_SIZE;
    const total = chunksLength(chunks);
    this.inflight++;
    return new Promise((resolve, reject) => {
      let done = 0;
      let rest = chunks;
      const moved = (err: NodeJS.ErrnoException | null, n: number) => {
        if (!err && n > 0 && done + n < total) {
          done += n;
          const cursor = new ChunkCursor(rest);
          cursor.next(n);
          rest = cursor.next(total - done);
          writev(this.fd, rest, position + done, moved);
          return;
        }
        this.end();
        if (err) reject(this.osError('write', sector, err));
        else if (n > 0) resolve();
        else {
          const msg = `${this.name}: write at sector ${sector} made no progress at byte ${position + done}`;
          reject(new IoError('EIO', msg, { device: this.name, sector }));
        }
      };
      writev(this.fd, rest, position, moved);
    });
  }

  /**
   * The bytes of a read the page cache holds, read on this thread without
   * waiting (preadv2 RWF_NOWAIT); 0 on EAGAIN and on any error, which the
   * thread pool's read then meets and reports.
   */
  private readCached(buf: Buffer, position: number): number {
    const n = readNowait(this.fd, buf, position);
    if (n === -osConstants.errno.EOPNOTSUPP) this.nowaitReads = false;
    return Math.max(n, 0);
  }

  /** Writes zeroes from the shared buffer, at most ZERO_CHUNK bytes at a time. */
  private async fillZeroes(sector: number, count: number): Promise<void> {
    const zero = zeroes();
    const chunkSectors = ZERO_CHUNK / SECTOR_SIZE;
    for (let s = sector; s < sector + count; s += chunkSectors) {
      const n = Math.min(chunkSectors, sector + count - s);
      await this.writeAll(s, [zero.subarray(0, n * SECTOR_SIZE)]);
    }
  }

  /**
   * Punches a hole over the range; false when holes are unsupported here, so
   * the caller writes zeroes instead. The first EOPNOTSUPP stops further tries.
   */
  private async punch(op: string, sector: number, count: number): Promise<boolean> {
    if (!this.holes) return false;
    try {
      await punchHole(this.fd, sector * SECTOR_SIZE, count * SECTOR_SIZE);
      return true;
    } catch (err) {
      if (!isUnsupported(err)) throw this.osError(op, sector, err);
      this.holes = false;
      return false;
    }
  }

  private async sync(op: string, sector: number): Promise<void> {
    try {
      await fdatasyncAsync(this.fd);
    } catch (err) {
      throw this.osError(op, sector, err);
    }
  }

  /** A SEEK_DATA/SEEK_HOLE byte offset, or undefined (ENXIO) when there is none before the end of file. */
  private async seek(how: (fd: number, offset: number) => Promise<number>, sector: number): Promise<number | undefined> {
    try {
      return await how(this.fd, sector * SECTOR_SIZE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENXIO') return undefined;
      throw this.osError('extents', sector, err);
    }
  }

  private osError(op: string, sector: number, err: unknown): IoError {
    const where = this.name === this.path ? this.path : `${this.name} (${this.path})`;
    const reason = err instanceof Error ? err.message : String(err);
    return new IoError(toIoError(err).code, `${where}: ${op} at sector ${sector} failed: ${reason}`, {
      device: this.name,
      sector,
      cause: err,
    });
  }
}

function isUnsupported(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP';
}

async function fileGeometry(
  fd: number, name: string, size: number, sectors: number | undefined, readOnly: boolean,
): Promise<Geometry> {
  const wanted = sectors === undefined ? size : sectors * SECTOR_SIZE;
  if (wanted > size) {
    if (readOnly) {
      throw new IoError('EINVAL', `${name}: file holds ${size} bytes, less than the ${sectors} sectors asked of a read-only device`, { device: name });
    }
    await ftruncateAsync(fd, wanted);
  }
  // Linux's loop driver rounds a file's size down to whole sectors too.
  const count = Math.floor(wanted / SECTOR_SIZE);
  if (count === 0) throw new IoError('EINVAL', `${name}: file is smaller than one sector`, { device: name });
  return { sectors: count, limits: {}, holes: !readOnly && (await holesWork(fd, Math.max(size, wanted))), seekable: true };
}

/**
 * Probes hole punching past the end of file (KEEP_SIZE): no data lives there,
 * so the probe changes nothing, yet a file system without the feature answers
 * EOPNOTSUPP before it looks at the range.
 */
async function holesWork(fd: number, fileSize: number): Promise<boolean> {
  const pastEnd = Math.ceil(fileSize / 4096) * 4096 + 4096;
  try {
    await punchHole(fd, pastEnd, 4096);
    return true;
  } catch (err) {
    if (isUnsupported(err)) return false;
    throw err;
  }
}

async function blockGeometry(name: string, rdev: number, sectors: number | undefined, readOnly: boolean): Promise<Geometry> {
  // glibc's dev_t encoding (gnu_dev_major/minor); the high word only matters past major 4095.
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev >>> 0;
  const major = ((low >>> 8) & 0xfff) | ((high & ~0xfff) >>> 0);
  const minor = (low & 0xff) | ((low >>> 12) & 0xfff00) | (high & 0xfff) * 2 ** 20;
  const dir = `/sys/dev/block/${major}:${minor}`;
  const size = await sysfsNumber(dir, 'size', name);
  if (sectors !== undefined && sectors > size) {
    throw new IoError('ENOSPC', `${name}: block device holds ${size} sectors, fewer than the ${sectors} asked`, { device: name });
  }
  // Queue limits live in the whole disk's directory: a partition finds them one level up.
  const queue = async (attr: string) =>
    sysfsNumber(`${dir}/queue`, attr, name).catch(() => sysfsNumber(`${dir}/../queue`, attr, name));
  const logicalBlockSize = await queue('logical_block_size');
  // blkdev_fallocate turns PUNCH_HOLE into a write-zeroes that may not fall
  // back to writing pages: it works only where the queue has write_zeroes.
  const holes = !readOnly && (await queue('write_zeroes_max_bytes')) > 0;
  return {
    sectors: sectors ?? size,
    holes,
    seekable: false,
    limits: {
      logicalBlockSize,
      physicalBlockSize: await queue('physical_block_size'),
      ioMin: await queue('minimum_io_size'),
      ioOpt: await queue('optimal_io_size'),
    },
  };
}

async function sysfsNumber(dir: string, attr: string, name: string): Promise<number> {
  const path = `${dir}/${attr}`;
  const text = await readFile(path, 'utf8').catch((err: unknown) => {
    throw toIoError(err, { device: name });
  });
  const value = Number(text.trim());
  if (!Number.isSafeInteger(value)) throw new IoError('EIO', `${name}: ${path} holds ${JSON.stringify(text.trim())}, not a number`, { device: name });
  return value;
}
