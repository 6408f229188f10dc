/**
 * The logger of dm-log-writes (Linux's log_writes_kthread, log-writes §4.6):
 * takes queued items one at a time, in queue order, assigns each the next log
 * position, writes its header block and payload, and rewrites the super block
 * after every FUA or MARK entry.
 *
 * Durability of the log device itself, as Linux does it: every log write is a
 * plain write — never a flush, never FUA — and header, payload and super block
 * are independent requests; only the super block write is waited for, so
 * super block updates are serialised and nr_entries never goes backwards by
 * completion order (log-writes §7 rule 6). Under the disk model this is weaker
 * than R1/R2: with a volatile cache on the log device a crash may keep a super
 * block whose entries never became durable, which is why readers validate
 * every header and stop cleanly (§7 rule 12). dmkit adds exactly one thing:
 * at teardown, after the final super block write completed, it flushes the
 * log device once, so a removed log is durable as a whole (R6 for the log
 * device as the place the user reads the result from).
 */
import { SECTOR_SIZE, type BlockDevice } from '../../block/device.ts';
import { toIoError } from '../../block/errors.ts';
import type { Logger } from '../../mapper/target.ts';
import {
  LOG_DISCARD_FLAG, LOG_FUA_FLAG, LOG_MAGIC, LOG_MARK_FLAG, LOG_SUPER_SECTOR, LOG_VERSION,
  encodeEntry, encodeSuper,
} from './log-format.ts';

/** A write, discard, flush or mark waiting to be logged (Linux's pending_block). */
export interface PendingBlock {
  flags: number;
  /** First data block, in units of the log's sectorsize. */
  sector: number;
  /** Length in blocks of sectorsize. */
  nrSectors: number;
  /** Payload copied at submission (log-writes §7 rule 7); none for discards and flushes. */
  data?: Buffer;
  /** Mark name, already truncated. */
  mark?: Buffer;
}

export class LogWriter {
  /** In 512-byte sectors: where the next entry's header goes. */
  nextSector: number;
  loggedEntries = 0;
  enabled = true;
  private readonly queue: PendingBlock[] = [];
  /** The logger is between taking its first item and finding the queue empty. */
  private busy = false;
  private runDone: Promise<void> = Promise.resolve();
  /** Header and payload writes still in flight (Linux's io_blocks). */
  private readonly inflight = new Set<Promise<void>>();
  private readonly blockSectors: number;

  constructor(
    private readonly logdev: BlockDevice,
    private readonly sectorSize: number,
    private readonly log: Logger,
  ) {
    this.blockSectors = sectorSize / SECTOR_SIZE;
    this.nextSector = this.blockSectors; // the first block after the super block
  }

  /** Appends to the logging queue and wakes the logger. */
  enqueue(...blocks: PendingBlock[]): void {
    this.queue.push(...blocks);
    this.kick();
  }

  /**
   * Puts blocks at the head of the queue, ahead of items already waiting: what
   * Linux's teardown does with the unflushed list (list_splice_init onto the
   * head of logging_blocks; log-writes §4.5 says "end", the code says head).
   */
  enqueueFront(blocks: PendingBlock[]): void {
    this.queue.unshift(...blocks);
    this.kick();
  }

  /** Resolves once the queue is empty and every log write has completed. */
  async drain(): Promise<void> {
    while (this.busy || this.inflight.size > 0) {
      await Promise.all([this.runDone, ...this.inflight]);
    }
  }

  /** Flushes the log device (teardown only; see the file comment). */
  async flushLog(): Promise<void> {
    try {
      await this.logdev.flush();
    } catch (err) {
      this.log.error(`Error flushing the log device, error=${toIoError(err).code}`);
    }
  }

  /** Wakes the logger; `busy` is set and cleared synchronously, so no item is ever left behind. */
  private kick(): void {
    if (this.busy) return;
    this.busy = true;
    this.runDone = this.run();
  }

  private async run(): Promise<void> {
    try {
      for (let block = this.queue.shift(); block; block = this.queue.shift()) {
        if (!this.enabled) continue;
        const pos = this.nextSector;
        if (!(block.flags & LOG_DISCARD_FLAG)) this.nextSector += block.nrSectors * this.blockSectors;
        this.nextSector += this.blockSectors;
        // `>=`: an entry ending exactly at the end of the log device is refused too.
        if (this.nextSector >= this.logdev.sectors) {
          this.disable('Ran out of space on the logdev');
          continue;
        }
        this.loggedEntries++;
        this.writeEntry(block, pos);
        if (block.flags & (LOG_FUA_FLAG | LOG_MARK_FLAG)) await this.writeSuper();
      }
    } finally {
      this.busy = false;
    }
  }

  /** log_one_block: the header block, then the payload one block later; neither is waited for. */
  private writeEntry(block: PendingBlock, pos: number): void {
    const header = Buffer.alloc(this.sectorSize);
    encodeEntry(
      {
        sector: BigInt(block.sector),
        nrSectors: BigInt(block.nrSectors),
        flags: BigInt(block.flags),
        dataLen: BigInt(block.mark?.length ?? 0),
      },
      header,
      block.mark,
    );
    this.track(this.logdev.write(pos, header, { tag: 'log' }));
    if (!block.data) return;
    const max = this.logdev.limits.maxTransfer * SECTOR_SIZE;
    const at = pos + this.blockSectors;
    for (let off = 0; off < block.data.length; off += max) {
      const piece = block.data.subarray(off, off + max);
      this.track(this.logdev.write(at + off / SECTOR_SIZE, piece, { tag: 'log' }));
    }
  }

  private track(write: Promise<void>): void {
    const p = write.catch((err: unknown) => this.disable(`Error writing log block, error=${toIoError(err).code}`));
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** log_super: nr_entries as of now; waited for, so super block writes never overtake each other. */
  private async writeSuper(): Promise<void> {
    const sb = encodeSuper(
      { magic: LOG_MAGIC, version: LOG_VERSION, nrEntries: BigInt(this.loggedEntries), sectorSize: this.sectorSize },
      this.sectorSize,
    );
    try {
      await this.logdev.write(LOG_SUPER_SECTOR, sb, { tag: 'log' });
    } catch (err) {
      this.disable(`Error writing super block, error=${toIoError(err).code}`);
    }
  }

  /**
   * Logging stops for good; writers never see an error (log-writes §4.9), so
   * dmkit says it loudly in the log and in the status line.
   */
  private disable(why: string): void {
    if (this.enabled) this.log.error(why);
    this.enabled = false;
  }
}
