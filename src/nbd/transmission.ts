/**
 * The transmission phase of one server connection (spec §5, §8): a loop that
 * parses requests from the receive buffer and starts each one at once, so
 * many are in flight; each reply is one buffer written in one call (replies
 * go out in completion order and never interleave; those completing together
 * leave in one writev). The loop stops reading while too many requests or
 * bytes are in flight, or while the peer is not reading its replies, which
 * pushes back on the client through TCP. Requests not aligned to the
 * device's logical block size are served by read-modify-write (unaligned.ts)
 * unless the client promised to align them. A WRITE's payload stays the
 * list of received chunks it arrived in (ByteReader.readChunks) and reaches
 * the device as a vectored write (block/vectored.ts), never joined on the
 * aligned path.
 */
import type { Socket } from 'node:net';
import { type BlockDevice, type Extent, SECTOR_SIZE } from '../block/device.ts';
import { IoError, toIoError } from '../block/errors.ts';
import { ChunkCursor, joinChunks, writeChunks } from '../block/vectored.ts';
import { type ByteReader, StreamEnded } from './byte-reader.ts';
import type { Session } from './handshake.ts';
import type { NbdLogger } from './logger.ts';
import {
  CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLAG_DF, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES,
  MAX_PAYLOAD, NBD_EIO, REQUEST_MAGIC, REQUEST_SIZE, type Request, STATE_HOLE, STATE_ZERO,
  TFLAG_SEND_TRIM, decodeRequest, errnoToWire,
} from './protocol.ts';
import {
  type ReadSegment, type StatusExtent, blockStatusChunk, errorChunk, noneChunk, simpleReadReply,
  simpleReply, structuredReadReply,
} from './replies.ts';
import { alignedCover, isAligned, rmwLock, splitUnaligned } from './unaligned.ts';

export interface TransmissionLimits {
  /** Requests in flight per connection before the socket stops being read. */
  maxInFlight: number;
  /** Payload bytes in flight (and queued replies) before the socket stops being read. */
  maxInFlightBytes: number;
}

export const DEFAULT_LIMITS: TransmissionLimits = { maxInFlight: 64, maxInFlightBytes: 64 * 1024 * 1024 };

/** A WRITE longer than MAX_PAYLOAD but at most this is consumed and refused; longer ones end the connection. */
const WRITE_SKIP_CAP = 2 * MAX_PAYLOAD;
/** BLOCK_STATUS answers at most this many sectors (1 GiB) per request; clients re-query (spec §5.7). */
const STATUS_MAX_SECTORS = 1 << 21;
/** TRIM and WRITE_ZEROES are handed to the device in pieces of at most this many sectors. */
const ZERO_PIECE_SECTORS = 1 << 21;
/** A READ this long or longer asks the device for holes and answers them with OFFSET_HOLE. */
const HOLE_READ_MIN = 65536;
/** More segments than this and the READ is answered as plain data. */
const MAX_READ_SEGMENTS = 64;
/** Shared zeroes for devices that cannot write zeroes themselves; never written into. */
const ZEROES = Buffer.alloc(1 << 20);

export class Transmission {
  private inFlight = 0;
  private inFlightBytes = 0;
  private wake: (() => void) | undefined;
  private stopping = false;
  private dirty = false;
  /** Replies are being gathered for one writev (send). */
  private corked = false;
  private readonly dev: BlockDevice;

  constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    private readonly session: Session,
    private readonly limits: TransmissionLimits,
    private readonly log: NbdLogger,
    private readonly peer: string,
  ) {
    this.dev = session.handle.device;
    socket.on('drain', () => this.notify());
    socket.on('close', () => this.notify());
  }

  /** Serves requests until DISC, EOF, a protocol violation or shutdown(); then drains and releases the export. */
  async run(): Promise<void> {
    try {
      await this.receive();
    } finally {
      while (this.inFlight > 0) await this.waitForCompletion();
      await this.finish();
    }
  }

  /**
   * Ends this connection (server closing, export removed): requests already
   * received get ESHUTDOWN, in-flight ones finish, then the socket closes.
   */
  shutdown(): void {
    this.stopping = true;
    this.reader.cancel();
  }

  get exportName(): string {
    return this.session.exportName;
  }

  private async receive(): Promise<void> {
    for (;;) {
      if (this.full()) await this.room();
      let req: Request;
      let payload: readonly Buffer[] | undefined;
      try {
        req = decodeRequest(this.reader.take(REQUEST_SIZE) ?? await this.reader.readExact(REQUEST_SIZE), 0);
        if (req.magic !== REQUEST_MAGIC) return this.abort(`bad request magic 0x${req.magic.toString(16)}`);
        if (req.type === CMD_DISC) return;
        if (req.type === CMD_WRITE) {
          if (req.length > WRITE_SKIP_CAP) return this.abort(`write payload of ${req.length} bytes`);
          if (req.length > MAX_PAYLOAD) {
            await this.reader.skip(req.length);
            this.send(this.errorReply(req, new IoError('EINVAL',
              `len (${req.length}) is larger than max len (${MAX_PAYLOAD})`)));
            continue;
          }
          const whole = this.reader.take(req.length);
          payload = whole ? [whole] : await this.reader.readChunks(req.length);
        }
      } catch (err) {
        if (!(err instanceof StreamEnded)) throw err;
        // A request torn by EOF is dropped, never applied (spec §9).
        if (err.partial && !this.stopping) this.log.warn(`${this.peer}: connection closed in the middle of a request`);
        return;
      }
      this.start(req, payload);
    }
  }

  private start(req: Request, payload: readonly Buffer[] | undefined): void {
    const cost = req.type === CMD_READ || payload ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += cost;
    void this.handle(req, payload).then((reply) => {
      this.send(reply);
      this.inFlight--;
      this.inFlightBytes -= cost;
      this.notify();
    });
  }

  /** Always resolves with the reply to send; every failure becomes an error reply. */
  private async handle(req: Request, payload: readonly Buffer[] | undefined): Promise<Buffer> {
    try {
      if (this.stopping) throw new IoError('ESHUTDOWN', `export '${this.exportName}' is shutting down`);
      this.validate(req);
      return await this.execute(req, payload);
    } catch (err) {
      return this.errorReply(req, err);
    }
  }

  /** Request checks in the order of spec §8.2; throws the IoError to answer with. */
  private validate(r: Request): void {
    const size = this.dev.sectors * SECTOR_SIZE;
    const type = r.type;
    if (type > CMD_BLOCK_STATUS) throw new IoError('EINVAL', `invalid request type (${type}) received`);
    const modifies = type === CMD_WRITE || type === CMD_TRIM || type === CMD_WRITE_ZEROES;
    if (modifies && this.session.handle.readOnly) {
      throw new IoError('EPERM', `export '${this.exportName}' is read-only`);
    }
    const ranged = type !== CMD_FLUSH;
    if (ranged && (r.offset > size || r.length > size - r.offset)) {
      const code = type === CMD_WRITE || type === CMD_WRITE_ZEROES ? 'ENOSPC' : 'EINVAL';
      throw new IoError(code, `operation past EOF; From: ${r.offset}, Len: ${r.length}, Size: ${size}`);
    }
    const unknownFlags = r.flags & ~this.allowedFlags(type);
    if (unknownFlags) throw new IoError('EINVAL', `unsupported flags 0x${unknownFlags.toString(16)} for command ${type}`);
    if (type === CMD_READ && r.length > MAX_PAYLOAD) {
      throw new IoError('EINVAL', `len (${r.length}) is larger than max len (${MAX_PAYLOAD})`);
    }
    if (type === CMD_TRIM && !(this.session.flags & TFLAG_SEND_TRIM)) throw new IoError('EINVAL', 'trim is not supported');
    if (type === CMD_BLOCK_STATUS) {
      if (this.session.allocationContext === undefined) throw new IoError('EINVAL', 'CMD_BLOCK_STATUS not negotiated');
      if (r.length === 0) throw new IoError('EINVAL', 'need non-zero length');
    }
    const align = this.session.minimumBlockSize;
    if (ranged && !isAligned(r.offset, r.length, align)) {
      throw new IoError('EINVAL', `request ${r.offset}+${r.length} is not aligned to the ${align}-byte minimum block size`);
    }
  }

  private allowedFlags(type: number): number {
    switch (type) {
      case CMD_READ: return CMD_FLAG_FUA | (this.session.structured ? CMD_FLAG_DF : 0);
      case CMD_WRITE_ZEROES: return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
      case CMD_BLOCK_STATUS: return CMD_FLAG_FUA | CMD_FLAG_REQ_ONE;
      default: return CMD_FLAG_FUA;
    }
  }

  private async execute(r: Request, payload: readonly Buffer[] | undefined): Promise<Buffer> {
    const fua = (r.flags & CMD_FLAG_FUA) !== 0;
    const aligned = isAligned(r.offset, r.length, this.dev.limits.logicalBlockSize);
    const sector = r.offset / SECTOR_SIZE;
    const count = r.length / SECTOR_SIZE;
    switch (r.type) {
      case CMD_READ:
        return this.read(r, aligned);
      case CMD_WRITE:
        if (r.length === 0) break;
        this.dirty = true;
        if (aligned) await this.writeData(sector, count, payload!, fua);
        else {
          // Rare (clients that did not negotiate alignment): one copy keeps the patching simple.
          const data = joinChunks(payload!);
          await this.modifyUnaligned(r.offset, r.length, fua,
            (block, at, from, n) => data.copy(block, at, from, from + n),
            (s, n, native) => this.writeSectors(s, n, [data.subarray(s * SECTOR_SIZE - r.offset, (s + n) * SECTOR_SIZE - r.offset)], native));
        }
        break;
      case CMD_FLUSH:
        // The device's flush covers every write completed on any connection of
        // this export, so a FLUSH here covers them all (CAN_MULTI_CONN, R6).
        await this.dev.flush();
        break;
      case CMD_TRIM: {
        // TRIM is a hint that may be rounded inwards (spec §5.7): partial blocks stay as they are.
        if (r.length === 0) break;
        const { start, end } = splitUnaligned(r.offset, r.length, this.dev.limits.logicalBlockSize);
        if (end === start) break;
        this.dirty = true;
        await this.inPieces(start / SECTOR_SIZE, (end - start) / SECTOR_SIZE, ZERO_PIECE_SECTORS, (s, n) => this.dev.discard(s, n));
        if (fua) await this.dev.flush();
        break;
      }
      case CMD_WRITE_ZEROES: {
        if (r.flags & CMD_FLAG_FAST_ZERO && !this.dev.limits.writeZeroes) {
          throw new IoError('ENOTSUP', `export '${this.exportName}' cannot write zeroes faster than data`);
        }
        if (r.length === 0) break;
        this.dirty = true;
        const mayUnmap = (r.flags & CMD_FLAG_NO_HOLE) === 0;
        if (aligned) await this.writeZeroes(sector, count, mayUnmap, fua);
        else {
          await this.modifyUnaligned(r.offset, r.length, fua,
            (block, at, _from, n) => block.fill(0, at, at + n),
            (s, n, native) => this.zeroSectors(s, n, mayUnmap, native));
        }
        break;
      }
      case CMD_BLOCK_STATUS:
        return this.blockStatus(r);
      case CMD_CACHE:
        break; // a prefetch hint; the range check above is all it needs
    }
    return simpleReply(0, r.cookie);
  }

  /** Allocates the whole reply once and reads device data straight into its payload. */
  private async read(r: Request, aligned: boolean): Promise<Buffer> {
    if (!this.session.structured) {
      const { reply, data } = simpleReadReply(r.cookie, r.length);
      if (r.length > 0) await this.readBytes(r.offset, data);
      return reply;
    }
    if (r.length === 0) return noneChunk(r.cookie);
    const segments = r.flags & CMD_FLAG_DF || r.length < HOLE_READ_MIN || !aligned
      ? [{ offset: r.offset, length: r.length, hole: false }]
      : await this.readSegments(r.offset, r.length);
    const { reply, data } = structuredReadReply(r.cookie, segments);
    await Promise.all(segments.map((s, i) => (s.hole ? undefined : this.readBytes(s.offset, data[i]!))));
    return reply;
  }

  /** Reads bytes at any offset: an unaligned range is read as its covering blocks and copied out. */
  private async readBytes(offset: number, into: Buffer): Promise<void> {
    const { start, end } = alignedCover(offset, into.length, this.dev.limits.logicalBlockSize);
    if (start === offset && end === offset + into.length) return this.readData(offset / SECTOR_SIZE, into);
    const cover = Buffer.allocUnsafe(end - start);
    await this.readData(start / SECTOR_SIZE, cover);
    cover.copy(into, 0, offset - start, offset - start + into.length);
  }

  /**
   * A WRITE or WRITE_ZEROES of a byte range not aligned to the logical block
   * size, under the export's read-modify-write lock (unaligned.ts): each
   * partly covered block is read, `patch`ed with the request's bytes
   * [from, from+n) at `at`, and written back; the whole blocks between go to
   * `middle`. All of it carries the request's FUA.
   */
  private async modifyUnaligned(
    offset: number, length: number, fua: boolean,
    patch: (block: Buffer, at: number, from: number, n: number) => void,
    middle: (sector: number, count: number, nativeFua: boolean) => Promise<void>,
  ): Promise<void> {
    const align = this.dev.limits.logicalBlockSize;
    const native = fua && this.dev.limits.fua;
    const split = splitUnaligned(offset, length, align);
    const edge = async (blockStart: number): Promise<void> => {
      const block = Buffer.allocUnsafe(align);
      await this.dev.read(blockStart / SECTOR_SIZE, block);
      const from = Math.max(blockStart, offset);
      patch(block, from - blockStart, from - offset, Math.min(blockStart + align, offset + length) - from);
      await this.dev.write(blockStart / SECTOR_SIZE, block, native ? { fua: true } : undefined);
    };
    await rmwLock(this.dev).run(async () => {
      const work: Promise<void>[] = [];
      if (split.head !== undefined) work.push(edge(split.head));
      if (split.end > split.start) work.push(middle(split.start / SECTOR_SIZE, (split.end - split.start) / SECTOR_SIZE, native));
      if (split.tail !== undefined) work.push(edge(split.tail));
      await Promise.all(work);
    });
    await this.emulateFua(fua);
  }

  /** Splits a READ into data and hole chunks following the device's extents (spec §5.6). */
  private async readSegments(offset: number, length: number): Promise<ReadSegment[]> {
    const whole = [{ offset, length, hole: false }];
    if (!this.dev.extents) return whole;
    const sector = offset / SECTOR_SIZE;
    const count = length / SECTOR_SIZE;
    const lbs = this.dev.limits.logicalBlockSize / SECTOR_SIZE;
    const segments: ReadSegment[] = [];
    for (const e of coverExtents(await this.dev.extents(sector, count), sector, count)) {
      if (e.sector % lbs !== 0 || e.count % lbs !== 0) return whole;
      const hole = e.zero;
      const last = segments[segments.length - 1];
      if (last && last.hole === hole) last.length += e.count * SECTOR_SIZE;
      else segments.push({ offset: e.sector * SECTOR_SIZE, length: e.count * SECTOR_SIZE, hole });
    }
    if (segments.length > MAX_READ_SEGMENTS || segments.every((s) => !s.hole)) return whole;
    return segments;
  }

  /**
   * Extents of the covering blocks, the first shortened to start at the
   * request's offset; none starts past the request's end, only the last may
   * reach beyond it (spec §5.7), and REQ_ONE's one extent is within it.
   */
  private async blockStatus(r: Request): Promise<Buffer> {
    const { start, end } = alignedCover(r.offset, r.length, this.dev.limits.logicalBlockSize);
    const sector = start / SECTOR_SIZE;
    // The request length is a hint (spec §5.7): answer a bounded prefix.
    const n = Math.min((end - start) / SECTOR_SIZE, STATUS_MAX_SECTORS);
    const raw = this.dev.extents ? await this.dev.extents(sector, n) : [];
    const extents: StatusExtent[] = [];
    for (const e of coverExtents(raw, sector, n)) {
      if (e.sector * SECTOR_SIZE >= r.offset + r.length) break;
      const status = (e.hole ? STATE_HOLE : 0) | (e.zero ? STATE_ZERO : 0);
      const last = extents[extents.length - 1];
      if (last && last.status === status) last.length += e.count * SECTOR_SIZE;
      else extents.push({ length: e.count * SECTOR_SIZE, status });
    }
    extents[0]!.length -= r.offset - start;
    if (!(r.flags & CMD_FLAG_REQ_ONE)) return blockStatusChunk(r.cookie, this.session.allocationContext!, extents);
    const one = extents[0]!;
    return blockStatusChunk(r.cookie, this.session.allocationContext!, [{ length: Math.min(one.length, r.length), status: one.status }]);
  }

  /** Reads in pieces of at most maxTransfer (clients may send up to 32 MiB regardless, spec §8.3). */
  private readData(sector: number, into: Buffer): Promise<void> {
    return this.inPieces(sector, into.length / SECTOR_SIZE, this.transferSectors(), (s, n) =>
      this.dev.read(s, into.subarray((s - sector) * SECTOR_SIZE, (s - sector + n) * SECTOR_SIZE)));
  }

  private async writeData(sector: number, count: number, chunks: readonly Buffer[], fua: boolean): Promise<void> {
    await this.writeSectors(sector, count, chunks, fua && this.dev.limits.fua);
    await this.emulateFua(fua);
  }

  /**
   * Writes the chunks' bytes from `sector` on, in pieces of at most
   * maxTransfer, each a vectored write of views of the chunks, with the
   * device's own FUA if `nativeFua`.
   */
  private writeSectors(sector: number, count: number, chunks: readonly Buffer[], nativeFua: boolean): Promise<void> {
    const opts = nativeFua ? { fua: true } : undefined;
    const piece = this.transferSectors();
    if (count <= piece) return writeChunks(this.dev, sector, chunks, opts);
    const cursor = new ChunkCursor(chunks);
    return this.inPieces(sector, count, piece, (s, n) => writeChunks(this.dev, s, cursor.nextSectors(n), opts));
  }

  private async writeZeroes(sector: number, count: number, mayUnmap: boolean, fua: boolean): Promise<void> {
    await this.zeroSectors(sector, count, mayUnmap, fua && this.dev.limits.fua);
    await this.emulateFua(fua);
  }

  /** Zeroes in pieces, by the device's write-zeroes or by writing shared zeroes where it has none. */
  private zeroSectors(sector: number, count: number, mayUnmap: boolean, nativeFua: boolean): Promise<void> {
    if (this.dev.limits.writeZeroes) {
      const opts = { mayUnmap, fua: nativeFua };
      return this.inPieces(sector, count, ZERO_PIECE_SECTORS, (s, n) => this.dev.writeZeroes(s, n, opts));
    }
    const piece = Math.min(this.transferSectors(), ZEROES.length / SECTOR_SIZE);
    return this.inPieces(sector, count, piece, (s, n) =>
      this.dev.write(s, ZEROES.subarray(0, n * SECTOR_SIZE), nativeFua ? { fua: true } : undefined));
  }

  /** FUA on a device without native FUA: flush after the write, as the block layer does. */
  private async emulateFua(needed: boolean): Promise<void> {
    if (needed && !this.dev.limits.fua && this.dev.limits.flush) await this.dev.flush();
  }

  /** maxTransfer rounded down to whole logical blocks. */
  private transferSectors(): number {
    const lbs = this.dev.limits.logicalBlockSize / SECTOR_SIZE;
    return Math.max(lbs, this.dev.limits.maxTransfer - (this.dev.limits.maxTransfer % lbs));
  }

  /**
   * Runs `op` over [sector, sector+count) in pieces of at most `piece` sectors,
   * concurrently, calling it for the pieces in order (writeSectors' cursor
   * relies on that). One piece, the usual case, is `op`'s own promise.
   */
  private inPieces(sector: number, count: number, piece: number,
    op: (s: number, n: number) => Promise<void>): Promise<void> {
    if (count <= piece) return op(sector, count);
    const all: Promise<void>[] = [];
    for (let s = sector; s < sector + count; s += piece) all.push(op(s, Math.min(piece, sector + count - s)));
    return Promise.all(all).then(() => undefined);
  }

  private errorReply(r: Request, err: unknown): Buffer {
    const io = toIoError(err, { device: this.dev.name });
    const wire = errnoToWire(io.code, (r.flags & CMD_FLAG_FAST_ZERO) !== 0);
    if (!(err instanceof IoError)) this.log.error(`${this.peer}: unexpected failure: ${io.message}`);
    else if (wire === NBD_EIO) this.log.warn(`${this.peer}: ${io.message}`);
    return this.session.structured ? errorChunk(r.cookie, wire, io.message) : simpleReply(wire, r.cookie);
  }

  /**
   * Writes one reply. While other requests are in flight, replies are corked
   * until the event loop's check phase, so those completing in the same loop
   * iteration leave in one writev: one system call instead of one each, which
   * is what a loopback send costs most of (bench/README.md). A lone request's
   * reply goes out at once.
   */
  private send(reply: Buffer): void {
    if (this.socket.destroyed) return;
    if (!this.corked && this.inFlight > 1) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    this.socket.write(reply);
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  /** Too much in flight to read another request (spec §8.4: never buffer without bound). */
  private full(): boolean {
    return !this.socket.destroyed && (
      this.inFlight >= this.limits.maxInFlight ||
      this.inFlightBytes >= this.limits.maxInFlightBytes ||
      this.socket.writableLength >= this.limits.maxInFlightBytes);
  }

  /** Waits until another request may be read. */
  private async room(): Promise<void> {
    while (this.full()) await this.waitForCompletion();
  }

  private waitForCompletion(): Promise<void> {
    return new Promise((resolve) => { this.wake = resolve; });
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private abort(reason: string): void {
    this.log.warn(`${this.peer}: ${reason}; closing the connection`);
    this.socket.destroy();
  }

  /**
   * Flushes an export this connection wrote to, so clients that never send
   * FLUSH (fio, nbdcopy without --flush) do not lose data to a later crash
   * (spec §8.6), then releases the export and closes the socket.
   */
  private async finish(): Promise<void> {
    if (this.dirty) {
      try {
        await this.dev.flush();
      } catch (err) {
        this.log.error(`${this.peer}: flush of '${this.exportName}' at disconnect failed: ${toIoError(err).message}`);
      }
    }
    this.session.handle.release();
    if (!this.socket.destroyed) {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 5000).unref();
    }
  }
}

/**
 * The device's extents clipped to [sector, sector+count) and made contiguous:
 * gaps (a device may answer a prefix, or skip ranges) are reported as data,
 * which is always a safe answer (spec §5.7).
 */
function coverExtents(raw: Extent[], sector: number, count: number): Extent[] {
  const end = sector + count;
  const out: Extent[] = [];
  let at = sector;
  for (const e of raw) {
    const s = Math.max(e.sector, at);
    const t = Math.min(e.sector + e.count, end);
    if (t <= s) continue;
    if (s > at) out.push({ sector: at, count: s - at, hole: false, zero: false });
    out.push({ sector: s, count: t - s, hole: e.hole, zero: e.zero });
    at = t;
  }
  if (at < end) out.push({ sector: at, count: end - at, hole: false, zero: false });
  return out;
}
