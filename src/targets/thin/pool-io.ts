/**
 * The I/O of one thin device (dm-thin's process_bio family, spec §9.8):
 * reads of unprovisioned blocks return zeroes (or the external origin),
 * the first write to a block provisions it — zeroing or copying the rest of
 * the new block so no stale data from another volume can ever show — and a
 * write to a block shared with a snapshot breaks the sharing by copying.
 * A mapping is inserted only after every data write it depends on has
 * completed, and it becomes durable only through Pool.commitLocked, which
 * flushes the data device first (R1).
 *
 * Every request holds its block's cell in the device's prison from lookup
 * to remap, and passes the device's gate so create_snap can quiesce it.
 */
import { type BlockDevice, type Extent, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { chunksLength, joinChunks, writeChunks } from '../../block/vectored.ts';
import type { DeviceRef } from '../../mapper/target.ts';
import { isNotSupported } from '../common/io.ts';
import { highestMapped, mappingsIn, nextMapping } from './mappings.ts';
import type { ActiveThin, Pool } from './pool-core.ts';

/** Partial-block fills and zeroing go out in pieces of at most this many sectors (1 MiB). */
const CHUNK_SECTORS = 2048;
const ZEROES = Buffer.alloc(CHUNK_SECTORS * SECTOR_SIZE);

interface Lookup {
  block: number;
  /** Mapped before the device's last snapshot: writes must break sharing (spec §7.4). */
  shared: boolean;
}

export class ThinIo {
  /** Aborted from a noflush suspend's start to its end: requests waiting for data space are handed back. */
  private requeue = new AbortController();

  constructor(
    readonly pool: Pool,
    readonly thin: ActiveThin,
    readonly origin: DeviceRef | undefined,
  ) {}

  /**
   * thin_presuspend on a noflush suspend (do_noflush_start): requests that
   * wait for data space, now and until endRequeue(), fail with `request` —
   * a RequeueRequest, so the mapped device reissues them after resume. They
   * allocated nothing yet, so a reissue starts them afresh.
   */
  startRequeue(request: Error): void {
    this.requeue.abort(request);
  }

  /** thin_postsuspend (do_noflush_stop). */
  endRequeue(): void {
    if (this.requeue.signal.aborted) this.requeue = new AbortController();
  }

  private get dbs(): number {
    return this.pool.blockSectors;
  }

  private get data(): BlockDevice {
    return this.pool.data;
  }

  async read(sector: number, into: Buffer): Promise<void> {
    const vblock = Math.floor(sector / this.dbs);
    const release = await this.enter(vblock, vblock + 1);
    try {
      const m = await this.lookup(vblock);
      if (m) await this.data.read(m.block * this.dbs + (sector % this.dbs), into);
      else await this.readUnmapped(sector, into);
    } finally {
      release();
    }
  }

  /**
   * One request never crosses a data block (maxIoSectors = block size). The
   * data may come as pieces (block/vectored.ts): remapped and whole-block
   * writes pass them to the data device as they are.
   */
  async write(sector: number, data: readonly Buffer[], opts: WriteOptions): Promise<void> {
    const vblock = Math.floor(sector / this.dbs);
    const release = await this.enter(vblock, vblock + 1);
    try {
      const m = await this.lookup(vblock);
      if (m && !m.shared) await writeChunks(this.data, m.block * this.dbs + (sector % this.dbs), data, { tag: 'data' });
      else await this.provision(vblock, sector % this.dbs, data, m);
    } finally {
      release();
    }
    // A FUA write is durable with the metadata that maps it when it completes (R6).
    if (opts.fua) await this.flush();
  }

  /**
   * R6. Once an abort dropped changes of this device (spec §9.6), every
   * later flush covers a write whose mapping is gone, so every later flush
   * fails. Stricter than Linux, which fails only the flushes waiting on the
   * aborted commit: a flush never reports durable what an abort dropped.
   */
  async flush(): Promise<void> {
    const lost = (): IoError => this.pool.ioError('EIO', `thin device ${this.thin.id}: changes were lost by a metadata abort`);
    if (this.thin.lost) throw lost();
    await this.pool.flush();
    if (this.thin.lost) throw lost();
  }

  /**
   * Unmaps the whole data blocks in the range; partial blocks are left
   * alone (spec §9.8). In read-only modes a discard completes as a no-op.
   */
  async discard(sector: number, count: number): Promise<void> {
    const begin = Math.ceil(sector / this.dbs);
    const end = Math.floor((sector + count) / this.dbs);
    if (begin >= end || !this.pool.writable) return;
    await this.unmap(begin, end, this.passdown);
  }

  /**
   * Whole blocks are unmapped (they then read as zeroes); partial blocks,
   * blocks over an external origin and read-only pools get zeroes written.
   */
  async writeZeroes(sector: number, count: number, opts: WriteZeroesOptions): Promise<void> {
    const end = sector + count;
    const unmapWhole = this.pool.writable && !this.origin;
    const first = unmapWhole ? Math.ceil(sector / this.dbs) : Infinity;
    const last = unmapWhole ? Math.floor(end / this.dbs) : -Infinity;
    const writes: Promise<void>[] = [];
    const zero = (from: number, to: number): void => {
      for (let s = from; s < to; ) {
        const n = Math.min(to - s, CHUNK_SECTORS, (Math.floor(s / this.dbs) + 1) * this.dbs - s);
        writes.push(this.write(s, [ZEROES.subarray(0, n * SECTOR_SIZE)], {}));
        s += n;
      }
    };
    if (first < last) {
      zero(sector, first * this.dbs);
      writes.push(this.unmap(first, last, false));
      zero(last * this.dbs, end);
    } else {
      zero(sector, end);
    }
    await settle(writes);
    if (opts.fua) await this.flush();
  }

  /** Unprovisioned ranges are holes that read as zeroes, unless an external origin backs them. */
  async extents(sector: number, count: number): Promise<Extent[]> {
    const out: Extent[] = [];
    const push = (s: number, n: number, hole: boolean): void => {
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.sector + last.count === s) last.count += n;
      else out.push({ sector: s, count: n, hole, zero: hole });
    };
    const end = sector + count;
    for (let s = sector; s < end; ) {
      const vblock = Math.floor(s / this.dbs);
      const m = await this.pool.withMetadata('lookup', (md) => nextMapping(md, this.thin.id, vblock));
      const mapped = m ? Math.max(s, m.vblock * this.dbs) : end;
      if (mapped > s) {
        const holeEnd = Math.min(end, mapped);
        const backed = this.origin ? Math.min(holeEnd, Math.max(s, this.origin.device.sectors)) : s;
        if (backed > s) push(s, backed - s, false);
        if (holeEnd > backed) push(backed, holeEnd - backed, true);
        s = holeEnd;
        continue;
      }
      const blockEnd = Math.min(end, (vblock + 1) * this.dbs);
      push(s, blockEnd - s, false);
      s = blockEnd;
    }
    return out;
  }

  /** Passdown as the status reports it: requested, and the data device can discard. */
  get passdown(): boolean {
    return this.pool.features.discardPassdown && this.data.limits.discard;
  }

  // ---- internals -----------------------------------------------------------------

  private async enter(begin: number, end: number): Promise<() => void> {
    await this.thin.gate.enter();
    try {
      const unlock = await this.thin.prison.lock(begin, end);
      return () => {
        unlock();
        this.thin.gate.leave();
      };
    } catch (err) {
      this.thin.gate.leave();
      throw err;
    }
  }

  private lookup(vblock: number): Promise<Lookup | null> {
    return this.pool.withMetadata('lookup', async (md) => {
      const m = await md.lookupMapping(this.thin.id, vblock);
      if (!m) return null;
      const details = await md.deviceDetails(this.thin.id);
      return { block: m.block, shared: (details?.snapshottedTime ?? 0) > m.time };
    });
  }

  private async readUnmapped(sector: number, into: Buffer): Promise<void> {
    const inside = this.origin ? Math.max(0, Math.min(into.length / SECTOR_SIZE, this.origin.device.sectors - sector)) : 0;
    if (inside > 0) await this.origin!.device.read(sector, into.subarray(0, inside * SECTOR_SIZE));
    into.fill(0, inside * SECTOR_SIZE);
  }

  /**
   * Provisioning or breaking sharing (spec §9.8): allocate, fill the new
   * block (the write, plus the old block's, the origin's or zero data
   * around it), and only then insert the mapping (R1: the data the mapping
   * points at is complete before the mapping exists).
   */
  private async provision(vblock: number, offset: number, data: readonly Buffer[], old: Lookup | null): Promise<void> {
    const generation = this.pool.generation;
    const block = await this.pool.allocate(this.thin, this.requeue.signal);
    try {
      try {
        await this.fill(block, vblock, offset, data, old);
      } catch (err) {
        await this.pool.release(block).catch(() => undefined);
        throw err;
      }
      await this.pool.withMetadata('insert', async (md) => {
        if (this.pool.generation !== generation || !this.pool.writable) {
          throw this.pool.ioError('EIO', `thin device ${this.thin.id}: the transaction of block ${block} was aborted`);
        }
        await md.insertMapping(this.thin.id, vblock, block);
        this.pool.changed(this.thin);
      });
    } finally {
      this.pool.endProvision();
    }
    if (!old) {
      this.thin.mappedBlocks++;
      this.thin.highest = Math.max(this.thin.highest, vblock);
    }
  }

  /**
   * Writes the new block in chunks: each one the caller's data where it
   * covers it, else the source's. A write of the whole block, or with
   * nothing to fill around it, goes down in the caller's pieces.
   */
  private async fill(block: number, vblock: number, offset: number, pieces: readonly Buffer[], old: Lookup | null): Promise<void> {
    const base = block * this.dbs;
    const n = chunksLength(pieces) / SECTOR_SIZE;
    if (offset === 0 && n === this.dbs) return writeChunks(this.data, base, pieces, { tag: 'data' });
    const source = this.sourceOf(vblock, old);
    if (source === 'stale') return writeChunks(this.data, base + offset, pieces, { tag: 'data' });
    const data = joinChunks(pieces);
    const write = (at: number, buf: Buffer) => this.data.write(base + at, buf, { tag: 'data' });
    const chunks: Promise<void>[] = [];
    for (let c = 0; c < this.dbs; c += CHUNK_SECTORS) {
      const cEnd = Math.min(this.dbs, c + CHUNK_SECTORS);
      const from = Math.max(c, offset);
      const to = Math.min(cEnd, offset + n);
      chunks.push((async () => {
        if (from === c && to === cEnd) return write(c, data.subarray((c - offset) * SECTOR_SIZE, (cEnd - offset) * SECTOR_SIZE));
        if (from >= to && source === 'zero') return write(c, ZEROES.subarray(0, (cEnd - c) * SECTOR_SIZE));
        const buf = Buffer.allocUnsafe((cEnd - c) * SECTOR_SIZE);
        if (source === 'zero') buf.fill(0);
        else await source(c, buf);
        if (from < to) data.copy(buf, (from - c) * SECTOR_SIZE, (from - offset) * SECTOR_SIZE, (to - offset) * SECTOR_SIZE);
        return write(c, buf);
      })());
    }
    await settle(chunks);
  }

  /** Where the rest of a new block comes from: the shared old block, the origin, zeroes, or nowhere (skip_block_zeroing). */
  private sourceOf(vblock: number, old: Lookup | null): ((at: number, into: Buffer) => Promise<void>) | 'zero' | 'stale' {
    const start = vblock * this.dbs;
    if (old) return (at, into) => this.data.read(old.block * this.dbs + at, into);
    if (this.origin && start < this.origin.device.sectors) return (at, into) => this.readUnmapped(start + at, into);
    return this.pool.features.zeroNewBlocks ? 'zero' : 'stale';
  }

  /**
   * Removes the mappings of [begin, end) (spec §7.5 remove range). With
   * passdown, the freed blocks are discarded on the data device only after
   * the commit that unmaps them, with the metadata lock held throughout so
   * no allocation can hand them out in between (spec §13.1 rule 8).
   */
  private async unmap(begin: number, end: number, passdown: boolean): Promise<void> {
    const release = await this.enter(begin, end);
    try {
      await this.pool.exclusive(async () => {
        this.pool.checkWritable('discard');
        const maps = await this.pool.metadataOp('discard', (md) => mappingsIn(md, this.thin.id, begin, end));
        if (maps.length === 0) return;
        const freed = await this.pool.metadataOp('remove_range', async (md) => {
          await md.removeRange(this.thin.id, begin, end);
          const out: number[] = [];
          for (const m of maps) if ((await md.dataSm.count(m.block)) === 0) out.push(m.block);
          return out;
        });
        this.pool.changed(this.thin);
        this.thin.mappedBlocks -= maps.length;
        if (this.thin.highest < end) this.thin.highest = await this.pool.metadataOp('lookup', (md) => highestMapped(md, this.thin.id));
        if (!passdown || freed.length === 0) return;
        await this.pool.commitLocked();
        await this.discardBlocks(freed);
      });
    } finally {
      release();
    }
  }

  /** Discards runs of consecutive data blocks; a data device without discard is not an error. */
  private async discardBlocks(blocks: number[]): Promise<void> {
    blocks.sort((a, b) => a - b);
    const runs: Promise<void>[] = [];
    for (let i = 0; i < blocks.length; ) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1) j++;
      runs.push(this.data.discard(blocks[i]! * this.dbs, (j - i) * this.dbs).catch((err) => {
        if (!isNotSupported(err)) throw err;
      }));
      i = j;
    }
    await settle(runs);
  }
}

/** Waits for every piece; fails with the first error after all settled. */
async function settle(pieces: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(pieces);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason instanceof Error ? failed.reason : new IoError('EIO', String(failed.reason));
}
