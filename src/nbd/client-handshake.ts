/**
 * Client side of the handshake (spec §10): fixed newstyle, structured
 * replies, base:allocation, then GO asking for block sizes, falling back to
 * EXPORT_NAME when GO is unsupported. Everything the server sends is bounded
 * and checked before it is used.
 */
import type { Socket } from 'node:net';
import { type Errno, IoError } from '../block/errors.ts';
import type { ByteReader } from './byte-reader.ts';
import {
  BASE_ALLOCATION, type BlockSizes, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_EXPORT, MAX_STRING, NBDMAGIC, OLDSTYLE_MAGIC,
  OPTION_REPLY_HEADER_SIZE, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_SET_META_CONTEXT,
  OPT_STRUCTURED_REPLY, REP_ACK, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_FLAG_ERROR, REP_INFO,
  REP_MAGIC, REP_META_CONTEXT, TFLAG_HAS_FLAGS, decodeOptionReplyHeader, encodeInfoRequest,
  encodeMetaContextRequest, encodeOption, optionName, u32,
} from './protocol.ts';

/** Largest option reply accepted from a server (libnbd allows 64 MiB; nothing legitimate needs more than this). */
const MAX_OPTION_REPLY = 65536;

export interface ClientSession {
  size: number;
  flags: number;
  structured: boolean;
  /** Context id the server gave base:allocation, if it offers it. */
  allocationContext: number | undefined;
  /** Block sizes the server advertised in reply to our GO (binding on us), if any. */
  blockSizes: BlockSizes | undefined;
}

interface OptionReply { type: number; data: Buffer }

export async function clientHandshake(socket: Socket, reader: ByteReader, exportName: string, what: string): Promise<ClientSession> {
  const fail = (code: Errno, msg: string): never => { throw new IoError(code, `${what}: ${msg}`); };
  if ((await reader.readExact(8)).readBigUInt64BE(0) !== NBDMAGIC) fail('EIO', 'bad initial magic from server');
  const style = (await reader.readExact(8)).readBigUInt64BE(0);
  if (style === OLDSTYLE_MAGIC) fail('EIO', 'server speaks oldstyle NBD, which is not supported');
  if (style !== IHAVEOPT) fail('EIO', 'bad newstyle magic from server');
  const gflags = (await reader.readExact(2)).readUInt16BE(0);
  const fixed = (gflags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (gflags & FLAG_NO_ZEROES) !== 0;
  socket.write(u32((fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0)));

  const nameBytes = Buffer.from(exportName, 'utf8');
  if (nameBytes.length > MAX_STRING) fail('EINVAL', `export name of ${nameBytes.length} bytes is too long`);

  const exportNameOption = async (structured: boolean, allocation: number | undefined): Promise<ClientSession> => {
    socket.write(encodeOption(OPT_EXPORT_NAME, nameBytes));
    const reply = await reader.readExact(noZeroes ? 10 : 134);
    return checkFlags({
      size: Number(reply.readBigUInt64BE(0)), flags: reply.readUInt16BE(8), structured,
      allocationContext: allocation, blockSizes: undefined,
    });
  };
  const checkFlags = (s: ClientSession): ClientSession => {
    if (!(s.flags & TFLAG_HAS_FLAGS)) fail('EIO', `invalid transmission flags 0x${s.flags.toString(16)} from server`);
    if (!Number.isSafeInteger(s.size) || s.size % 512 !== 0) fail('EIO', `export size ${s.size} is not a whole number of sectors`);
    return s;
  };
  if (!fixed) return exportNameOption(false, undefined);

  const request = async (opt: number, data?: Buffer): Promise<OptionReply[]> => {
    socket.write(encodeOption(opt, data));
    const replies: OptionReply[] = [];
    for (;;) {
      const h = decodeOptionReplyHeader(await reader.readExact(OPTION_REPLY_HEADER_SIZE));
      if (h.magic !== REP_MAGIC) fail('EIO', `bad option reply magic in reply to ${optionName(opt)}`);
      if (h.option !== opt) fail('EIO', `server answered option ${h.option} to ${optionName(opt)}`);
      if (h.length > MAX_OPTION_REPLY) fail('EIO', `option reply of ${h.length} bytes to ${optionName(opt)}`);
      const reply = { type: h.type, data: Buffer.from(await reader.readExact(h.length)) };
      replies.push(reply);
      if (h.type === REP_ACK || h.type & REP_FLAG_ERROR) return replies;
    }
  };
  const last = (r: OptionReply[]): OptionReply => r[r.length - 1]!;

  const structured = last(await request(OPT_STRUCTURED_REPLY)).type === REP_ACK;
  let allocationContext: number | undefined;
  if (structured) {
    for (const r of await request(OPT_SET_META_CONTEXT, encodeMetaContextRequest(exportName, [BASE_ALLOCATION]))) {
      if (r.type === REP_META_CONTEXT && r.data.length > 4 && r.data.subarray(4).toString('utf8') === BASE_ALLOCATION) {
        allocationContext = r.data.readUInt32BE(0);
      }
    }
  }

  const go = await request(OPT_GO, encodeInfoRequest(exportName, [INFO_BLOCK_SIZE]));
  const final = last(go);
  if (final.type === REP_ERR_UNSUP) return exportNameOption(structured, allocationContext);
  if (final.type !== REP_ACK) {
    socket.write(encodeOption(OPT_ABORT));
    const message = final.data.subarray(0, MAX_STRING).toString('utf8');
    const code: Errno = final.type === REP_ERR_UNKNOWN ? 'ENOENT' : 'EIO';
    fail(code, `server refused export '${exportName}' (reply 0x${final.type.toString(16)}${message ? `: ${message}` : ''})`);
  }
  if (final.data.length !== 0) fail('EIO', 'ACK with data');
  let size: number | undefined;
  let flags = 0;
  let blockSizes: BlockSizes | undefined;
  for (const r of go) {
    if (r.type !== REP_INFO || r.data.length < 2) continue;
    const info = r.data.readUInt16BE(0);
    if (info === INFO_EXPORT) {
      if (r.data.length !== 12) fail('EIO', `NBD_INFO_EXPORT of ${r.data.length} bytes`);
      size = Number(r.data.readBigUInt64BE(2));
      flags = r.data.readUInt16BE(10);
    } else if (info === INFO_BLOCK_SIZE && r.data.length === 14) {
      blockSizes = validBlockSizes({
        minimum: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), maximum: r.data.readUInt32BE(10),
      });
    }
  }
  if (size === undefined) return fail('EIO', 'server omitted NBD_INFO_EXPORT');
  return checkFlags({ size, flags, structured, allocationContext, blockSizes });
}

/** Block sizes as libnbd accepts them (spec §3.6); a malformed triple is ignored. */
function validBlockSizes(s: BlockSizes): BlockSizes | undefined {
  const pow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
  const ok = pow2(s.minimum) && s.minimum <= 65536 && pow2(s.preferred) && s.preferred >= 512 &&
    s.minimum <= s.preferred && s.preferred <= s.maximum &&
    (s.maximum === 0xffffffff || s.maximum % s.minimum === 0);
  return ok ? s : undefined;
}
