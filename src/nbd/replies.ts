/**
 * Transmission-phase reply builders (spec §5.5–§5.6). Every reply is built as
 * one buffer and written with one socket write, so replies of concurrent
 * requests never interleave on the wire.
 */
import {
  MAX_STRING, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR, REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, SIMPLE_REPLY_SIZE, STRUCTURED_HEADER_SIZE,
  writeChunkHeader, writeSimpleReplyHeader,
} from './protocol.ts';

export function simpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  writeSimpleReplyHeader(b, error, cookie);
  return b;
}

/** A successful simple READ reply, header and data in one buffer; `data` is where the device reads into. */
export function simpleReadReply(cookie: bigint, length: number): { reply: Buffer; data: Buffer } {
  const reply = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE + length);
  writeSimpleReplyHeader(reply, 0, cookie);
  return { reply, data: reply.subarray(SIMPLE_REPLY_SIZE) };
}

export function noneChunk(cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE);
  writeChunkHeader(b, 0, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
  return b;
}

/*
 * NBD_REPLY_TYPE_ERROR payload: u32 error | u16 message length m | m bytes message.
 */
export function errorChunk(cookie: bigint, error: number, message: string): Buffer {
  const msg = truncateUtf8(message, MAX_STRING);
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE + 6 + msg.length);
  writeChunkHeader(b, 0, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, 6 + msg.length);
  b.writeUInt32BE(error, STRUCTURED_HEADER_SIZE);
  b.writeUInt16BE(msg.length, STRUCTURED_HEADER_SIZE + 4);
  msg.copy(b, STRUCTURED_HEADER_SIZE + 6);
  return b;
}

/** A piece of a structured READ reply: data read from the device, or a range that reads as zeroes. */
export interface ReadSegment {
  /** Byte offset in the export. */
  offset: number;
  length: number;
  hole: boolean;
}

/*
 * OFFSET_DATA payload: u64 offset | data.      OFFSET_HOLE payload: u64 offset | u32 hole size.
 * All chunks of one READ go into one buffer; the last carries DONE.
 * `data[i]` is the slice the device reads segment i into (empty for holes).
 */
export function structuredReadReply(cookie: bigint, segments: ReadSegment[]): { reply: Buffer; data: Buffer[] } {
  let size = 0;
  for (const s of segments) size += STRUCTURED_HEADER_SIZE + (s.hole ? 12 : 8 + s.length);
  const reply = Buffer.allocUnsafe(size);
  const data: Buffer[] = [];
  let at = 0;
  segments.forEach((s, i) => {
    const flags = i === segments.length - 1 ? REPLY_FLAG_DONE : 0;
    if (s.hole) {
      writeChunkHeader(reply, at, flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12);
      reply.writeBigUInt64BE(BigInt(s.offset), at + STRUCTURED_HEADER_SIZE);
      reply.writeUInt32BE(s.length, at + STRUCTURED_HEADER_SIZE + 8);
      data.push(reply.subarray(0, 0));
      at += STRUCTURED_HEADER_SIZE + 12;
    } else {
      writeChunkHeader(reply, at, flags, REPLY_TYPE_OFFSET_DATA, cookie, 8 + s.length);
      reply.writeBigUInt64BE(BigInt(s.offset), at + STRUCTURED_HEADER_SIZE);
      const start = at + STRUCTURED_HEADER_SIZE + 8;
      data.push(reply.subarray(start, start + s.length));
      at = start + s.length;
    }
  });
  return { reply, data };
}

/** One base:allocation descriptor: length in bytes and NBD_STATE_* flags. */
export interface StatusExtent {
  length: number;
  status: number;
}

/*
 * NBD_REPLY_TYPE_BLOCK_STATUS payload: u32 context id | n × (u32 length, u32 status).
 */
export function blockStatusChunk(cookie: bigint, contextId: number, extents: StatusExtent[]): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE + payload);
  writeChunkHeader(b, 0, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, payload);
  b.writeUInt32BE(contextId, STRUCTURED_HEADER_SIZE);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.length, STRUCTURED_HEADER_SIZE + 4 + 8 * i);
    b.writeUInt32BE(e.status, STRUCTURED_HEADER_SIZE + 8 + 8 * i);
  });
  return b;
}

/** At most `max` bytes of UTF-8, cut on a character boundary. */
export function truncateUtf8(text: string, max: number): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}
