import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileDevice } from '../../src/block/file-device.ts';
import { blockChecksum } from '../../src/pdata/checksum.ts';
import { ThinMetadata } from '../../src/pdata/thin/metadata.ts';
import { SALT } from '../../src/pdata/validators.ts';
import { thinCheck } from '../../src/tools/thin/check.ts';
import { thinDump } from '../../src/tools/thin/dump.ts';
import { thinRestore } from '../../src/tools/thin/restore.ts';
import { captured } from '../helpers/captured.ts';
import { blankFile as blankFileAt, tempDir } from '../helpers/temp-dir.ts';
import { run } from '../nbd/helpers.ts';

/*
 * Compatibility with Debian's thin-provisioning-tools 0.9.0, used for real:
 * metadata written by thin_restore reads identically in dmkit, metadata
 * written by dmkit passes thin_check and thin_dump prints it as dmkit does.
 */

const dir = tempDir('dmkit-thin-');

/** A dmkit thin tool, in process. */
const dmkit = (tool: typeof thinDump, ...argv: string[]) => captured((io) => tool(argv, io));

/** The Debian tool of that name. */
const real = (cmd: string, ...argv: string[]) => run(cmd, argv);

const blankFile = (name: string, bytes = 8 << 20) => blankFileAt(join(dir, name), bytes);

/** XML as thin_dump prints it, for devices given as [id, [[origin, data, length, time]…], details]. */
function xml(sb: { time: number; transaction: number; version?: number; nrData: number }, devices: [number, [number, number, number, number][], [number, number, number]][]): string {
  const lines = [`<superblock uuid="" time="${sb.time}" transaction="${sb.transaction}" flags="0" version="${sb.version ?? 2}" data_block_size="128" nr_data_blocks="${sb.nrData}">`];
  for (const [id, runs, [trans, ctime, stime]] of devices) {
    const mapped = runs.reduce((n, r) => n + r[2], 0);
    lines.push(`  <device dev_id="${id}" mapped_blocks="${mapped}" transaction="${trans}" creation_time="${ctime}" snap_time="${stime}">`);
    for (const [o, d, l, t] of runs) {
      lines.push(l === 1
        ? `    <single_mapping origin_block="${o}" data_block="${d}" time="${t}"/>`
        : `    <range_mapping origin_begin="${o}" data_begin="${d}" length="${l}" time="${t}"/>`);
    }
    lines.push('  </device>');
  }
  lines.push('</superblock>');
  return `${lines.join('\n')}\n`;
}

/** Runs that cannot merge: alternating times or gaps between them. */
function scattered(n: number, start: number, dataStart: number): [number, number, number, number][] {
  return Array.from({ length: n }, (_, i) => [start + i * 3, dataStart + i * 2, 1 + (i % 3), i % 2]);
}

const SHAPES: Record<string, string> = {
  empty: xml({ time: 0, transaction: 0, nrData: 0 }, []),
  'one device, no mappings': xml({ time: 1, transaction: 5, nrData: 100 }, [[3, [], [1, 0, 1]]]),
  'ranges and singles, version 1': xml({ time: 3, transaction: 7, version: 1, nrData: 100 }, [
    [3, [[0, 1, 2, 0], [2, 3, 2, 1], [5, 5, 1, 1], [6, 7, 1, 1]], [1, 0, 0]],
    [5, [], [1, 2, 3]],
  ]),
  'deep trees with shared data blocks': xml({ time: 2, transaction: 9, nrData: 200000 }, [
    [1, scattered(6000, 0, 0), [0, 0, 1]],
    [2, scattered(6000, 0, 0), [1, 1, 1]],
    [7, [[0, 100000, 50000, 2]], [2, 2, 2]],
  ]),
};

for (const [shape, text] of Object.entries(SHAPES)) {
  test(`thin_restore'd metadata (${shape}) dumps identically in dmkit and thin_dump; dmkit restore passes thin_check`, async () => {
    const input = join(dir, `${shape}.xml`);
    await writeFile(input, text);
    const theirs = await blankFile(`${shape}-theirs.bin`);
    const restore = await real('thin_restore', '-i', input, '-o', theirs);
    assert.equal(restore.code, 0, restore.stderr);
    const theirDump = await real('thin_dump', theirs);
    assert.equal(theirDump.stdout, text);
    const ourDumpOfTheirs = await dmkit(thinDump, theirs);
    assert.equal(ourDumpOfTheirs.code, 0, ourDumpOfTheirs.stderr);
    assert.equal(ourDumpOfTheirs.stdout, text);
    assert.equal((await dmkit(thinCheck, '-q', theirs)).code, 0);

    const ours = await blankFile(`${shape}-ours.bin`);
    const restored = await dmkit(thinRestore, '-i', input, '-o', ours);
    assert.equal(restored.code, 0, restored.stderr);
    const check = await real('thin_check', ours);
    assert.equal(check.code, 0, check.stderr);
    assert.equal((await real('thin_dump', ours)).stdout, text);
    assert.equal((await dmkit(thinDump, ours)).stdout, text);
  });
}

test('dmkit-written pool metadata with snapshots, deletes and a held root passes thin_check; thin_dump [-m] agrees', async () => {
  const path = await blankFile('pool.bin', 4 << 20);
  const device = await FileDevice.open(path);
  const md = await ThinMetadata.format(device, { dataBlockSize: 128, nrDataBlocks: 50000 });
  await md.createThin(1);
  for (let v = 0; v < 3000; v++) await md.insertMapping(1, v * 2, await md.allocDataBlock());
  await md.commit();
  await md.createSnap(2, 1);
  for (let v = 0; v < 800; v++) await md.insertMapping(2, v * 5, await md.allocDataBlock());
  await md.reserveMetadataSnap();
  await md.createSnap(3, 2);
  for (let v = 100; v < 900; v++) await md.removeMapping(1, v);
  await md.deleteDevice(2);
  md.setTransactionId(0, 42);
  await md.commit();
  await md.close();
  await device.close();

  const check = await real('thin_check', path);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /TRANSACTION_ID=42/);
  for (const args of [[], ['-m']]) {
    const theirs = await real('thin_dump', ...args, path);
    const ours = await dmkit(thinDump, ...args, path);
    assert.equal(ours.code, 0, ours.stderr);
    assert.equal(ours.stdout, theirs.stdout);
    assert.ok(theirs.stdout.split('\n').length > 500);
  }
  // Round trip through the XML: restore(dump(a)) dumps the same.
  const xmlPath = join(dir, 'pool.xml');
  assert.equal((await dmkit(thinDump, '-o', xmlPath, path)).code, 0);
  const copy = await blankFile('pool-copy.bin');
  assert.equal((await dmkit(thinRestore, '-i', xmlPath, '-o', copy)).code, 0);
  assert.equal((await real('thin_dump', copy)).stdout, await readFile(xmlPath, 'utf8'));
});

test('damage: both checkers fail a flipped byte and report a leaked block as non-fatal', async () => {
  const input = join(dir, 'damage.xml');
  await writeFile(input, SHAPES['ranges and singles, version 1']!);
  const path = await blankFile('damage.bin', 1 << 20);
  assert.equal((await dmkit(thinRestore, '-i', input, '-o', path)).code, 0);
  const image = await readFile(path);

  // A leak: a free metadata block counted as used (bitmap entry of block 200 set to 1).
  const leaked = Buffer.from(image);
  const indexBlock = leaked.readUInt32LE(192 + 16); // metadata space-map root: bitmap_root = the index block
  const bitmap = leaked.readUInt32LE(indexBlock * 4096 + 16) * 4096; // index entry 0: the first bitmap
  leaked[bitmap + 16 + 50] = 0x02; // block 200 = entry 0 of byte 50: low bit
  leaked.writeUInt32LE(blockChecksum(leaked.subarray(bitmap, bitmap + 4096), SALT.bitmap), bitmap);
  await writeFile(path, leaked);
  const theirLeak = await real('thin_check', path);
  assert.equal(theirLeak.code, 1, theirLeak.stderr);
  assert.match(theirLeak.stderr, /reference counts differ for block 200, expected 0, but got 1/);
  const ourLeak = await dmkit(thinCheck, path);
  assert.equal(ourLeak.code, 1);
  assert.match(ourLeak.stderr, /reference counts differ for block 200, expected 0, but got 1/);
  assert.equal((await real('thin_check', '--ignore-non-fatal-errors', path)).code, 0);
  assert.equal((await dmkit(thinCheck, '--ignore-non-fatal-errors', path)).code, 0);

  // A flipped byte in a mapping leaf.
  const flipped = Buffer.from(image);
  const details = flipped.readUInt32LE(328);
  flipped[details * 4096 + 40] ^= 0x10;
  await writeFile(path, flipped);
  assert.equal((await real('thin_check', path)).code, 1);
  const ours = await dmkit(thinCheck, path);
  assert.equal(ours.code, 1);
  assert.match(ours.stderr, /checksum/);
  assert.equal((await dmkit(thinDump, path)).code, 1);
});

test('a data block mapped by 300 devices: its count, past what a byte holds, is compared exactly', async () => {
  const input = join(dir, 'shared.xml');
  const devices = Array.from({ length: 300 }, (_, id): [number, [number, number, number, number][], [number, number, number]] => [id, [[0, 5, 1, 0], [1, 10 + id, 1, 0]], [0, 0, 0]]);
  await writeFile(input, xml({ time: 1, transaction: 1, nrData: 1000 }, devices));
  const path = await blankFile('shared.bin');
  assert.equal((await real('thin_restore', '-i', input, '-o', path)).code, 0);
  assert.deepEqual(await dmkit(thinCheck, '-q', path), { code: 0, stdout: '', stderr: '' });

  // The data space map's ref-count tree is one leaf holding block 5's count: 300 becomes 299.
  const image = await readFile(path);
  const leaf = image.readUInt32LE(64 + 24) * 4096; // data space-map root: ref_count_root
  const max = image.readUInt32LE(leaf + 20);
  assert.deepEqual([image.readUInt32LE(leaf + 16), image.readUInt32LE(leaf + 32), image.readUInt32LE(leaf + 32 + 8 * max)], [1, 5, 300]);
  image.writeUInt32LE(299, leaf + 32 + 8 * max);
  image.writeUInt32LE(blockChecksum(image.subarray(leaf, leaf + 4096), SALT.btreeNode), leaf);
  await writeFile(path, image);
  const ours = await dmkit(thinCheck, path);
  assert.equal(ours.code, 1);
  assert.match(ours.stderr, /\ndata reference counts differ for block 5, expected 300, but got 299\n$/);
});
