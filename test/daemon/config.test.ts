/** The config file and relative table paths. */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { readConfig } from '../../src/daemon/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { resolveTablePaths } from '../../src/daemon/table-paths.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const dir = tempDir('dmkit-config-');

before(async () => {
  await mkdir(join(dir, 'sub'));
  await writeFile(join(dir, 'sub', 'disk.img'), Buffer.alloc(1024 * 1024));
});

describe('resolveTablePaths', () => {
  it('makes existing relative files and ./ ../ words absolute, and leaves everything else', async () => {
    const base = join(dir, 'sub');
    assert.equal(await resolveTablePaths('0 8 linear disk.img 0', base), `0 8 linear ${base}/disk.img 0`);
    assert.equal(await resolveTablePaths('0 8 linear ./missing.img 16', base), `0 8 linear ${base}/missing.img 16`);
    assert.equal(await resolveTablePaths('0 8 linear ../sub/disk.img 0', base), `0 8 linear ${base}/disk.img 0`);
    assert.equal(await resolveTablePaths('0 8  striped 2 128\tdisk.img 0 7:1 0 # disk.img', base), `0 8  striped 2 128\t${base}/disk.img 0 7:1 0 # disk.img`);
    for (const line of ['0 8 linear /abs/x 0', '0 8 linear nbd://host/x 0', '0 8 linear missing.img 0', '0 8 linear dis\\k.img 0', '# 0 8 linear disk.img 0', '', 'garbage']) {
      assert.equal(await resolveTablePaths(line, base), line);
    }
  });
});

describe('readConfig', () => {
  async function configWith(text: string): Promise<string> {
    const path = join(dir, 'sub', 'dmkit.json');
    await writeFile(path, text);
    return path;
  }

  it('reads devices in order with defaults, tables resolved against the config directory', async () => {
    const path = await configWith(JSON.stringify({ devices: [{ name: 'a', table: ['0 8 linear disk.img 0'] }, { name: 'b', readOnly: true, uuid: 'U' }] }));
    assert.deepEqual(await readConfig(path), [
      { name: 'a', table: [`0 8 linear ${join(dir, 'sub', 'disk.img')} 0`], readOnly: false, uuid: '' },
      { name: 'b', table: [], readOnly: true, uuid: 'U' },
    ]);
  });

  it('names the file and the device in every error', async () => {
    const cases: [string, RegExp][] = [
      ['{"devices":', /not valid JSON/],
      ['{"disks":[]}', /expected \{"devices":\[…\]\}/],
      ['{"devices":[{"name":"a","table":"0 8 zero"}]}', /device "a": "table" must be an array of strings/],
      ['{"devices":[{"name":"a","size":1}]}', /device "a": unknown field "size"/],
      ['{"devices":[{"name":"a"},{"name":"a"}]}', /device "a": declared twice/],
      ['{"devices":[{"table":[]}]}', /device 1: "name" must be a non-empty string/],
      ['{"devices":[{"name":"a","readOnly":"yes"}]}', /device "a": "readOnly" must be true or false/],
    ];
    for (const [text, pattern] of cases) {
      const path = await configWith(text);
      await assert.rejects(readConfig(path), (err: Error) => err.message.startsWith(`config ${path}: `) && pattern.test(err.message), text);
    }
    await assert.rejects(readConfig(join(dir, 'nope.json')), /config .*nope\.json: .*ENOENT/);
  });

  it('stops the daemon start-up with the file, the device and the table error', async () => {
    const path = await configWith(JSON.stringify({ devices: [{ name: 'ok', table: ['0 8 zero'] }, { name: 'bad', table: ['0 8 linear ./nothing.img 0'] }] }));
    const dataDir = join(dir, 'data');
    await assert.rejects(
      Daemon.start({ dataDir, configFile: path, listen: [], log: () => undefined }),
      (err: Error) => err.message === `config ${path}: device "bad": line 1: 253:1: linear: Device lookup failed (-ENOENT)`,
    );
    // Nothing was recorded, so the next start applies the config again.
    await writeFile(path, JSON.stringify({ devices: [{ name: 'ok', table: ['0 8 zero'] }] }));
    const daemon = await Daemon.start({ dataDir, configFile: path, listen: [], log: () => undefined });
    try {
      assert.deepEqual(daemon.registry.list().map((d) => d.name), ['ok']);
    } finally {
      await daemon.stop();
    }
  });
});
