/**
 * Server side of the fixed newstyle handshake (spec §3, algorithm §3.8).
 * Every option's data is read in full (it is bounded) before it is answered,
 * so a rejected option never desynchronises the stream; unknown options get
 * ERR_UNSUP and the connection lives on.
 */
import type { Socket } from 'node:net';
import type { BlockDevice } from '../block/device.ts';
import { SECTOR_SIZE } from '../block/device.ts';
import type { ByteReader } from './byte-reader.ts';
import type { ExportHandle, ExportProvider } from './exports.ts';
import {
  BASE_ALLOCATION, type BlockSizes, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_DESCRIPTION, INFO_NAME, MAX_PAYLOAD, MAX_STRING,
  NBDMAGIC, OPTION_HEADER_SIZE, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST,
  OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_STARTTLS, OPT_STRUCTURED_REPLY, REP_ACK,
  REP_ERR_INVALID, REP_ERR_POLICY, REP_ERR_SHUTDOWN, REP_ERR_TOO_BIG, REP_ERR_UNKNOWN, REP_ERR_UNSUP,
  REP_INFO, REP_META_CONTEXT, REP_SERVER, TFLAG_CAN_MULTI_CONN, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY,
  TFLAG_SEND_CACHE, TFLAG_SEND_DF, TFLAG_SEND_FAST_ZERO, TFLAG_SEND_FLUSH, TFLAG_SEND_FUA,
  TFLAG_SEND_TRIM, TFLAG_SEND_WRITE_ZEROES, decodeOptionHeader, encodeExportNameReply,
  encodeInfoBlockSize, encodeInfoExport, encodeInfoString, encodeOptionReply, lengthPrefixed,
  optionName, u32,
} from './protocol.ts';
import { truncateUtf8 } from './replies.ts';

/** Largest option payload read at all; anything longer is a hard disconnect (spec §13). */
export const MAX_OPTION_DATA = 65536;
/** Options allowed before an export is chosen, plus this many per export listed (spec §3.7). */
const OPTION_BUDGET = 32;
/** Meta-context queries per option (spec §13). */
const MAX_QUERIES = 128;
/** The id of base:allocation once selected; LIST answers with the reserved id 0. */
export const BASE_ALLOCATION_ID = 1;

/** What the handshake hands to the transmission phase. */
export interface Session {
  readonly exportName: string;
  readonly handle: ExportHandle;
  readonly structured: boolean;
  /** Context id of base:allocation if it was selected for this export. */
  readonly allocationContext: number | undefined;
  /**
   * The minimum block size this client promised to obey: the one advertised
   * if it asked for NBD_INFO_BLOCK_SIZE in GO (spec §3.6), else 1. Requests
   * not aligned to the device's logical block size from a client bound to 1
   * are served by read-modify-write (transmission.ts, spec §8.2 item 9).
   */
  readonly minimumBlockSize: number;
  readonly flags: number;
}

export interface HandshakeLink {
  readonly socket: Socket;
  readonly reader: ByteReader;
  readonly provider: ExportProvider;
  /** Advertise the device's logical block size as the minimum (see blockSizes). */
  readonly strictBlockSize: boolean;
  /** True once the server is closing: options then get ERR_SHUTDOWN (spec §3.7). */
  shuttingDown(): boolean;
}

/** Thrown to end the handshake with a hard disconnect; never leaves this module. */
class Disconnect {
  constructor(readonly reason: string) {}
}

/**
 * Block sizes advertised for a device: preferred ≥ 4096 and the logical block
 * size, max ≤ 32 MiB. The minimum is 1 because the server takes requests of
 * any alignment (read-modify-write, transmission.ts), as qemu-nbd over a
 * buffered file and nbdkit's plugins without constraints do; libnbd (nbdfuse,
 * nbdcopy) asks for block sizes and then refuses, on the client side, any
 * request below the minimum it was given, so advertising the logical block
 * size would break nbdfuse, whose FUSE writes arrive as the application made
 * them. `strict` advertises the logical block size instead, binding the
 * clients that ask for it (they then get EINVAL for misaligned requests).
 */
export function blockSizes(dev: BlockDevice, strict: boolean): BlockSizes {
  const minimum = strict ? dev.limits.logicalBlockSize : 1;
  const preferred = Math.max(4096, dev.limits.logicalBlockSize, dev.limits.physicalBlockSize);
  const transfer = Math.min(dev.limits.maxTransfer * SECTOR_SIZE, MAX_PAYLOAD);
  // Clients reject max < preferred (qemu) or max not a multiple of min (libnbd);
  // the server splits larger requests at maxTransfer anyway.
  const maximum = Math.max(preferred, transfer - (transfer % minimum));
  return { minimum, preferred, maximum };
}

/**
 * Transmission flags for one connection (spec §4). FLUSH and FUA are always
 * offered (a device without a volatile cache makes them free); CAN_MULTI_CONN
 * holds because every connection of an export shares one device object whose
 * flush covers all completed writes (ARCHITECTURE §1 item 4, R6); DF only
 * with structured replies.
 */
export function transmissionFlags(handle: ExportHandle, structured: boolean): number {
  const l = handle.device.limits;
  let flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_CACHE | TFLAG_CAN_MULTI_CONN;
  if (structured) flags |= TFLAG_SEND_DF;
  if (handle.readOnly) return flags | TFLAG_READ_ONLY;
  flags |= TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO;
  if (l.discard) flags |= TFLAG_SEND_TRIM;
  return flags;
}

/**
 * Runs the handshake. Resolves with the session once GO or EXPORT_NAME
 * succeeded, or undefined when the connection ended (ABORT, EOF, protocol
 * violation); in that case nothing is held open.
 */
export async function negotiate(link: HandshakeLink): Promise<Session | undefined> {
  try {
    return await new Negotiation(link).run();
  } catch (err) {
    if (err instanceof Disconnect) {
      link.socket.destroy();
      return undefined;
    }
    throw err;
  }
}

class Negotiation {
  private fixed = false;
  private noZeroes = false;
  private structured = false;
  /** Export and result of the last SET_META_CONTEXT (spec §3.5.7: replaced even on failure). */
  private meta: { exportName: string; allocation: boolean } | undefined;
  private budget = OPTION_BUDGET;

  constructor(private readonly link: HandshakeLink) {}

  async run(): Promise<Session | undefined> {
    const greeting = Buffer.allocUnsafe(18);
    greeting.writeBigUInt64BE(NBDMAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.link.socket.write(greeting);

    const cflags = (await this.link.reader.readExact(4)).readUInt32BE(0);
    if (cflags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) {
      throw new Disconnect(`client requested unknown flags 0x${cflags.toString(16)}`);
    }
    this.fixed = (cflags & FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (cflags & FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      if (this.budget-- <= 0) throw new Disconnect('client spent too many options without choosing an export');
      const hdr = decodeOptionHeader(await this.link.reader.readExact(OPTION_HEADER_SIZE));
      if (hdr.magic !== IHAVEOPT) throw new Disconnect('bad option magic');
      if (!this.fixed && hdr.option !== OPT_EXPORT_NAME) throw new Disconnect('option without fixed newstyle');
      const cap = hdr.option === OPT_EXPORT_NAME ? MAX_STRING : MAX_OPTION_DATA;
      if (hdr.length > cap) throw new Disconnect(`${optionName(hdr.option)} data of ${hdr.length} bytes`);
      const data = await this.link.reader.readExact(hdr.length);
      if (this.link.shuttingDown() && hdr.option !== OPT_ABORT) {
        if (hdr.option === OPT_EXPORT_NAME) throw new Disconnect('server shutting down');
        this.reply(hdr.option, REP_ERR_SHUTDOWN, 'server is shutting down');
        continue;
      }
      const session = await this.option(hdr.option, data);
      if (session !== 'continue') return session;
    }
  }

  private async option(opt: number, data: Buffer): Promise<Session | undefined | 'continue'> {
    switch (opt) {
      case OPT_EXPORT_NAME:
        return this.exportName(data);
      case OPT_ABORT:
        this.reply(opt, REP_ACK);
        this.link.socket.end();
        return undefined;
      case OPT_LIST:
        if (data.length !== 0) return this.invalid(opt, "option 'list' has unexpected length");
        for (const e of this.link.provider.list()) {
          const name = truncateUtf8(e.name, MAX_STRING);
          this.link.socket.write(encodeOptionReply(opt, REP_SERVER,
            Buffer.concat([lengthPrefixed(name), truncateUtf8(e.description, MAX_STRING)])));
          this.budget += OPTION_BUDGET;
        }
        this.reply(opt, REP_ACK);
        return 'continue';
      case OPT_STARTTLS:
        if (data.length !== 0) return this.invalid(opt, "option 'starttls' has unexpected length");
        this.reply(opt, REP_ERR_POLICY, 'TLS not configured');
        return 'continue';
      case OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.invalid(opt, "option 'structured reply' has unexpected length");
        if (this.structured) return this.invalid(opt, 'structured reply already negotiated');
        this.structured = true;
        this.reply(opt, REP_ACK);
        return 'continue';
      case OPT_INFO:
      case OPT_GO:
        return this.infoOrGo(opt, data);
      case OPT_LIST_META_CONTEXT:
      case OPT_SET_META_CONTEXT:
        this.metaContext(opt, data);
        return 'continue';
      default:
        this.reply(opt, REP_ERR_UNSUP, `Unsupported option ${opt} (${optionName(opt)})`);
        return 'continue';
    }
  }

  /** NBD_OPT_EXPORT_NAME: no error reply exists, so every failure is a hard disconnect (spec §3.5.1). */
  private exportName(data: Buffer): Session {
    const name = decodeName(data);
    if (name === undefined) throw new Disconnect('export name contains NUL or invalid UTF-8');
    const handle = this.open(name);
    if (!handle) throw new Disconnect(`export '${name}' not present`);
    const flags = transmissionFlags(handle, this.structured);
    this.link.socket.write(encodeExportNameReply(handle.device.sectors * SECTOR_SIZE, flags, this.noZeroes));
    return this.session(name, handle, flags, 1);
  }

  /*
   * INFO/GO data (spec §3.5.5): u32 n | n bytes name | u16 k | k × u16 info type.
   * Checks in nbdkit's order, each → ERR_INVALID with the connection kept.
   */
  private infoOrGo(opt: number, data: Buffer): Session | 'continue' {
    if (data.length < 6) return this.invalid(opt, `Inconsistent lengths in option ${optionName(opt)}`);
    const n = data.readUInt32BE(0);
    if (n > data.length - 6) return this.invalid(opt, `Inconsistent lengths in option ${optionName(opt)}`);
    const k = data.readUInt16BE(4 + n);
    if (data.length !== 6 + n + 2 * k) return this.invalid(opt, `Inconsistent lengths in option ${optionName(opt)}`);
    if (n > MAX_STRING) return this.invalid(opt, `export name of ${n} bytes is too long`);
    const name = decodeName(data.subarray(4, 4 + n));
    if (name === undefined) return this.invalid(opt, 'export name contains NUL or invalid UTF-8');
    const requested = new Set<number>();
    for (let i = 0; i < k; i++) requested.add(data.readUInt16BE(6 + n + 2 * i));

    const handle = this.open(name);
    if (!handle) {
      this.reply(opt, REP_ERR_UNKNOWN, `export '${name}' not present`);
      return 'continue';
    }
    const flags = transmissionFlags(handle, this.structured);
    const dev = handle.device;
    this.reply(opt, REP_INFO, encodeInfoExport(dev.sectors * SECTOR_SIZE, flags));
    if (requested.has(INFO_NAME)) this.reply(opt, REP_INFO, encodeInfoString(INFO_NAME, name));
    if (handle.description !== '') {
      this.reply(opt, REP_INFO, encodeInfoString(INFO_DESCRIPTION, truncateUtf8(handle.description, MAX_STRING).toString('utf8')));
    }
    // Sent whether requested or not, as qemu does: it binds only clients that asked.
    const sizes = blockSizes(dev, this.link.strictBlockSize);
    this.reply(opt, REP_INFO, encodeInfoBlockSize(sizes));
    this.reply(opt, REP_ACK);
    if (opt === OPT_INFO) {
      handle.release();
      return 'continue';
    }
    return this.session(name, handle, flags, requested.has(INFO_BLOCK_SIZE) ? sizes.minimum : 1);
  }

  /*
   * META_CONTEXT data (spec §3.5.7): u32 n | name | u32 q | q × (u32 m | m bytes query).
   */
  private metaContext(opt: number, data: Buffer): void {
    const set = opt === OPT_SET_META_CONTEXT;
    if (set) this.meta = undefined;
    if (set && !this.structured) {
      this.invalid(opt, `request option '${optionName(opt)}' when structured reply is not negotiated`);
      return;
    }
    const parsed = parseMetaContext(data);
    if (typeof parsed === 'string') {
      this.reply(opt, parsed === 'too many queries' ? REP_ERR_TOO_BIG : REP_ERR_INVALID, parsed);
      return;
    }
    const exportName = this.resolve(parsed.exportName);
    if (exportName === undefined || !this.link.provider.list().some((e) => e.name === exportName)) {
      this.reply(opt, REP_ERR_UNKNOWN, `export '${parsed.exportName}' not present`);
      return;
    }
    // LIST with no queries lists everything; SET with none (or `base:`) selects nothing.
    const allocation = parsed.queries.length === 0
      ? !set
      : parsed.queries.some((q) => q === BASE_ALLOCATION || (!set && q === 'base:'));
    if (allocation) {
      this.reply(opt, REP_META_CONTEXT,
        Buffer.concat([u32(set ? BASE_ALLOCATION_ID : 0), Buffer.from(BASE_ALLOCATION)]));
    }
    this.reply(opt, REP_ACK);
    if (set) this.meta = { exportName, allocation };
  }

  private session(name: string, handle: ExportHandle, flags: number, minimumBlockSize: number): Session {
    const resolved = this.resolve(name);
    const allocation = this.structured && this.meta?.allocation === true && this.meta.exportName === resolved;
    return {
      exportName: resolved ?? name,
      handle,
      structured: this.structured,
      allocationContext: allocation ? BASE_ALLOCATION_ID : undefined,
      minimumBlockSize,
      flags,
    };
  }

  private resolve(name: string): string | undefined {
    return name === '' ? this.link.provider.defaultExport() : name;
  }

  private open(name: string): ExportHandle | undefined {
    const resolved = this.resolve(name);
    return resolved === undefined ? undefined : this.link.provider.open(resolved);
  }

  private invalid(opt: number, message: string): 'continue' {
    this.reply(opt, REP_ERR_INVALID, message);
    return 'continue';
  }

  private reply(opt: number, type: number, data: Buffer | string = Buffer.alloc(0)): void {
    const payload = typeof data === 'string' ? truncateUtf8(data, MAX_STRING) : data;
    this.link.socket.write(encodeOptionReply(opt, type, payload));
  }
}

/** A protocol string: valid UTF-8 without NUL, else undefined. */
function decodeName(b: Buffer): string | undefined {
  if (b.includes(0)) return undefined;
  const s = b.toString('utf8');
  return Buffer.byteLength(s) === b.length && !s.includes('\ufffd') ? s : undefined;
}

function parseMetaContext(data: Buffer): { exportName: string; queries: string[] } | string {
  const bad = 'Inconsistent lengths in option meta context';
  if (data.length < 8) return bad;
  const n = data.readUInt32BE(0);
  if (n > data.length - 8) return bad;
  if (n > MAX_STRING) return `export name of ${n} bytes is too long`;
  const exportName = decodeName(data.subarray(4, 4 + n));
  if (exportName === undefined) return 'export name contains NUL or invalid UTF-8';
  const q = data.readUInt32BE(4 + n);
  if (q > MAX_QUERIES) return 'too many queries';
  const queries: string[] = [];
  let at = 8 + n;
  for (let i = 0; i < q; i++) {
    if (data.length - at < 4) return bad;
    const m = data.readUInt32BE(at);
    at += 4;
    if (m > data.length - at) return bad;
    if (m > MAX_STRING) return `query of ${m} bytes is too long`;
    const query = decodeName(data.subarray(at, at + m));
    if (query === undefined) return 'query contains NUL or invalid UTF-8';
    queries.push(query);
    at += m;
  }
  if (at !== data.length) return bad;
  return { exportName, queries };
}
