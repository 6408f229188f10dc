/**
 * The explorer's self-test target (CRASH-TESTING §3, last row): a toy
 * "thin-like" device over a data disk and a one-sector metadata disk. A block
 * reads as zeroes until the metadata bitmap marks it written; then it reads
 * the data disk. The data disk starts full of stale bytes, so a block marked
 * written before its data was durable shows data nobody wrote.
 *
 * Variants, switched by options:
 * - broken: commit writes the bitmap before flushing the data (violates R1);
 * - brokenRecovery: recovery rewrites the bitmap through an all-clear
 *   intermediate commit (violates R7: a crash in between loses every block);
 * - ignoreFlushErrors: a failed data flush does not stop the commit (R2).
 */
import {
  type BlockDevice, type Limits, SECTOR_SIZE, checkBuffer, makeLimits,
} from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import type { CrashTarget } from '../../src/crash/explorer.ts';
import type { SubmitEvent } from '../../src/crash/recording.ts';
import { SparseImage } from '../../src/sim/sparse-image.ts';

export const TOY_BLOCK_SECTORS = 8;
const BLOCK_BYTES = TOY_BLOCK_SECTORS * SECTOR_SIZE;
const MAGIC = 'TOYMETA1';
const BITMAP_OFFSET = 16;

export interface ToyOptions {
  blocks?: number;
  broken?: boolean;
  brokenRecovery?: boolean;
  ignoreFlushErrors?: boolean;
}

export function toyTarget(opts: ToyOptions = {}): CrashTarget {
  const blocks = opts.blocks ?? 16;
  const variant = [opts.broken && 'broken', opts.brokenRecovery && 'broken-recovery', opts.ignoreFlushErrors && 'ignore-flush-errors']
    .filter(Boolean).join('+');
  return {
    name: variant ? `toy-${variant}` : 'toy',
    disks: [
      { name: 'data', sectors: blocks * TOY_BLOCK_SECTORS, initial: () => staleImage(blocks * TOY_BLOCK_SECTORS) },
      { name: 'meta', sectors: 8 },
    ],
    open: ([data, meta]) => ToyDevice.open(data!, meta!, blocks, opts),
    // A superblock points at the data of the blocks it newly marks written (disk 0).
    references: (sb, previous) => {
      const out = [];
      for (let b = 0; b < blocks; b++) {
        if (marked(sb, b) && !marked(previous, b)) out.push({ dev: 0, sector: b * TOY_BLOCK_SECTORS, count: TOY_BLOCK_SECTORS });
      }
      return out;
    },
  };
}

function marked(sb: SubmitEvent | undefined, block: number): boolean {
  return sb?.data?.[BITMAP_OFFSET + block] === 1;
}

/** What a previous user left on the data disk. */
function staleImage(sectors: number): SparseImage {
  const img = new SparseImage(sectors);
  img.write(0, Buffer.alloc(sectors * SECTOR_SIZE, 0xab));
  return img;
}

class ToyDevice implements BlockDevice {
  readonly name = 'toy';
  readonly sectors: number;
  readonly limits: Limits;
  /** Blocks the last commit marked written. */
  private readonly committed: Uint8Array;
  /** Blocks whose data write completed since the last commit. */
  private readonly pending = new Set<number>();
  private generation: number;
  /** Commits run one at a time. */
  private commits: Promise<void> = Promise.resolve();

  private constructor(
    private readonly data: BlockDevice, private readonly meta: BlockDevice, blocks: number,
    private readonly opts: ToyOptions, bitmap: Uint8Array, generation: number,
  ) {
    this.sectors = blocks * TOY_BLOCK_SECTORS;
    this.limits = makeLimits({ logicalBlockSize: BLOCK_BYTES, maxTransfer: this.sectors, discard: false, writeZeroes: false });
    this.committed = bitmap;
    this.generation = generation;
  }

  /** Opens and recovers: formats a blank metadata disk, else bumps the generation. */
  static async open(data: BlockDevice, meta: BlockDevice, blocks: number, opts: ToyOptions): Promise<ToyDevice> {
    const sb = Buffer.alloc(SECTOR_SIZE);
    await meta.read(0, sb);
    if (sb.toString('latin1', 0, MAGIC.length) !== MAGIC) {
      const dev = new ToyDevice(data, meta, blocks, opts, new Uint8Array(blocks), 0);
      await dev.writeSuperblock(dev.committed);
      return dev;
    }
    const bitmap = new Uint8Array(sb.subarray(BITMAP_OFFSET, BITMAP_OFFSET + blocks));
    const dev = new ToyDevice(data, meta, blocks, opts, bitmap, sb.readUInt32LE(8) + 1);
    if (opts.brokenRecovery) {
      // Broken on purpose: an all-clear commit first; a crash before the next loses every block.
      await dev.writeSuperblock(new Uint8Array(blocks));
      dev.generation++;
    }
    await dev.writeSuperblock(dev.committed);
    return dev;
  }

  async read(sector: number, into: Buffer): Promise<void> {
    checkBuffer(this, 'read', sector, into);
    const reads: Promise<void>[] = [];
    for (let off = 0; off < into.length; off += BLOCK_BYTES) {
      const block = (sector + off / SECTOR_SIZE) / TOY_BLOCK_SECTORS;
      const part = into.subarray(off, off + BLOCK_BYTES);
      if (this.committed[block] || this.pending.has(block)) reads.push(this.data.read(block * TOY_BLOCK_SECTORS, part));
      else part.fill(0);
    }
    await Promise.all(reads);
  }

  async write(sector: number, data: Buffer, opts: { fua?: boolean } = {}): Promise<void> {
    checkBuffer(this, 'write', sector, data);
    await this.data.write(sector, data, { tag: 'data' });
    for (let b = sector / TOY_BLOCK_SECTORS; b < (sector + data.length / SECTOR_SIZE) / TOY_BLOCK_SECTORS; b++) this.pending.add(b);
    if (opts.fua) await this.flush();
  }

  /** R6: every block whose write completed before this flush is durable, data and bitmap, when it resolves. */
  flush(): Promise<void> {
    const commit = this.commits.then(() => this.commit());
    this.commits = commit.catch(() => undefined);
    return commit;
  }

  async discard(sector: number): Promise<void> {
    throw new IoError('ENOTSUP', `toy: discard at sector ${sector} is not supported`, { device: this.name, sector });
  }

  async writeZeroes(sector: number): Promise<void> {
    throw new IoError('ENOTSUP', `toy: write-zeroes at sector ${sector} is not supported`, { device: this.name, sector });
  }

  async close(): Promise<void> {
    await this.flush();
  }

  /** R1: the data of every newly marked block is flushed before the bitmap that marks it is written. */
  private async commit(): Promise<void> {
    const next = new Uint8Array(this.committed);
    const marked = [...this.pending];
    for (const b of marked) next[b] = 1;
    if (this.opts.broken) {
      await this.writeSuperblock(next);
      await this.flushData();
    } else {
      await this.flushData();
      await this.writeSuperblock(next);
    }
    this.committed.set(next);
    for (const b of marked) this.pending.delete(b);
  }

  private async flushData(): Promise<void> {
    if (this.opts.ignoreFlushErrors) await this.data.flush().catch(() => undefined);
    else await this.data.flush();
  }

  /** The superblock is one sector, so its write is atomic; FUA makes it durable (R2). */
  private async writeSuperblock(bitmap: Uint8Array): Promise<void> {
    const sb = Buffer.alloc(SECTOR_SIZE);
    sb.write(MAGIC, 0, 'latin1');
    sb.writeUInt32LE(this.generation, 8);
    sb.set(bitmap, BITMAP_OFFSET);
    await this.meta.write(0, sb, { fua: true, tag: 'superblock' });
  }
}

/** For `npm run crash -- --module test/crash/toy-target.ts`. */
export const crashTargets: Record<string, CrashTarget> = {
  toy: toyTarget(),
  'toy-broken': toyTarget({ broken: true }),
};
