/** The command line itself: parsing, usage errors and help, without a daemon. */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { runCli } from '../../src/cli/main.ts';
import { parseListen } from '../../src/cli/serve-command.ts';
import { captured } from '../helpers/captured.ts';

const cli = (argv: string[]) =>
  captured((io) => runCli(argv, { ...io, stdin: Readable.from([]), env: { DMKIT_SOCKET: '/nonexistent/dmkit-test.sock' }, cwd: '/' }));

describe('dmkit command line', () => {
  it('prints help on stdout for help and --help, on stderr with status 1 for nothing', async () => {
    const help = await cli(['help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: dmkit \[--socket PATH\] \[--data-dir DIR\] \[--json\] COMMAND/);
    for (const name of ['serve', 'create', 'load', 'reload', 'suspend', 'resume', 'clear', 'remove', 'ls', 'info', 'table', 'status', 'deps', 'message', 'wait', 'targets', 'version', 'replay-log']) {
      assert.match(help.stdout, new RegExp(`^  ${name}( |$)`, 'm'), name);
    }
    assert.deepEqual(await cli(['--help']), { ...help });
    const none = await cli([]);
    assert.deepEqual(none, { stdout: '', stderr: help.stdout, code: 1 });
    assert.deepEqual(await cli(['help', 'wait']), { stdout: "usage: dmkit wait [--progress] NAME [EVENT_NR]\n  block until the device's event number differs from EVENT_NR (default 0); --progress: follow its resync or hydration to the end\n", stderr: '', code: 0 });
    assert.deepEqual(await cli(['clear', '--help']), { stdout: 'usage: dmkit clear NAME\n  drop the inactive table\n', stderr: '', code: 0 });
    assert.equal((await cli(['help', 'status'])).stdout, "usage: dmkit status [--inactive] [--target TYPE] [--noflush] [NAME...]\n  show the targets' status; thin-pool and clone commit first unless --noflush\n");
  });

  it('reports usage errors in one line before contacting the daemon', async () => {
    const cases: [string[], string][] = [
      [['ls', 'extra'], 'dmkit: ls: unexpected argument "extra" (usage: dmkit ls)\n'],
      [['clear'], 'dmkit: clear: missing device name (usage: dmkit clear NAME)\n'],
      [['message', 'a', '0'], 'dmkit: message: missing argument (usage: dmkit message NAME SECTOR WORD...)\n'],
      [['info', '--bogus'], "dmkit: info: unknown option '--bogus' (usage: dmkit info [--inactive] [NAME...])\n"],
      [['wait', 'a', 'x'], 'dmkit: wait: invalid event number "x" (usage: dmkit wait [--progress] NAME [EVENT_NR])\n'],
      [['create', 'a', '--table', '0 8 zero', 'file.table'], 'dmkit: create: give the table once: --table, --file or a table file (usage: dmkit create NAME [--table LINE]... [--file F | TABLE_FILE] [-u UUID] [-r|--readonly] [--notable])\n'],
      [['create', 'a', '/nonexistent/t.table'], 'dmkit: create: table file /nonexistent/t.table: No such file or directory\n'],
      [['serve', '--listen', 'localhost'], 'dmkit: serve: --listen localhost: expected HOST:PORT, e.g. 127.0.0.1:10809 or [::1]:0 (port 0: any free port) (usage: dmkit serve [--config FILE] [--data-dir DIR] [--socket PATH] [--listen HOST:PORT]... [--unix PATH]... [--read-only])\n'],
    ];
    for (const [argv, stderr] of cases) assert.deepEqual(await cli(argv), { stdout: '', stderr, code: 1 }, argv.join(' '));
  });

  it('names the socket it cannot reach, from --socket, DMKIT_SOCKET or the data dir', async () => {
    const reach = (path: string) => `dmkit: cannot reach the dmkit daemon at ${path} (ENOENT); is "dmkit serve" running?\n`;
    assert.deepEqual(await cli(['ls']), { stdout: '', stderr: reach('/nonexistent/dmkit-test.sock'), code: 1 });
    assert.deepEqual(await cli(['--socket', '/nonexistent/x.sock', 'ls']), { stdout: '', stderr: reach('/nonexistent/x.sock'), code: 1 });
    const viaDir = await runCli(['ls', '--data-dir', 'nowhere'], {
      stdin: Readable.from([]), stdout: { write: () => true }, stderr: { write: (s: string) => assert.equal(s, reach('/tmp/nowhere/dmkit.sock')) }, env: {}, cwd: '/tmp',
    });
    assert.equal(viaDir, 1);
    // The library line comes before the driver is asked, as dmsetup prints it.
    const v = await cli(['version']);
    assert.match(v.stdout, /^Library version:   dmkit \d+\.\d+\.\d+\n$/);
    assert.equal(v.code, 1);
    const json = await cli(['ls', '--json']);
    assert.equal(JSON.parse(json.stderr).error.command, 'ls');
  });
});

describe('parseListen', () => {
  it('takes HOST:PORT and [IPV6]:PORT, port 0 included', () => {
    assert.deepEqual(parseListen('127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseListen('localhost:65535'), { host: 'localhost', port: 65535 });
    for (const bad of ['127.0.0.1', ':10809', '::1:10809', 'host:65536', 'host:-1', 'host:1x', '']) assert.equal(parseListen(bad), undefined, bad);
  });
});
