/**
 * An independent writer and reader of the dm-log-writes format, built from the
 * layout tables of log-writes.md §3 only (no code shared with
 * src/targets/log-writes), for golden images and for decoding what the target
 * writes.
 */
export interface TestEntry {
  sector: number;
  nr: number;
  flags: number;
  /** Payload fill byte (ignored for discards and zero-length entries). */
  fill?: number;
  mark?: string;
}

/** A log image: super block, then each header block followed by its payload blocks (§3, §3.4). */
export function buildLog(ss: number, entries: TestEntry[], nrEntries = entries.length): Buffer {
  const blocks: Buffer[] = [];
  const sb = Buffer.alloc(ss);
  sb.writeBigUInt64LE(0x006a736677736872n, 0);
  sb.writeBigUInt64LE(1n, 8);
  sb.writeBigUInt64LE(BigInt(nrEntries), 16);
  sb.writeUInt32LE(ss, 24);
  blocks.push(sb);
  for (const e of entries) {
    const h = Buffer.alloc(ss);
    h.writeBigUInt64LE(BigInt(e.sector), 0);
    h.writeBigUInt64LE(BigInt(e.nr), 8);
    h.writeBigUInt64LE(BigInt(e.flags), 16);
    const name = e.mark === undefined ? Buffer.alloc(0) : Buffer.from(e.mark);
    h.writeBigUInt64LE(BigInt(name.length), 24);
    name.copy(h, 32);
    blocks.push(h);
    if (!(e.flags & 4) && e.nr > 0) blocks.push(Buffer.alloc(e.nr * ss, e.fill ?? 0));
  }
  return Buffer.concat(blocks);
}

export interface DecodedEntry {
  sector: number;
  nr: number;
  flags: number;
  mark?: string;
  /** Payload bytes (empty for discards and zero-length entries). */
  data: Buffer;
  /** Header block index. */
  at: number;
}

export interface DecodedLog {
  sectorSize: number;
  nrEntries: number;
  entries: DecodedEntry[];
}

/** Reads a log image, trusting the super block's entry count (§3.1, §3.2). */
export function decodeLog(img: Buffer): DecodedLog {
  if (img.readBigUInt64LE(0) !== 0x006a736677736872n) throw new Error('bad magic');
  if (img.readBigUInt64LE(8) !== 1n) throw new Error('bad version');
  const nrEntries = Number(img.readBigUInt64LE(16));
  const ss = img.readUInt32LE(24);
  const entries: DecodedEntry[] = [];
  let block = 1;
  for (let i = 0; i < nrEntries; i++) {
    const h = img.subarray(block * ss, (block + 1) * ss);
    const sector = Number(h.readBigUInt64LE(0));
    const nr = Number(h.readBigUInt64LE(8));
    const flags = Number(h.readBigUInt64LE(16));
    const dataLen = Number(h.readBigUInt64LE(24));
    const e: DecodedEntry = { sector, nr, flags, data: Buffer.alloc(0), at: block };
    if (flags === 8) e.mark = h.subarray(32, 32 + dataLen).toString();
    // Everything after the header fields (and the mark name) must be zero.
    if (h.subarray(32 + (flags === 8 ? dataLen : 0)).some((b) => b !== 0)) throw new Error(`entry ${i}: dirty header`);
    const payload = flags & 4 ? 0 : nr;
    e.data = Buffer.from(img.subarray((block + 1) * ss, (block + 1 + payload) * ss));
    entries.push(e);
    block += 1 + payload;
  }
  return { sectorSize: ss, nrEntries, entries };
}

/** Applies entries [0, upTo) of a decoded log to an image, as a replay does (discard → zeroes). */
export function applyLog(log: DecodedLog, image: Buffer, upTo = log.entries.length): void {
  const ss = log.sectorSize;
  for (const e of log.entries.slice(0, upTo)) {
    if (e.flags & 4) image.fill(0, e.sector * ss, (e.sector + e.nr) * ss);
    else if (e.nr > 0) e.data.copy(image, e.sector * ss);
  }
}
