/**
 * Hand-made byte sequences against the server (spec §16.5 probes, §14
 * regression tests): exact replies, and the server keeps serving others.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { BlockDevice, WriteOptions } from '../../src/block/device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import {
  CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA, CMD_FLAG_REQ_ONE, CMD_FLUSH,
  CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_EXPORT, INFO_NAME,
  OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT,
  OPT_STARTTLS, OPT_STRUCTURED_REPLY, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR,
  REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, REP_ACK, REP_ERR_INVALID,
  REP_ERR_POLICY, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_META_CONTEXT, REP_SERVER,
  SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, encodeInfoRequest, encodeMetaContextRequest, encodeOption,
  encodeRequest,
} from '../../src/nbd/protocol.ts';
import { RawPeer, type Served, serve } from './helpers.ts';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

let served: Served;
let disk: MemoryDevice;
let flushes = 0;
/** Chunk counts of the vectored writes that reached 'disk'. */
const vectored: number[] = [];

before(async () => {
  disk = new MemoryDevice(SIZE / 512, { name: 'disk' });
  const counted: BlockDevice = Object.create(disk, {
    flush: { value: async () => { flushes++; await disk.flush(); } },
    writev: {
      value: (sector: number, chunks: readonly Buffer[], opts?: WriteOptions) => {
        vectored.push(chunks.length);
        return disk.writev(sector, chunks, opts);
      },
    },
  });
  const ro = new MemoryDevice(2048, { name: 'ro' });
  const slowZero = new MemoryDevice(2048, { name: 'slowzero', limits: { writeZeroes: false } });
  served = await serve({ disk: counted, ro, slowzero: slowZero }, {
    readOnly: new Set(['ro']),
    descriptions: new Map([['disk', 'test disk']]),
  });
});
after(() => served.close());

// ---- handshake helpers ----

async function greet(cflags = 3, port = served.port): Promise<RawPeer> {
  const p = await RawPeer.connect(port);
  const g = await p.read(18);
  assert.equal(g.toString('hex'), '4e42444d4147494349484156454f50540003');
  const f = Buffer.alloc(4);
  f.writeUInt32BE(cflags >>> 0);
  p.send(f);
  return p;
}

interface OptReply { option: number; type: number; data: Buffer }

async function optReply(p: RawPeer): Promise<OptReply> {
  const h = await p.read(20);
  assert.equal(h.readBigUInt64BE(0), 0x0003e889045565a9n);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await p.read(h.readUInt32BE(16)) };
}

async function option(p: RawPeer, opt: number, data?: Buffer): Promise<OptReply[]> {
  p.send(encodeOption(opt, data));
  const out: OptReply[] = [];
  for (;;) {
    const r = await optReply(p);
    assert.equal(r.option, opt);
    out.push(r);
    if (r.type === REP_ACK || r.type & 0x80000000) return out;
  }
}

function types(rs: OptReply[]): number[] {
  return rs.map((r) => r.type);
}

async function transmission(
  name = 'disk', structured = true, meta = true, opts: { port?: number; infos?: number[] } = {},
): Promise<{ p: RawPeer; flags: number }> {
  const p = await greet(3, opts.port);
  if (structured) assert.deepEqual(types(await option(p, OPT_STRUCTURED_REPLY)), [REP_ACK]);
  if (structured && meta) {
    const r = await option(p, OPT_SET_META_CONTEXT, encodeMetaContextRequest(name, ['base:allocation']));
    assert.deepEqual(types(r), [REP_META_CONTEXT, REP_ACK]);
  }
  const go = await option(p, OPT_GO, encodeInfoRequest(name, opts.infos ?? [INFO_BLOCK_SIZE]));
  assert.equal(go[go.length - 1]!.type, REP_ACK);
  const exp = go.find((r) => r.type === REP_INFO && r.data.readUInt16BE(0) === INFO_EXPORT)!;
  return { p, flags: exp.data.readUInt16BE(10) };
}

// ---- transmission helpers ----

function request(p: RawPeer, type: number, opts: { flags?: number; cookie?: bigint; offset?: number; length?: number; payload?: Buffer } = {}): void {
  const h = Buffer.alloc(28);
  encodeRequest(h, 0, { flags: opts.flags ?? 0, type, cookie: opts.cookie ?? 7n, offset: opts.offset ?? 0, length: opts.length ?? opts.payload?.length ?? 0 });
  p.send(h);
  if (opts.payload) p.send(opts.payload);
}

async function simple(p: RawPeer): Promise<{ error: number; cookie: bigint }> {
  const h = await p.read(16);
  assert.equal(h.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
  return { error: h.readUInt32BE(4), cookie: h.readBigUInt64BE(8) };
}

interface Chunk { magic: number; flags: number; type: number; cookie: bigint; payload: Buffer }

/** One reply message of either kind; simple replies come back as type -1 with the error in `flags`. */
async function reply(p: RawPeer): Promise<Chunk> {
  const m = await p.read(4);
  const magic = m.readUInt32BE(0);
  if (magic === SIMPLE_REPLY_MAGIC) {
    const h = await p.read(12);
    return { magic, flags: h.readUInt32BE(0), type: -1, cookie: h.readBigUInt64BE(4), payload: Buffer.alloc(0) };
  }
  assert.equal(magic, STRUCTURED_REPLY_MAGIC);
  const h = await p.read(16);
  return { magic, flags: h.readUInt16BE(0), type: h.readUInt16BE(2), cookie: h.readBigUInt64BE(4), payload: await p.read(h.readUInt32BE(12)) };
}

/** The wire errno of a reply: simple error field or ERROR chunk. */
function errnoOf(c: Chunk): number {
  if (c.type === -1) return c.flags;
  if (c.type === REPLY_TYPE_ERROR) return c.payload.readUInt32BE(0);
  return 0;
}

describe('NBD server handshake (raw bytes)', () => {
  it('drops a client that sets unknown flags', async () => {
    const p = await greet(0x4);
    assert.equal(await p.closedByServer(), true);
  });

  it('drops a non-fixed-newstyle client that sends anything but EXPORT_NAME', async () => {
    const p = await greet(0);
    p.send(encodeOption(OPT_LIST));
    assert.equal(await p.closedByServer(), true);
  });

  it('drops a wrong option magic and a huge option length without reading it', async () => {
    const p = await greet();
    const bad = encodeOption(OPT_LIST);
    bad.writeBigUInt64BE(IHAVEOPT ^ 1n, 0);
    p.send(bad);
    assert.equal(await p.closedByServer(), true);
    const q = await greet();
    const huge = encodeOption(OPT_INFO);
    huge.writeUInt32BE(0xffffffff, 12);
    q.send(huge);
    assert.equal(await q.closedByServer(), true);
  });

  it('answers unknown options with ERR_UNSUP and keeps negotiating', async () => {
    const p = await greet();
    const r = await option(p, 99, Buffer.from('hello'));
    assert.deepEqual(types(r), [REP_ERR_UNSUP]);
    assert.match(r[0]!.data.toString(), /Unsupported option 99/);
    assert.deepEqual(types(await option(p, 11)), [REP_ERR_UNSUP]); // EXTENDED_HEADERS
    const list = await option(p, OPT_LIST);
    assert.deepEqual(types(list), [REP_SERVER, REP_SERVER, REP_SERVER, REP_ACK]);
    const first = list[0]!.data;
    const n = first.readUInt32BE(0);
    assert.equal(first.subarray(4, 4 + n).toString(), 'disk');
    assert.equal(first.subarray(4 + n).toString(), 'test disk');
    p.close();
  });

  it('refuses malformed LIST, STARTTLS and STRUCTURED_REPLY options with the right errors', async () => {
    const p = await greet();
    assert.deepEqual(types(await option(p, OPT_LIST, Buffer.from([1]))), [REP_ERR_INVALID]);
    assert.deepEqual(types(await option(p, OPT_STARTTLS)), [REP_ERR_POLICY]);
    assert.deepEqual(types(await option(p, OPT_STARTTLS, Buffer.from([1]))), [REP_ERR_INVALID]);
    assert.deepEqual(types(await option(p, OPT_STRUCTURED_REPLY, Buffer.from([1]))), [REP_ERR_INVALID]);
    assert.deepEqual(types(await option(p, OPT_STRUCTURED_REPLY)), [REP_ACK]);
    assert.deepEqual(types(await option(p, OPT_STRUCTURED_REPLY)), [REP_ERR_INVALID]);
    p.close();
  });

  it('handles meta contexts: SET needs structured replies, LIST lists base:allocation, unknown ones are ignored', async () => {
    const p = await greet();
    const q = encodeMetaContextRequest('disk', ['base:allocation']);
    assert.deepEqual(types(await option(p, OPT_SET_META_CONTEXT, q)), [REP_ERR_INVALID]);
    const listed = await option(p, OPT_LIST_META_CONTEXT, encodeMetaContextRequest('disk', []));
    assert.deepEqual(types(listed), [REP_META_CONTEXT, REP_ACK]);
    assert.equal(listed[0]!.data.readUInt32BE(0), 0);
    assert.equal(listed[0]!.data.subarray(4).toString(), 'base:allocation');
    await option(p, OPT_STRUCTURED_REPLY);
    const set = await option(p, OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['x-foo:bar', 'base:allocation']));
    assert.deepEqual(types(set), [REP_META_CONTEXT, REP_ACK]);
    assert.deepEqual(types(await option(p, OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:']))), [REP_ACK]);
    assert.deepEqual(types(await option(p, OPT_SET_META_CONTEXT, encodeMetaContextRequest('nosuch', []))), [REP_ERR_UNKNOWN]);
    const truncated = encodeMetaContextRequest('disk', ['base:allocation']).subarray(0, 12);
    assert.deepEqual(types(await option(p, OPT_SET_META_CONTEXT, truncated)), [REP_ERR_INVALID]);
    p.close();
  });

  it('validates INFO/GO lengths (CVE-2022-26495/26496) and keeps the connection', async () => {
    const p = await greet();
    assert.deepEqual(types(await option(p, OPT_INFO, Buffer.alloc(5))), [REP_ERR_INVALID]);
    const longName = Buffer.alloc(10000);
    longName.writeUInt32BE(20000, 0);
    assert.deepEqual(types(await option(p, OPT_INFO, longName)), [REP_ERR_INVALID]);
    const wrapped = Buffer.alloc(10);
    wrapped.writeUInt32BE(0xffffffff, 0);
    assert.deepEqual(types(await option(p, OPT_GO, wrapped)), [REP_ERR_INVALID]);
    const badCount = encodeInfoRequest('disk', [INFO_NAME]);
    badCount.writeUInt16BE(2, 8);
    assert.deepEqual(types(await option(p, OPT_INFO, badCount)), [REP_ERR_INVALID]);
    const unknown = await option(p, OPT_INFO, encodeInfoRequest('x'.repeat(3000), []));
    assert.deepEqual(types(unknown), [REP_ERR_UNKNOWN]);
    assert.deepEqual(types(await option(p, OPT_GO, encodeInfoRequest('nosuch', []))), [REP_ERR_UNKNOWN]);
    // Still alive and sane.
    const info = await option(p, OPT_INFO, encodeInfoRequest('disk', [77, INFO_NAME]));
    assert.equal(info[info.length - 1]!.type, REP_ACK);
    p.close();
  });

  it('INFO sends EXPORT (always), NAME when asked, DESCRIPTION and BLOCK_SIZE; GO after INFO says the same', async () => {
    const p = await greet();
    await option(p, OPT_STRUCTURED_REPLY);
    const info = await option(p, OPT_INFO, encodeInfoRequest('', [INFO_NAME]));
    const byInfo = new Map(info.filter((r) => r.type === REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data.subarray(2)]));
    const exp = byInfo.get(INFO_EXPORT)!;
    assert.equal(exp.readBigUInt64BE(0), BigInt(SIZE));
    assert.equal(exp.readUInt16BE(8), 0x0ded);
    assert.equal(byInfo.get(INFO_NAME)!.toString(), '');
    assert.equal(byInfo.get(2)!.toString(), 'test disk');
    const bs = byInfo.get(INFO_BLOCK_SIZE)!;
    // Minimum 1: the server takes any alignment (read-modify-write), as qemu-nbd over a buffered file.
    assert.deepEqual([bs.readUInt32BE(0), bs.readUInt32BE(4), bs.readUInt32BE(8)], [1, 4096, 32 * MiB]);
    assert.equal(served.exports.openCount('disk'), 0, 'INFO must not keep the export open');
    const go = await option(p, OPT_GO, encodeInfoRequest('', [INFO_NAME]));
    assert.deepEqual(go.map((r) => r.data.toString('hex')), info.map((r) => r.data.toString('hex')));
    assert.equal(served.exports.openCount('disk'), 1);
    request(p, CMD_DISC);
    assert.equal(await p.closedByServer(), true);
  });

  it('ABORT gets ACK then EOF', async () => {
    const p = await greet();
    assert.deepEqual(types(await option(p, OPT_ABORT)), [REP_ACK]);
    assert.equal(await p.closedByServer(), true);
  });

  it('EXPORT_NAME replies with exactly 134 bytes (cflags 1) or 10 bytes (cflags 3); unknown export disconnects', async () => {
    for (const [cflags, len] of [[1, 134], [3, 10]] as const) {
      const p = await greet(cflags);
      p.send(encodeOption(OPT_EXPORT_NAME, Buffer.from('disk')));
      const r = await p.read(len);
      assert.equal(r.readBigUInt64BE(0), BigInt(SIZE));
      assert.equal(r.readUInt16BE(8), 0x0d6d);
      assert.ok(r.subarray(10).every((b) => b === 0));
      request(p, CMD_READ, { offset: 0, length: 512, cookie: 3n });
      const s = await simple(p);
      assert.deepEqual(s, { error: 0, cookie: 3n });
      assert.equal((await p.read(512)).length, 512);
      p.close();
    }
    const q = await greet();
    q.send(encodeOption(OPT_EXPORT_NAME, Buffer.from('nosuch')));
    assert.equal(await q.closedByServer(), true);
    const long = await greet();
    long.send(encodeOption(OPT_EXPORT_NAME, Buffer.alloc(5000, 0x61)));
    assert.equal(await long.closedByServer(), true);
  });
});

describe('NBD server transmission (raw bytes)', () => {
  it('answers reads with OFFSET_DATA, holes with OFFSET_HOLE and length 0 with NONE', async () => {
    const { p } = await transmission();
    await disk.write(0, Buffer.alloc(4096, 0x5a));
    request(p, CMD_READ, { offset: 0, length: 512, cookie: 1n });
    let c = await reply(p);
    assert.equal(c.type, REPLY_TYPE_OFFSET_DATA);
    assert.equal(c.flags, REPLY_FLAG_DONE);
    assert.equal(c.cookie, 1n);
    assert.equal(c.payload.readBigUInt64BE(0), 0n);
    assert.ok(c.payload.subarray(8).equals(Buffer.alloc(512, 0x5a)));

    request(p, CMD_READ, { offset: 0, length: 256 * 1024, cookie: 2n });
    const first = await reply(p);
    const second = await reply(p);
    assert.equal(first.type, REPLY_TYPE_OFFSET_DATA);
    assert.equal(first.payload.length, 8 + 65536);
    assert.ok(first.payload.subarray(8, 8 + 4096).equals(Buffer.alloc(4096, 0x5a)));
    assert.equal(second.type, REPLY_TYPE_OFFSET_HOLE);
    assert.equal(second.flags, REPLY_FLAG_DONE);
    assert.deepEqual([second.payload.readBigUInt64BE(0), second.payload.readUInt32BE(8)], [65536n, 196608]);

    request(p, CMD_READ, { offset: 0, length: 0, cookie: 3n });
    c = await reply(p);
    assert.deepEqual([c.type, c.flags, c.cookie], [REPLY_TYPE_NONE, REPLY_FLAG_DONE, 3n]);
    p.close();
  });

  it('rejects bad requests with the errno of spec §16.5 and stays up', async () => {
    const { p } = await transmission();
    const cases: Array<[string, () => void, number]> = [
      ['READ past end', () => request(p, CMD_READ, { offset: SIZE, length: 512 }), 22],
      ['READ unknown flag', () => request(p, CMD_READ, { flags: 0x80, length: 512 }), 22],
      ['READ 32 MiB + 512', () => request(p, CMD_READ, { length: 32 * MiB + 512 }), 22],
      ['WRITE past end', () => request(p, CMD_WRITE, { offset: SIZE, payload: Buffer.alloc(512) }), 28],
      ['WRITE len 0', () => request(p, CMD_WRITE, { offset: 4096, length: 0 }), 0],
      ['FLUSH with offset', () => request(p, CMD_FLUSH, { offset: 4096, length: 512 }), 0],
      ['TRIM past end', () => request(p, CMD_TRIM, { offset: SIZE - 512, length: 1024 }), 22],
      ['WRITE_ZEROES past end', () => request(p, CMD_WRITE_ZEROES, { offset: SIZE, length: 512 }), 28],
      ['CACHE', () => request(p, CMD_CACHE, { length: 65536 }), 0],
      ['BLOCK_STATUS len 0', () => request(p, CMD_BLOCK_STATUS, { length: 0 }), 22],
      ['BLOCK_STATUS past end', () => request(p, CMD_BLOCK_STATUS, { offset: SIZE, length: 512 }), 22],
      ['unknown command 42', () => request(p, 42), 22],
      ['RESIZE', () => request(p, 8, { offset: SIZE * 2 }), 22],
      ['REQ_ONE on READ', () => request(p, CMD_READ, { flags: CMD_FLAG_REQ_ONE, length: 512 }), 22],
      ['WRITE > 32 MiB (consumed)', () => request(p, CMD_WRITE, { payload: Buffer.alloc(32 * MiB + 512) }), 22],
      ['READ with FUA', () => request(p, CMD_READ, { flags: CMD_FLAG_FUA, length: 512 }), 0],
    ];
    for (const [what, send, errno] of cases) {
      send();
      const c = await reply(p);
      assert.equal(errnoOf(c), errno, what);
      if (errno !== 0) assert.equal(c.flags & REPLY_FLAG_DONE, c.type === -1 ? c.flags & 1 : 1, what);
    }
    p.close();
  });

  it('answers BLOCK_STATUS from extents, with REQ_ONE giving one extent', async () => {
    const { p } = await transmission();
    await disk.writeZeroes(0, SIZE / 512, { mayUnmap: true });
    await disk.write(128, Buffer.alloc(65536, 1)); // data at 64 KiB..128 KiB
    request(p, CMD_BLOCK_STATUS, { length: SIZE, cookie: 5n });
    const c = await reply(p);
    assert.equal(c.type, REPLY_TYPE_BLOCK_STATUS);
    assert.equal(c.flags, REPLY_FLAG_DONE);
    assert.equal(c.payload.readUInt32BE(0), 1);
    const ext = [];
    for (let i = 4; i < c.payload.length; i += 8) ext.push([c.payload.readUInt32BE(i), c.payload.readUInt32BE(i + 4)]);
    assert.deepEqual(ext, [[65536, 3], [65536, 0], [SIZE - 131072, 3]]);
    request(p, CMD_BLOCK_STATUS, { flags: CMD_FLAG_REQ_ONE, offset: 65536, length: 32768, cookie: 6n });
    const one = await reply(p);
    assert.equal(one.payload.length, 12);
    assert.deepEqual([one.payload.readUInt32BE(4), one.payload.readUInt32BE(8)], [32768, 0]);
    p.close();
  });

  it('without structured replies: simple READ replies, no BLOCK_STATUS, no DF', async () => {
    const { p, flags } = await transmission('disk', false);
    assert.equal(flags, 0x0d6d);
    await disk.write(8, Buffer.alloc(512, 0x33));
    request(p, CMD_READ, { offset: 4096, length: 512, cookie: 9n });
    assert.deepEqual(await simple(p), { error: 0, cookie: 9n });
    assert.ok((await p.read(512)).equals(Buffer.alloc(512, 0x33)));
    request(p, CMD_BLOCK_STATUS, { length: 512 });
    assert.equal((await simple(p)).error, 22);
    request(p, CMD_READ, { flags: 0x4, length: 512 });
    assert.equal((await simple(p)).error, 22);
    p.close();
  });

  it('read-only export: EPERM for writes, trims and zeroes', async () => {
    const { p, flags } = await transmission('ro', false);
    assert.equal(flags & 0x2, 0x2);
    assert.equal(flags & (0x20 | 0x40 | 0x800), 0);
    request(p, CMD_WRITE, { payload: Buffer.alloc(512) });
    assert.equal((await simple(p)).error, 1);
    request(p, CMD_TRIM, { length: 512 });
    assert.equal((await simple(p)).error, 1);
    request(p, CMD_WRITE_ZEROES, { length: 512 });
    assert.equal((await simple(p)).error, 1);
    p.close();
  });

  it('FAST_ZERO on a device without efficient zeroing fails with ENOTSUP and changes nothing', async () => {
    const { p } = await transmission('slowzero', false);
    request(p, CMD_WRITE, { payload: Buffer.alloc(512, 9) });
    assert.equal((await simple(p)).error, 0);
    request(p, CMD_WRITE_ZEROES, { flags: CMD_FLAG_FAST_ZERO, length: 512 });
    assert.equal((await simple(p)).error, 95);
    request(p, CMD_READ, { length: 512, cookie: 2n });
    await simple(p);
    assert.ok((await p.read(512)).equals(Buffer.alloc(512, 9)));
    request(p, CMD_WRITE_ZEROES, { length: 512 });
    assert.equal((await simple(p)).error, 0);
    request(p, CMD_READ, { length: 512, cookie: 2n });
    await simple(p);
    assert.ok((await p.read(512)).equals(Buffer.alloc(512)));
    p.close();
  });

  it('serves many requests in flight and answers each cookie exactly once', async () => {
    const { p } = await transmission();
    const cookies = new Set<bigint>();
    for (let i = 0; i < 200; i++) {
      const cookie = BigInt(1000 + i);
      cookies.add(cookie);
      if (i % 2) request(p, CMD_WRITE, { cookie, offset: i * 4096, payload: Buffer.alloc(4096, i & 0xff) });
      else request(p, CMD_READ, { cookie, offset: i * 4096, length: 4096 });
    }
    for (let i = 0; i < 200; i++) {
      const c = await reply(p);
      assert.equal(errnoOf(c), 0);
      assert.ok(cookies.delete(c.cookie), `unexpected or repeated cookie ${c.cookie}`);
    }
    assert.equal(cookies.size, 0);
    p.close();
  });

  it('a 4 MiB WRITE reaches the device as the received chunks, not joined, and lands byte for byte', async () => {
    const { p } = await transmission();
    const data = Buffer.alloc(4 * MiB);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    vectored.length = 0;
    for (const fua of [0, CMD_FLAG_FUA]) {
      request(p, CMD_WRITE, { offset: MiB, payload: data, flags: fua, cookie: 9n });
      assert.equal(errnoOf(await reply(p)), 0);
      assert.ok(disk.peek(MiB, data.length).equals(data), 'device bytes after the write');
      await disk.write(MiB / 512, Buffer.alloc(data.length));
    }
    // A socket read brings at most 64 KiB: 4 MiB is at least 64 chunks.
    assert.equal(vectored.length, 2);
    assert.ok(vectored.every((n) => n >= 64), `chunks per write: ${vectored.join(', ')}`);
    p.close();
  });

  it('answers requests pipelined in one segment with the data of each one (replies gathered into one writev)', async () => {
    const { p } = await transmission();
    const n = 48;
    const writes = Array.from({ length: n }, (_, i) => {
      const h = Buffer.alloc(28);
      encodeRequest(h, 0, { flags: 0, type: CMD_WRITE, cookie: BigInt(i), offset: i * 4096, length: 4096 });
      return [h, Buffer.alloc(4096, 0x20 + i)];
    });
    p.send(Buffer.concat(writes.flat()));
    for (let i = 0; i < n; i++) assert.equal(errnoOf(await reply(p)), 0);
    const reads = Array.from({ length: n }, (_, i) => {
      const h = Buffer.alloc(28);
      encodeRequest(h, 0, { flags: 0, type: CMD_READ, cookie: BigInt(1000 + i), offset: i * 4096, length: 4096 });
      return h;
    });
    p.send(Buffer.concat(reads));
    const seen = new Set<bigint>();
    for (let k = 0; k < n; k++) {
      const c = await reply(p);
      assert.equal(c.type, REPLY_TYPE_OFFSET_DATA);
      const i = Number(c.cookie) - 1000;
      assert.ok(i >= 0 && i < n && !seen.has(c.cookie), `unexpected or repeated cookie ${c.cookie}`);
      seen.add(c.cookie);
      assert.equal(Number(c.payload.readBigUInt64BE(0)), i * 4096);
      assert.ok(c.payload.subarray(8).equals(Buffer.alloc(4096, 0x20 + i)), `data of read ${i}`);
    }
    p.close();
  });

  it('ends the connection on bad magic, a huge WRITE, or EOF mid-payload, and keeps serving others', async () => {
    const { p } = await transmission();
    const bad = Buffer.alloc(28);
    encodeRequest(bad, 0, { flags: 0, type: CMD_READ, cookie: 1n, offset: 0, length: 512 });
    bad.writeUInt32BE(0x12560953, 0);
    p.send(bad);
    assert.equal(await p.closedByServer(), true);

    const { p: q } = await transmission();
    request(q, CMD_WRITE, { length: 0xffffffff });
    assert.equal(await q.closedByServer(), true);

    const { p: torn } = await transmission();
    await disk.write(2048, Buffer.alloc(4096, 0x11));
    request(torn, CMD_WRITE, { offset: 2048 * 512, length: 4096 });
    torn.send(Buffer.alloc(2048, 0xee));
    await new Promise((r) => setTimeout(r, 50));
    torn.close();

    const { p: ok } = await transmission();
    request(ok, CMD_READ, { offset: 2048 * 512, length: 4096, cookie: 4n });
    const c = await reply(ok);
    assert.ok(c.payload.subarray(8).equals(Buffer.alloc(4096, 0x11)), 'a torn WRITE must not be applied');
    ok.close();
  });

  it('endExport closes the connection after its requests, then releases and flushes the export', async () => {
    const { p } = await transmission();
    const before = flushes;
    request(p, CMD_WRITE, { offset: 0, payload: Buffer.alloc(512, 1), cookie: 1n });
    assert.equal(errnoOf(await reply(p)), 0);
    await served.server.endExport('disk');
    assert.equal(await p.closedByServer(), true);
    assert.equal(served.exports.openCount('disk'), 0);
    assert.ok(flushes > before, 'an export written on a connection is flushed when it ends');
  });
});

describe('NBD server: requests not aligned to the logical block size (spec §8.2 item 9)', () => {
  const SMALL = 256 * 1024;
  let big: MemoryDevice;
  let loose: Served;
  let strict: Served;

  before(async () => {
    big = new MemoryDevice(SMALL / 512, { name: 'big', limits: { logicalBlockSize: 4096 } });
    loose = await serve({ disk, big });
    strict = await serve({ disk, big }, { strictBlockSize: true });
  });
  after(async () => {
    await loose.close();
    await strict.close();
  });

  /** One request and its reply; for a READ, the data (simple reply or one OFFSET_DATA chunk). */
  async function call(p: RawPeer, structured: boolean, type: number, opts: NonNullable<Parameters<typeof request>[2]>): Promise<{ errno: number; data: Buffer }> {
    request(p, type, opts);
    if (!structured) {
      const r = await simple(p);
      const data = type === CMD_READ && r.error === 0 && opts.length! > 0 ? await p.read(opts.length!) : Buffer.alloc(0);
      return { errno: r.error, data };
    }
    const c = await reply(p);
    return { errno: errnoOf(c), data: c.type === REPLY_TYPE_OFFSET_DATA ? c.payload.subarray(8) : Buffer.alloc(0) };
  }

  for (const structured of [true, false]) {
    it(`WRITE, READ and WRITE_ZEROES at odd offsets round-trip over 512- and 4096-byte blocks (${structured ? 'structured' : 'simple'} replies)`, async () => {
      for (const [name, dev] of [['disk', disk], ['big', big]] as const) {
        const { p } = await transmission(name, structured, false, { port: loose.port });
        await dev.write(0, Buffer.alloc(65536, 0xee));
        const data = Buffer.alloc(9000);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
        assert.equal((await call(p, structured, CMD_WRITE, { offset: 4000, payload: data, flags: CMD_FLAG_FUA })).errno, 0, name);
        assert.equal((await call(p, structured, CMD_WRITE, { offset: 20001, payload: Buffer.from([1, 2]) })).errno, 0, name);
        const want = Buffer.alloc(65536, 0xee);
        data.copy(want, 4000);
        want[20001] = 1;
        want[20002] = 2;
        assert.ok(dev.peek(0, 65536).equals(want), `${name}: device bytes after the writes`);
        const back = await call(p, structured, CMD_READ, { offset: 3999, length: 9003 });
        assert.equal(back.errno, 0);
        assert.ok(back.data.equals(want.subarray(3999, 13002)), `${name}: unaligned read`);
        assert.equal((await call(p, structured, CMD_WRITE_ZEROES, { offset: 100, length: 5000 })).errno, 0);
        want.fill(0, 100, 5100);
        assert.ok(dev.peek(0, 65536).equals(want), `${name}: device bytes after the write-zeroes`);
        const odd = await call(p, structured, CMD_READ, { offset: 5099, length: 2 });
        assert.deepEqual([...odd.data], [0, want[5100]]);
        p.close();
      }
    });
  }

  it('an unaligned WRITE that arrives in many chunks lands byte for byte', async () => {
    const { p } = await transmission('big', true, false, { port: loose.port });
    await big.writeZeroes(0, SMALL / 512);
    const data = Buffer.alloc(200 * 1024 + 7);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 5) & 0xff;
    assert.equal((await call(p, true, CMD_WRITE, { offset: 4001, payload: data })).errno, 0);
    const want = Buffer.alloc(SMALL);
    data.copy(want, 4001);
    assert.ok(big.peek(0, SMALL).equals(want));
    p.close();
  });

  it('an unaligned READ of 64 KiB or more is one data chunk; TRIM is rounded inwards; BLOCK_STATUS starts at the odd offset', async () => {
    const { p } = await transmission('big', true, true, { port: loose.port });
    await big.writeZeroes(0, SMALL / 512, { mayUnmap: true });
    await big.write(128, Buffer.alloc(65536, 0x33)); // data at 64 KiB..128 KiB
    request(p, CMD_READ, { offset: 65535, length: 131074, cookie: 1n });
    const c = await reply(p);
    assert.deepEqual([c.type, c.flags, c.payload.readBigUInt64BE(0)], [REPLY_TYPE_OFFSET_DATA, REPLY_FLAG_DONE, 65535n]);
    const want = big.peek(65535, 131074);
    assert.equal(want[1], 0x33);
    assert.ok(c.payload.subarray(8).equals(want));

    request(p, CMD_TRIM, { offset: 65536 + 100, length: 8192, cookie: 2n });
    assert.equal(errnoOf(await reply(p)), 0);
    const after = big.peek(65536, 65536);
    assert.ok(after.subarray(0, 4096).equals(Buffer.alloc(4096, 0x33)), 'partial head block untouched');
    assert.ok(after.subarray(4096, 8192).equals(Buffer.alloc(4096)), 'whole block discarded');
    assert.ok(after.subarray(8192).equals(Buffer.alloc(65536 - 8192, 0x33)), 'partial tail block untouched');

    const status = async (offset: number, length: number, flags = 0): Promise<number[][]> => {
      request(p, CMD_BLOCK_STATUS, { offset, length, flags, cookie: 3n });
      const b = await reply(p);
      assert.equal(b.type, REPLY_TYPE_BLOCK_STATUS);
      const ext = [];
      for (let i = 4; i < b.payload.length; i += 8) ext.push([b.payload.readUInt32BE(i), b.payload.readUInt32BE(i + 4)]);
      return ext;
    };
    assert.deepEqual(await status(100, 10, CMD_FLAG_REQ_ONE), [[10, 3]]);
    // Only the covering blocks are asked for: the last extent ends at the next block boundary.
    assert.deepEqual(await status(65536 - 100, 200), [[100, 3], [4096, 0]]);
    assert.deepEqual(await status(131072 + 10, 100), [[4096 - 10, 3]]);
    p.close();
  });

  it('two unaligned writes into one block, in flight together, both land (the RMW lock)', async () => {
    for (const name of ['disk', 'big']) {
      const { p } = await transmission(name, true, false, { port: loose.port });
      await disk.write(0, Buffer.alloc(4096, 0xee));
      await big.write(0, Buffer.alloc(4096, 0xee));
      const h = Buffer.alloc(28 * 4 + 40);
      const parts: Buffer[] = [];
      for (let i = 0; i < 4; i++) {
        const hdr = Buffer.alloc(28);
        encodeRequest(hdr, 0, { flags: 0, type: CMD_WRITE, cookie: BigInt(i + 1), offset: 10 + 30 * i, length: 10 });
        parts.push(hdr, Buffer.alloc(10, 0xa0 + i));
      }
      Buffer.concat(parts).copy(h);
      p.send(h); // one segment: all four start in the same turn of the event loop
      const cookies = [];
      for (let i = 0; i < 4; i++) {
        const c = await reply(p);
        assert.equal(errnoOf(c), 0);
        cookies.push(c.cookie);
      }
      assert.deepEqual(cookies.sort(), [1n, 2n, 3n, 4n]);
      const want = Buffer.alloc(4096, 0xee);
      for (let i = 0; i < 4; i++) want.fill(0xa0 + i, 10 + 30 * i, 20 + 30 * i);
      const dev = name === 'disk' ? disk : big;
      assert.ok(dev.peek(0, 4096).equals(want), `${name}: every write kept`);
      p.close();
    }
  });

  it('random unaligned writes, zeroes and trims over two connections agree with a byte model (property)', async () => {
    const a = await transmission('big', true, false, { port: loose.port });
    const b = await transmission('big', false, false, { port: loose.port, infos: [] });
    const cmd = fc.record({
      conn: fc.boolean(),
      kind: fc.constantFrom('write', 'zero', 'read'),
      offset: fc.integer({ min: 0, max: 65535 }),
      length: fc.integer({ min: 0, max: 12000 }),
      byte: fc.integer({ min: 1, max: 255 }),
    });
    await fc.assert(fc.asyncProperty(fc.array(cmd, { minLength: 1, maxLength: 12 }), async (cmds) => {
      await big.writeZeroes(0, 160); // 80 KiB: all the model covers
      const model = Buffer.alloc(65536 + 12000);
      for (const c of cmds) {
        const p = c.conn ? a.p : b.p;
        const length = Math.min(c.length, model.length - c.offset);
        if (c.kind === 'write') {
          assert.equal((await call(p, c.conn, CMD_WRITE, { offset: c.offset, payload: Buffer.alloc(length, c.byte) })).errno, 0);
          model.fill(c.byte, c.offset, c.offset + length);
        } else if (c.kind === 'zero') {
          assert.equal((await call(p, c.conn, CMD_WRITE_ZEROES, { offset: c.offset, length })).errno, 0);
          model.fill(0, c.offset, c.offset + length);
        } else {
          const r = await call(p, c.conn, CMD_READ, { offset: c.offset, length });
          assert.ok(length === 0 || r.data.equals(model.subarray(c.offset, c.offset + length)));
        }
      }
      assert.ok(big.peek(0, model.length).equals(model));
    }), { numRuns: 25 });
    a.p.close();
    b.p.close();
  });

  it('strictBlockSize: advertises the logical block size; a client that asked gets EINVAL, one that did not gets read-modify-write', async () => {
    const p = await greet(3, strict.port);
    const info = await option(p, OPT_INFO, encodeInfoRequest('big', [INFO_BLOCK_SIZE]));
    const bs = info.find((r) => r.type === REP_INFO && r.data.readUInt16BE(0) === INFO_BLOCK_SIZE)!.data;
    assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [4096, 4096, 32 * MiB]);
    p.close();

    await big.write(0, Buffer.alloc(8192, 0xee));
    const bound = (await transmission('big', true, false, { port: strict.port })).p;
    assert.equal((await call(bound, true, CMD_READ, { offset: 1, length: 3 })).errno, 22);
    assert.equal((await call(bound, true, CMD_WRITE, { offset: 512, payload: Buffer.alloc(512, 1) })).errno, 22);
    assert.equal((await call(bound, true, CMD_WRITE_ZEROES, { offset: 4096, length: 100 })).errno, 22);
    assert.ok(big.peek(0, 8192).equals(Buffer.alloc(8192, 0xee)), 'refused requests changed nothing');
    // Still in sync after the refused WRITE's payload: an aligned read works.
    assert.ok((await call(bound, true, CMD_READ, { offset: 4096, length: 4096 })).data.equals(Buffer.alloc(4096, 0xee)));
    bound.close();

    const free = (await transmission('big', true, false, { port: strict.port, infos: [] })).p;
    assert.equal((await call(free, true, CMD_WRITE, { offset: 512, payload: Buffer.alloc(512, 1) })).errno, 0);
    const want = Buffer.alloc(8192, 0xee);
    want.fill(1, 512, 1024);
    assert.ok(big.peek(0, 8192).equals(want));
    assert.ok((await call(free, true, CMD_READ, { offset: 511, length: 514 })).data.equals(want.subarray(511, 1025)));
    free.close();
  });
});
