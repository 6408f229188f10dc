/**
 * Reusable buffers for flakey's corrupted write copies (flakey §4.3 writes,
 * step 4): the copy lives only while its write is in flight, so a few pooled
 * buffers serve every corrupted write without allocating per request.
 */
const MIN_BYTES = 4096;

export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(private readonly keep = 4) {}

  /** A buffer of at least `bytes` bytes; hand it back with release(). */
  acquire(bytes: number): Buffer {
    const i = this.free.findIndex((b) => b.length >= bytes);
    if (i >= 0) return this.free.splice(i, 1)[0]!;
    let size = MIN_BYTES;
    while (size < bytes) size *= 2;
    return Buffer.allocUnsafeSlow(size);
  }

  release(buf: Buffer): void {
    if (this.free.length < this.keep) this.free.push(buf);
  }
}
