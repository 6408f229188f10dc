/**
 * Interop with Debian's cryptsetup-bin (integrity.md §8.2, §8.3):
 * `integritysetup dump` and `blkid -p` read dmkit-formatted image files, for
 * every mode, several tag sizes and hashes, legacy and fixed layouts and a
 * separate metadata device, with every field as dmkit reports it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { IoError } from '../../src/block/errors.ts';
import { FileDevice } from '../../src/block/file-device.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import { integrityTarget } from '../../src/targets/integrity/integrity.ts';
import { blankFile, tempDir } from '../helpers/temp-dir.ts';

const dir = tempDir('dmkit-integritysetup-');

const image = (name: string, sectors: number) => blankFile(join(dir, name), sectors * 512);

/**
 * Activates `table` (length: provided, or 8) on the files, runs `during`
 * while active, then removes the device (postsuspend) and closes the files.
 */
async function withDmkit(files: Record<string, string>, params: string, during?: (registry: DeviceRegistry) => void | Promise<void>): Promise<string> {
  const targets = new TargetRegistry();
  targets.register(integrityTarget);
  const registry = new DeviceRegistry({
    targets,
    openFile: async (path) => {
      throw new IoError('ENOENT', `${path}: not attached`);
    },
  });
  for (const [name, path] of Object.entries(files)) registry.attach(name, await FileDevice.open(path));
  await registry.create('x', { table: `0 8 integrity ${params}` });
  await during?.(registry);
  const info = registry.status('x', { type: 'info' })[0]!.params;
  await registry.remove('x');
  await registry.shutdown();
  return info;
}

function dump(path: string): string {
  return execFileSync('integritysetup', ['dump', path], { encoding: 'utf8' });
}

function expectDump(path: string, fields: { version: number; il: number; tag: number; J: number; provided: number; bs: number; recalc?: number; l2bpb: number; flags: string }): void {
  assert.equal(dump(path), [
    `Info for integrity device ${path}.`,
    `superblock_version ${fields.version}`,
    `log2_interleave_sectors ${fields.il}`,
    `integrity_tag_size ${fields.tag}`,
    `journal_sections ${fields.J}`,
    `provided_data_sectors ${fields.provided}`,
    `sector_size ${fields.bs}`,
    ...(fields.recalc !== undefined ? [`recalc_sector ${fields.recalc}`] : []),
    `log2_blocks_per_bitmap ${fields.l2bpb}`,
    `flags ${fields.flags}`,
    '',
  ].join('\n'));
}

function head(path: string, bytes: number): Buffer {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(bytes);
  readSync(fd, b, 0, bytes, 0);
  closeSync(fd);
  return b;
}

test('the default format (integritysetup format\'s table) dumps as in §8.2, bytes 0x00–0x2F included; blkid knows it', async () => {
  const path = await image('default.img', 131072);
  await withDmkit({ '/a': path }, '/a 0 4 J 4 block_size:512 internal_hash:crc32c fix_padding fix_hmac');
  expectDump(path, { version: 5, il: 15, tag: 4, J: 5, provided: 129160, bs: 512, l2bpb: 15, flags: 'fix_padding fix_hmac ' });
  assert.equal(head(path, 48).toString('hex'), '696e746567727400050f04000500000088f801000000000018000000000f0000' + '0'.repeat(32));
  assert.ok(!head(path, 64).subarray(48).equals(Buffer.alloc(16)), 'the salt is random, not zero');
  const blkid = spawnSync('blkid', ['-p', path], { encoding: 'utf8' });
  assert.equal(blkid.stdout, `${path}: VERSION="5" TYPE="DM_integrity" USAGE="crypto"\n`);
});

test('every mode, tag size and hash dumps with the fields dmkit reports', async () => {
  const cases: { name: string; sectors: number; params: string; expect: Parameters<typeof expectDump>[1] }[] = [
    { name: 'sha256-4k', sectors: 524288, params: '/a 0 32 J 3 block_size:4096 internal_hash:sha256 fix_hmac',
      expect: { version: 5, il: 15, tag: 32, J: 15, provided: 516224, bs: 4096, l2bpb: 12, flags: 'fix_hmac ' } },
    { name: 'legacy', sectors: 131072, params: '/a 0 4 J 1 internal_hash:crc32c',
      expect: { version: 1, il: 15, tag: 4, J: 5, provided: 129160, bs: 512, l2bpb: 15, flags: '' } },
    { name: 'direct-crc32-tag8', sectors: 131072, params: '/a 0 8 D 3 internal_hash:crc32 interleave_sectors:8 fix_padding',
      expect: { version: 4, il: 3, tag: 8, J: 5, provided: 65088, bs: 512, l2bpb: 15, flags: 'fix_padding ' } },
    { name: 'bitmap-sha1', sectors: 131072, params: '/a 0 20 B 2 internal_hash:sha1 sectors_per_bit:8',
      expect: { version: 3, il: 15, tag: 20, J: 9, provided: 125008, bs: 512, l2bpb: 3, flags: '' } },
    { name: 'hmac-2k', sectors: 131072, params: '/a 0 32 J 4 block_size:2048 internal_hash:hmac(sha256):000102030405060708090a0b0c0d0e0f fix_padding fix_hmac',
      expect: { version: 5, il: 15, tag: 32, J: 4, provided: 128088, bs: 2048, l2bpb: 13, flags: 'fix_padding fix_hmac ' } },
    { name: 'no-hash', sectors: 131072, params: '/a 0 16 D 0',
      expect: { version: 1, il: 15, tag: 16, J: 8, provided: 125944, bs: 512, l2bpb: 15, flags: '' } },
  ];
  for (const c of cases) {
    const path = await image(`${c.name}.img`, c.sectors);
    const info = await withDmkit({ '/a': path }, c.params);
    assert.equal(Number(info.split(' ')[1]), c.expect.provided, `${c.name}: dmkit reports ${info}`);
    expectDump(path, c.expect);
  }
});

test('bitmap mode while active shows dirty_bitmap; recalculation shows recalc_sector', async () => {
  const path = await image('bitmap.img', 131072);
  let during = '';
  await withDmkit({ '/a': path }, '/a 0 4 B 2 internal_hash:crc32c fix_hmac', () => {
    during = dump(path);
  });
  assert.match(during, /\nsuperblock_version 5\n[^]*\nflags dirty_bitmap fix_hmac \n$/);
  expectDump(path, { version: 5, il: 15, tag: 4, J: 5, provided: 129160, bs: 512, l2bpb: 15, flags: 'fix_hmac ' });

  const r = await image('recalc.img', 16384);
  await withDmkit({ '/a': r }, '/a 0 4 D 2 internal_hash:crc32c recalculate', async (registry) => {
    // Wait for the background recalculation to reach the end (status field 3 = provided).
    for (;;) {
      const [, provided, recalc] = registry.status('x', { type: 'info' })[0]!.params.split(' ');
      if (recalc === provided) return;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  });
  // The flag is sticky (§3.2): it stays set with recalc_sector = provided.
  const out = dump(r);
  const provided = Number(/provided_data_sectors (\d+)/.exec(out)![1]);
  assert.match(out, new RegExp(`\\nsuperblock_version 2\\n[^]*\\nrecalc_sector ${provided}\\n[^]*\\nflags recalculating \\n$`));
});

test('a separate metadata device: the metadata file dumps as in §8.2', async () => {
  const data = await image('data.img', 131072);
  const meta = await image('meta.img', 8192);
  await withDmkit({ '/d': data, '/m': meta }, '/d 0 4 J 3 internal_hash:crc32c fix_hmac meta_device:/m');
  expectDump(meta, { version: 5, il: 0, tag: 4, J: 5, provided: 131072, bs: 512, l2bpb: 15, flags: 'fix_hmac ' });
  assert.equal(head(meta, 32).toString('hex'), '696e7465677274000500040005000000' + '0000020000000000' + '10000000' + '000f0000');
  const notIntegrity = spawnSync('integritysetup', ['dump', data], { encoding: 'utf8' });
  assert.equal(notIntegrity.status, 1);
  assert.match(notIntegrity.stderr, /is not a valid INTEGRITY device/);
});
