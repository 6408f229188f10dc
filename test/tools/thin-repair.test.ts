/**
 * `dmkit thin repair`, `thin dump --repair` and thin check's fixes
 * (`--clear-needs-check-flag`, `--auto-repair`), against Debian's
 * thin-provisioning-tools 0.9.0 on the same damaged images: both salvage
 * the same mappings, both repaired outputs pass thin_check and dump alike.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FileDevice } from '../../src/block/file-device.ts';
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { lookup } from '../../src/pdata/btree/btree.ts';
import { Node } from '../../src/pdata/btree/node.ts';
import { blockChecksum } from '../../src/pdata/checksum.ts';
import { readU64, writeU64 } from '../../src/pdata/endian.ts';
import { ENTRIES_PER_BITMAP, setEntry } from '../../src/pdata/space-map/bitmap.ts';
import { decodeIndexEntry } from '../../src/pdata/space-map/index-entry.ts';
import { decodeSpaceMapRoot } from '../../src/pdata/space-map/root.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { SALT, btreeNodeValidator } from '../../src/pdata/validators.ts';
import { thinCheck } from '../../src/tools/thin/check.ts';
import { thinDump } from '../../src/tools/thin/dump.ts';
import { thinRepair } from '../../src/tools/thin/repair.ts';
import { captured } from '../helpers/captured.ts';
import { blankFile, tempDir } from '../helpers/temp-dir.ts';
import { run } from '../nbd/helpers.ts';
import { ThinStack, pattern, readSectors } from '../targets/thin-support.ts';

const dir = tempDir('dmkit-thin-repair-');
const BLOCK = 4096;
const IMAGE_BYTES = 4 << 20;
const MiB = 2048; // sectors

const dmkit = (tool: typeof thinDump, ...argv: string[]) => captured((io) => tool(argv, io));
const real = (cmd: string, ...argv: string[]) => run(cmd, argv);

let counter = 0;
/** A new file holding `image`. */
async function fileOf(image: Buffer, name = 'img'): Promise<string> {
  const path = join(dir, `${name}-${counter++}.bin`);
  await writeFile(path, image);
  return path;
}

/**
 * Metadata written by dmkit: device 1 (1500 scattered mappings), device 2
 * a snapshot of it that then mapped 300 more blocks (so the two share most
 * leaves but not all), device 3 (1000 contiguous mappings), device 5 (10),
 * over two commits, so old versions of the trees lie about as after a
 * running pool's commits.
 */
async function buildImage(): Promise<Buffer> {
  const path = await blankFile(join(dir, 'base.bin'), IMAGE_BYTES);
  const device = await FileDevice.open(path);
  const md = await ThinMetadata.format(device, { dataBlockSize: 128, nrDataBlocks: 20000 });
  await md.createThin(1);
  for (let v = 0; v < 1500; v++) await md.insertMapping(1, v * 2, await md.allocDataBlock());
  await md.commit();
  await md.createSnap(2, 1);
  for (let v = 0; v < 300; v++) await md.insertMapping(2, 2001 + v * 2, await md.allocDataBlock());
  await md.createThin(3);
  for (let v = 0; v < 1000; v++) await md.insertMapping(3, 100 + v, await md.allocDataBlock());
  await md.createThin(5);
  for (let v = 0; v < 10; v++) await md.insertMapping(5, v * 3, await md.allocDataBlock());
  md.setTransactionId(0, 7);
  await md.commit();
  await md.close();
  await device.close();
  return readFile(path);
}

let base: Promise<Buffer> | undefined;
const baseImage = async (): Promise<Buffer> => Buffer.from(await (base ??= buildImage()));

const blockOf = (img: Buffer, b: number): Buffer => img.subarray(b * BLOCK, (b + 1) * BLOCK);
const restamp = (img: Buffer, b: number, salt: number): void => {
  const data = blockOf(img, b);
  data.writeUInt32LE(blockChecksum(data, salt), 0);
};

/** Device `id`'s mapping tree: its root block and its leaves in key order. */
async function mappingTree(img: Buffer, id: number): Promise<{ root: number; leaves: { block: number; first: number; last: number; nr: number }[] }> {
  const device = await FileDevice.open(await fileOf(img, 'probe'), { readOnly: true });
  const md = await ThinMetadata.open(device, { readOnly: true });
  try {
    const root = readU64((await lookup(md.tm, md.superblock.dataMappingRoot, id))!, 0);
    const leaves: { block: number; first: number; last: number; nr: number }[] = [];
    const visit = async (b: number): Promise<void> => {
      const block = await md.tm.readLock(b, btreeNodeValidator);
      const node = new Node(Buffer.from(block.data));
      md.tm.unlock(block);
      if (node.isLeaf) leaves.push({ block: b, first: node.key(0), last: node.key(node.nr - 1), nr: node.nr });
      else for (let i = 0; i < node.nr; i++) await visit(node.valueU64(i));
    };
    await visit(root);
    return { root, leaves };
  } finally {
    await md.close();
    await device.close();
  }
}

/** A byte of block `b` changed: its checksum no longer matches. */
function flip(img: Buffer, b: number): void {
  img[b * BLOCK + 100]! ^= 0x10;
}

function setFlags(img: Buffer, flags: number): void {
  img.writeUInt32LE(flags, 4);
  restamp(img, 0, SALT.thinSuperblock);
}

/** Sets block `b`'s count in the metadata space map's bitmap (counts 0–2), checksum restamped. */
function setMetadataCount(img: Buffer, b: number, count: number): void {
  const root = decodeSpaceMapRoot(img.subarray(192, 224));
  const entry = decodeIndexEntry(img, root.bitmapRoot * BLOCK + 16 + 16 * Math.floor(b / ENTRIES_PER_BITMAP));
  setEntry(blockOf(img, entry.blocknr), b % ENTRIES_PER_BITMAP, count);
  restamp(img, entry.blocknr, SALT.bitmap);
}

/** Sets data block `b`'s count in the data space map's bitmap (its index tree is one leaf here). */
function setDataCount(img: Buffer, b: number, count: number): void {
  const root = decodeSpaceMapRoot(img.subarray(64, 96));
  const index = new Node(blockOf(img, root.bitmapRoot));
  assert.ok(index.isLeaf);
  const entry = decodeIndexEntry(index.value(index.find(Math.floor(b / ENTRIES_PER_BITMAP))), 0);
  setEntry(blockOf(img, entry.blocknr), b % ENTRIES_PER_BITMAP, count);
  restamp(img, entry.blocknr, SALT.bitmap);
}

/** Mapping elements of device `id` in a dump, as origin → data. */
function mappingsOf(xml: string, id: number): Map<number, number> {
  const m = new Map<number, number>();
  const section = xml.split('<device ').find((s) => s.startsWith(`dev_id="${id}"`)) ?? '';
  for (const [, o, d] of section.matchAll(/origin_block="(\d+)" data_block="(\d+)"/g)) m.set(Number(o), Number(d));
  for (const [, o, d, l] of section.matchAll(/origin_begin="(\d+)" data_begin="(\d+)" length="(\d+)"/g)) {
    for (let i = 0; i < Number(l); i++) m.set(Number(o) + i, Number(d) + i);
  }
  return m;
}

/**
 * Debian's thin_dump --repair and dmkit's print the same; thin_repair and
 * dmkit thin repair of copies of the same image both pass thin_check and
 * dump identically. Returns the salvaged dump.
 */
async function repairBoth(img: Buffer, overrides: string[] = []): Promise<string> {
  const damaged = await fileOf(img, 'damaged');
  const theirDump = await real('thin_dump', '--repair', ...overrides, damaged);
  assert.equal(theirDump.code, 0, theirDump.stderr);
  const ourDump = await dmkit(thinDump, '--repair', ...overrides, damaged);
  assert.equal(ourDump.code, 0, ourDump.stderr);
  assert.equal(ourDump.stdout, theirDump.stdout);

  const theirs = await blankFile(join(dir, `theirs-${counter++}.bin`), IMAGE_BYTES);
  const ours = await blankFile(join(dir, `ours-${counter++}.bin`), IMAGE_BYTES);
  const theirRepair = await real('thin_repair', '-i', damaged, '-o', theirs, ...overrides);
  assert.equal(theirRepair.code, 0, theirRepair.stderr);
  const ourRepair = await dmkit(thinRepair, '-i', damaged, '-o', ours, ...overrides);
  assert.deepEqual(ourRepair, { code: 0, stdout: '', stderr: '' });
  for (const out of [theirs, ours]) {
    const check = await real('thin_check', out);
    assert.equal(check.code, 0, check.stderr);
  }
  const theirRepaired = await real('thin_dump', theirs);
  assert.equal((await real('thin_dump', ours)).stdout, theirRepaired.stdout);
  // The repaired metadata holds what the salvage dump printed (restore recomputes mapped_blocks).
  assert.equal(theirRepaired.stdout.replace(/ mapped_blocks="\d+"/g, ''), ourDump.stdout.replace(/ mapped_blocks="\d+"/g, ''));
  assert.equal((await dmkit(thinCheck, '-q', ours)).code, 0);
  return ourDump.stdout;
}

describe('thin repair and thin dump --repair, against thin_repair 0.9.0', () => {
  it('undamaged metadata: the salvage dump is the plain dump', async () => {
    const img = await baseImage();
    const plain = await dmkit(thinDump, await fileOf(img));
    assert.equal(await repairBoth(img), plain.stdout);
    assert.deepEqual([1, 2, 3, 5].map((id) => mappingsOf(plain.stdout, id).size), [1500, 1800, 1000, 10]);
  });

  it('a mapping leaf with a bad checksum: its mappings are dropped, from both devices sharing it', async () => {
    const img = await baseImage();
    const plain = (await dmkit(thinDump, await fileOf(img))).stdout;
    const dev1 = await mappingTree(img, 1);
    const dev2 = await mappingTree(img, 2);
    const shared = dev1.leaves.find((l) => dev2.leaves.some((m) => m.block === l.block))!;
    assert.ok(shared, 'the snapshot shares leaves with its origin');
    flip(img, shared.block);
    assert.equal((await dmkit(thinDump, await fileOf(img))).code, 1);
    const salvaged = await repairBoth(img);
    for (const id of [1, 2]) {
      const before = mappingsOf(plain, id);
      const after = mappingsOf(salvaged, id);
      assert.equal(after.size, before.size - shared.nr, `device ${id}`);
      for (const [o, d] of before) assert.equal(after.get(o), o >= shared.first && o <= shared.last ? undefined : d);
    }
    assert.deepEqual(mappingsOf(salvaged, 3), mappingsOf(plain, 3));
  });

  it("a device's whole mapping subtree: the device stays, without mappings", async () => {
    const img = await baseImage();
    const { root } = await mappingTree(img, 3);
    flip(img, root);
    const salvaged = await repairBoth(img);
    assert.match(salvaged, /<device dev_id="3" mapped_blocks="1000" transaction="0" creation_time="1" snap_time="1">\n {2}<\/device>/);
    assert.equal(mappingsOf(salvaged, 1).size, 1500);
  });

  it('a leaked metadata block, a data block counted 0, NEEDS_CHECK: everything is salvaged; the flag is kept as 0.9.0 keeps it', async () => {
    const img = await baseImage();
    const plain = (await dmkit(thinDump, await fileOf(img))).stdout;
    const someData = mappingsOf(plain, 3).get(100)!;
    setMetadataCount(img, IMAGE_BYTES / BLOCK - 1, 1);
    setDataCount(img, someData, 0);
    setFlags(img, 1);
    const damaged = await fileOf(img);
    const ourCheck = await dmkit(thinCheck, damaged);
    assert.equal(ourCheck.code, 1);
    assert.match(ourCheck.stderr, new RegExp(`data reference counts differ for block ${someData}, expected 1, but got 0`));
    assert.match(ourCheck.stderr, /metadata reference counts differ for block 1023, expected 0, but got 1/);
    // 0.9.0 counts no data references: the leak is all it sees.
    const theirCheck = await real('thin_check', damaged);
    assert.equal(theirCheck.code, 1);
    assert.doesNotMatch(theirCheck.stderr, /^\s*data reference/m);
    assert.equal(await repairBoth(img), plain.replace('flags="0"', 'flags="1"'));
  });

  it('a damaged details tree or top level: both search the blocks for older roots and find the same ones', async () => {
    const img = await baseImage();
    const details = img.readUInt32LE(328);
    const top = img.readUInt32LE(320);
    for (const b of [details, top]) {
      const damaged = Buffer.from(img);
      flip(damaged, b);
      const salvaged = await repairBoth(damaged);
      // The first commit's trees (device 1 only) are still on disk, unreferenced: they are the roots found.
      assert.match(salvaged, /^<superblock uuid="" time="0" transaction="7" flags="0" version="2" data_block_size="128" nr_data_blocks="20000">\n {2}<device dev_id="1" /);
      assert.equal(mappingsOf(salvaged, 1).size, 1500);
      assert.equal(mappingsOf(salvaged, 3).size, 0);
    }
  });

  it('a bad superblock: the overrides are required, in 0.9.0 order, then the trees are found by the scan', async () => {
    const img = await baseImage();
    const plain = (await dmkit(thinDump, await fileOf(img))).stdout;
    blockOf(img, 0).fill(0);
    const damaged = await fileOf(img);
    const need = 'The following field needs to be provided on the command line due to corruption in the superblock: ';
    for (const [args, field] of [[[], 'transaction id'], [['--transaction-id', '7'], 'data block size'], [['--transaction-id', '7', '--data-block-size', '128'], 'nr data blocks']] as const) {
      const theirs = await real('thin_dump', '--repair', ...args, damaged);
      assert.deepEqual({ code: theirs.code, stderr: theirs.stderr }, { code: 1, stderr: `${need}${field}\n` });
      assert.deepEqual(await dmkit(thinDump, '-r', ...args, damaged), { code: 1, stdout: '', stderr: `${need}${field}\n` });
      const out = await blankFile(join(dir, `refused-${counter++}.bin`), IMAGE_BYTES);
      assert.deepEqual(await dmkit(thinRepair, '-i', damaged, '-o', out, ...args), { code: 1, stdout: '', stderr: `${need}${field}\n` });
      assert.equal((await real('thin_check', out)).code, 1, 'a failed repair leaves no valid superblock');
    }
    const salvaged = await repairBoth(img, ['--transaction-id', '7', '--data-block-size', '128', '--nr-data-blocks', '20000']);
    // Everything comes back: the time is the newest found in the trees (1, device 2's creation),
    // flags 0 and version 2 are made up, and were the original's.
    assert.equal(salvaged, plain);
  });

  it('the overrides replace superblock fields in a plain dump too; bad values are one-line errors', async () => {
    const path = await fileOf(await baseImage());
    const theirs = await real('thin_dump', '--transaction-id', '9', '--data-block-size', '256', '--nr-data-blocks', '30000', path);
    const ours = await dmkit(thinDump, '--transaction-id', '9', '--data-block-size', '256', '--nr-data-blocks', '30000', path);
    assert.equal(ours.stdout, theirs.stdout);
    assert.match(ours.stdout, /^<superblock uuid="" time="1" transaction="9" flags="0" version="2" data_block_size="256" nr_data_blocks="30000">/);
    const out = await blankFile(join(dir, 'args.bin'), IMAGE_BYTES);
    const cases: [typeof thinDump, string[], string][] = [
      [thinDump, ['--transaction-id', 'x', path], "couldn't parse transaction id: 'x'\n"],
      [thinDump, ['--nr-data-blocks', '-1', path], "couldn't parse nr data blocks: '-1'\n"],
      [thinDump, ['--data-block-size', '99999999999', path], "data block size too large: '99999999999' (a le32 field)\n"],
      [thinDump, ['-r', '-m', path], '--repair works on the live metadata, not with --metadata-snap\n'],
      [thinRepair, [], 'No input file provided.\n'],
      [thinRepair, ['-i', path], 'No output file provided.\n'],
      [thinRepair, ['-i', path, '-o', join(dir, 'nowhere.bin')], `Output file does not exist: ${join(dir, 'nowhere.bin')}\n`],
      [thinRepair, ['-i', path, '-o', out, 'extra'], "unexpected argument 'extra' (input and output are -i and -o)\n"],
      [thinRepair, ['-i', path, '-o', out, '--bogus'], "unrecognized option '--bogus'\n"],
      [thinRepair, ['-i', path, '-o', out, '--transaction-id'], "option '--transaction-id' requires an argument\n"],
      [thinRepair, ['-i', path, '-o', out, '--nr-data-blocks', '10'], 'mapping beyond end of data device (10 >= 10)\n'],
    ];
    for (const [tool, argv, stderr] of cases) assert.deepEqual(await dmkit(tool, ...argv), { code: 1, stdout: '', stderr }, argv.join(' '));
    const small = await blankFile(join(dir, 'small.bin'), 16 * 1024);
    assert.deepEqual(await dmkit(thinRepair, '-i', path, '-o', small), {
      code: 1, stdout: '', stderr: `Output file too small: ${small} (16384 bytes, at least 32768)\n`,
    });
    const missing = await dmkit(thinRepair, '-i', join(dir, 'none.bin'), '-o', out);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^ENOENT: no such file or directory, open '.*none\.bin'\n$/);
    const help = await dmkit(thinRepair, '-h');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: thin repair \[options\]\n/);
  });
});

describe('thin check --clear-needs-check-flag and --auto-repair, against thin_check 0.9.0', () => {
  it('--clear-needs-check-flag clears the flag after a clean full check, rewriting only the superblock', async () => {
    const img = await baseImage();
    setFlags(img, 1);
    const path = await fileOf(img);
    const refusals: [string[], string][] = [
      [['--skip-mappings'], 'cannot perform fix without a full examination'],
      [['--super-block-only'], 'cannot perform fix without a full examination'],
      [['-m'], 'cannot perform fix within metadata snap'],
      [['--ignore-non-fatal-errors'], 'cannot perform fix by ignoring non-fatal errors'],
      [['--override-mapping-root', '5'], 'cannot perform fix with an overridden mapping root'],
    ];
    for (const [args, text] of refusals) {
      const theirs = await real('thin_check', '--clear-needs-check-flag', ...args, path);
      assert.equal(theirs.code, 1);
      assert.equal(theirs.stderr.split('\n')[0], text);
      assert.deepEqual(await dmkit(thinCheck, '--clear-needs-check-flag', ...args, path), { code: 1, stdout: '', stderr: `${text}\n` });
    }
    assert.deepEqual(await readFile(path), img, 'a refused fix writes nothing');
    const ours = await dmkit(thinCheck, '--clear-needs-check-flag', path);
    assert.equal(ours.code, 0, ours.stderr);
    assert.match(ours.stderr, /\ncleared needs_check flag\n$/);
    const after = await readFile(path);
    assert.deepEqual(after.subarray(BLOCK), img.subarray(BLOCK), 'only the superblock is written');
    assert.equal(after.readUInt32LE(4), 0);
    assert.equal((await real('thin_check', path)).code, 0);
    assert.match((await real('thin_dump', path)).stdout, /^<superblock [^>]* flags="0" /);
    // Already clear: nothing to do, nothing said.
    const again = await dmkit(thinCheck, '--clear-needs-check-flag', path);
    assert.equal(again.code, 0);
    assert.doesNotMatch(again.stderr, /cleared/);
    assert.deepEqual(await readFile(path), after);
  });

  it('--clear-needs-check-flag refuses while a leak remains, as 0.9.0; --auto-repair frees it, clears the flag, keeps the mappings', async () => {
    const img = await baseImage();
    setMetadataCount(img, IMAGE_BYTES / BLOCK - 1, 2);
    setFlags(img, 1);
    const theirPath = await fileOf(img);
    const ourPath = await fileOf(img);
    const dumpBefore = (await real('thin_dump', '--skip-mappings', ourPath)).stdout.replace('flags="1"', 'flags="0"');
    const mappingsBefore = (await real('thin_dump', ourPath)).stdout.replace('flags="1"', 'flags="0"');
    assert.equal((await real('thin_check', '--clear-needs-check-flag', theirPath)).code, 1);
    const refused = await dmkit(thinCheck, '--clear-needs-check-flag', ourPath);
    assert.equal(refused.code, 1);
    assert.doesNotMatch(refused.stderr, /cleared/);
    assert.deepEqual(await readFile(ourPath), img);

    const theirs = await real('thin_check', '--auto-repair', theirPath);
    assert.equal(theirs.code, 0, theirs.stderr);
    assert.match(theirs.stderr, /fixed metadata leaks\ncleared needs_check flag\n$/);
    const ours = await dmkit(thinCheck, '--auto-repair', ourPath);
    assert.equal(ours.code, 0, ours.stderr);
    assert.match(ours.stderr, /metadata reference counts differ for block 1023, expected 0, but got 2\nfixed metadata leaks\ncleared needs_check flag\n$/);
    const check = await real('thin_check', ourPath);
    assert.equal(check.code, 0, check.stderr);
    assert.equal((await dmkit(thinCheck, ourPath)).code, 0);
    assert.equal((await real('thin_dump', ourPath)).stdout, mappingsBefore);
    assert.equal((await real('thin_dump', '--skip-mappings', ourPath)).stdout, dumpBefore);
  });

  it('-m checks the metadata snapshot; --override-mapping-root walks another mapping root', async () => {
    const img = await baseImage();
    const path = await fileOf(img);
    for (const tool of [(p: string) => real('thin_check', '-m', p), (p: string) => dmkit(thinCheck, '-m', p)]) {
      const none = await tool(path);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /^No metadata snapshot found\.$/m);
    }
    const device = await FileDevice.open(path);
    const md = await ThinMetadata.open(device);
    await md.reserveMetadataSnap();
    await md.deleteDevice(3);
    await md.commit();
    await md.close();
    await device.close();
    assert.equal((await real('thin_check', '-m', path)).code, 0);
    assert.equal((await dmkit(thinCheck, '-m', path)).code, 0);
    const elsewhere = ['--override-mapping-root', String(IMAGE_BYTES / BLOCK - 1), path];
    assert.equal((await real('thin_check', ...elsewhere)).code, 1);
    const ours = await dmkit(thinCheck, ...elsewhere);
    assert.equal(ours.code, 1);
    assert.match(ours.stderr, /mapping tree: .*metadata block 1023/);
  });

  it('--auto-repair frees a leaked data block too (dmkit counts data references); a count too high for a used block is left alone', async () => {
    const img = await baseImage();
    const plain = (await dmkit(thinDump, await fileOf(img))).stdout;
    setDataCount(img, 19999, 1); // never mapped
    const path = await fileOf(img);
    assert.equal((await real('thin_check', path)).code, 0, '0.9.0 does not see it');
    const ours = await dmkit(thinCheck, '--auto-repair', path);
    assert.equal(ours.code, 0, ours.stderr);
    assert.match(ours.stderr, /data reference counts differ for block 19999, expected 0, but got 1\nfixed metadata leaks\n$/);
    assert.deepEqual(await dmkit(thinCheck, '-q', path), { code: 0, stdout: '', stderr: '' });
    assert.equal((await real('thin_check', path)).code, 0);
    assert.equal((await dmkit(thinDump, path)).stdout, plain);

    const used = Buffer.from(img);
    setDataCount(used, mappingsOf(plain, 3).get(100)!, 2);
    const usedPath = await fileOf(used);
    const refused = await dmkit(thinCheck, '--auto-repair', usedPath);
    assert.equal(refused.code, 1);
    assert.doesNotMatch(refused.stderr, /fixed/);
    assert.deepEqual(await readFile(usedPath), used);
  });

  it('a data space map claiming more blocks than the metadata device has room for bitmaps of is one error (nothing is allocated for its counts)', async () => {
    const img = await baseImage();
    writeU64(img, 64, 2 ** 40); // the data space-map root's nr_blocks
    restamp(img, 0, SALT.thinSuperblock);
    const path = await fileOf(img);
    const ours = await dmkit(thinCheck, path);
    assert.equal(ours.code, 1);
    const most = (IMAGE_BYTES / BLOCK) * ENTRIES_PER_BITMAP;
    assert.deepEqual(ours.stderr.split('\n').filter((line) => line.includes('data space map')), [
      `data space map claims ${2 ** 40} blocks, more than the bitmaps ${IMAGE_BYTES / BLOCK} metadata blocks can hold (${most})`,
    ]);
  });
});

describe('repairing a pool end to end', () => {
  it('a bad leaf makes the pool read-only with needs_check; repair and clearing the flag give a writable pool with the salvaged data', async () => {
    const metaPath = await blankFile(join(dir, 'pool-meta.bin'), IMAGE_BYTES);
    const meta = await FileDevice.open(metaPath);
    const data = new MemoryDevice(65536, { name: 'data' });
    const first = await new ThinStack({ meta, data }).createPool();
    const v = await first.volume('v', 1, 64 * MiB);
    for (let b = 0; b < 300; b++) await v.write(b * 128, pattern(b, 8));
    await v.flush();
    await first.close();

    const img = await readFile(metaPath);
    const { leaves } = await mappingTree(img, 1);
    assert.ok(leaves.length >= 2);
    const lost = leaves[0]!; // not the last leaf, which opening the thin device reads (highest mapped block)
    flip(img, lost.block);
    await writeFile(metaPath, img);

    const second = await new ThinStack({ meta, data }).createPool();
    const w = await second.volume('v', 1, 64 * MiB, { existing: true });
    await assert.rejects(readSectors(w, lost.first * 128, 8), /metadata operation 'lookup' failed/);
    assert.match(second.status(), / ro discard_passdown queue_if_no_space needs_check /);
    await second.close();
    await meta.close();

    const repairedPath = await blankFile(join(dir, 'pool-meta-repaired.bin'), IMAGE_BYTES);
    assert.deepEqual(await dmkit(thinRepair, '-i', metaPath, '-o', repairedPath), { code: 0, stdout: '', stderr: '' });
    assert.match((await dmkit(thinDump, repairedPath)).stdout, /^<superblock [^>]* flags="1" /, 'NEEDS_CHECK is kept');
    assert.equal((await real('thin_check', repairedPath)).code, 0);
    const cleared = await dmkit(thinCheck, '--clear-needs-check-flag', repairedPath);
    assert.equal(cleared.code, 0, cleared.stderr);

    const repaired = await FileDevice.open(repairedPath);
    const third = await new ThinStack({ meta: repaired, data }).createPool();
    try {
      assert.match(third.status(), / rw discard_passdown queue_if_no_space - /);
      const u = await third.volume('v', 1, 64 * MiB, { existing: true });
      for (let b = 0; b < 300; b++) {
        const got = await readSectors(u, b * 128, 8);
        if (b >= lost.first && b <= lost.last) assert.ok(got.every((x) => x === 0), `block ${b} was in the lost leaf`);
        else assert.deepEqual(got, pattern(b, 8), `block ${b}`);
      }
      await u.write(lost.first * 128, pattern(1000, 8));
      await u.flush();
      assert.deepEqual(await readSectors(u, lost.first * 128, 8), pattern(1000, 8));
    } finally {
      await third.close();
      await repaired.close();
    }
    assert.equal((await real('thin_check', repairedPath)).code, 0);
  });
});
