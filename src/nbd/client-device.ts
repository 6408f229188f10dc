/**
 * NbdDevice: a BlockDevice backed by an NBD export (spec §10). Many requests
 * in flight, matched to replies by cookie; structured replies read straight
 * into the caller's buffer; extents from base:allocation. A dropped
 * connection is re-established with bounded exponential backoff and the
 * requests without a reply are sent again (READ, WRITE, TRIM and
 * WRITE_ZEROES are idempotent, spec §9).
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BlockDevice, type Extent, type Limits, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions,
  checkBuffer, checkRequest, makeLimits,
} from '../block/device.ts';
import { IoError, toIoError } from '../block/errors.ts';
import { ByteReader, StreamEnded } from './byte-reader.ts';
import { type ClientSession, clientHandshake } from './client-handshake.ts';
import { type NbdLogger, quietLogger } from './logger.ts';
import {
  CMD_BLOCK_STATUS, CMD_DISC, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE,
  CMD_WRITE_ZEROES, MAX_PAYLOAD, MAX_STRING, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_FLAG_ERROR, REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, REQUEST_SIZE,
  SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH,
  TFLAG_SEND_FUA, TFLAG_SEND_TRIM, TFLAG_SEND_WRITE_ZEROES, decodeChunkHeaderAfterMagic, encodeRequest,
  wireToErrno,
} from './protocol.ts';
import { type NbdAddress, formatNbdUri, parseNbdUri } from './uri.ts';

export type NbdTarget = string | { host: string; port?: number; exportName?: string } | { path: string; exportName?: string };

export interface NbdDeviceOptions {
  /** Device name in messages; default: the URI. */
  name?: string;
  logger?: NbdLogger;
  /** Reconnect attempts after a dropped connection before requests fail with EIO (default 5). */
  retries?: number;
  /** First backoff delay, doubled on each attempt (default 100 ms). */
  backoffMs?: number;
  /** Per-attempt connect and handshake timeout (default 10 s). */
  connectTimeoutMs?: number;
}

/** Largest non-data structured chunk accepted (a status chunk of 2^20 extents, spec §5.7). */
const MAX_CHUNK = 4 + 8 * (1 << 20);
/** TRIM / WRITE_ZEROES / BLOCK_STATUS lengths are u32 bytes: send at most this many sectors each. */
const MAX_RANGE_SECTORS = 1 << 22; // 2 GiB
const ZEROES = Buffer.alloc(1 << 20);

interface Op {
  type: number;
  flags: number;
  offset: number;
  length: number;
  payload?: Buffer;
  into?: Buffer;
  extents?: Extent[];
  error?: IoError;
  resolve(): void;
  reject(e: Error): void;
}

interface Link {
  socket: net.Socket;
  reader: ByteReader;
  session: ClientSession;
}

export class NbdDevice implements BlockDevice {
  readonly name: string;
  readonly sectors: number;
  readonly limits: Limits;
  private link: Link | undefined;
  private readonly pending = new Map<bigint, Op>();
  private nextCookie = 1n;
  private reconnecting = false;
  private dead: IoError | undefined;
  private closed = false;
  private readonly log: NbdLogger;
  /** Writes completed / covered by a completed flush, to know what a dropped connection may have lost. */
  private writeGen = 0;
  private flushedGen = 0;
  private lostWrites = false;
  /** Transmission flags and base:allocation support of the first connection; reconnects must match. */
  private readonly flags: number;
  private readonly blockStatus: boolean;

  private constructor(
    private readonly address: NbdAddress,
    link: Link,
    private readonly opts: NbdDeviceOptions,
  ) {
    this.name = opts.name ?? formatNbdUri(address);
    this.log = opts.logger ?? quietLogger;
    const s = link.session;
    this.sectors = s.size / SECTOR_SIZE;
    this.limits = limitsFor(s);
    this.flags = s.flags;
    this.blockStatus = s.allocationContext !== undefined;
    this.attach(link);
  }

  static async connect(target: NbdTarget, opts: NbdDeviceOptions = {}): Promise<NbdDevice> {
    const address: NbdAddress = typeof target === 'string' ? parseNbdUri(target)
      : 'path' in target ? { path: target.path, exportName: target.exportName ?? '' }
      : { host: target.host, port: target.port ?? 10809, exportName: target.exportName ?? '' };
    const link = await openLink(address, opts.name ?? formatNbdUri(address), opts.connectTimeoutMs ?? 10_000);
    return new NbdDevice(address, link, opts);
  }

  async read(sector: number, into: Buffer): Promise<void> {
    checkBuffer(this, 'read', sector, into);
    await this.submit({ type: CMD_READ, flags: 0, offset: sector * SECTOR_SIZE, length: into.length, into });
  }

  async write(sector: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    checkBuffer(this, 'write', sector, data);
    const fua = opts.fua === true;
    const flags = fua && this.has(TFLAG_SEND_FUA) ? CMD_FLAG_FUA : 0;
    await this.submit({ type: CMD_WRITE, flags, offset: sector * SECTOR_SIZE, length: data.length, payload: data });
    await this.completedWrite(fua, flags);
  }

  async flush(): Promise<void> {
    this.checkOpen(0);
    if (!this.has(TFLAG_SEND_FLUSH)) return; // the server writes through (spec §8.5)
    const covers = this.writeGen;
    await this.submit({ type: CMD_FLUSH, flags: 0, offset: 0, length: 0 });
    if (this.lostWrites) {
      // ARCHITECTURE §1 item 9: writes acknowledged on a connection that was
      // lost before a flush may be gone; never report them durable.
      this.lostWrites = false;
      throw new IoError('EIO', `${this.name}: the connection was lost after writes that were not yet flushed`, { device: this.name });
    }
    this.flushedGen = Math.max(this.flushedGen, covers);
  }

  async discard(sector: number, count: number): Promise<void> {
    checkRequest(this, 'discard', sector, count);
    if (!this.has(TFLAG_SEND_TRIM)) throw new IoError('ENOTSUP', `${this.name}: server does not support trim`, { device: this.name, sector });
    await this.ranges(sector, count, (s, n) => this.submit({ type: CMD_TRIM, flags: 0, offset: s * SECTOR_SIZE, length: n * SECTOR_SIZE }));
    this.writeGen++;
  }

  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions = {}): Promise<void> {
    checkRequest(this, 'write-zeroes', sector, count);
    const fua = opts.fua === true;
    const fuaFlag = fua && this.has(TFLAG_SEND_FUA) ? CMD_FLAG_FUA : 0;
    if (this.has(TFLAG_SEND_WRITE_ZEROES)) {
      const flags = fuaFlag | (opts.mayUnmap ? 0 : CMD_FLAG_NO_HOLE);
      await this.ranges(sector, count, (s, n) =>
        this.submit({ type: CMD_WRITE_ZEROES, flags, offset: s * SECTOR_SIZE, length: n * SECTOR_SIZE }));
    } else {
      const piece = Math.min(this.limits.maxTransfer, ZEROES.length / SECTOR_SIZE);
      const all: Promise<void>[] = [];
      for (let s = sector; s < sector + count; s += piece) {
        const n = Math.min(piece, sector + count - s);
        all.push(this.submit({ type: CMD_WRITE, flags: fuaFlag, offset: s * SECTOR_SIZE, length: n * SECTOR_SIZE, payload: ZEROES.subarray(0, n * SECTOR_SIZE) }));
      }
      await Promise.all(all);
    }
    await this.completedWrite(fua, fuaFlag);
  }

  async extents(sector: number, count: number): Promise<Extent[]> {
    checkRequest(this, 'extents', sector, count);
    if (!this.blockStatus) {
      return [{ sector, count, hole: false, zero: false }];
    }
    const out: Extent[] = [];
    const end = sector + count;
    // The server may answer a prefix; ask again from the first uncovered sector (spec §5.7).
    for (let at = sector; at < end; ) {
      const n = Math.min(end - at, MAX_RANGE_SECTORS);
      const op = { type: CMD_BLOCK_STATUS, flags: 0, offset: at * SECTOR_SIZE, length: n * SECTOR_SIZE, extents: [] as Extent[] };
      await this.submit(op);
      const got = op.extents.filter((e) => e.sector < end);
      if (got.length === 0) throw new IoError('EIO', `${this.name}: empty block status reply at sector ${at}`, { device: this.name, sector: at });
      for (const e of got) {
        const count = Math.min(e.count, end - e.sector);
        const last = out[out.length - 1];
        if (last && last.hole === e.hole && last.zero === e.zero) last.count += count;
        else out.push({ ...e, count });
      }
      at = Math.min(end, got[got.length - 1]!.sector + got[got.length - 1]!.count);
    }
    return out;
  }

  /** Waits for every request, says goodbye with DISC, closes the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    const outstanding = [...this.pending.values()].map((op) => new Promise<void>((resolve) => {
      const { resolve: res, reject: rej } = op;
      op.resolve = () => { res(); resolve(); };
      op.reject = (e) => { rej(e); resolve(); };
    }));
    await Promise.all(outstanding);
    this.closed = true;
    const link = this.link;
    this.link = undefined;
    if (link && !link.socket.destroyed) {
      const disc = Buffer.allocUnsafe(REQUEST_SIZE);
      encodeRequest(disc, 0, { flags: 0, type: CMD_DISC, cookie: 0n, offset: 0, length: 0 });
      link.socket.end(disc);
      link.reader.cancel();
      setTimeout(() => link.socket.destroy(), 1000).unref();
    }
  }

  private has(flag: number): boolean {
    return (this.flags & flag) !== 0;
  }

  private async completedWrite(fua: boolean, sentFua: number): Promise<void> {
    if (fua && !sentFua && this.has(TFLAG_SEND_FLUSH)) await this.flush();
    else if (!fua) this.writeGen++;
  }

  /** Splits a no-payload command at MAX_RANGE_SECTORS (its length field is 32-bit). */
  private async ranges(sector: number, count: number, op: (s: number, n: number) => Promise<void>): Promise<void> {
    const all: Promise<void>[] = [];
    for (let s = sector; s < sector + count; s += MAX_RANGE_SECTORS) all.push(op(s, Math.min(MAX_RANGE_SECTORS, sector + count - s)));
    await Promise.all(all);
  }

  private checkOpen(sector: number): void {
    if (this.closed) throw new IoError('ESHUTDOWN', `${this.name}: device is closed`, { device: this.name, sector });
  }

  private submit(fields: Omit<Op, 'resolve' | 'reject'>): Promise<void> {
    const sector = fields.offset / SECTOR_SIZE;
    this.checkOpen(sector);
    if (this.dead) return Promise.reject(new IoError('EIO', this.dead.message, { device: this.name, sector }));
    return new Promise((resolve, reject) => {
      const op: Op = { ...fields, resolve, reject };
      const cookie = this.nextCookie++;
      this.pending.set(cookie, op);
      if (this.link && !this.reconnecting) this.send(this.link, cookie, op);
    });
  }

  private send(link: Link, cookie: bigint, op: Op): void {
    const header = Buffer.allocUnsafe(REQUEST_SIZE);
    encodeRequest(header, 0, { flags: op.flags, type: op.type, cookie, offset: op.offset, length: op.length });
    op.error = undefined;
    if (op.extents) op.extents.length = 0;
    link.socket.write(header);
    if (op.payload) link.socket.write(op.payload);
  }

  private attach(link: Link): void {
    this.link = link;
    void this.receive(link).catch((err: unknown) => this.lost(link, toIoError(err)));
  }

  /** Reads replies until the connection fails; every protocol violation drops the connection. */
  private async receive(link: Link): Promise<never> {
    const { reader } = link;
    for (;;) {
      const magic = (await reader.readExact(4)).readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const h = await reader.readExact(12);
        const error = h.readUInt32BE(0);
        const cookie = h.readBigUInt64BE(4);
        const op = this.opFor(cookie);
        if (error !== 0) op.error = this.wireError(error, '', op);
        else if (op.type === CMD_READ && !link.session.structured) await reader.readInto(op.into!);
        this.complete(cookie, op);
      } else if (magic === STRUCTURED_REPLY_MAGIC && link.session.structured) {
        const h = decodeChunkHeaderAfterMagic(await reader.readExact(16));
        const op = this.opFor(h.cookie);
        await this.chunk(link, op, h.type, h.length);
        if (h.flags & REPLY_FLAG_DONE) this.complete(h.cookie, op);
      } else {
        throw new IoError('EIO', `${this.name}: bad reply magic 0x${magic.toString(16)}`);
      }
    }
  }

  /** One structured chunk, checked against its request (spec §10, libnbd's 2019 bug). */
  private async chunk(link: Link, op: Op, type: number, length: number): Promise<void> {
    const { reader } = link;
    const bad = (what: string): never => { throw new IoError('EIO', `${this.name}: ${what}`); };
    if (type === REPLY_TYPE_NONE) {
      if (length !== 0) bad('NONE chunk with a payload');
    } else if (type === REPLY_TYPE_OFFSET_DATA) {
      if (op.type !== CMD_READ || length <= 8 || length > MAX_PAYLOAD + 8) bad(`OFFSET_DATA chunk of ${length} bytes`);
      const at = Number((await reader.readExact(8)).readBigUInt64BE(0)) - op.offset;
      const n = length - 8;
      if (at < 0 || at + n > op.length) bad('OFFSET_DATA chunk outside its request');
      await reader.readInto(op.into!.subarray(at, at + n));
    } else if (type === REPLY_TYPE_OFFSET_HOLE) {
      if (op.type !== CMD_READ || length !== 12) bad(`OFFSET_HOLE chunk of ${length} bytes`);
      const p = await reader.readExact(12);
      const at = Number(p.readBigUInt64BE(0)) - op.offset;
      const n = p.readUInt32BE(8);
      if (at < 0 || n === 0 || at + n > op.length) bad('OFFSET_HOLE chunk outside its request');
      op.into!.fill(0, at, at + n);
    } else if (type === REPLY_TYPE_BLOCK_STATUS) {
      if (op.type !== CMD_BLOCK_STATUS || length < 12 || length > MAX_CHUNK || (length - 4) % 8 !== 0) bad(`BLOCK_STATUS chunk of ${length} bytes`);
      const p = await reader.readExact(length);
      if (p.readUInt32BE(0) !== link.session.allocationContext) bad('BLOCK_STATUS for a context never negotiated');
      op.extents!.push(...statusExtents(p, op.offset / SECTOR_SIZE, op.length / SECTOR_SIZE));
    } else if (type & REPLY_TYPE_FLAG_ERROR) {
      if (length < 6 || length > MAX_CHUNK) bad(`error chunk of ${length} bytes`);
      const p = await reader.readExact(length);
      const m = p.readUInt16BE(4);
      if (6 + m > length) bad('error chunk message longer than the chunk');
      op.error ??= this.wireError(p.readUInt32BE(0), p.subarray(6, 6 + Math.min(m, MAX_STRING)).toString('utf8'), op);
    } else {
      bad(`unknown structured reply type ${type}`);
    }
  }

  private opFor(cookie: bigint): Op {
    const op = this.pending.get(cookie);
    if (!op) throw new IoError('EIO', `${this.name}: reply for unknown cookie ${cookie}`);
    return op;
  }

  private complete(cookie: bigint, op: Op): void {
    this.pending.delete(cookie);
    if (op.error) op.reject(op.error);
    else op.resolve();
  }

  private wireError(error: number, message: string, op: Op): IoError {
    const sector = op.offset / SECTOR_SIZE;
    return new IoError(wireToErrno(error), `${this.name}: server error ${error} at sector ${sector}${message ? `: ${message}` : ''}`,
      { device: this.name, sector });
  }

  /** The connection failed: reconnect with backoff and resend what had no reply, or fail it all. */
  private lost(link: Link, cause: IoError): void {
    if (this.link !== link) return;
    link.socket.destroy();
    this.link = undefined;
    if (this.closed) return this.failAll(new IoError('ESHUTDOWN', `${this.name}: device is closed`, { device: this.name }));
    if (this.writeGen > this.flushedGen) this.lostWrites = true;
    const why = cause instanceof StreamEnded ? 'connection closed by server' : cause.message;
    this.log.warn(`${this.name}: ${why}; reconnecting (${this.pending.size} requests waiting)`);
    this.reconnecting = true;
    void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    const retries = this.opts.retries ?? 5;
    const backoff = this.opts.backoffMs ?? 100;
    for (let attempt = 1; attempt <= retries; attempt++) {
      await sleep(backoff * 2 ** (attempt - 1));
      try {
        const link = await openLink(this.address, this.name, this.opts.connectTimeoutMs ?? 10_000);
        if (link.session.size !== this.sectors * SECTOR_SIZE || link.session.flags !== this.flags) {
          link.socket.destroy();
          throw new IoError('EIO', `export changed: ${link.session.size} bytes, flags 0x${link.session.flags.toString(16)}`);
        }
        this.reconnecting = false;
        this.attach(link);
        this.log.info(`${this.name}: reconnected after ${attempt} attempt(s); resending ${this.pending.size} requests`);
        for (const [cookie, op] of this.pending) this.send(link, cookie, op);
        return;
      } catch (err) {
        this.log.warn(`${this.name}: reconnect attempt ${attempt}/${retries} failed: ${toIoError(err).message}`);
      }
    }
    this.reconnecting = false;
    this.dead = new IoError('EIO', `${this.name}: connection lost and ${retries} reconnect attempts failed`, { device: this.name });
    this.log.error(this.dead.message);
    this.failAll(this.dead);
  }

  private failAll(err: IoError): void {
    const ops = [...this.pending.values()];
    this.pending.clear();
    for (const op of ops) op.reject(err);
  }
}

/** Connects, negotiates and returns a live link; the socket is destroyed on any failure. */
async function openLink(address: NbdAddress, what: string, timeoutMs: number): Promise<Link> {
  const socket = 'path' in address ? net.connect({ path: address.path }) : net.connect({ host: address.host, port: address.port, noDelay: true });
  socket.on('error', () => {}); // surfaces as a closed stream below
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new IoError('EIO', `${what}: cannot connect: ${err.message}`, { cause: err })));
      socket.once('close', () => reject(new IoError('EIO', `${what}: cannot connect`)));
    });
    const reader = new ByteReader(socket, what);
    const session = await clientHandshake(socket, reader, address.exportName, what);
    return { socket, reader, session };
  } catch (err) {
    socket.destroy();
    throw err instanceof StreamEnded ? new IoError('EIO', `${what}: server closed the connection during the handshake`) : err;
  } finally {
    clearTimeout(timer);
  }
}

function limitsFor(s: ClientSession): Limits {
  const min = Math.max(SECTOR_SIZE, s.blockSizes?.minimum ?? SECTOR_SIZE);
  const maxBytes = Math.min(MAX_PAYLOAD, s.blockSizes?.maximum ?? MAX_PAYLOAD);
  const maxTransfer = Math.max(min, maxBytes - (maxBytes % min)) / SECTOR_SIZE;
  const flag = (f: number): boolean => (s.flags & f) !== 0;
  return makeLimits({
    logicalBlockSize: min,
    physicalBlockSize: Math.max(min, Math.min(s.blockSizes?.preferred ?? 4096, 65536)),
    maxTransfer,
    readOnly: flag(TFLAG_READ_ONLY),
    flush: flag(TFLAG_SEND_FLUSH),
    fua: flag(TFLAG_SEND_FUA),
    discard: flag(TFLAG_SEND_TRIM),
    writeZeroes: flag(TFLAG_SEND_WRITE_ZEROES),
    discardZeroes: false,
  });
}

/**
 * A BLOCK_STATUS payload (u32 context id, n × (u32 length, u32 status)) as
 * sector extents from `sector`. Byte extents need not be sector-aligned (a
 * server with minimum block size 1): a sector is reported hole or zero only
 * if an extent with that flag covers all of it; anything else is data,
 * which is always safe.
 */
function statusExtents(p: Buffer, sector: number, count: number): Extent[] {
  const start = sector * SECTOR_SIZE;
  const out: Extent[] = [];
  const push = (s: number, n: number, hole: boolean, zero: boolean): void => {
    if (n <= 0) return;
    const last = out[out.length - 1];
    if (last && last.hole === hole && last.zero === zero) last.count += n;
    else out.push({ sector: s, count: n, hole, zero });
  };
  let at = start; // bytes described so far
  let covered = sector; // sectors emitted so far
  for (let i = 4; i + 8 <= p.length && covered < sector + count; i += 8) {
    const len = p.readUInt32BE(i);
    const status = p.readUInt32BE(i + 4);
    if (len === 0) throw new IoError('EIO', 'block status extent of length 0');
    const end = at + len;
    if (status & (STATE_HOLE | STATE_ZERO)) {
      const first = Math.ceil(at / SECTOR_SIZE);
      const last = Math.min(Math.floor(end / SECTOR_SIZE), sector + count);
      if (first > covered) push(covered, first - covered, false, false);
      if (last > Math.max(first, covered)) {
        push(Math.max(first, covered), last - Math.max(first, covered), (status & STATE_HOLE) !== 0, (status & STATE_ZERO) !== 0);
        covered = last;
      }
    } else {
      const last = Math.min(Math.ceil(end / SECTOR_SIZE), sector + count);
      if (last > covered) {
        push(covered, last - covered, false, false);
        covered = last;
      }
    }
    at = end;
  }
  return out;
}
