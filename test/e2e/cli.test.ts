/**
 * The real thing: `bin/dmkit.js serve` as a child process on a temporary data
 * dir, driven by the real `bin/dmkit.js` commands, checked for exact stdout,
 * stderr and exit status; data checked through NBD with qemu-io.
 */
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { type Daemon, Harness, type RunOptions } from '../helpers/daemon.ts';

const VERSION: string = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')).version;

/** Runs and expects exactly this stdout, no stderr, status 0. */
async function expectOut(args: string[], stdout: string, opts: Pick<RunOptions, 'stdin' | 'cwd'> = {}): Promise<void> {
  assert.deepEqual(await daemon.cli(args, opts), { stdout, stderr: '', status: 0 }, `dmkit ${args.join(' ')}`);
}

/** Runs and expects this one stderr text, nothing on stdout, status 1. */
async function expectErr(args: string[], stderr: string, opts: { stdin?: string; stdout?: string } = {}): Promise<void> {
  assert.deepEqual(await daemon.cli(args, { stdin: opts.stdin }), { stdout: opts.stdout ?? '', stderr, status: 1 }, `dmkit ${args.join(' ')}`);
}

/** Accepted connections on the control socket (/proc/net/unix lists them with its path, state 03). */
async function clientConnections(): Promise<number> {
  const lines = (await readFile('/proc/net/unix', 'utf8')).split('\n');
  return lines.filter((l) => l.endsWith(` ${daemon.socket}`) && l.split(/\s+/)[5] === '03').length;
}

let h: Harness;
let daemon: Daemon;
let disk: string;
let disk2: string;

before(async () => {
  h = await Harness.create('dmkit-e2e-');
  disk = await h.blankFile('disk.img', 16 * 1024 * 1024);
  disk2 = await h.blankFile('disk2.img', 16 * 1024 * 1024);
  await writeFile(h.path('empty.json'), '{"devices":[]}');
  daemon = await h.serve({ dataDir: h.path('data'), args: ['--config', 'empty.json'] });
});

after(() => h.cleanup());

describe('dmkit against a running daemon', () => {
  it('says when it is ready, with the bound port', () => {
    assert.equal(daemon.ready, `dmkit: serving 0 devices on 127.0.0.1:${daemon.port}, control socket ${daemon.socket}\n`);
    assert.notEqual(daemon.port, 0);
  });

  it('prints the versions and the target list', async () => {
    await expectOut(['version'], `Library version:   dmkit ${VERSION}\nDriver version:    4.50.0\n`);
    const { stdout, status } = await daemon.cli(['targets']);
    assert.equal(status, 0);
    assert.match(stdout, /^(\S+ +v\d+\.\d+\.\d+\n)+$/);
    assert.ok(stdout.endsWith('striped          v1.7.0\nlinear           v1.5.0\nerror            v1.7.0\n'), stdout);
  });

  it('reports no devices', async () => {
    await Promise.all([
      expectOut(['ls'], 'No devices found\n'),
      expectOut(['info'], 'No devices found\n'),
      expectOut(['table'], 'No devices found\n'),
      expectOut(['ls', '--json'], '[]\n'),
    ]);
  });

  it('creates from --table, stdin and a table file, and shows them as dmsetup does', async () => {
    await expectOut(['create', 'lin', '--table', `0 2048 linear ${disk} 1024`], '');
    await expectOut(['create', 'str'], '', { stdin: `# two stripes\n0 4096 striped 2 128 ${disk} 4096 ${disk2} 4096\n` });
    await writeFile(h.path('cat.table'), '0 1024 linear disk2.img 0\n1024 1024 zero\n');
    await expectOut(['create', 'cat', 'cat.table', '-u', 'CAT-UUID'], ''); // relative to the CLI's directory
    await expectOut(['create', 'empty', '--notable'], '');

    // Queries change nothing, so they run side by side.
    await Promise.all([
    expectOut(['ls'], 'cat\t(253:2)\nempty\t(253:3)\nlin\t(253:0)\nstr\t(253:1)\n'),
    expectOut(['table', 'lin'], '0 2048 linear 7:0 1024\n'),
    expectOut(['status', 'lin'], '0 2048 linear \n'),
    expectOut(['status', '--noflush', 'lin'], '0 2048 linear \n'),
    expectOut(['table'], [
      'cat: 0 1024 linear 7:1 0',
      'cat: 1024 1024 zero ',
      'empty: ',
      'lin: 0 2048 linear 7:0 1024',
      'str: 0 4096 striped 2 128 7:0 4096 7:1 4096',
      '',
    ].join('\n')),
    expectOut(['status', 'str', 'cat'], 'str: 0 4096 striped 2 7:0 7:1 1 AA\ncat: 0 1024 linear \ncat: 1024 1024 zero \n'),
    expectOut(['table', '--target', 'zero'], 'cat: 1024 1024 zero \n'),
    expectOut(['table', 'empty'], '\n'),
    expectOut(['table', '--concise', 'cat', 'lin'], 'cat,CAT-UUID,2,rw,0 1024 linear 7:1 0,1024 1024 zero ;lin,,0,rw,0 2048 linear 7:0 1024\n'),
    expectOut(['deps', 'str'], '2 dependencies\t: (7, 1) (7, 0)\n'),
    expectOut(['deps', 'empty', 'lin'], 'empty: 0 dependencies\t:\nlin: 1 dependencies\t: (7, 0)\n'),
    expectOut(['info', 'cat'], [
      'Name:              cat',
      'State:             ACTIVE',
      'Read Ahead:        256',
      'Tables present:    LIVE',
      'Open count:        0',
      'Event number:      0',
      'Major, minor:      253, 2',
      'Number of targets: 2',
      'UUID: CAT-UUID',
      '',
      '',
    ].join('\n')),
    expectOut(['info', 'empty'], [
      'Name:              empty',
      'State:             ACTIVE',
      'Tables present:    None',
      'Open count:        0',
      'Event number:      0',
      'Major, minor:      253, 3',
      'Number of targets: 0',
      '',
      '',
    ].join('\n')),
    ]);
  });

  it('stages, suspends, resumes and clears tables', async () => {
    await expectOut(['load', 'lin', '--table', '0 2048 zero'], '');
    await expectOut(['suspend', 'lin'], '');
    const info = (await daemon.cli(['info', 'lin'])).stdout;
    assert.match(info, /^State:             SUSPENDED\n/m);
    assert.match(info, /^Tables present:    LIVE & INACTIVE\n/m);
    await expectOut(['table', '--inactive', 'lin'], '0 2048 zero \n');
    await expectOut(['resume', 'lin'], '');
    await expectOut(['table', 'lin'], '0 2048 zero \n');
    await expectOut(['reload', 'lin'], '', { stdin: `0 2048 linear ${disk} 1024\n` });
    await expectOut(['clear', 'lin'], '');
    assert.match((await daemon.cli(['info', 'lin'])).stdout, /^State:             ACTIVE\nRead Ahead:        256\nTables present:    LIVE\n/m);
    await expectOut(['table', 'lin'], '0 2048 zero \n');
  });

  it('prints --json results', async () => {
    const r = await daemon.cli(['info', 'lin', '--json']);
    assert.equal(r.status, 0);
    assert.deepEqual(JSON.parse(r.stdout), {
      name: 'lin', uuid: '', major: 253, minor: 0, suspended: false, readOnly: false, liveTable: true, inactiveTable: false,
      openCount: 0, eventNr: 0, targetCount: 1, readAhead: 256, sectors: 2048,
    });
    const table = JSON.parse((await daemon.cli(['--json', 'table', 'cat'])).stdout);
    assert.deepEqual(table.targets, [{ start: 0, length: 1024, type: 'linear', params: '7:1 0' }, { start: 1024, length: 1024, type: 'zero', params: '' }]);
    const all = JSON.parse((await daemon.cli(['deps', '--json'])).stdout);
    assert.deepEqual(all.map((d: { device: { name: string } }) => d.device.name), ['cat', 'empty', 'lin', 'str']);
    const err = await daemon.cli(['remove', 'nosuch', '--json']);
    assert.equal(err.status, 1);
    assert.deepEqual(JSON.parse(err.stderr), { error: { command: 'remove', device: 'nosuch', code: 'ENXIO', message: 'nosuch: no such device' } });
  });

  it('reports errors in one line with the device and the errno, and exit status 1', async () => {
    await expectErr(['create', 'lin', '--table', '0 8 zero'], 'dmkit: create lin: a device of that name exists (-EBUSY)\n');
    await expectErr(['create', 'x', '--table', '0 100 linear /nonexistent 0'], 'dmkit: create x: line 1: 253:4: linear: Device lookup failed (-ENOENT)\n');
    await expectErr(['create', 'x', '--table', 'garbage'], 'dmkit: create x: line 1: invalid format: expected "<start> <length> <target> [<args>...]", got "garbage" (-EINVAL)\n');
    const linInfo = (await daemon.cli(['info', 'lin'])).stdout;
    await Promise.all([
      expectErr(['table', 'nosuch'], 'dmkit: table nosuch: no such device (-ENXIO)\n'),
      expectErr(['info', 'nosuch'], 'Device does not exist.\n'),
      expectErr(['status', 'nosuch'], 'Device does not exist.\n'),
      expectErr(['info', 'lin', 'nosuch'], 'Device does not exist.\n', { stdout: linInfo }),
      expectErr(['message', 'lin', '0', 'hello'], 'dmkit: message lin: zero: Target type does not support messages (-EINVAL)\n'),
      expectErr(['message', 'lin', '1x', 'hello'], 'dmkit: message lin: Invalid sector.\n'),
      expectErr(['create'], 'dmkit: create: missing device name (usage: dmkit create NAME [--table LINE]... [--file F | TABLE_FILE] [-u UUID] [-r|--readonly] [--notable])\n'),
      expectErr(['frob'], 'dmkit: unknown command "frob" (see "dmkit help")\n'),
      expectErr(['replay-log', '--log', h.path('no-log')], `Couldn't open log ${h.path('no-log')}: 2\n`), // offline, its own texts
      expectOut(['ls'], 'cat\t(253:2)\nempty\t(253:3)\nlin\t(253:0)\nstr\t(253:1)\n'), // the failed creates left nothing
      h.cli(['--socket', h.path('none.sock'), 'ls']).then((unreachable) => assert.deepEqual(unreachable, {
        stdout: '',
        stderr: `dmkit: cannot reach the dmkit daemon at ${h.path('none.sock')} (ENOENT); is "dmkit serve" running?\n`,
        status: 1,
      })),
    ]);
  });

  it('waits for an event: the removal of the device', async () => {
    await expectOut(['create', 'w', '--table', '0 8 zero'], '');
    await expectOut(['wait', 'w', '7'], ''); // the event number already differs from 7
    const waiting = daemon.cli(['wait', 'w']);
    // The waiter's request follows its connect at once; the next command's process start is far slower.
    while ((await clientConnections()) === 0) await delay(20);
    assert.match((await daemon.cli(['info', 'w'])).stdout, /^Event number:      0$/m);
    await expectOut(['remove', 'w'], ''); // removing a device with a live table raises an event
    assert.deepEqual(await waiting, { stdout: '', stderr: '', status: 0 });
  });

  it('serves a device over NBD: qemu-io writes land at the mapped offset of the backing file', async () => {
    const backing = await h.blankFile('nbd.img', 4 * 1024 * 1024);
    await expectOut(['create', 'nbdlin', '--table', `0 4096 linear ${backing} 2048`], '');
    const url = daemon.uri('nbdlin');
    const io = await h.run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'read -P 0xab 0 64k', url]);
    assert.equal(io.status, 0, io.stderr);
    assert.match(io.stdout, /wrote 65536\/65536 bytes at offset 0/);
    assert.match(io.stdout, /read 65536\/65536 bytes at offset 0/);
    // Sector 0 of nbdlin is sector 2048 of the file: 1 MiB in.
    const file = await h.run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xab 1M 64k', '-c', 'read -P 0 0 1M', '-c', 'read -P 0 1088k 64k', backing]);
    assert.equal(file.status, 0, file.stderr);
    assert.doesNotMatch(file.stdout, /Pattern verification failed/);
    assert.equal((file.stdout.match(/^read /gm) ?? []).length, 3);

    // A table may stand on an NBD export: here the daemon's own, read back through a second export.
    await expectOut(['create', 'overnbd', '--table', `0 128 linear ${url} 0`], '');
    await expectOut(['table', 'overnbd'], '0 128 linear 43:0 0\n');
    const through = await h.run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xab 0 64k', daemon.uri('overnbd')]);
    assert.equal(through.status, 0, through.stderr);
    assert.match(through.stdout, /^read 65536\/65536 bytes at offset 0$/m);
    await expectOut(['remove', 'overnbd'], '');

    // A connected client holds the device: remove fails as on Linux, remove --force disconnects it.
    const client = h.spawn('qemu-io', ['-f', 'raw', url]);
    let out = '';
    const seen = async (text: string): Promise<void> => {
      while (!out.includes(text)) await delay(20);
    };
    client.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    client.stdin.write('read -P 0xab 0 512\n');
    await seen('read 512/512 bytes at offset 0');
    await expectErr(['remove', 'nbdlin'], 'dmkit: remove nbdlin: device is in use (open count 1) (-EBUSY)\n');
    await expectOut(['remove', '--force', 'nbdlin'], '');
    client.stdin.write('read 0 512\n');
    await seen('read failed');
    client.stdin.end('quit\n');
    await new Promise((resolve) => client.on('close', resolve));
    assert.doesNotMatch((await daemon.cli(['ls'])).stdout, /^nbdlin\t/m);
  });

  it('keeps every device across a restart (state.json), and exits 0 on SIGTERM with the socket removed', async () => {
    const before = await Promise.all([daemon.cli(['ls']), daemon.cli(['table']), daemon.cli(['info'])]);
    assert.equal(await daemon.stop(), 0, daemon.stderr());
    await assert.rejects(stat(daemon.socket), /ENOENT/);
    daemon = await daemon.restart();
    assert.match(daemon.stderr(), /state\.json exists, so config .*empty\.json is not applied/);
    assert.deepEqual(await Promise.all([daemon.cli(['ls']), daemon.cli(['table']), daemon.cli(['info'])]), before);
  });
});

describe('dmkit serve start-up', () => {
  it('creates the devices of a config file, paths relative to the file', async () => {
    await writeFile(h.path('dmkit.json'), JSON.stringify({ devices: [{ name: 'c0', table: ['0 1024 linear disk.img 0'], uuid: 'C0' }, { name: 'c1', table: ['0 1024 linear /dev/mapper/c0 0'], readOnly: true }] }));
    const served = await h.serve({ dataDir: h.path('config-data'), args: ['--config', 'dmkit.json'] });
    const sock = ['--socket', h.path('config-data/dmkit.sock')];
    try {
      assert.match(served.ready, /^dmkit: serving 2 devices on /);
      assert.deepEqual(await h.cli([...sock, 'table']), { stdout: 'c0: 0 1024 linear 7:0 0\nc1: 0 1024 linear 253:0 0\n', stderr: '', status: 0 });
      assert.match((await h.cli([...sock, 'info', 'c1'])).stdout, /^State:             ACTIVE \(READ-ONLY\)\n/m);
    } finally {
      assert.equal(await served.stop(), 0);
    }
  });

  it('creates the embedded default on an empty data dir, and reopens it unchanged', async () => {
    const data = h.path('default-data');
    const cli = (...args: string[]) => h.cli(['--data-dir', data, ...args]);
    let served = await h.serve({ dataDir: data });
    try {
      assert.match(served.ready, /^dmkit: serving 2 devices on /);
      assert.equal((await stat(join(data, 'thin-meta.img'))).size, 64 * 1024 * 1024);
      assert.equal((await stat(join(data, 'thin-data.img'))).size, 4 * 1024 * 1024 * 1024);
      assert.deepEqual(await cli('table'), {
        stdout: 'pool: 0 8388608 thin-pool 7:0 7:1 128 1024 0 \nvol0: 0 4194304 thin 253:0 0\n',
        stderr: '',
        status: 0,
      });
      assert.match((await cli('status', 'pool')).stdout, /^0 8388608 thin-pool 0 \d+\/16384 0\/65536 - rw discard_passdown queue_if_no_space - 1024 \n$/);
      assert.equal((await cli('status', 'vol0')).stdout, '0 4194304 thin 0 -\n');
      assert.equal((await cli('message', 'pool', '0', 'create_thin', '1')).status, 0);
    } finally {
      assert.equal(await served.stop(), 0);
    }
    // state.json recreates both devices on the same metadata: thin device 1 is still there.
    served = await served.restart();
    try {
      assert.match(served.ready, /^dmkit: serving 2 devices on /);
      const again = await cli('message', 'pool', '0', 'create_thin', '1');
      assert.equal(again.status, 1);
      assert.match(again.stderr, /Creation of new thinly-provisioned device with id 1 failed/);
    } finally {
      assert.equal(await served.stop(), 0);
    }
  });
});
