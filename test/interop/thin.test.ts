/**
 * Thin volumes and snapshots served over NBD to the real Debian clients
 * (qemu-io, fio with verify, nbdinfo --map, nbdcopy), on a pool in files,
 * and the metadata checked by Debian's thin-provisioning-tools after every
 * scenario: thin_check passes and thin_dump's mappings are the model's. A
 * pool built by thin_restore, with data written at its mapped blocks, reads
 * back through dmkit.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { FileDevice } from '../../src/block/file-device.ts';
import { RegistryExports } from '../../src/daemon/exports.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { NbdServer } from '../../src/nbd/server.ts';
import { builtinTargets } from '../../src/targets/index.ts';
import { BIN } from '../helpers/daemon.ts';
import { blankFile, tempDir } from '../helpers/temp-dir.ts';
import { run } from '../nbd/helpers.ts';

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
let registry: DeviceRegistry;
let server: NbdServer;
let port: number;
/** The model: virtual blocks each thin device has mapped. */
const model = new Map<number, Set<number>>();

const uri = (name: string) => `nbd://127.0.0.1:${port}/${name}`;
const meta = () => join(dir, 'meta.img');

function provision(id: number, offset: number, length: number): void {
  const set = model.get(id) ?? new Set<number>();
  for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) set.add(b);
  model.set(id, set);
}

async function qemuIo(name: string, ...commands: string[]): Promise<string> {
  const r = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri(name)]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/);
  return r.stdout;
}

/** thin_dump's mappings as { dev → vblocks }. */
function parseDump(xml: string): Map<number, Set<number>> {
  const out = new Map<number, Set<number>>();
  let dev = -1;
  for (const line of xml.split('\n')) {
    const d = /<device dev_id="(\d+)"/.exec(line);
    if (d) out.set((dev = Number(d[1])), new Set());
    const r = /<range_mapping origin_begin="(\d+)" data_begin="\d+" length="(\d+)"/.exec(line);
    if (r) for (let i = 0; i < Number(r[2]); i++) out.get(dev)!.add(Number(r[1]) + i);
    const s = /<single_mapping origin_block="(\d+)"/.exec(line);
    if (s) out.get(dev)!.add(Number(s[1]));
  }
  return out;
}

/** Commits (a flush of every volume), then Debian's thin_check and thin_dump must agree with the model. */
async function checkMetadata(volumes: string[]): Promise<void> {
  for (const v of volumes) await registry.get(v).flush();
  const check = await run('thin_check', [meta()]);
  assert.equal(check.code, 0, check.stderr);
  const dump = await run('thin_dump', [meta()]);
  assert.equal(dump.code, 0, dump.stderr);
  const dumped = parseDump(dump.stdout);
  for (const [id, blocks] of model) {
    assert.deepEqual([...(dumped.get(id) ?? [])].sort((a, b) => a - b), [...blocks].sort((a, b) => a - b), `thin device ${id}`);
  }
}

after(async () => {
  await server.close();
  await registry.shutdown();
});

const dir = tempDir('dmkit-thin-'); // removed after the server and the pool are closed

before(async () => {
  registry = new DeviceRegistry({ targets: builtinTargets(), openFile: (path) => FileDevice.open(path) });
  await blankFile(meta(), 16 * MiB);
  await blankFile(join(dir, 'data.img'), 256 * MiB);
  await registry.create('pool', { table: [`0 ${(256 * MiB) / 512} thin-pool ${meta()} ${join(dir, 'data.img')} 128 0`] });
  server = new NbdServer(new RegistryExports(registry, false));
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  port = typeof addr === 'string' ? 0 : addr.port;
});

describe('thin volumes over NBD with the Debian tools', () => {
  it('qemu-io: partial and full blocks, zeroes where nothing is provisioned', async () => {
    await registry.message('pool', 0, ['create_thin', '1']);
    await registry.create('vol', { table: [`0 ${(64 * MiB) / 512} thin /dev/mapper/pool 1`] });
    await qemuIo('vol', 'write -P 0xab 4k 8k', 'write -P 0xcd 1M 64k', 'write -P 0x11 3M 200k', 'flush');
    provision(1, 4096, 8192);
    provision(1, MiB, 65536);
    provision(1, 3 * MiB, 200 * 1024);
    await qemuIo('vol', 'read -P 0 0 4k', 'read -P 0xab 4k 8k', 'read -P 0 12k 52k', 'read -P 0xcd 1M 64k',
      'read -P 0x11 3M 200k', 'read -P 0 2M 1M', 'read -P 0 32M 1M');
    assert.equal(registry.status('vol', { type: 'info' })[0]!.params, `${(1 + 1 + 4) * 128} ${Math.floor((3 * MiB + 200 * 1024) / BLOCK) * 128 + 127}`);
    await checkMetadata(['vol']);
  });

  it('snapshots: each side keeps its own data (qemu-io), nbdinfo --map shows the holes', async () => {
    await registry.message('pool', 0, ['create_snap', '2', '1']);
    model.set(2, new Set(model.get(1)));
    await registry.create('snap', { table: [`0 ${(64 * MiB) / 512} thin /dev/mapper/pool 2`] });
    await qemuIo('vol', 'write -P 0xee 4k 4k', 'write -P 0x77 10M 64k');
    provision(1, 10 * MiB, 65536);
    await qemuIo('snap', 'write -P 0x55 1M 4k');
    await qemuIo('snap', 'read -P 0xab 4k 8k', 'read -P 0x55 1M 4k', 'read -P 0xcd 1028k 60k', 'read -P 0 10M 64k');
    await qemuIo('vol', 'read -P 0xee 4k 4k', 'read -P 0xab 8k 4k', 'read -P 0xcd 1M 64k', 'read -P 0x77 10M 64k');
    const map = await run('nbdinfo', ['--map', uri('vol')]);
    assert.equal(map.code, 0, map.stderr);
    const lines = map.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
    // offset length type description
    assert.deepEqual(lines[0]!.slice(0, 2), ['0', String(BLOCK)]);
    assert.equal(lines[0]![3], 'data');
    assert.deepEqual(lines[1]!.slice(0, 2), [String(BLOCK), String(MiB - BLOCK)]);
    assert.equal(lines[1]![3], 'hole,zero');
    assert.equal(lines[lines.length - 1]![3], 'hole,zero');
    await checkMetadata(['vol', 'snap']);
  });

  it('fio random writes with crc32c verify on a volume and on a snapshot', async () => {
    for (const [name, id] of [['vol', 1], ['snap', 2]] as const) {
      const r = await run('fio', ['--name=verify', '--ioengine=nbd', `--uri=${uri(name)}`, '--rw=randwrite', '--offset=16M',
        '--bs=4k', '--size=4M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=terse'], 60_000);
      assert.equal(r.code, 0, r.stderr);
      const fields = r.stdout.trim().split('\n').pop()!.split(';');
      assert.equal(fields[4], '0', `fio on ${name} reports no error`);
      provision(id, 16 * MiB, 4 * MiB);
    }
    await checkMetadata(['vol', 'snap']);
  });

  it('nbdcopy of a sparse image into a new volume keeps it sparse and byte-identical', async () => {
    await registry.message('pool', 0, ['create_thin', '3']);
    await registry.create('copy', { table: [`0 ${(32 * MiB) / 512} thin /dev/mapper/pool 3`] });
    const img = Buffer.alloc(32 * MiB);
    img.fill(0x31, 0, 3 * BLOCK);
    img.fill(0x32, 20 * MiB, 20 * MiB + 5000);
    const src = join(dir, 'sparse.img');
    await writeFile(src, img);
    const to = await run('nbdcopy', ['--flush', src, uri('copy')]);
    assert.equal(to.code, 0, to.stderr);
    provision(3, 0, 3 * BLOCK);
    provision(3, 20 * MiB, 5000);
    const out = join(dir, 'copy-out.img');
    const from = await run('nbdcopy', [uri('copy'), out]);
    assert.equal(from.code, 0, from.stderr);
    assert.ok((await readFile(out)).equals(img), 'copied back byte for byte');
    await checkMetadata(['copy']);
  });
});

describe('dmkit thin dump|check|restore (the CLI) next to the Debian tools', () => {
  it('dmkit thin dump prints what thin_dump prints, dmkit thin check passes, a restore round-trips', async () => {
    for (const v of ['vol', 'snap', 'copy']) await registry.get(v).flush();
    const dmkit = (...args: string[]) => run(process.execPath, [BIN, 'thin', ...args]);
    const ours = await dmkit('dump', meta());
    const theirs = await run('thin_dump', [meta()]);
    assert.equal(ours.code, 0, ours.stderr);
    assert.equal(ours.stdout, theirs.stdout);
    const check = await dmkit('check', meta());
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /^TRANSACTION_ID=0\nMETADATA_FREE_BLOCKS=\d+\n$/);
    const xml = join(dir, 'dump.xml');
    await writeFile(xml, ours.stdout);
    const copy = await blankFile(join(dir, 'restored-copy.img'), 16 * MiB);
    const restored = await dmkit('restore', '-i', xml, '-o', copy);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal((await run('thin_dump', [copy])).stdout, theirs.stdout, 'dump → dmkit restore → thin_dump round trip');
  });
});

describe('a pool restored by thin_restore', () => {
  it('reads back, through dmkit, the data written at the restored mappings', async () => {
    const xml = [
      '<superblock uuid="" time="1" transaction="4" data_block_size="128" nr_data_blocks="64">',
      '  <device dev_id="7" mapped_blocks="3" transaction="2" creation_time="0" snap_time="1">',
      '    <range_mapping origin_begin="0" data_begin="10" length="2" time="0"/>',
      '    <single_mapping origin_block="9" data_block="40" time="1"/>',
      '  </device>',
      '</superblock>',
    ].join('\n');
    const meta2 = await blankFile(join(dir, 'restored-meta.img'), 4 * MiB);
    const data2 = join(dir, 'restored-data.img');
    await writeFile(join(dir, 'r.xml'), `${xml}\n`);
    const restored = await run('thin_restore', ['-i', join(dir, 'r.xml'), '-o', meta2]);
    assert.equal(restored.code, 0, restored.stderr);
    const data = Buffer.alloc(64 * BLOCK);
    data.fill(0xa0, 10 * BLOCK, 11 * BLOCK);
    data.fill(0xa1, 11 * BLOCK, 12 * BLOCK);
    data.fill(0xa9, 40 * BLOCK, 41 * BLOCK);
    data.fill(0xee, 20 * BLOCK, 21 * BLOCK); // an unmapped block: must never show
    await writeFile(data2, data);
    await registry.create('rpool', { table: [`0 ${(64 * BLOCK) / 512} thin-pool ${meta2} ${data2} 128 0`] });
    assert.match(registry.status('rpool', { type: 'info' })[0]!.params, /^4 \d+\/1024 3\/64 - rw /);
    await registry.create('rvol', { table: [`0 ${(16 * BLOCK) / 512} thin /dev/mapper/rpool 7`] });
    assert.equal(registry.status('rvol', { type: 'info' })[0]!.params, `${3 * 128} ${10 * 128 - 1}`);
    await qemuIo('rvol', 'read -P 0xa0 0 64k', 'read -P 0xa1 64k 64k', 'read -P 0 128k 448k', 'read -P 0xa9 576k 64k', 'read -P 0 640k 384k');
    // Writing to a block the restored snapshot time marks as shared copies it; the restored data stays.
    await qemuIo('rvol', 'write -P 0x42 4k 4k', 'read -P 0x42 4k 4k', 'read -P 0xa0 0 4k', 'read -P 0xa0 8k 56k', 'flush');
    // The server lets go of the export once it has seen qemu-io's connection close.
    for (let i = 0; i < 200 && registry.info('rvol').openCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
    await registry.remove('rvol');
    await registry.remove('rpool');
    const check = await run('thin_check', [meta2]);
    assert.equal(check.code, 0, check.stderr);
    assert.deepEqual([...parseDump((await run('thin_dump', [meta2])).stdout).get(7)!].sort((a, b) => a - b), [0, 1, 9]);
  });
});
