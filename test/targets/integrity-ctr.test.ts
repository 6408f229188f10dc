/**
 * dm-integrity constructor acceptance/refusal with Linux's texts and errnos
 * (integrity.md §2), and the status/table lines byte for byte (§5).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { IoError } from '../../src/block/errors.ts';
import { integrityTarget } from '../../src/targets/integrity/integrity.ts';
import { memoryRegistry } from '../helpers/registry.ts';

const MiB64 = 131072;

async function refuse(params: string, message: string, code = 'EINVAL', disks: Record<string, number> = { '/a': MiB64, '/m': 8192 }, length = 8) {
  const { registry } = memoryRegistry([integrityTarget], disks);
  await assert.rejects(registry.create('x', { table: `0 ${length} integrity ${params}` }), (e: unknown) => {
    assert.ok(e instanceof IoError, String(e));
    assert.ok(e.message.includes(message), `${params}: got "${e.message}", expected "${message}"`);
    assert.equal(e.code, code, `${params}: ${e.message}`);
    return true;
  });
  await registry.shutdown();
}

test('constructor refusals carry Linux texts and errnos, in Linux order', async () => {
  await refuse('/a 0 4 J', 'Invalid argument count');
  await refuse('/nope 0 4 J 0', 'Device lookup failed', 'ENOENT');
  await refuse('/nope x 4 J 0', 'Device lookup failed', 'ENOENT'); // the device is looked up before the offset is parsed
  await refuse('/a -1 4 J 0', 'Invalid starting offset');
  await refuse('/a 0 0 J 0', 'Invalid tag size');
  await refuse('/a 0 4x J 0', 'Invalid tag size');
  await refuse('/a 0 4 j 0', 'Invalid mode (expecting J, B, D, R)');
  await refuse('/a 0 4 I 0', 'Invalid mode (expecting J, B, D, R)');
  await refuse('/a 0 4 J 2 fix_padding', 'Invalid number of feature args');
  await refuse('/a 0 4 J 19 ' + 'fix_padding '.repeat(19), 'Invalid number of feature args');
  await refuse('/a 0 4 J 1 bogus', 'Invalid argument');
  await refuse('/a 0 4 J 1 allow_discards_keyed', 'Invalid argument');
  await refuse('/a 0 4 J 1 journal_watermark:101', 'Invalid argument');
  await refuse('/a 0 4 J 1 journal_sectors:-1', 'Invalid argument');
  await refuse('/a 0 4 J 1 block_size:1000', 'Invalid block_size argument');
  await refuse('/a 0 4 J 1 block_size:8192', 'Invalid block_size argument');
  await refuse('/a 0 4 J 1 meta_device:/nope', 'Device lookup failed', 'ENOENT');
  await refuse('/a 0 4 J 1 internal_hash:crc32c:123', 'Invalid internal_hash argument');
  await refuse('/a 0 4 J 1 internal_hash:crc32c:zz', 'Invalid internal_hash argument');
  await refuse('/a 0 4 J 1 internal_hash:md4', 'Invalid internal hash', 'ENOENT');
  await refuse('/a 0 4 J 1 internal_hash:hmac(sha256)', 'Error setting internal hash key');
  await refuse('/a 0 4 J 1 internal_hash:sha256:00', 'Error setting internal hash key');
  await refuse('/a 0 4 J 1 journal_crypt:ctr(aes):00', 'Invalid journal cipher', 'ENOENT');
  await refuse('/a 0 4 J 1 journal_mac:hmac(sha256):00', 'Invalid journal mac', 'ENOENT');
  await refuse('/a 0 - J 0', 'Unknown tag size');
  await refuse('/a 0 425 J 0', 'Too big tag size');
  await refuse('/a 0 4 B 0', 'Bitmap mode can be only used with internal hash');
  await refuse('/a 0 4 J 1 allow_discards', 'Discard can be only used with internal hash');
  await refuse('/a 0 4 J 1 recalculate', 'Recalculate can only be specified with internal_hash');
  await refuse('/a 0 32 J 2 internal_hash:hmac(sha256):0011 recalculate',
    'Recalculating with HMAC is disabled for security reasons - if you really need it, use the argument "legacy_recalculate"', 'EOPNOTSUPP');
  await refuse('/a 131070 4 J 0', 'Error reading superblock', 'ENOSPC');
  await refuse('/a 0 4 J 1 journal_sectors:200000', 'Could not initialize superblock', 'EINVAL', { '/a': 20000 });
  // 1040 sectors: one 176-sector section, a 256-sector legacy run: 600 provided sectors.
  await refuse('/a 0 4 J 0', 'Not enough provided sectors for requested mapping size', 'EINVAL', { '/a': 1040 }, 601);
  await refuse('/a 0 4 J 0', 'Could not initialize superblock', 'EINVAL', { '/a': 447 });
});

test('refusals that need a superblock on disk', async () => {
  const { registry, disks } = memoryRegistry([integrityTarget], { '/a': MiB64 });
  await disks['/a']!.write(5, Buffer.alloc(512, 1));
  await assert.rejects(registry.create('x', { table: '0 8 integrity /a 0 4 J 0' }), /The device is not initialized/);
  await disks['/a']!.write(5, Buffer.alloc(512));
  await registry.create('f', { table: '0 8 integrity /a 0 4 J 1 internal_hash:crc32c' });
  await registry.remove('f');
  for (const [params, msg] of [
    ['/a 0 8 J 0', "Tag size doesn't match the information in superblock"],
    ['/a 0 4 J 1 block_size:4096', "Block size doesn't match the information in superblock"],
    ['/a 0 4 J 1 meta_device:/a', 'Invalid interleave_sectors in the superblock'],
  ] as const) {
    await assert.rejects(registry.create('x', { table: `0 8 integrity ${params}` }), (e: IoError) => e.message.includes(msg) && e.code === 'EINVAL');
  }
  const sb = Buffer.alloc(512);
  await disks['/a']!.read(0, sb);
  sb[8] = 6;
  await disks['/a']!.write(0, sb);
  await assert.rejects(registry.create('x', { table: '0 8 integrity /a 0 4 J 0' }), /Unknown version/);
  await registry.shutdown();
});

/** The table and status lines of a fresh 64 MiB volume (data 7:0, metadata 7:1), as in §5.3. */
async function lines(params: string, disks: Record<string, number> = { '/a': MiB64, '/m': 8192 }, length?: number) {
  const { registry } = memoryRegistry([integrityTarget], disks);
  await registry.create('x', { table: `0 8 integrity ${params}` });
  const info = registry.status('x', { type: 'info' })[0]!.params;
  await registry.remove('x');
  await registry.create('y', { table: `0 ${length ?? info.split(' ')[1]} integrity ${params}` });
  const table = registry.status('y', { type: 'table' })[0]!.params;
  const status = registry.status('y', { type: 'info' })[0]!.params;
  await registry.shutdown();
  return { table, status };
}

test('table and status lines of §5.3, byte for byte', async () => {
  const base = '7:0 0 4 J 4 block_size:512 internal_hash:crc32c fix_padding fix_hmac';
  assert.deepEqual(await lines(base), {
    table: '7:0 0 4 J 8 journal_sectors:880 interleave_sectors:32768 buffer_sectors:128 journal_watermark:50 commit_time:10000 fix_padding fix_hmac internal_hash:crc32c',
    status: '0 129160 -',
  });
  assert.equal((await lines('/a 0 4 D 3 internal_hash:crc32c fix_padding fix_hmac')).table,
    '7:0 0 4 D 6 journal_sectors:880 interleave_sectors:32768 buffer_sectors:128 fix_padding fix_hmac internal_hash:crc32c');
  assert.equal((await lines('/a 0 4 B 3 internal_hash:crc32c fix_padding fix_hmac')).table,
    '7:0 0 4 B 8 journal_sectors:880 interleave_sectors:32768 buffer_sectors:128 sectors_per_bit:32768 bitmap_flush_interval:10000 fix_padding fix_hmac internal_hash:crc32c');
  assert.deepEqual(await lines('/a 0 4 J 4 internal_hash:crc32c fix_padding fix_hmac meta_device:/m'), {
    table: '7:0 0 4 J 8 meta_device:7:1 journal_sectors:880 interleave_sectors:1 buffer_sectors:128 journal_watermark:50 commit_time:10000 fix_hmac internal_hash:crc32c',
    status: '0 131072 -',
  });
  // lvm2 test geometry, legacy (journal_crypt left out: dmkit refuses it).
  assert.equal((await lines('/a 0 32 J 2 journal_sectors:88 internal_hash:crc32', { '/a': 10000 })).table,
    '7:0 0 32 J 6 journal_sectors:88 interleave_sectors:32768 buffer_sectors:128 journal_watermark:50 commit_time:10000 internal_hash:crc32');
  // Effective values: buffer_sectors rounded down, watermark recomputed, bitmap interval in whole jiffies (HZ 250),
  // keys as given, sectors_per_bit raised to one 4 KiB block.
  assert.equal((await lines('/a 0 32 B 5 block_size:4096 buffer_sectors:100 bitmap_flush_interval:1001 sectors_per_bit:1 internal_hash:sha256')).table,
    '7:0 0 32 B 7 block_size:4096 journal_sectors:792 interleave_sectors:32768 buffer_sectors:64 sectors_per_bit:8 bitmap_flush_interval:1004 internal_hash:sha256');
  assert.equal((await lines('/a 0 4 J 3 journal_watermark:33 commit_time:5 internal_hash:crc32c:01020304')).table,
    '7:0 0 4 J 6 journal_sectors:880 interleave_sectors:32768 buffer_sectors:128 journal_watermark:33 commit_time:5 internal_hash:crc32c:01020304');
  assert.equal((await lines('/a 0 20 R 2 internal_hash:sha1 allow_discards')).table,
    '7:0 0 20 R 5 allow_discards journal_sectors:936 interleave_sectors:32768 buffer_sectors:128 internal_hash:sha1');
  // recalculate is printed from the superblock flag; the status shows the position (it runs to the end and stays).
  const r = await lines('/a 0 4 D 3 internal_hash:crc32c recalculate legacy_recalculate', { '/a': 4096 });
  assert.match(r.table, /^7:0 0 4 D 6 recalculate journal_sectors:176 interleave_sectors:32768 buffer_sectors:128 legacy_recalculate internal_hash:crc32c$/);
  assert.match(r.status, /^0 \d+ \d+$/);
});

test('no messages: the target declares none', async () => {
  const { registry } = memoryRegistry([integrityTarget], { '/a': MiB64 });
  await registry.create('x', { table: '0 8 integrity /a 0 4 J 1 internal_hash:crc32c' });
  await assert.rejects(registry.message('x', 0, ['anything']), /does not support messages/);
  await registry.shutdown();
});
