import type { Socket } from 'node:net';
import { IoError } from '../block/errors.ts';

/**
 * The peer closed the stream (or the reader was cancelled) before the bytes a
 * reader waited for arrived. `partial` says whether part of a message had
 * already been received: EOF on a message boundary is an ordinary disconnect,
 * EOF inside a message is a torn request that must not be applied (spec §8.1).
 */
export class StreamEnded extends IoError {
  readonly partial: boolean;
  constructor(what: string, partial: boolean) {
    super('EIO', `${what}: connection closed${partial ? ' in the middle of a message' : ''}`);
    this.partial = partial;
  }
}

type Pending =
  | { kind: 'into'; target: Buffer; filled: number; resolve: () => void; reject: (e: Error) => void }
  | { kind: 'views'; views: Buffer[]; remaining: number; resolve: () => void; reject: (e: Error) => void }
  | { kind: 'skip'; remaining: number; resolve: () => void; reject: (e: Error) => void };

/**
 * Views one readChunks hands out before it copies the rest into one buffer:
 * a peer sending tiny segments cannot make a read hold more Buffer objects
 * than this, and with that buffer the list stays within Linux's IOV_MAX
 * (1024), so a file device writes it in one pwritev.
 */
export const MAX_VIEWS = 1023;

/**
 * A growing receive buffer over a socket for a single consumer that reads
 * fixed-size pieces. Reads that fit in the first received chunk return a
 * subarray of it (no copy); larger ones are copied straight into their final
 * buffer as data arrives, or, with readChunks, handed out as views of the
 * received chunks. Those chunks are fresh Buffers from each socket read
 * (Node allocates one per read unless the socket has an `onread` buffer,
 * which ours never do), and nothing here writes into them, so a view stays
 * valid and unchanged for as long as its holder keeps it. Back-pressure: the
 * socket is paused whenever `highWater` bytes are buffered and nobody is
 * waiting for more, so a fast peer cannot make us buffer without bound
 * (spec §8.4, §13).
 */
export class ByteReader {
  private readonly chunks: Buffer[] = [];
  private head = 0; // consumed bytes of chunks[0]
  private total = 0;
  private ended = false;
  private pending: Pending | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly what: string,
    private readonly highWater = 1 << 20,
  ) {
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onEnd());
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.total;
  }

  /**
   * Exactly `n` bytes at once, as a subarray of the receive buffer, when they
   * arrived in one chunk; otherwise undefined and nothing is consumed. Lets a
   * consumer parse every request already received without waiting a turn.
   */
  take(n: number): Buffer | undefined {
    const first = this.chunks[0];
    if (this.pending || !first || first.length - this.head < n) return undefined;
    const out = first.subarray(this.head, this.head + n);
    this.consumeFirst(n);
    return out;
  }

  /** Exactly `n` bytes; a subarray of the receive buffer when possible. */
  readExact(n: number): Promise<Buffer> {
    const ready = this.take(n);
    if (ready) return Promise.resolve(ready);
    const target = Buffer.allocUnsafe(n);
    return this.readInto(target).then(() => target);
  }

  /** Fills `target` completely from the stream. */
  readInto(target: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.start({ kind: 'into', target, filled: 0, resolve, reject });
    });
  }

  /**
   * Exactly `n` bytes as a list of views of the received chunks, in order,
   * no copy; past MAX_VIEWS views the rest is copied into one last buffer.
   * Bytes of the list: n; memory held: n plus at most the two partly used
   * chunks at its ends.
   */
  async readChunks(n: number): Promise<Buffer[]> {
    const p: Extract<Pending, { kind: 'views' }> = { kind: 'views', views: [], remaining: n, resolve: () => {}, reject: () => {} };
    await new Promise<void>((resolve, reject) => {
      p.resolve = resolve;
      p.reject = reject;
      this.start(p);
    });
    if (p.remaining > 0) {
      const rest = Buffer.allocUnsafe(p.remaining);
      await this.readInto(rest).catch((err: unknown) => {
        // Views were taken already: an end here is inside the message.
        throw err instanceof StreamEnded ? new StreamEnded(this.what, true) : err;
      });
      p.views.push(rest);
    }
    return p.views;
  }

  /** Discards `n` bytes without ever holding more than one received chunk of them. */
  skip(n: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.start({ kind: 'skip', remaining: n, resolve, reject });
    });
  }

  /** Fails the waiting read (if any) and every later one: the consumer is done. */
  cancel(): void {
    this.ended = true;
    this.failPending();
  }

  private start(p: Pending): void {
    if (this.pending) {
      p.reject(new IoError('EINVAL', `${this.what}: concurrent reads on one stream`));
      return;
    }
    this.pending = p;
    this.service();
    if (this.pending) {
      if (this.ended) this.failPending();
      else this.socket.resume();
    }
  }

  private onData(b: Buffer): void {
    this.chunks.push(b);
    this.total += b.length;
    if (this.pending) this.service();
    if (!this.pending && this.total >= this.highWater) this.socket.pause();
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.failPending();
  }

  private failPending(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    const partial = this.total > 0 || (p.kind === 'into' && p.filled > 0) || (p.kind === 'views' && p.views.length > 0);
    p.reject(new StreamEnded(this.what, partial));
  }

  /** Moves buffered bytes into the waiting read; completes it when satisfied. */
  private service(): void {
    const p = this.pending;
    if (!p) return;
    while (this.total > 0) {
      const first = this.chunks[0]!;
      const avail = first.length - this.head;
      const want = wanted(p);
      if (want === 0) break;
      const n = Math.min(avail, want);
      if (p.kind === 'into') {
        first.copy(p.target, p.filled, this.head, this.head + n);
        p.filled += n;
      } else {
        if (p.kind === 'views') p.views.push(first.subarray(this.head, this.head + n));
        p.remaining -= n;
      }
      this.consumeFirst(n);
    }
    const done = wanted(p) === 0;
    if (done) {
      this.pending = null;
      p.resolve();
    }
  }

  private consumeFirst(n: number): void {
    this.head += n;
    this.total -= n;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}

/** Bytes the waiting read still takes now: 0 when it is complete (a views read also at MAX_VIEWS). */
function wanted(p: Pending): number {
  switch (p.kind) {
    case 'into': return p.target.length - p.filled;
    case 'views': return p.views.length === MAX_VIEWS ? 0 : p.remaining;
    case 'skip': return p.remaining;
  }
}
