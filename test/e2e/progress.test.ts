/**
 * `dmkit wait --progress` follows a mirror's initial resync to the end
 * (ARCHITECTURE §7): a line each time the count changes when stdout is not a
 * terminal, the last one saying every region is in sync.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, test } from 'node:test';
import { type Daemon, Harness } from '../helpers/daemon.ts';

const MiB = 1024 * 1024;
const h = await Harness.create('dmkit-progress-');
let d: Daemon | undefined;
after(async () => {
  await d?.stop();
  await h.cleanup();
});

test('wait --progress follows a resync to N/N and exits 0; --json gives the final counts', async () => {
  await writeFile(h.path('empty.json'), '{"devices":[]}');
  d = await h.serve({ dataDir: h.path('data'), args: ['--config', h.path('empty.json')] });
  const leg0 = await h.blankFile('leg0.img', 8 * MiB);
  const leg1 = await h.blankFile('leg1.img', 8 * MiB);
  // 64 KiB regions behind a 5 ms write delay on leg 1: the 128 regions take a while to copy.
  await d.dmkit('create', 'slow', '--table', `0 16384 delay ${leg1} 0 0 ${leg1} 0 5`);
  await d.dmkit('create', 'm', '--table', `0 16384 mirror core 1 128 2 ${leg0} 0 /dev/mapper/slow 0`);
  const lines = (await d.dmkit('wait', '--progress', 'm')).trimEnd().split('\n');
  assert.ok(lines.length >= 1);
  for (const line of lines) assert.match(line, /^m: \[[#.]{30}\] +\d+% \d+\/128 regions in sync$/);
  assert.equal(lines.at(-1), `m: [${'#'.repeat(30)}] 100% 128/128 regions in sync`);
  assert.deepEqual(JSON.parse(await d.dmkit('wait', '--progress', '--json', 'm')), [
    { start: 0, type: 'mirror', what: 'regions in sync', done: 128, total: 128 },
  ]);
  assert.equal(await d.dmkit('wait', '--progress', 'slow'), 'slow: no background work\n');
});
