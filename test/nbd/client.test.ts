/** NbdDevice against dmkit's own server, against nbdkit, and across dropped connections. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { NbdServer, StaticExports } from '../../src/nbd/server.ts';
import { IoError } from '../../src/block/errors.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { NbdDevice } from '../../src/nbd/client-device.ts';
import { parseNbdUri } from '../../src/nbd/uri.ts';
import { run, serve, startNbdkit } from './helpers.ts';

const MiB = 1024 * 1024;

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
}

describe('NBD URIs', () => {
  it('parses nbd:// and nbd+unix:// as the URI spec says', () => {
    assert.deepEqual(parseNbdUri('nbd://h'), { host: 'h', port: 10809, exportName: '' });
    assert.deepEqual(parseNbdUri('nbd://h:123/disk'), { host: 'h', port: 123, exportName: 'disk' });
    assert.deepEqual(parseNbdUri('nbd://h//disk'), { host: 'h', port: 10809, exportName: '/disk' });
    assert.deepEqual(parseNbdUri('nbd://h/hello%20world'), { host: 'h', port: 10809, exportName: 'hello world' });
    assert.deepEqual(parseNbdUri('nbd://[::1]:99/x'), { host: '::1', port: 99, exportName: 'x' });
    assert.deepEqual(parseNbdUri('nbd+unix:///disk?socket=/tmp/s.sock'), { path: '/tmp/s.sock', exportName: 'disk' });
    assert.deepEqual(parseNbdUri('nbd+unix://?socket=/tmp/s'), { path: '/tmp/s', exportName: '' });
    for (const bad of ['nbds://h/x', 'nbd+unix:///x', 'nbd://h/x?socket=/s', 'http://h/x', 'nbd://h/x?tls-type=anon', 'nbd://h/x?foo=1']) {
      assert.throws(() => parseNbdUri(bad), (e: unknown) => e instanceof IoError && e.code === 'EINVAL', bad);
    }
  });
});

describe('NbdDevice', () => {
  it('round-trips data, zeroes, trims and reports extents against dmkit\'s server', async () => {
    const mem = new MemoryDevice((16 * MiB) / 512, { name: 'disk' });
    const s = await serve({ disk: mem });
    const dev = await NbdDevice.connect(s.uri('disk'));
    try {
      assert.equal(dev.sectors, (16 * MiB) / 512);
      assert.equal(dev.limits.logicalBlockSize, 512);
      assert.equal(dev.limits.maxTransfer, (32 * MiB) / 512);
      assert.equal(dev.limits.discard, true);
      const data = pattern(MiB, 1);
      // Many in flight at once.
      await Promise.all(Array.from({ length: 8 }, (_, i) => dev.write(2048 + i * 256, data.subarray(i * 131072, (i + 1) * 131072))));
      await dev.write(8192, pattern(4096, 2), { fua: true });
      const back = Buffer.alloc(MiB);
      await dev.read(2048, back);
      assert.ok(back.equals(data));
      assert.ok(mem.peek(8192 * 512, 4096).equals(pattern(4096, 2)));
      await dev.writeZeroes(2048, 128, { mayUnmap: true });
      await dev.discard(4096, 128);
      await dev.flush();
      const ext = await dev.extents(0, dev.sectors);
      // Extents must agree with the data: zero extents read as zeroes, written ranges are data.
      assert.ok(!ext.some((e) => e.hole && e.sector < 2048 + 256 * 8 && e.sector + e.count > 2176), 'written data is not a hole');
      for (const e of ext) {
        if (!e.zero) continue;
        const buf = Buffer.alloc(Math.min(e.count, 2048) * 512);
        await dev.read(e.sector, buf);
        assert.ok(buf.every((b) => b === 0), `extent at ${e.sector} says zero`);
      }
      assert.ok(ext.some((e) => e.hole && e.sector === 0), 'unwritten start is a hole');
      assert.equal(ext.reduce((n, e) => n + e.count, 0), dev.sectors);
    } finally {
      await dev.close();
      await s.close();
    }
  });

  it('maps server errors to IoError codes and rejects writes to a read-only export locally', async () => {
    const s = await serve({ disk: new MemoryDevice(2048), ro: new MemoryDevice(2048) }, { readOnly: new Set(['ro']) });
    const ro = await NbdDevice.connect({ host: '127.0.0.1', port: s.port, exportName: 'ro' });
    try {
      assert.equal(ro.limits.readOnly, true);
      await assert.rejects(ro.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof IoError && e.code === 'EPERM');
      await assert.rejects(NbdDevice.connect(s.uri('nosuch')), (e: unknown) => e instanceof IoError && e.code === 'ENOENT');
      // The server ends the connection (device reset); the client reconnects and carries on.
      await s.server.endExport('ro');
      await ro.read(0, Buffer.alloc(512));
    } finally {
      await ro.close();
      await s.close();
    }
  });

  it('reconnects after a dropped connection and resends requests without replies; a flush then reports possible loss', async () => {
    const mem = new MemoryDevice(8192, { name: 'disk' });
    const s = await serve({ disk: mem });
    // A proxy we can cut: every accepted client is piped to the server.
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((c) => {
      const u = net.connect({ host: '127.0.0.1', port: s.port });
      for (const x of [c, u]) { sockets.add(x); x.on('error', () => {}); x.on('close', () => sockets.delete(x)); }
      c.pipe(u); u.pipe(c);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as net.AddressInfo).port;
    const logs: string[] = [];
    const dev = await NbdDevice.connect(`nbd://127.0.0.1:${port}/disk`, {
      backoffMs: 10, logger: { info: (m) => logs.push(m), warn: (m) => logs.push(m), error: (m) => logs.push(m) },
    });
    try {
      await dev.write(0, pattern(4096, 3));
      for (const x of sockets) x.destroy();
      // Issued while the connection is down: queued, then sent after reconnecting.
      await dev.write(8, pattern(4096, 4));
      const back = Buffer.alloc(8192);
      await dev.read(0, back);
      assert.ok(back.equals(Buffer.concat([pattern(4096, 3), pattern(4096, 4)])));
      assert.ok(logs.some((m) => /reconnected/.test(m)), logs.join('\n'));
      await assert.rejects(dev.flush(), (e: unknown) => e instanceof IoError && e.code === 'EIO');
      await dev.flush(); // reported once; later flushes cover later writes
      // Server gone for good: bounded retries, then EIO.
      await s.close();
      for (const x of sockets) x.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
      await assert.rejects(dev.read(0, Buffer.alloc(512)), (e: unknown) => e instanceof IoError && e.code === 'EIO');
      assert.ok(logs.some((m) => /5 reconnect attempts failed/.test(m)), logs.join('\n'));
    } finally {
      await dev.close();
      await s.close();
    }
  });

  it('serves and connects over a Unix socket; close() drains and flushes before closing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dmkit-nbd-unix-'));
    const mem = new MemoryDevice(2048, { name: 'disk' });
    let flushed = 0;
    const counted = Object.create(mem, { flush: { value: async () => { flushed++; } } });
    const server = new NbdServer(new StaticExports(new Map([['disk', counted]])));
    const path = join(dir, 'nbd.sock');
    try {
      await server.listen({ path });
      const info = await run('nbdinfo', ['--size', `nbd+unix:///disk?socket=${path}`]);
      assert.equal(info.stdout.trim(), String(2048 * 512), info.stderr);
      const dev = await NbdDevice.connect({ path, exportName: 'disk' }, { retries: 1, backoffMs: 1 });
      const writes = Array.from({ length: 16 }, (_, i) => dev.write(i * 8, Buffer.alloc(4096, i + 1)));
      await Promise.all(writes);
      await server.close();
      assert.equal(flushed, 1, 'the written export is flushed once when its connection ends');
      assert.ok(mem.peek(15 * 4096, 4096).equals(Buffer.alloc(4096, 16)));
      await assert.rejects(dev.read(0, Buffer.alloc(512)), (e: unknown) => e instanceof IoError && e.code === 'EIO');
      await dev.close();
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('works against nbdkit memory (reference server)', async () => {
    const k = await startNbdkit(['memory', '16M']);
    const dev = await NbdDevice.connect(k.uri);
    try {
      assert.equal(dev.sectors, (16 * MiB) / 512);
      const data = pattern(256 * 1024, 5);
      await dev.write(4096, data, { fua: true });
      await dev.writeZeroes(4096 + 64, 64);
      const back = Buffer.alloc(data.length);
      await dev.read(4096, back);
      const expect = Buffer.from(data);
      expect.fill(0, 64 * 512, 128 * 512);
      assert.ok(back.equals(expect));
      await dev.flush();
      const ext = await dev.extents(0, dev.sectors);
      assert.equal(ext.reduce((n, e) => n + e.count, 0), dev.sectors);
      assert.ok(ext[0]!.hole && ext[0]!.zero && ext[0]!.count === 4096, JSON.stringify(ext.slice(0, 3)));
      assert.ok(ext.some((e) => !e.hole && e.sector === 4096));
    } finally {
      await dev.close();
      await k.stop();
    }
  });
});
