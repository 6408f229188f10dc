import { type BlockDevice, type IoTag, SECTOR_SIZE } from '../block/device.ts';
import { IoError, toIoError } from '../block/errors.ts';
import type { Clock } from '../mapper/target.ts';

/**
 * A cache of fixed-size blocks over a BlockDevice, after Linux's dm-bufio
 * (spec/dm-bufio.md). Buffers are held while used (read/get/new … release),
 * marked dirty after a change, and written back whenever the cache likes:
 * under its memory bound, on its write-back timer, or when asked.
 *
 * R5: no order among writes is promised, neither within one writeDirty() nor
 * relative to earlier write-backs. A client that needs an order (the
 * transaction manager's commit) gets it only from writeDirty() + flush().
 */
export interface BufioOptions {
  /** Bytes per block: a positive multiple of 512. */
  blockSize: number;
  /** Soft bound on cached bytes; held buffers may exceed it. Default 16 MiB. */
  maxBytes?: number;
  /** Period of the background write-back, ms of `clock`; 0 (default) = none. */
  writebackMs?: number;
  clock?: Clock;
  /**
   * Runs on the private copy of a block just before its write is submitted
   * (dm-bufio's write callback: the block manager stamps checksum and
   * location here). Returns the crash-recorder tag of the write.
   */
  beforeWrite?: (block: number, data: Buffer, aux: unknown) => IoTag | undefined;
  /** Tag of writes when beforeWrite gives none. Default 'metadata'. */
  tag?: IoTag;
}

/** A held block. `data` may be changed while held; call markDirty afterwards. */
export interface CachedBlock {
  readonly block: number;
  readonly data: Buffer;
  /** Client's per-buffer slot (dm-bufio's aux data); the block manager keeps its validator here. */
  aux: unknown;
}

class Entry implements CachedBlock {
  aux: unknown = undefined;
  holds = 0;
  dirty = false;
  /** Bumped by every markDirty, so a write only cleans the generation it wrote. */
  generation = 0;
  reading: Promise<void> | null = null;
  writing: Promise<void> | null = null;
  /** A write of this buffer failed: drop it once idle, so reads see the disk again. */
  failed = false;
  constructor(readonly block: number, readonly data: Buffer) {}
  get idle(): boolean {
    return this.holds === 0 && !this.dirty && this.reading === null && this.writing === null;
  }
}

export interface BufioStats {
  reads: number;
  writes: number;
  evictions: number;
}

export class BufferCache {
  readonly blockSize: number;
  readonly nrBlocks: number;
  readonly stats: BufioStats = { reads: 0, writes: 0, evictions: 0 };
  private readonly blockSectors: number;
  private readonly maxBytes: number;
  private readonly beforeWrite: BufioOptions['beforeWrite'];
  private readonly tag: IoTag;
  /** Every cached block, least recently used first (Map keeps insertion order). */
  private readonly entries = new Map<number, Entry>();
  private readonly dirtyEntries = new Set<Entry>();
  private readonly inflight = new Set<Promise<void>>();
  /** First asynchronous write error since the last writeDirty() (dm-bufio: first error wins). */
  private writeError: IoError | null = null;
  private readonly stopTimer = new AbortController();
  private closed = false;

  constructor(readonly device: BlockDevice, opts: BufioOptions) {
    if (!Number.isSafeInteger(opts.blockSize) || opts.blockSize <= 0 || opts.blockSize % SECTOR_SIZE !== 0) {
      throw new IoError('EINVAL', `${device.name}: bufio block size ${opts.blockSize} is not a positive multiple of ${SECTOR_SIZE}`);
    }
    this.blockSize = opts.blockSize;
    this.blockSectors = opts.blockSize / SECTOR_SIZE;
    this.nrBlocks = Math.floor(device.sectors / this.blockSectors);
    this.maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
    this.beforeWrite = opts.beforeWrite;
    this.tag = opts.tag ?? 'metadata';
    if (opts.writebackMs && opts.clock) void this.writebackLoop(opts.clock, opts.writebackMs);
  }

  get cachedBytes(): number {
    return this.entries.size * this.blockSize;
  }

  get dirtyCount(): number {
    return this.dirtyEntries.size;
  }

  /** The cached block, held, reading it first if absent. A read error leaves nothing cached. */
  async read(block: number): Promise<CachedBlock> {
    this.checkBlock(block, 'read');
    let e = this.entries.get(block);
    if (e) {
      this.touch(e);
      e.holds++;
    } else {
      await this.makeRoom();
      e = this.entries.get(block); // a concurrent reader may have got there while we made room
      if (e) e.holds++;
      else e = this.startRead(block, 1, 1);
    }
    if (e.reading) {
      try {
        await e.reading;
      } catch (err) {
        e.holds--;
        throw err;
      }
    }
    return e;
  }

  /** Lookup only, never I/O: the held block if cached and readable, else undefined. */
  get(block: number): CachedBlock | undefined {
    const e = this.entries.get(block);
    if (!e || e.reading) return undefined;
    this.touch(e);
    e.holds++;
    return e;
  }

  /**
   * A held buffer for `block` without reading it: zero-filled when not cached,
   * the cached contents otherwise (the caller overwrites and dirties it).
   */
  async new(block: number): Promise<CachedBlock> {
    this.checkBlock(block, 'new');
    for (;;) {
      const e = this.entries.get(block);
      if (e?.reading) {
        await e.reading.catch(() => undefined);
        continue;
      }
      if (e) {
        this.touch(e);
        e.holds++;
        return e;
      }
      await this.makeRoom();
      if (this.entries.has(block)) continue; // someone cached it while we made room
      const fresh = new Entry(block, Buffer.alloc(this.blockSize));
      fresh.holds = 1;
      this.entries.set(block, fresh);
      return fresh;
    }
  }

  release(b: CachedBlock): void {
    const e = b as Entry;
    if (e.holds <= 0) throw new IoError('EINVAL', `${this.device.name}: bufio block ${e.block} released more often than held`);
    e.holds--;
    if (e.failed && e.idle) this.drop(e);
  }

  markDirty(b: CachedBlock): void {
    const e = b as Entry;
    e.dirty = true;
    e.generation++;
    this.dirtyEntries.add(e);
  }

  /**
   * Starts reads of the uncached blocks of [block, block + count), one device
   * read per run of adjacent ones up to the device's largest transfer (the
   * block layer merges dm-bufio's prefetch bios alike); holds nothing, waits
   * for nothing. Room is made by evicting idle buffers, least recently used
   * first; once none is left idle, the rest of the range is not read.
   */
  prefetch(block: number, count: number): void {
    const end = Math.min(block + count, this.nrBlocks);
    const longest = Math.max(1, Math.floor(this.device.limits.maxTransfer / this.blockSectors));
    for (let b = block; b < end; ) {
      let n = 0;
      while (b + n < end && n < longest && !this.entries.has(b + n) && this.evictIdleFor(n + 1)) n++;
      if (n > 0) this.startRead(b, n, 0).reading?.catch(() => undefined);
      else if (!this.entries.has(b)) return;
      b += Math.max(n, 1);
    }
  }

  /** Starts writes of every dirty buffer; no flush, no wait. Errors surface at the next writeDirty(). */
  writeDirtyAsync(): void {
    for (const e of [...this.dirtyEntries]) void this.writeEntry(e);
  }

  /**
   * Writes every buffer dirty when called and waits for every write in
   * flight; then reports the first write error since the previous call.
   */
  async writeDirty(): Promise<void> {
    await Promise.all([...this.dirtyEntries].map((e) => this.writeEntry(e)));
    await Promise.all([...this.inflight]);
    const err = this.writeError;
    this.writeError = null;
    if (err) throw err;
  }

  /** writeDirty, then a device cache flush: everything dirty before the call is durable. */
  async flush(): Promise<void> {
    await this.writeDirty();
    await this.device.flush();
  }

  /** Drops the cached copy of an idle block (hint; does nothing otherwise). */
  forget(block: number): void {
    const e = this.entries.get(block);
    if (e && e.idle) this.drop(e);
  }

  /**
   * Abort: waits for writes in flight (so none can land after a later write of
   * the same block) and then drops every buffer, dirty and held ones
   * included; handles from before must not be used again.
   */
  async discardAll(): Promise<void> {
    await Promise.all([...this.inflight]);
    this.entries.clear();
    this.dirtyEntries.clear();
    this.writeError = null;
  }

  /** Stops the write-back timer and drops the cache; dirty buffers are discarded (flush first to keep them). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTimer.abort();
    await this.discardAll();
  }

  private checkBlock(block: number, op: string): void {
    if (this.closed) throw new IoError('ESHUTDOWN', `${this.device.name}: bufio ${op} of block ${block} after close`);
    if (!Number.isSafeInteger(block) || block < 0 || block >= this.nrBlocks) {
      throw new IoError('ENOSPC', `${this.device.name}: bufio ${op} of block ${block} outside the device (${this.nrBlocks} blocks)`, {
        device: this.device.name,
      });
    }
  }

  /**
   * Caches `n` adjacent blocks from `block` on, each held `holds` times,
   * filled by one device read that is every entry's `reading`; returns the
   * first. A failed read leaves none of them cached: the next read of each
   * retries the I/O.
   */
  private startRead(block: number, n: number, holds: number): Entry {
    const run: Entry[] = [];
    for (let i = 0; i < n; i++) {
      const e = new Entry(block + i, Buffer.allocUnsafe(this.blockSize));
      e.holds = holds;
      this.entries.set(e.block, e);
      run.push(e);
    }
    this.stats.reads += n;
    const sector = block * this.blockSectors;
    const into = n === 1 ? run[0]!.data : Buffer.allocUnsafe(n * this.blockSize);
    const reading = this.device.read(sector, into).then(
      () => {
        for (const [i, e] of run.entries()) {
          if (n > 1) into.copy(e.data, 0, i * this.blockSize, (i + 1) * this.blockSize);
          e.reading = null;
        }
      },
      (err: unknown) => {
        for (const e of run) if (this.entries.get(e.block) === e) this.entries.delete(e.block);
        throw toIoError(err, { device: this.device.name, sector });
      },
    );
    for (const e of run) e.reading = reading;
    return run[0]!;
  }

  /** One write at a time per block: two overlapping writes in flight may land in either order (§1 item 7). */
  private async writeEntry(e: Entry): Promise<void> {
    while (e.writing) await e.writing;
    if (!e.dirty || this.entries.get(e.block) !== e) return;
    const generation = e.generation;
    // Write a private copy: the client may keep changing the buffer while the write is in flight.
    const copy = Buffer.from(e.data);
    const tag = this.beforeWrite?.(e.block, copy, e.aux) ?? this.tag;
    const sector = e.block * this.blockSectors;
    this.stats.writes++;
    const settle = (): void => {
      if (e.generation === generation) {
        e.dirty = false;
        this.dirtyEntries.delete(e);
      }
    };
    const write = this.device.write(sector, copy, { tag }).then(settle, (err: unknown) => {
      this.writeError ??= toIoError(err, { device: this.device.name, sector });
      e.failed = true;
      settle();
    });
    const tracked = write.finally(() => {
      e.writing = null;
      this.inflight.delete(tracked);
      if (e.failed && e.idle) this.drop(e);
    });
    e.writing = tracked;
    this.inflight.add(tracked);
    await tracked;
  }

  private touch(e: Entry): void {
    this.entries.delete(e.block);
    this.entries.set(e.block, e);
  }

  private drop(e: Entry): void {
    if (this.entries.get(e.block) === e) this.entries.delete(e.block);
    this.dirtyEntries.delete(e);
  }

  /**
   * Room for `n` more blocks without waiting: evicts idle buffers, least
   * recently used first, as long as there are any. False when the bound
   * would still be exceeded.
   */
  private evictIdleFor(n: number): boolean {
    while (this.cachedBytes + n * this.blockSize > this.maxBytes) {
      if (!this.evictIdle()) return false;
    }
    return true;
  }

  /** Drops the least recently used idle buffer; false when none is idle. */
  private evictIdle(): boolean {
    for (const e of this.entries.values()) {
      if (e.idle) {
        this.drop(e);
        this.stats.evictions++;
        return true;
      }
    }
    return false;
  }

  /**
   * Keeps the cache within its bound before a block is added: evict the least
   * recently used idle buffer; when only dirty ones remain, write the least
   * recently used back and evict it (dm-bufio eviction, R5).
   */
  private async makeRoom(): Promise<void> {
    while (!this.evictIdleFor(1)) {
      let dirtyVictim: Entry | undefined;
      for (const e of this.entries.values()) {
        if (e.holds === 0 && e.dirty && e.reading === null) {
          dirtyVictim = e;
          break;
        }
      }
      if (!dirtyVictim) return; // everything is held or in flight: exceed the bound rather than deadlock
      await this.writeEntry(dirtyVictim);
      if (dirtyVictim.dirty && !dirtyVictim.failed) return; // re-dirtied meanwhile: give up this round
    }
  }

  /** Background write-back: starts writes of all dirty buffers every period (no flush). */
  private async writebackLoop(clock: Clock, periodMs: number): Promise<void> {
    const signal = this.stopTimer.signal;
    while (!signal.aborted) {
      try {
        await clock.sleep(periodMs, signal);
      } catch {
        return;
      }
      if (signal.aborted) return;
      this.writeDirtyAsync();
    }
  }
}
