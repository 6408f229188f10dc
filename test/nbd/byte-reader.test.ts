/**
 * ByteReader.readChunks: a payload handed out as views of the received
 * chunks, never copied, with the number of views bounded whatever the peer's
 * segment sizes.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ByteReader, MAX_VIEWS, StreamEnded } from '../../src/nbd/byte-reader.ts';

/** The socket surface ByteReader uses: data/end/close events, pause and resume. */
class FakeSocket extends EventEmitter {
  paused = false;
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  receive(chunk: Buffer): void {
    this.emit('data', chunk);
  }
}

function reader(): { socket: FakeSocket; bytes: ByteReader } {
  const socket = new FakeSocket();
  return { socket, bytes: new ByteReader(socket as unknown as Socket, 'test') };
}

function random(n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** True when `view` lies inside the memory of one of `chunks` (it is a view, not a copy). */
function isViewOf(view: Buffer, chunks: readonly Buffer[]): boolean {
  return chunks.some((c) => c.buffer === view.buffer && view.byteOffset >= c.byteOffset && view.byteOffset + view.length <= c.byteOffset + c.length);
}

describe('ByteReader.readChunks', () => {
  it('hands out the payload as views of the received chunks, whatever their sizes, and the rest stays readable', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 4096 }),
        // At least 8 bytes each: fewer than MAX_VIEWS chunks (the next test covers more).
        fc.array(fc.integer({ min: 8, max: 700 }), { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        async (n, sizes, before) => {
          const { socket, bytes } = reader();
          const stream = random(n + 16, n + sizes.length);
          const chunks: Buffer[] = [];
          for (let at = 0, i = 0; at < stream.length; i++) {
            const size = Math.min(sizes[i % sizes.length]!, stream.length - at);
            chunks.push(Buffer.from(stream.subarray(at, at + size)));
            at += size;
          }
          // Some chunks arrive before the read starts, the rest while it waits.
          const early = before ? Math.ceil(chunks.length / 2) : 0;
          for (const c of chunks.slice(0, early)) socket.receive(c);
          const reading = bytes.readChunks(n);
          for (const c of chunks.slice(early)) socket.receive(c);
          const views = await reading;
          assert.ok(views.length <= chunks.length, `${views.length} views of ${chunks.length} chunks`);
          for (const v of views) {
            assert.ok(v.length > 0, 'an empty view');
            assert.ok(isViewOf(v, chunks), 'a view is a copy');
          }
          assert.ok(Buffer.concat(views).equals(stream.subarray(0, n)), 'the views do not hold the payload');
          assert.ok((await bytes.readExact(16)).equals(stream.subarray(n)), 'the bytes after the payload were lost');
        },
      ),
      { numRuns: 200 },
    );
  });

  it(`copies what is left after ${MAX_VIEWS} views into one buffer`, async () => {
    const { socket, bytes } = reader();
    const n = MAX_VIEWS + 500;
    const stream = random(n, 7);
    const reading = bytes.readChunks(n);
    for (let i = 0; i < n; i++) socket.receive(Buffer.from(stream.subarray(i, i + 1)));
    const views = await reading;
    assert.equal(views.length, MAX_VIEWS + 1);
    assert.equal(views[MAX_VIEWS]!.length, 500);
    assert.ok(Buffer.concat(views).equals(stream));
  });

  it('reads nothing for a zero-length payload', async () => {
    const { bytes } = reader();
    assert.deepEqual(await bytes.readChunks(0), []);
  });

  it('fails as a torn message when the stream ends inside the payload', async () => {
    const { socket, bytes } = reader();
    const reading = bytes.readChunks(1000);
    socket.receive(Buffer.alloc(600, 1));
    socket.emit('end');
    await assert.rejects(reading, (err: unknown) => err instanceof StreamEnded && err.partial);
  });
});
