/**
 * dmsetup's output formats (basic-targets §6), as golden strings: every
 * expected text below is what lvm2's dmsetup prints for the same state.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  NO_DEVICES, formatConcise, formatDeps, formatDeviceError, formatDriverVersion, formatInfo, formatLibraryVersion,
  formatLs, formatMessageReply, formatProgress, formatTable, formatTargets,
} from '../../src/cli/format.ts';
import type { DeviceInfo, TableResult } from '../../src/daemon/protocol.ts';

function device(over: Partial<DeviceInfo> = {}): DeviceInfo {
  return {
    name: 'lin', uuid: '', major: 253, minor: 0, suspended: false, readOnly: false, liveTable: true,
    inactiveTable: false, openCount: 0, eventNr: 0, targetCount: 1, readAhead: 256, sectors: 2048, ...over,
  };
}

describe('info', () => {
  it('prints the long format of a linear device right after create (§6.4 example)', () => {
    assert.equal(formatInfo(device()), [
      'Name:              lin',
      'State:             ACTIVE',
      'Read Ahead:        256',
      'Tables present:    LIVE',
      'Open count:        0',
      'Event number:      0',
      'Major, minor:      253, 0',
      'Number of targets: 1',
      '',
      '',
    ].join('\n'));
  });

  it('shows SUSPENDED and LIVE & INACTIVE after load + suspend', () => {
    const text = formatInfo(device({ suspended: true, inactiveTable: true }));
    assert.match(text, /^State:             SUSPENDED\n/m);
    assert.match(text, /^Tables present:    LIVE & INACTIVE\n/m);
  });

  it('has no Read Ahead line and "None" before the first load, and the UUID line with one space', () => {
    assert.equal(formatInfo(device({ name: 'empty', liveTable: false, targetCount: 0, readAhead: null, uuid: 'U-1', minor: 3, openCount: 2, eventNr: 7 })), [
      'Name:              empty',
      'State:             ACTIVE',
      'Tables present:    None',
      'Open count:        2',
      'Event number:      7',
      'Major, minor:      253, 3',
      'Number of targets: 0',
      'UUID: U-1',
      '',
      '',
    ].join('\n'));
  });

  it('shows INACTIVE alone and READ-ONLY', () => {
    const text = formatInfo(device({ liveTable: false, inactiveTable: true, readOnly: true, suspended: true }));
    assert.match(text, /^State:             SUSPENDED \(READ-ONLY\)\n/m);
    assert.match(text, /^Tables present:    INACTIVE\n/m);
  });
});

describe('ls', () => {
  it('prints NAME<TAB>(MAJOR:MINOR) per device (§6.5)', () => {
    assert.equal(formatLs([device(), device({ name: 'str', minor: 1 })]), 'lin\t(253:0)\nstr\t(253:1)\n');
  });
  it('prints "No devices found" with none', () => {
    assert.equal(formatLs([]), 'No devices found\n');
    assert.equal(NO_DEVICES, 'No devices found\n');
  });
});

describe('table and status (§6.6)', () => {
  const lin: TableResult = { device: device(), targets: [{ start: 0, length: 2048, type: 'linear', params: '7:0 1024' }] };
  const linStatus: TableResult = { device: device(), targets: [{ start: 0, length: 2048, type: 'linear', params: '' }] };
  const empty: TableResult = { device: device({ name: 'e', liveTable: false, targetCount: 0 }), targets: [] };

  it('prints start length type params for a single device', () => {
    assert.equal(formatTable(lin, { multiple: false }), '0 2048 linear 7:0 1024\n');
  });

  it('keeps the trailing space when the target text is empty', () => {
    assert.equal(formatTable(linStatus, { multiple: false }), '0 2048 linear \n');
    assert.equal(formatTable(linStatus, { multiple: true }), 'lin: 0 2048 linear \n');
  });

  it('prefixes every line with NAME: in multiple-device mode', () => {
    const two: TableResult = {
      device: device({ name: 'cat', targetCount: 2 }),
      targets: [
        { start: 0, length: 1024, type: 'linear', params: '7:0 0' },
        { start: 1024, length: 1024, type: 'zero', params: '' },
      ],
    };
    assert.equal(formatTable(two, { multiple: true }), 'cat: 0 1024 linear 7:0 0\ncat: 1024 1024 zero \n');
  });

  it('prints one empty line (NAME: and a space in multiple mode) for a device without a table', () => {
    assert.equal(formatTable(empty, { multiple: false }), '\n');
    assert.equal(formatTable(empty, { multiple: true }), 'e: \n');
  });

  it('prints nothing for a device without a table when --target filters', () => {
    assert.equal(formatTable(empty, { multiple: true, target: 'linear' }), '');
  });

  it('prints nothing for a device whose targets --target filtered out', () => {
    assert.equal(formatTable({ device: device(), targets: [] }, { multiple: true, target: 'zero' }), '');
  });
});

describe('table --concise (§6.6)', () => {
  it('prints name,uuid,minor,rw then the targets', () => {
    const lin: TableResult = { device: device(), targets: [{ start: 0, length: 2048, type: 'linear', params: '7:0 0' }] };
    assert.equal(formatConcise([lin]), 'lin,,0,rw,0 2048 linear 7:0 0\n');
  });

  it('puts every device on one line separated by ; and escapes , ; \\ in name, uuid and params', () => {
    const odd: TableResult = {
      device: device({ name: 'a,b', uuid: 'u;1', minor: 4, readOnly: true, targetCount: 2 }),
      targets: [
        { start: 0, length: 8, type: 'zero', params: '' },
        { start: 8, length: 8, type: 'delay', params: 'x\\y,z 0' },
      ],
    };
    const empty: TableResult = { device: device({ name: 'e', minor: 5, targetCount: 0, liveTable: false }), targets: [] };
    assert.equal(formatConcise([odd, empty]), 'a\\,b,u\\;1,4,ro,0 8 zero ,8 8 delay x\\\\y\\,z 0;e,,5,rw\n');
  });

  it('leaves out devices with no matching target under --target, and prints nothing at all when none match', () => {
    const lin: TableResult = { device: device(), targets: [{ start: 0, length: 2048, type: 'linear', params: '7:0 0' }] };
    const filtered: TableResult = { device: device({ name: 'z' }), targets: [] };
    const empty: TableResult = { device: device({ name: 'e', targetCount: 0, liveTable: false }), targets: [] };
    assert.equal(formatConcise([lin, filtered, empty], { target: 'linear' }), 'lin,,0,rw,0 2048 linear 7:0 0\n');
    assert.equal(formatConcise([filtered, empty], { target: 'linear' }), '');
  });
});

describe('deps (§6.7)', () => {
  it('prints the count, a tab, and (major, minor) per device', () => {
    const r = { device: device({ name: 'str' }), deps: [{ major: 7, minor: 1, name: 'loop1' }, { major: 7, minor: 0, name: 'loop0' }] };
    assert.equal(formatDeps(r, { multiple: false }), '2 dependencies\t: (7, 1) (7, 0)\n');
    assert.equal(formatDeps(r, { multiple: true }), 'str: 2 dependencies\t: (7, 1) (7, 0)\n');
  });
  it('prints 0 dependencies for a device without a table', () => {
    assert.equal(formatDeps({ device: device(), deps: [] }, { multiple: false }), '0 dependencies\t:\n');
  });
});

describe('targets and version (§6.8)', () => {
  it('left-justifies names in 16 columns', () => {
    assert.equal(formatTargets([
      { name: 'striped', version: [1, 7, 0] },
      { name: 'linear', version: [1, 5, 0] },
      { name: 'a-very-long-name-x', version: [10, 0, 2] },
    ]), 'striped          v1.7.0\nlinear           v1.5.0\na-very-long-name-x v10.0.2\n');
  });
  it('prints the library and driver lines', () => {
    assert.equal(formatLibraryVersion('dmkit 0.1.0') + formatDriverVersion('4.50.0'), 'Library version:   dmkit 0.1.0\nDriver version:    4.50.0\n');
  });
});

describe('message replies and errors', () => {
  it('adds a newline to a reply unless it has one, and prints nothing for none', () => {
    assert.equal(formatMessageReply('ok'), 'ok\n');
    assert.equal(formatMessageReply('a\nb\n'), 'a\nb\n');
    assert.equal(formatMessageReply(null), '');
    assert.equal(formatMessageReply(''), '');
  });
  it('names the command and device, drops a repeated name and adds the errno once', () => {
    assert.equal(
      formatDeviceError('create', 'x', 'ENOENT', 'line 1: 253:0: linear: Device lookup failed (-ENOENT)'),
      'create x: line 1: 253:0: linear: Device lookup failed (-ENOENT)',
    );
    assert.equal(formatDeviceError('remove', 'x', 'EBUSY', 'x: device is in use (open count 1)'), 'remove x: device is in use (open count 1) (-EBUSY)');
  });
});

describe('wait --progress line', () => {
  it('draws a 30-column bar with the percentage and counts of each target', () => {
    assert.equal(formatProgress('c', [{ type: 'clone', what: 'regions hydrated', done: 1290, total: 4096 }]),
      'c: [#########.....................]  31% 1290/4096 regions hydrated');
    assert.equal(formatProgress('m', [{ type: 'mirror', what: 'regions in sync', done: 0, total: 0 }]),
      `m: [${'#'.repeat(30)}] 100% 0/0 regions in sync`);
  });
});
