/**
 * The control socket against an in-process daemon on a temporary data dir:
 * every op, malformed and oversize lines, concurrency, failure clean-up,
 * state.json across a restart.
 */
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { LineSplitter } from '../../src/daemon/control.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { MAX_LINE_BYTES, PACKAGE_VERSION } from '../../src/daemon/protocol.ts';
import { blankFile, tempDir } from '../helpers/temp-dir.ts';

interface ReplyLine {
  id: number | string | null;
  ok: boolean;
  result?: any;
  error?: { code: string; message: string };
}

/** A raw control connection: writes any bytes, collects reply lines. */
class Raw {
  readonly replies: ReplyLine[] = [];
  private waiters: (() => void)[] = [];
  private buffered = '';
  closed = false;
  private nextId = 1;

  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffered += text;
      let nl;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        this.replies.push(JSON.parse(this.buffered.slice(0, nl)));
        this.buffered = this.buffered.slice(nl + 1);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static open(path: string): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new Raw(s)));
      s.once('error', reject);
    });
  }

  send(text: string): void {
    this.socket.write(text);
  }

  /** Sends one request and returns its reply. */
  async call(op: string, fields: Record<string, unknown> = {}): Promise<ReplyLine> {
    const id = this.nextId++;
    this.send(`${JSON.stringify({ id, op, ...fields })}\n`);
    return this.replyTo(id);
  }

  async ok(op: string, fields: Record<string, unknown> = {}): Promise<any> {
    const r = await this.call(op, fields);
    assert.equal(r.ok, true, `${op} failed: ${JSON.stringify(r.error)}`);
    return r.result;
  }

  async fails(op: string, fields: Record<string, unknown>, code: string): Promise<string> {
    const r = await this.call(op, fields);
    assert.equal(r.ok, false, `${op} should fail`);
    assert.equal(r.error!.code, code, r.error!.message);
    return r.error!.message;
  }

  async replyTo(id: number | string | null): Promise<ReplyLine> {
    for (;;) {
      const i = this.replies.findIndex((r) => r.id === id);
      if (i >= 0) return this.replies.splice(i, 1)[0]!;
      if (this.closed) throw new Error(`connection closed before the reply to ${id}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  async untilClosed(): Promise<void> {
    while (!this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

let disk: string;
let disk2: string;
let daemon: Daemon;
let c: Raw;

const startDaemon = (): Promise<Daemon> =>
  Daemon.start({ dataDir: join(dir, 'data'), configFile: join(dir, 'empty.json'), listen: [], log: () => undefined });

after(async () => {
  c.close();
  await daemon.stop();
});

const dir = tempDir('dmkit-control-'); // removed after the daemon stopped

before(async () => {
  disk = await blankFile(join(dir, 'disk.img'), 8 * 1024 * 1024);
  disk2 = await blankFile(join(dir, 'disk2.img'), 8 * 1024 * 1024);
  await writeFile(join(dir, 'empty.json'), '{"devices":[]}');
  daemon = await startDaemon();
  c = await Raw.open(daemon.socketPath);
});

describe('control socket ops', () => {
  it('creates the socket with mode 0600', async () => {
    assert.equal((await stat(daemon.socketPath)).mode & 0o777, 0o600);
  });

  it('runs a device through create, load, suspend, resume, clear, table, status, deps, info and remove', async () => {
    const created = await c.ok('create', { name: 'a', table: [`0 2048 linear ${disk} 0`], uuid: 'UUID-A' });
    assert.deepEqual(
      { name: created.name, uuid: created.uuid, minor: created.minor, liveTable: created.liveTable, targetCount: created.targetCount, readAhead: created.readAhead, sectors: created.sectors },
      { name: 'a', uuid: 'UUID-A', minor: 0, liveTable: true, targetCount: 1, readAhead: 256, sectors: 2048 },
    );
    const loaded = await c.ok('load', { name: 'a', table: [`0 1024 linear ${disk} 8`, `1024 1024 zero`] });
    assert.equal(loaded.inactiveTable, true);
    assert.equal((await c.ok('info', { name: 'a', inactive: true })).targetCount, 2);
    const inactive = await c.ok('table', { name: 'a', inactive: true });
    assert.deepEqual(inactive.targets, [
      { start: 0, length: 1024, type: 'linear', params: '7:0 8' },
      { start: 1024, length: 1024, type: 'zero', params: '' },
    ]);
    assert.equal((await c.ok('suspend', { name: 'a', noflush: true, nolockfs: true })).suspended, true);
    const resumed = await c.ok('resume', { name: 'a' });
    assert.equal(resumed.suspended, false);
    assert.equal(resumed.inactiveTable, false);
    assert.equal(resumed.targetCount, 2);
    const status = await c.ok('status', { name: 'a', target: 'linear' });
    assert.deepEqual(status.targets, [{ start: 0, length: 1024, type: 'linear', params: '' }]);
    await c.ok('load', { name: 'a', table: ['0 2048 error'] });
    assert.equal((await c.ok('clear', { name: 'a' })).inactiveTable, false);
    const deps = await c.ok('deps', { name: 'a' });
    assert.deepEqual(deps.deps, [{ major: 7, minor: 0, name: 'loop0' }]);
    assert.deepEqual(await c.ok('remove', { name: 'a' }), { name: 'a' });
    await c.fails('info', { name: 'a' }, 'ENXIO');
  });

  it('lists devices in name order and reports targets and versions', async () => {
    await c.ok('create', { name: 'zz', table: ['0 8 zero'] });
    await c.ok('create', { name: 'mm' });
    assert.deepEqual((await c.ok('list')).map((d: { name: string; minor: number }) => [d.name, d.minor]), [['mm', 1], ['zz', 0]]);
    const empty = await c.ok('info', { name: 'mm' });
    assert.equal(empty.readAhead, null, 'no read-ahead before the first load');
    assert.deepEqual((await c.ok('targets')).map((t: { name: string }) => t.name).slice(-3), ['striped', 'linear', 'error']);
    assert.deepEqual(await c.ok('version'), { version: PACKAGE_VERSION, driver: '4.50.0' });
    await c.ok('remove', { name: 'zz' });
    await c.ok('remove', { name: 'mm' });
  });

  it('delivers messages and reports the kernel texts for refused ones', async () => {
    await c.ok('create', { name: 'msg', table: ['0 8 zero'] });
    assert.match(await c.fails('message', { name: 'msg', sector: 0, message: 'hello' }, 'EINVAL'), /Target type does not support messages/);
    assert.match(await c.fails('message', { name: 'msg', sector: 8, message: 'hello' }, 'EINVAL'), /Target message sector outside device\./);
    await c.ok('remove', { name: 'msg' });
  });

  it('returns from wait at once when the event number already differs, and on removal otherwise', async () => {
    await c.ok('create', { name: 'w', table: ['0 8 zero'] });
    assert.equal((await c.ok('wait', { name: 'w', eventNr: 5 })).eventNr, 0);
    const waiter = await Raw.open(daemon.socketPath);
    const pending = waiter.call('wait', { name: 'w' });
    // The same connection answers other requests while its wait is pending.
    assert.equal((await waiter.ok('info', { name: 'w' })).name, 'w');
    await c.ok('remove', { name: 'w' });
    const woken = await pending;
    assert.equal(woken.ok, true);
    assert.equal(woken.result.eventNr, 1, 'removing a device with a live table raises an event');
    waiter.close();
  });

  it('answers concurrent requests on one connection, each reply carrying its id', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `c${i}`);
    c.send(names.map((name, i) => `${JSON.stringify({ id: `req-${i}`, op: 'create', name, table: ['0 16 zero'] })}\n`).join(''));
    const replies = await Promise.all(names.map((_, i) => c.replyTo(`req-${i}`)));
    assert.deepEqual(replies.map((r) => [r.ok, r.result.name]), names.map((n) => [true, n]));
    assert.deepEqual(new Set(replies.map((r) => r.result.minor)).size, names.length, 'every device got its own minor');
    c.send(names.map((name, i) => `${JSON.stringify({ id: 100 + i, op: 'remove', name })}\n`).join(''));
    for (const [i] of names.entries()) assert.equal((await c.replyTo(100 + i)).ok, true);
    assert.deepEqual(await c.ok('list'), []);
  });

  it('leaves nothing behind when create fails', async () => {
    const message = await c.fails('create', { name: 'x', table: ['0 100 linear /nonexistent/disk 0'] }, 'ENOENT');
    assert.equal(message, 'line 1: 253:0: linear: Device lookup failed (-ENOENT)');
    await c.fails('create', { name: 'x', table: [`0 100 striped 2 8 ${disk} 0 ${disk2} 0`] }, 'EINVAL');
    await c.fails('create', { name: 'x', table: ['garbage'] }, 'EINVAL');
    assert.deepEqual(await c.ok('list'), []);
    assert.equal((await c.ok('create', { name: 'x', table: ['0 8 zero'] })).minor, 0, 'the failed creates left minor 0 free');
    await c.fails('create', { name: 'x' }, 'EBUSY');
    await c.ok('remove', { name: 'x' });
  });

  it('refuses to remove a device another table stands on (EBUSY)', async () => {
    await c.ok('create', { name: 'base', table: [`0 2048 linear ${disk} 0`] });
    await c.ok('create', { name: 'top', table: ['0 1024 linear /dev/mapper/base 0', '1024 1024 linear 253:0 1024'] });
    assert.deepEqual((await c.ok('deps', { name: 'top' })).deps, [{ major: 253, minor: 0, name: 'dm-0' }]);
    assert.equal((await c.ok('info', { name: 'base' })).openCount, 2);
    assert.match(await c.fails('remove', { name: 'base' }, 'EBUSY'), /in use/);
    await c.ok('remove', { name: 'top' });
    await c.ok('remove', { name: 'base' });
  });
});

describe('control socket: bad input', () => {
  it('answers a malformed JSON line with an error and keeps the connection', async () => {
    c.send('{"id":1,"op":\n');
    const r = await c.replyTo(null);
    assert.equal(r.ok, false);
    assert.equal(r.error!.code, 'EINVAL');
    assert.match(r.error!.message, /^malformed request: /);
    c.send('[1,2]\n');
    assert.match((await c.replyTo(null)).error!.message, /expected a JSON object/);
    assert.deepEqual(await c.ok('list'), []);
  });

  it('answers unknown ops, unknown fields and wrong field types with errors naming them', async () => {
    assert.match(await c.fails('frobnicate', {}, 'EINVAL'), /unknown op "frobnicate"/);
    assert.match(await c.fails('create', { name: 5 }, 'EINVAL'), /create: field "name" must be a string/);
    assert.match(await c.fails('create', { name: 'a', table: 'not a list' }, 'EINVAL'), /field "table" must be an array of strings/);
    assert.match(await c.fails('create', { name: 'a', colour: 'red' }, 'EINVAL'), /unknown field "colour"/);
    assert.match(await c.fails('message', { name: 'a', sector: 1.5, message: 'x' }, 'EINVAL'), /field "sector" must be an integer/);
    assert.match(await c.fails('load', { name: 'a' }, 'EINVAL'), /load: missing field "table"/);
    c.send('{"id":{"x":1},"op":"list"}\n');
    assert.match((await c.replyTo(null)).error!.message, /"id" must be a number or a string/);
    assert.deepEqual(await c.ok('list'), [], 'nothing was created by the bad requests');
  });

  it('refuses a line longer than 1 MiB before it ends, closes that connection, and serves others', async () => {
    const big = await Raw.open(daemon.socketPath);
    // The request before it is answered; the long one has no newline: refused on size alone.
    big.send(`{"id":1,"op":"list"}\n{"id":2,"op":"create","name":"${'a'.repeat(MAX_LINE_BYTES)}`);
    assert.deepEqual(await big.replyTo(1), { id: 1, ok: true, result: [] });
    const r = await big.replyTo(null);
    assert.equal(r.error!.code, 'EMSGSIZE');
    await big.untilClosed();
    assert.deepEqual(await c.ok('list'), []);
  });

  it('takes a line of exactly the limit', async () => {
    const padding = MAX_LINE_BYTES - JSON.stringify({ id: 7, op: 'list', pad: '' }).length;
    c.send(`${JSON.stringify({ id: 7, op: 'list', pad: 'x'.repeat(padding) })}\n`);
    assert.match((await c.replyTo(7)).error!.message, /unknown field "pad"/, 'the line was read and parsed, not refused');
  });
});

describe('LineSplitter', () => {
  it('yields the same lines however the stream is cut into chunks', () => {
    fc.assert(fc.property(
      fc.array(fc.string({ maxLength: 20 }).filter((s) => !s.includes('\n')), { maxLength: 8 }),
      fc.array(fc.nat(40), { maxLength: 10 }),
      (lines, cuts) => {
        const bytes = Buffer.from(lines.map((l) => `${l}\n`).join(''));
        const splitter = new LineSplitter(64);
        const got: string[] = [];
        let at = 0;
        for (const cut of [...cuts.map((n) => Math.min(at + n, bytes.length)), bytes.length]) {
          const out = splitter.push(bytes.subarray(at, Math.max(at, cut)));
          assert.equal(out.overflow, false);
          got.push(...out.lines.map((b) => b.toString()));
          at = Math.max(at, cut);
        }
        assert.deepEqual(got, lines);
      },
    ));
  });

  it('overflows only past the limit, keeping the lines before', () => {
    assert.deepEqual(new LineSplitter(4).push(Buffer.from('abcd\n')), { lines: [Buffer.from('abcd')], overflow: false });
    assert.deepEqual(new LineSplitter(4).push(Buffer.from('ab\nabcde\nx\n')), { lines: [Buffer.from('ab')], overflow: true });
    const s = new LineSplitter(4);
    assert.deepEqual(s.push(Buffer.from('ab')), { lines: [], overflow: false });
    assert.deepEqual(s.push(Buffer.from('cde')), { lines: [], overflow: true });
  });
});

describe('state.json and restart', () => {
  it('records every change and recreates devices, minors and stacking order on restart', async () => {
    await c.ok('create', { name: 'first' });
    await c.ok('create', { name: 'gone', table: ['0 8 zero'] });
    await c.ok('create', { name: 'lower', table: [`0 2048 linear ${disk2} 0`], uuid: 'L' });
    await c.ok('remove', { name: 'gone' });
    // `first` (created first) now stands on `lower` (created later): state lists lower first.
    await c.ok('load', { name: 'first', table: ['0 2048 linear /dev/mapper/lower 0'], readOnly: true });
    await c.ok('resume', { name: 'first' });
    const before = await c.ok('list');
    const state = JSON.parse(await readFile(join(dir, 'data', 'state.json'), 'utf8'));
    assert.deepEqual(state.devices.map((d: { name: string }) => d.name), ['lower', 'first']);

    c.close();
    await daemon.stop();
    await assert.rejects(stat(daemon.socketPath), /ENOENT/, 'stop removes the control socket');
    daemon = await startDaemon();
    c = await Raw.open(daemon.socketPath);
    const afterRestart = await c.ok('list');
    assert.deepEqual(afterRestart, before);
    assert.deepEqual(afterRestart.map((d: { name: string; minor: number }) => [d.name, d.minor]), [['first', 0], ['lower', 2]]);
    assert.deepEqual((await c.ok('table', { name: 'first' })).targets, [{ start: 0, length: 2048, type: 'linear', params: '253:2 0' }]);
    await c.ok('remove', { name: 'first' });
    await c.ok('remove', { name: 'lower' });
  });

  it('refuses to start a second daemon on a live control socket', async () => {
    await assert.rejects(startDaemon(), (err: Error & { code?: string }) => err.code === 'EBUSY' && /another dmkit daemon/.test(err.message));
    assert.deepEqual(await c.ok('list'), [], 'the running daemon is untouched');
  });
});
