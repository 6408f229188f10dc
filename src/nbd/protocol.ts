/**
 * NBD wire constants and the fixed-layout messages, each encoder/decoder next
 * to its layout table (spec/nbd.md §2–§7). Every integer is big-endian.
 * Fixed newstyle only; no extended headers (answered ERR_UNSUP, spec §3.5.8).
 */
import type { Errno } from '../block/errors.ts';

// ---- magics (spec §2.1) ----
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OLDSTYLE_MAGIC = 0x00420281861253n;
export const REP_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- handshake flags (server, u16) and client flags (u32), spec §3.2 ----
export const FLAG_FIXED_NEWSTYLE = 0x0001;
export const FLAG_NO_ZEROES = 0x0002;
export const FLAG_C_FIXED_NEWSTYLE = 0x00000001;
export const FLAG_C_NO_ZEROES = 0x00000002;

// ---- options, spec §3.5 ----
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;

// ---- option reply types, spec §3.4 ----
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
export const REP_FLAG_ERROR = 0x80000000;
export const REP_ERR_UNSUP = 0x80000001;
export const REP_ERR_POLICY = 0x80000002;
export const REP_ERR_INVALID = 0x80000003;
export const REP_ERR_PLATFORM = 0x80000004;
export const REP_ERR_TLS_REQD = 0x80000005;
export const REP_ERR_UNKNOWN = 0x80000006;
export const REP_ERR_SHUTDOWN = 0x80000007;
export const REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const REP_ERR_TOO_BIG = 0x80000009;

// ---- info types, spec §3.6 ----
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// ---- transmission flags (u16), spec §4 ----
export const TFLAG_HAS_FLAGS = 0x0001;
export const TFLAG_READ_ONLY = 0x0002;
export const TFLAG_SEND_FLUSH = 0x0004;
export const TFLAG_SEND_FUA = 0x0008;
export const TFLAG_ROTATIONAL = 0x0010;
export const TFLAG_SEND_TRIM = 0x0020;
export const TFLAG_SEND_WRITE_ZEROES = 0x0040;
export const TFLAG_SEND_DF = 0x0080;
export const TFLAG_CAN_MULTI_CONN = 0x0100;
export const TFLAG_SEND_CACHE = 0x0400;
export const TFLAG_SEND_FAST_ZERO = 0x0800;

// ---- commands and command flags, spec §5.3–§5.4 ----
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

export const CMD_FLAG_FUA = 0x0001;
export const CMD_FLAG_NO_HOLE = 0x0002;
export const CMD_FLAG_DF = 0x0004;
export const CMD_FLAG_REQ_ONE = 0x0008;
export const CMD_FLAG_FAST_ZERO = 0x0010;

// ---- structured reply chunks, spec §5.5–§5.6 ----
export const REPLY_FLAG_DONE = 0x0001;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = 0x8001;
export const REPLY_TYPE_ERROR_OFFSET = 0x8002;
export const REPLY_TYPE_FLAG_ERROR = 0x8000;

// ---- base:allocation, spec §6.1 ----
export const BASE_ALLOCATION = 'base:allocation';
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;

// ---- sizes and limits (spec §8.3, §13) ----
export const GREETING_SIZE = 18;
export const OPTION_HEADER_SIZE = 16;
export const OPTION_REPLY_HEADER_SIZE = 20;
export const REQUEST_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const STRUCTURED_HEADER_SIZE = 20;
/** Largest string the protocol allows (names, descriptions, messages, queries). */
export const MAX_STRING = 4096;
/** Largest READ/WRITE payload dmkit accepts and advertises: 32 MiB. */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Default port, for URIs without one. */
export const DEFAULT_PORT = 10809;

// ---- error numbers on the wire, spec §7 ----
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/**
 * IoError code → wire errno. Device failures of every flavour (EILSEQ from a
 * checksum, ETIMEDOUT, ENODEV, …) are EIO to the client; ENOTSUP only means
 * something on WRITE_ZEROES with FAST_ZERO and is EINVAL elsewhere (spec §7,
 * nbdkit's mapping).
 */
export function errnoToWire(code: Errno, fastZero: boolean): number {
  switch (code) {
    case 'EPERM': case 'EROFS': return NBD_EPERM;
    case 'ENOMEM': return NBD_ENOMEM;
    case 'EINVAL': return NBD_EINVAL;
    case 'ENOSPC': return NBD_ENOSPC;
    case 'EOVERFLOW': return NBD_EOVERFLOW;
    case 'ESHUTDOWN': return NBD_ESHUTDOWN;
    case 'ENOTSUP': case 'EOPNOTSUPP': return fastZero ? NBD_ENOTSUP : NBD_EINVAL;
    default: return NBD_EIO;
  }
}

/** Wire errno → IoError code; unknown values are EINVAL (spec §7). */
export function wireToErrno(err: number): Errno {
  switch (err) {
    case NBD_EPERM: return 'EPERM';
    case NBD_EIO: return 'EIO';
    case NBD_ENOMEM: return 'ENOMEM';
    case NBD_ENOSPC: return 'ENOSPC';
    case NBD_EOVERFLOW: return 'EOVERFLOW';
    case NBD_ENOTSUP: return 'ENOTSUP';
    case NBD_ESHUTDOWN: return 'ESHUTDOWN';
    default: return 'EINVAL';
  }
}

/*
 * Option request (spec §3.3):
 *   0  u64 IHAVEOPT | 8 u32 option | 12 u32 data length | 16 data
 */
export interface OptionHeader { magic: bigint; option: number; length: number }

export function decodeOptionHeader(b: Buffer): OptionHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

export function encodeOption(option: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_SIZE);
  return b;
}

/*
 * Option reply (spec §3.4):
 *   0  u64 REP_MAGIC | 8 u32 option | 12 u32 reply type | 16 u32 length | 20 data
 */
export interface OptionReplyHeader { magic: bigint; option: number; type: number; length: number }

export function encodeOptionReply(option: number, type: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_SIZE);
  return b;
}

export function decodeOptionReplyHeader(b: Buffer): OptionReplyHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), type: b.readUInt32BE(12), length: b.readUInt32BE(16) };
}

/*
 * INFO / GO data (spec §3.5.5):
 *   0 u32 name length n | 4 name | 4+n u16 count k | 6+n k × u16 info type
 */
export function encodeInfoRequest(name: string, infos: number[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(6 + nameBytes.length + 2 * infos.length);
  b.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + nameBytes.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + nameBytes.length + 2 * i));
  return b;
}

/*
 * META_CONTEXT data (spec §3.5.7):
 *   0 u32 name length n | 4 name | 4+n u32 query count q | q × (u32 m, m bytes)
 */
export function encodeMetaContextRequest(exportName: string, queries: string[]): Buffer {
  const parts = [lengthPrefixed(Buffer.from(exportName, 'utf8')), u32(queries.length)];
  for (const q of queries) parts.push(lengthPrefixed(Buffer.from(q, 'utf8')));
  return Buffer.concat(parts);
}

/*
 * NBD_REP_INFO payloads (spec §3.6):
 *   EXPORT      u16 0 | u64 size | u16 transmission flags          (12 bytes)
 *   NAME        u16 1 | name                                        (≥ 2)
 *   DESCRIPTION u16 2 | text                                        (≥ 2)
 *   BLOCK_SIZE  u16 3 | u32 minimum | u32 preferred | u32 maximum   (14 bytes)
 */
export function encodeInfoExport(size: number, flags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

export function encodeInfoString(type: number, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

export interface BlockSizes { minimum: number; preferred: number; maximum: number }

export function encodeInfoBlockSize(sizes: BlockSizes): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(sizes.minimum, 2);
  b.writeUInt32BE(sizes.preferred, 6);
  b.writeUInt32BE(sizes.maximum, 10);
  return b;
}

/*
 * EXPORT_NAME reply (spec §3.5.1):
 *   0 u64 size | 8 u16 transmission flags | 10 124 zero bytes (omitted with NO_ZEROES)
 */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

/*
 * Compact request (spec §5.2):
 *   0 u32 magic | 4 u16 flags | 6 u16 type | 8 u64 cookie | 16 u64 offset | 24 u32 length
 * Offsets are kept as numbers: an offset above 2^53 cannot be inside any
 * export, so it is clamped to MAX_SAFE_INTEGER and fails the range check.
 */
export interface Request {
  magic: number;
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

export function decodeRequest(b: Buffer, at: number): Request {
  const offset = b.readBigUInt64BE(at + 16);
  return {
    magic: b.readUInt32BE(at),
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    cookie: b.readBigUInt64BE(at + 8),
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: b.readUInt32BE(at + 24),
  };
}

export function encodeRequest(into: Buffer, at: number, r: Omit<Request, 'magic'>): void {
  into.writeUInt32BE(REQUEST_MAGIC, at);
  into.writeUInt16BE(r.flags, at + 4);
  into.writeUInt16BE(r.type, at + 6);
  into.writeBigUInt64BE(r.cookie, at + 8);
  into.writeBigUInt64BE(BigInt(r.offset), at + 16);
  into.writeUInt32BE(r.length, at + 24);
}

/*
 * Simple reply (spec §5.5):
 *   0 u32 magic | 4 u32 error | 8 u64 cookie | 16 READ data
 */
export function writeSimpleReplyHeader(into: Buffer, error: number, cookie: bigint): void {
  into.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  into.writeUInt32BE(error, 4);
  into.writeBigUInt64BE(cookie, 8);
}

/*
 * Structured reply chunk (spec §5.5):
 *   0 u32 magic | 4 u16 flags | 6 u16 type | 8 u64 cookie | 16 u32 payload length | 20 payload
 */
export function writeChunkHeader(into: Buffer, at: number, flags: number, type: number, cookie: bigint, length: number): void {
  into.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  into.writeUInt16BE(flags, at + 4);
  into.writeUInt16BE(type, at + 6);
  into.writeBigUInt64BE(cookie, at + 8);
  into.writeUInt32BE(length, at + 16);
}

export interface ChunkHeader { flags: number; type: number; cookie: bigint; length: number }

/** Decodes the 16 bytes that follow the reply magic of a structured chunk. */
export function decodeChunkHeaderAfterMagic(b: Buffer): ChunkHeader {
  return { flags: b.readUInt16BE(0), type: b.readUInt16BE(2), cookie: b.readBigUInt64BE(4), length: b.readUInt32BE(12) };
}

export function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function lengthPrefixed(s: Buffer): Buffer {
  return Buffer.concat([u32(s.length), s]);
}

export const EMPTY = Buffer.alloc(0);

export function optionName(opt: number): string {
  return OPTION_NAMES[opt] ?? `option ${opt}`;
}

const OPTION_NAMES: Record<number, string> = {
  [OPT_EXPORT_NAME]: 'export name', [OPT_ABORT]: 'abort', [OPT_LIST]: 'list',
  [OPT_STARTTLS]: 'starttls', [OPT_INFO]: 'info', [OPT_GO]: 'go',
  [OPT_STRUCTURED_REPLY]: 'structured reply', [OPT_LIST_META_CONTEXT]: 'list meta context',
  [OPT_SET_META_CONTEXT]: 'set meta context',
};
