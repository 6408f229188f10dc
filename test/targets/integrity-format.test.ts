/**
 * dm-integrity on-disk format (integrity.md §3): geometry vectors, superblock
 * encode/decode against an independent decoder written from the spec's
 * layout table, the worked example image byte by byte in both directions,
 * journal commit ids and replay analysis, tag locations and hash vectors.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';

import { crc32c } from '../../src/native/index.ts';
import { formatSuperblock } from '../../src/targets/integrity/format.ts';
import { type Layout, calculateLayout, dataSector, journalGeometry, log2SectorsPerBit, tagByte } from '../../src/targets/integrity/geometry.ts';
import { JournalImage, commitIdHalves, planReplay } from '../../src/targets/integrity/journal.ts';
import { decodeSuperblock, encodeSuperblock, superblockVersion } from '../../src/targets/integrity/superblock.ts';
import { DIGESTS, TagHasher } from '../../src/targets/integrity/tags.ts';
import { integrityTargetType } from '../../src/targets/integrity/integrity.ts';
import { memoryRegistry } from '../helpers/registry.ts';

interface Vector {
  n: number; meta?: number; s: number; tag: number; block: number; fixed: boolean; journalSectors?: number; interleave?: number;
  J: number; JSS: number; initial: number; MR: number; provided: number; l2bpb: number;
}

/** integrity.md §3.10 test vectors (journal_mac row left out: dmkit refuses journal_mac). */
const VECTORS: Vector[] = [
  { n: 131072, s: 0, tag: 4, block: 512, fixed: true, J: 5, JSS: 176, initial: 888, MR: 256, provided: 129160, l2bpb: 15 },
  { n: 131072, s: 0, tag: 4, block: 512, fixed: false, J: 5, JSS: 176, initial: 888, MR: 256, provided: 129160, l2bpb: 15 },
  { n: 2097152, s: 0, tag: 4, block: 512, fixed: true, J: 93, JSS: 176, initial: 16376, MR: 256, provided: 2064392, l2bpb: 15 },
  { n: 20971520, s: 0, tag: 4, block: 512, fixed: true, J: 744, JSS: 176, initial: 130952, MR: 256, provided: 20678776, l2bpb: 15 },
  { n: 524288, s: 0, tag: 32, block: 4096, fixed: true, J: 15, JSS: 264, initial: 3968, MR: 256, provided: 516224, l2bpb: 12 },
  { n: 524288, s: 0, tag: 32, block: 4096, fixed: false, J: 15, JSS: 264, initial: 3968, MR: 256, provided: 516224, l2bpb: 12 },
  { n: 4096000, s: 32768, tag: 32, block: 4096, fixed: false, J: 121, JSS: 264, initial: 31952, MR: 256, provided: 3999792, l2bpb: 12 },
  { n: 3072000, s: 32768, tag: 32, block: 4096, fixed: false, J: 90, JSS: 264, initial: 23768, MR: 256, provided: 2991912, l2bpb: 12 },
  { n: 10000, s: 0, tag: 32, block: 512, fixed: false, journalSectors: 88, J: 1, JSS: 88, initial: 96, MR: 2048, provided: 7856, l2bpb: 15 },
  { n: 131072, s: 0, tag: 8, block: 512, fixed: true, interleave: 8, J: 5, JSS: 176, initial: 888, MR: 8, provided: 65088, l2bpb: 15 },
  { n: 131072, meta: 8192, s: 0, tag: 4, block: 512, fixed: false, J: 5, JSS: 176, initial: 888, MR: 1, provided: 131072, l2bpb: 15 },
];

function formatVector(v: Vector): { layout: Layout; l2bpb: number } {
  const log2Spb = Math.log2(v.block / 512);
  const metaDevice = v.meta !== undefined;
  const f = formatSuperblock({
    start: v.s, tagSize: v.tag, log2Spb, journalSectors: v.journalSectors, interleaveSectors: v.interleave ?? 32768,
    fixPadding: v.fixed, fixedHmac: false, metaDevice, dataDeviceSectors: v.n, metaDeviceSectors: v.meta ?? v.n,
    log2BufferSectors: 7,
  });
  assert.ok(f, 'format failed');
  const layout = calculateLayout({
    start: v.s, tagSize: v.tag, log2Spb, flags: f.sb.flags, journalSections: f.sb.journalSections,
    log2Interleave: f.sb.log2InterleaveSectors, metaDevice, metaDeviceSectors: v.meta ?? v.n,
    log2BufferSectors: f.log2BufferSectors, providedDataSectors: f.sb.providedDataSectors,
  });
  assert.ok(layout);
  return { layout, l2bpb: log2SectorsPerBit(15, layout) - log2Spb };
}

test('format geometry matches every vector of §3.10', () => {
  for (const v of VECTORS) {
    const { layout, l2bpb } = formatVector(v);
    const got = { J: layout.journalSections, JSS: layout.journal.sectionSectors, initial: layout.initialSectors, MR: layout.metadataRun, provided: layout.providedDataSectors, l2bpb };
    assert.deepEqual(got, { J: v.J, JSS: v.JSS, initial: v.initial, MR: v.MR, provided: v.provided, l2bpb: v.l2bpb }, JSON.stringify(v));
  }
});

test('journal geometry examples of §3.3', () => {
  assert.deepEqual(journalGeometry(4, 1, false), { entrySize: 24, entriesPerSector: 21, sectionEntries: 168, sectionSectors: 176 });
  assert.deepEqual(journalGeometry(32, 8, false), { entrySize: 104, entriesPerSector: 4, sectionEntries: 32, sectionSectors: 264 });
  assert.equal(journalGeometry(4, 1, true).sectionSectors, 168);
});

test('tag and data locations of the worked example (§3.7)', () => {
  const { layout } = formatVector(VECTORS[0]!);
  const base = (layout.start + layout.initialSectors) * 512;
  const rows: [number, number, number][] = [[0, 1144, 454656], [1, 1145, 454660], [32767, 33911, 585724], [32768, 34168, 17362944], [129159, 131071, 51302940]];
  for (const [l, data, tag] of rows) {
    assert.equal(dataSector(layout, l), data, `data sector of ${l}`);
    assert.equal(base + tagByte(layout, l), tag, `tag byte of ${l}`);
  }
});

/** An independent decoder of the 64-byte header, from the §3.2 table. */
function specDecode(b: Buffer) {
  return {
    magic: b.toString('latin1', 0, 8), version: b[8], log2Interleave: (b[9]! << 24) >> 24, tagSize: b[10]! | (b[11]! << 8),
    journalSections: b.readUInt32LE(12), provided: Number(b.readBigUInt64LE(16)), flags: b.readUInt32LE(24), log2Spb: b[28],
    log2Bpb: b[29], pad: b.readUInt16LE(30), recalc: Number(b.readBigUInt64LE(32)), pad2: b.readBigUInt64LE(40), salt: b.subarray(48, 64).toString('hex'),
  };
}

test('superblock encode/decode agrees with an independent decoder and the worked example bytes', () => {
  const sb = {
    version: 5, log2InterleaveSectors: 15, tagSize: 4, journalSections: 5, providedDataSectors: 129160, flags: 0x18,
    log2SectorsPerBlock: 0, log2BlocksPerBitmapBit: 15, recalcSector: 0, salt: Buffer.alloc(16),
  };
  const area = encodeSuperblock(sb);
  assert.equal(area.length, 4096);
  assert.equal(area.subarray(0, 48).toString('hex'),
    '696e746567727400050f04000500000088f801000000000018000000000f0000' + '00000000000000000000000000000000');
  assert.ok(area.subarray(64).every((x) => x === 0));
  assert.deepEqual(specDecode(area), {
    magic: 'integrt\0', version: 5, log2Interleave: 15, tagSize: 4, journalSections: 5, provided: 129160, flags: 0x18, log2Spb: 0,
    log2Bpb: 15, pad: 0, recalc: 0, pad2: 0n, salt: '00'.repeat(16),
  });
  const all = { ...sb, flags: 0x1f, recalcSector: 12345, log2InterleaveSectors: -1, salt: Buffer.from('00112233445566778899aabbccddeeff', 'hex') };
  const enc = encodeSuperblock(all);
  assert.deepEqual(decodeSuperblock(enc), all);
  assert.equal(specDecode(enc).log2Interleave, -1);
  assert.equal(specDecode(enc).recalc, 12345);
});

test('superblock version follows the first matching rule of §3.2', () => {
  assert.equal(superblockVersion(0x10, { bitmapMode: false, metaDevice: false }), 5);
  assert.equal(superblockVersion(0x08, { bitmapMode: true, metaDevice: true }), 4);
  assert.equal(superblockVersion(0, { bitmapMode: true, metaDevice: true }), 3);
  assert.equal(superblockVersion(0x04, { bitmapMode: false, metaDevice: false }), 3);
  assert.equal(superblockVersion(0, { bitmapMode: false, metaDevice: true }), 2);
  assert.equal(superblockVersion(0x02, { bitmapMode: false, metaDevice: false }), 2);
  assert.equal(superblockVersion(0, { bitmapMode: false, metaDevice: false }), 1);
});

test('commit ids and the formatted journal of the worked example (§3.4, §3.5)', () => {
  const lo = (i: number, j: number, seq: number) => {
    const [l, h] = commitIdHalves(i, j, seq);
    const b = Buffer.alloc(8);
    b.writeUInt32LE(l, 0);
    b.writeUInt32LE(h, 4);
    return b.toString('hex');
  };
  assert.equal(lo(0, 0, 0), '1111111111111111');
  assert.equal(lo(0, 1, 0), '1011111111111111');
  assert.equal(lo(0, 8, 0), '1911111111111111');
  assert.equal(lo(1, 0, 0), '1111111110111111');
  assert.equal(lo(4, 175, 0), 'be11111115111111');
  assert.equal(lo(2, 3, 3), '4744444446444444');

  const j = new JournalImage(journalGeometry(4, 1, false), 5, 1, 4);
  for (let i = 0; i < 5; i++) j.initSection(i, 0);
  assert.equal(j.buf.subarray(0, 64).toString('hex'),
    '00000000ffffffff0000000000000000' + '0000000000000000000000000000ffff'.slice(0, 24) + 'ffffffff' +
    '00000000000000000000000000000000' + '00000000ffffffff0000000000000000');
  // Formatted ring: replay finds it empty and continues at section 0 with seq 1 (§4.7 consequences).
  assert.deepEqual(planReplay(j, true), { kind: 'replay', start: 0, count: 0, empty: true, continues: true, seq: 1, erase: 2 });
});

test('replay analysis: intact sections oldest first, a torn section ends the walk, bad ids clear (§4.7)', () => {
  const geo = journalGeometry(4, 1, false);
  const j = new JournalImage(geo, 4, 1, 4);
  for (let i = 0; i < 4; i++) j.initSection(i, 0);
  // Lap with seq 1 committed sections 0 and 1 (each with one used entry).
  for (const i of [0, 1]) {
    j.setSector(i, 0, 8 * i);
    j.stamp(i, 1);
  }
  let p = planReplay(j, true);
  assert.equal(p.kind, 'replay');
  // Walk: sections 2, 3 (old lap, seq 0), wrap, 0, 1 (seq 1); the lap continues at section 2 with seq 1.
  assert.deepEqual(p, { kind: 'replay', start: 2, count: 4, empty: false, continues: true, seq: 1, erase: 3 });
  // Tear section 1: its sector 5 keeps the old id. The walk stops there; the ring must be cleared.
  const [l0, h0] = commitIdHalves(1, 5, 0);
  j.buf.writeUInt32LE(l0, j.sectorOffset(1, 5) + 504);
  j.buf.writeUInt32LE(h0, j.sectorOffset(1, 5) + 508);
  p = planReplay(j, true);
  assert.equal(p.kind, 'replay');
  if (p.kind !== 'replay') return;
  // Walk 2, 3, 0, then section 1 is torn: three sections apply, then the ring is cleared with erase = last − 2.
  assert.deepEqual(p, { kind: 'replay', start: 2, count: 3, empty: false, continues: false, seq: 0, erase: 3 });
  j.buf.writeUInt32LE(0xdeadbeef, j.sectorOffset(3, 2) + 504);
  assert.deepEqual(planReplay(j, true), { kind: 'error', what: 'journal commit id', erase: 2 });
});

test('tag vectors of §3.8 (crc32c, crc32, sha256, salt)', () => {
  const tag = (alg: string, size: number, salt: Buffer | undefined, l: number, data: Buffer, key?: Buffer) => {
    const out = Buffer.alloc(size);
    new TagHasher(DIGESTS[alg]!.make(key), size, salt, data.length).tagOf(l, data, out);
    return out.toString('hex');
  };
  const z512 = Buffer.alloc(512);
  assert.equal(tag('crc32c', 4, undefined, 0, z512), 'c740e882');
  assert.equal(tag('crc32c', 4, undefined, 1, z512), 'db256d70');
  assert.equal(tag('crc32c', 4, Buffer.alloc(16), 0, z512), '9ac4ad48');
  assert.equal(tag('crc32', 4, undefined, 1, z512), '14155da5');
  assert.equal(tag('crc32', 4, undefined, 0, z512), '00000000');
  assert.equal(tag('sha256', 32, undefined, 0, Buffer.alloc(4096)), '4f2cfec1c5dc3827cdeb42906713b37cae91e009aa0e2d211c376ccb9969b3ea');
  // Tag shorter than the digest: a prefix; longer: zero padded.
  assert.equal(tag('sha256', 8, undefined, 0, Buffer.alloc(4096)), '4f2cfec1c5dc3827');
  assert.equal(tag('crc32c', 6, undefined, 0, z512), 'c740e8820000');
  // sha1 against node's sha1 of le64(L) ‖ data; crc32c with a key: the key replaces the initial register.
  const lsn = Buffer.alloc(8);
  lsn.writeBigUInt64LE(7n);
  assert.equal(tag('sha1', 20, undefined, 7, z512), createHash('sha1').update(lsn).update(z512).digest('hex'));
  const key = Buffer.from('78563412', 'hex');
  const expect = Buffer.alloc(4);
  expect.writeUInt32LE(crc32c(Buffer.concat([lsn, z512]), ~0x12345678 >>> 0));
  assert.equal(tag('crc32c', 4, undefined, 7, z512, key), expect.toString('hex'));
});

/**
 * The reverse direction: an image built byte by byte from the spec's worked
 * example (64 MiB, defaults, zero salt), with one data block and its tag
 * placed by hand; dmkit must open it, read the block, and catch a bad tag.
 */
test('dmkit reads a volume built byte by byte from the worked example', async () => {
  const { registry, disks } = memoryRegistry([integrityTargetType()], { '/img': 131072 });
  const img = disks['/img']!;
  const sb = Buffer.alloc(4096);
  Buffer.from('696e746567727400050f04000500000088f801000000000018000000000f0000', 'hex').copy(sb);
  await img.write(0, sb);
  // Journal: 5 sections × 176 sectors, every entry unused, commit ids of seq 0 (§3.4, §3.5).
  const journal = Buffer.alloc(880 * 512);
  for (let i = 0; i < 5; i++) {
    for (let s = 0; s < 176; s++) {
      const off = (i * 176 + s) * 512;
      if (s < 8) for (let e = 0; e < 21; e++) journal.writeUInt32LE(0xffffffff, off + e * 24 + 4);
      journal.writeUInt32LE((0x11111111 ^ s) >>> 0, off + 504);
      journal.writeUInt32LE((0x11111111 ^ i) >>> 0, off + 508);
    }
  }
  await img.write(8, journal);
  // Logical sector 1 → data sector 1145, tag at byte 454660 = sector 888 + 4 (§3.7 table).
  const block = Buffer.alloc(512, 0x5a);
  await img.write(1145, block);
  const lsn = Buffer.alloc(8);
  lsn.writeBigUInt64LE(1n);
  const tags = Buffer.alloc(512);
  tags.writeUInt32LE(crc32c(Buffer.concat([Buffer.alloc(16), lsn, block])), 4);
  await img.write(888, tags);

  await registry.create('v', { table: '0 129160 integrity /img 0 4 D 1 internal_hash:crc32c' });
  assert.equal(registry.status('v', { type: 'table' })[0]!.params,
    '7:0 0 4 D 6 journal_sectors:880 interleave_sectors:32768 buffer_sectors:128 fix_padding fix_hmac internal_hash:crc32c');
  const h = registry.open('v');
  const got = Buffer.alloc(512);
  await h.read(1, got);
  assert.deepEqual(got, block);
  await assert.rejects(h.read(2, got), (e: Error & { code?: string }) => e.code === 'EILSEQ');
  assert.equal(registry.status('v', { type: 'info' })[0]!.params, '1 129160 -');
  await h.close();
  await registry.remove('v');
  // Opening in J mode replays the hand-made journal (empty) and keeps the data.
  await registry.create('w', { table: '0 129160 integrity /img 0 4 J 1 internal_hash:crc32c' });
  const w = registry.open('w');
  await w.read(1, got);
  assert.deepEqual(got, block);
  await w.close();
  await registry.shutdown();
});
