/**
 * dm-integrity tags (integrity.md §3.7, §3.8): the internal hash that makes a
 * block's tag, and the tag store, the interleaved tag runs (or the one tag
 * array of a metadata device) cached through bufio as Linux does with dm-bufio.
 *
 *   digest = H( [salt(16) if FIXED_HMAC] ‖ le64(logical sector) ‖ block )
 *   tag    = first tag_size bytes of digest, zero-padded
 *
 * Tag space starts at metadata-device sector S + initial_sectors; the tag of
 * the block at logical sector L is at byte tagByte(L) of it (geometry.ts). A
 * metadata run is padded to 4 KiB (FIXED_PADDING) or 128 KiB (legacy); the
 * padding is never read or written.
 */
import { createHash, createHmac } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';

import { type BlockDevice, SECTOR_SIZE, type WriteOptions, type WriteZeroesOptions } from '../../block/device.ts';
import { BufferCache } from '../../bufio/bufio.ts';
import { crc32cRaw } from '../../native/index.ts';
import { type Layout, tagByte } from './geometry.ts';

/** A block whose tag is this filler was discarded (accepted with allow_discards). */
export const DISCARD_FILLER = 0xf6;

/** One internal_hash algorithm with its key: the digest of a byte sequence in parts. */
interface Digest {
  readonly size: number;
  /** Digest of the concatenation of `parts` into `out` (size bytes). */
  compute(parts: readonly Buffer[], out: Buffer): void;
}

/** Linux crypto names dmkit implements, with their digest sizes and key rules. */
export const DIGESTS: Record<string, { readonly size: number; readonly keyed: 'never' | 'optional' | 'required'; readonly make: (key: Buffer | undefined) => Digest }> = {
  // Castagnoli: register starts at 0xFFFFFFFF (or le32 of the key), final inversion.
  crc32c: { size: 4, keyed: 'optional', make: (key) => crcDigest(key, 0xffffffff, 0xffffffff, crc32cRaw) },
  // Linux crc32: register starts at 0 (or the key), no final inversion: zlib's crc32 with the inversions undone.
  crc32: { size: 4, keyed: 'optional', make: (key) => crcDigest(key, 0, 0, (b, reg) => (zlibCrc32(b, ~reg >>> 0) ^ 0xffffffff) >>> 0) },
  sha1: { size: 20, keyed: 'never', make: () => hashDigest('sha1') },
  sha256: { size: 32, keyed: 'never', make: () => hashDigest('sha256') },
  sha512: { size: 64, keyed: 'never', make: () => hashDigest('sha512') },
  'hmac(sha1)': { size: 20, keyed: 'required', make: (key) => hmacDigest('sha1', key!) },
  'hmac(sha256)': { size: 32, keyed: 'required', make: (key) => hmacDigest('sha256', key!) },
  'hmac(sha512)': { size: 64, keyed: 'required', make: (key) => hmacDigest('sha512', key!) },
};

/** A CRC as the crypto API runs it: `update(bytes, register)` returns the register after the bytes. */
function crcDigest(key: Buffer | undefined, init: number, finalXor: number, update: (b: Buffer, reg: number) => number): Digest {
  const start = key ? key.readUInt32LE(0) : init;
  return {
    size: 4,
    compute(parts, out) {
      let reg = start;
      for (const p of parts) reg = update(p, reg);
      out.writeUInt32LE((reg ^ finalXor) >>> 0, 0);
    },
  };
}

function hashDigest(alg: string): Digest {
  return {
    size: DIGEST_SIZES[alg]!,
    compute(parts, out) {
      const h = createHash(alg);
      for (const p of parts) h.update(p);
      h.digest().copy(out);
    },
  };
}

function hmacDigest(alg: string, key: Buffer): Digest {
  return {
    size: DIGEST_SIZES[alg]!,
    compute(parts, out) {
      const h = createHmac(alg, key);
      for (const p of parts) h.update(p);
      h.digest().copy(out);
    },
  };
}

const DIGEST_SIZES: Record<string, number> = { sha1: 20, sha256: 32, sha512: 64 };

/**
 * The tag of every block of a request (§3.8). One instance per target; its
 * scratch buffers are reused, so nothing is allocated per block but the
 * crypto API's digest.
 */
export class TagHasher {
  private readonly lsn = Buffer.alloc(8);
  private readonly digestOut: Buffer;
  private readonly parts: Buffer[];

  constructor(private readonly digest: Digest, readonly tagSize: number, salt: Buffer | undefined, private readonly blockBytes: number) {
    this.digestOut = Buffer.alloc(Math.max(digest.size, tagSize));
    this.parts = salt ? [salt, this.lsn, Buffer.alloc(0)] : [this.lsn, Buffer.alloc(0)];
  }

  /** Tags of the blocks of `data` (starting at logical sector `sector`) into `out`, tag_size bytes each. */
  compute(sector: number, data: Buffer, out: Buffer): void {
    const blockSectors = this.blockBytes / SECTOR_SIZE;
    for (let b = 0, off = 0; off < data.length; b++, off += this.blockBytes) {
      this.tagOf(sector + b * blockSectors, data.subarray(off, off + this.blockBytes), out.subarray(b * this.tagSize, (b + 1) * this.tagSize));
    }
  }

  /** The tag of one block. */
  tagOf(sector: number, block: Buffer, out: Buffer): void {
    this.lsn.writeBigUInt64LE(BigInt(sector));
    this.parts[this.parts.length - 1] = block;
    this.digestOut.fill(0);
    this.digest.compute(this.parts, this.digestOut);
    this.digestOut.copy(out, 0, 0, this.tagSize);
  }
}

/** A view of a device from `offset` on: bufio caches blocks from sector 0 of the device it is given. */
class OffsetDevice implements BlockDevice {
  readonly name: string;
  readonly sectors: number;
  constructor(private readonly dev: BlockDevice, private readonly offset: number) {
    this.name = dev.name;
    this.sectors = dev.sectors - offset;
  }
  get limits() {
    return this.dev.limits;
  }
  read(sector: number, into: Buffer): Promise<void> {
    return this.dev.read(this.offset + sector, into);
  }
  write(sector: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    return this.dev.write(this.offset + sector, data, opts);
  }
  flush(): Promise<void> {
    return this.dev.flush();
  }
  discard(sector: number, count: number): Promise<void> {
    return this.dev.discard(this.offset + sector, count);
  }
  writeZeroes(sector: number, count: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.dev.writeZeroes(this.offset + sector, count, opts);
  }
  async close(): Promise<void> {}
}

/**
 * The tag area, through a bufio cache of buffer_sectors-sized buffers that
 * starts at S + initial_sectors (Linux's dm_bufio_set_sector_offset).
 *
 * R5: dirty tag buffers may reach the disk at any time and in any order; the
 * callers that need tags durable call flush() (write dirty + flush the
 * metadata device) and order everything else around its completion.
 */
export class TagStore {
  readonly cache: BufferCache;

  constructor(meta: BlockDevice, private readonly layout: Layout, bufferSectors: number) {
    this.cache = new BufferCache(new OffsetDevice(meta, layout.start + layout.initialSectors), {
      blockSize: bufferSectors * SECTOR_SIZE,
      tag: 'metadata',
    });
  }

  /** Tags of `blocks` blocks from logical sector `sector` (one interleave area) into `out`. */
  async read(sector: number, blocks: number, out: Buffer): Promise<void> {
    await this.each(sector, blocks, (buf, bufOff, outOff, len) => {
      buf.copy(out, outOff, bufOff, bufOff + len);
      return false;
    });
  }

  /** Stores tags (dirty in the cache; durable only after flush()). */
  async write(sector: number, blocks: number, tags: Buffer): Promise<void> {
    await this.each(sector, blocks, (buf, bufOff, inOff, len) => {
      tags.copy(buf, bufOff, inOff, inOff + len);
      return true;
    });
  }

  /** Sets the tags of a range to the discard filler. */
  async fill(sector: number, blocks: number, byte: number): Promise<void> {
    await this.each(sector, blocks, (buf, bufOff, _off, len) => {
      buf.fill(byte, bufOff, bufOff + len);
      return true;
    });
  }

  /** Writes every dirty tag buffer and waits (no flush). */
  writeDirty(): Promise<void> {
    return this.cache.writeDirty();
  }

  /** Writes every dirty tag buffer, then flushes the metadata device: tags durable. */
  flush(): Promise<void> {
    return this.cache.flush();
  }

  close(): Promise<void> {
    return this.cache.close();
  }

  /** Walks the tag bytes of a range buffer by buffer; `visit` returns true when it changed the buffer. */
  private async each(sector: number, blocks: number, visit: (buf: Buffer, bufOff: number, off: number, len: number) => boolean): Promise<void> {
    const size = this.cache.blockSize;
    let pos = tagByte(this.layout, sector);
    const end = pos + blocks * this.layout.tagSize;
    for (let off = 0; pos < end;) {
      const block = Math.floor(pos / size);
      const bufOff = pos - block * size;
      const len = Math.min(size - bufOff, end - pos);
      const b = await this.cache.read(block);
      try {
        if (visit(b.data, bufOff, off, len)) this.cache.markDirty(b);
      } finally {
        this.cache.release(b);
      }
      pos += len;
      off += len;
    }
  }
}
