import { once } from 'node:events';

/** Where a tool writes: process.stdout/stderr or anything with the same write(). */
export interface TextSink {
  write(text: string): unknown;
}

export interface ToolIo {
  stdout: TextSink;
  stderr: TextSink;
}

/**
 * Batches text into chunks and honours back-pressure, so a dump of large
 * metadata streams instead of piling up in memory.
 */
export class ChunkedWriter {
  private parts: string[] = [];
  private size = 0;
  constructor(private readonly sink: TextSink, private readonly chunk = 64 * 1024) {}

  async line(text: string): Promise<void> {
    this.parts.push(text, '\n');
    this.size += text.length + 1;
    if (this.size >= this.chunk) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const text = this.parts.join('');
    this.parts = [];
    this.size = 0;
    const ok = this.sink.write(text);
    const emitter = this.sink as Partial<NodeJS.EventEmitter>;
    if (ok === false && typeof emitter.once === 'function') await once(emitter as NodeJS.EventEmitter, 'drain');
  }
}
