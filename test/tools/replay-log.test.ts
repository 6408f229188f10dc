import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { strtoull } from '../../src/tools/replay-log/options.ts';
import { runReplayLog } from '../../src/tools/replay-log/replay-log.ts';
import { captured } from '../helpers/captured.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { buildLog, type TestEntry } from './log-image.ts';

const dir = tempDir('dmkit-replay-log-');

const replayLog = (...argv: string[]) => captured((io) => runReplayLog(argv, io));

/** The test vector of log-writes §9 (sectorsize 512). */
const VECTOR: TestEntry[] = [
  { sector: 2048, nr: 8, flags: 0x0, fill: 0x41 },
  { sector: 0, nr: 0, flags: 0x1 },
  { sector: 0, nr: 0, flags: 0x8, mark: 'mkfs' },
  { sector: 100, nr: 1, flags: 0x12, fill: 0x42 },
  { sector: 4096, nr: 16, flags: 0x4 },
  { sector: 3000, nr: 2, flags: 0x0, fill: 0x43 },
  { sector: 10, nr: 1, flags: 0x3, fill: 0x44 },
  { sector: 0, nr: 0, flags: 0x8, mark: 'dm-log-writes-end' },
];

/** The same entries with sectorsize 4096 (§9, last paragraph): the first write, 4 KiB at 1 MiB, counts in 4096-byte sectors; the rest keep their numbers. */
const VECTOR_4K: TestEntry[] = [{ sector: 256, nr: 1, flags: 0x0, fill: 0x41 }, ...VECTOR.slice(1)];

let n = 0;
async function file(content: Buffer): Promise<string> {
  const path = join(dir, `f${n++}`);
  await writeFile(path, content);
  return path;
}

const zeroTarget = () => file(Buffer.alloc(4 << 20));

describe('replay-log on the log-writes §9 test vector', () => {
  let L: string;
  before(async () => {
    L = await file(buildLog(512, VECTOR));
    assert.equal((await readFile(L)).length, 10752);
  });

  it('info, --num-entries and find results match fstests replay-log', async () => {
    assert.deepEqual(await replayLog('--log', L), { code: 0, stdout: 'Log version=1, sectorsize=512, entries=8\n', stderr: '' });
    assert.deepEqual(await replayLog('--log', L, '--num-entries'), { code: 0, stdout: '8\n', stderr: '' });
    assert.deepEqual(await replayLog('--log', L, '--find', '--end-mark', 'mkfs'), { code: 0, stdout: '2@12\n', stderr: '' });
    assert.deepEqual(await replayLog('--log', L, '--find', '--end-mark', 'mkf'), { code: 1, stdout: '', stderr: "Couldn't find entry\n" });
    assert.deepEqual(await replayLog('--log', L, '--find', '--next-fua'), { code: 0, stdout: '3@14\n', stderr: '' });
    assert.deepEqual(await replayLog('--log', L, '--find', '--next-flush', '--start-entry', '2'), { code: 0, stdout: '6@20\n', stderr: '' });
    assert.deepEqual(
      await replayLog('--log', L, '--find', '--next-flush', '--end-mark', 'dm-log-writes-end'),
      { code: 0, stdout: '7@21\n', stderr: '' },
    );
    assert.deepEqual(await replayLog('--log', L, '--find', '--limit', '3'), { code: 0, stdout: '2@12\n', stderr: '' });
    assert.deepEqual(await replayLog('--log', L, '--find'), { code: 1, stdout: '', stderr: "Couldn't find entry\n" });
  });

  it('-v replay onto a zeroed 4 MiB file gives the documented lines and image (SHA-256)', async () => {
    const T = await zeroTarget();
    const r = await replayLog('--log', L, '--replay', T, '-v');
    assert.equal(r.code, 0);
    assert.equal(r.stderr, '');
    assert.equal(
      r.stdout,
      [
        'replaying 0@2: sector 2048, size 4096, flags 0x0(NONE)',
        'replaying 1@11: sector 0, size 0, flags 0x1(FLUSH)',
        'replaying 2@12: sector 0, size 0, flags 0x8(MARK)',
        'replaying 3@13: sector 100, size 512, flags 0x12(FUA|METADATA)',
        'replaying 4@15: sector 4096, size 8192, flags 0x4(DISCARD)',
        "replay device doesn't support discard, switching to writing zeros",
        'replaying 5@16: sector 3000, size 1024, flags 0x0(NONE)',
        'replaying 6@19: sector 10, size 512, flags 0x3(FLUSH|FUA)',
        'replaying 7@21: sector 0, size 0, flags 0x8(MARK)',
        '',
      ].join('\n'),
    );
    const img = await readFile(T);
    assert.equal(createHash('sha256').update(img).digest('hex'), '085f323816a8e3a16fa50a696380822041ad78bdc720b951f424cf2381fc2769');
    assert.ok(img.subarray(1048576, 1052672).every((b) => b === 0x41));
    assert.ok(img.subarray(5120, 5632).every((b) => b === 0x44));
  });

  it('-vv --start-entry 3 --limit 2 prints the seek trace and stops after two entries', async () => {
    const T = await zeroTarget();
    const r = await replayLog('-vv', '--log', L, '--replay', T, '--start-entry', '3', '--limit', '2');
    assert.equal(r.code, 0);
    assert.equal(
      r.stdout,
      [
        'seek entry 0@1: 2048, size 8, flags 0x0',
        'seek entry 1@10: 0, size 0, flags 0x1',
        'seek entry 2@11: 0, size 0, flags 0x8',
        'replaying 3@13: sector 100, size 512, flags 0x12(FUA|METADATA)',
        'replaying 4@15: sector 4096, size 8192, flags 0x4(DISCARD)',
        "replay device doesn't support discard, switching to writing zeros",
        '',
      ].join('\n'),
    );
    const img = await readFile(T);
    assert.ok(img.subarray(51200, 51712).every((b) => b === 0x42));
    assert.ok(img.subarray(1048576, 1052672).every((b) => b === 0));
    assert.ok(img.subarray(1536000, 1537024).every((b) => b === 0));
  });

  it('-vv --start-mark with a sector window skips (but still discards) outside entries', async () => {
    const T = await file(Buffer.alloc(4 << 20, 0xff));
    const r = await replayLog('-vv', '--log', L, '--replay', T, '--start-mark', 'mkfs', '--start-sector', '101', '--end-sector', '3000');
    assert.equal(r.code, 0);
    assert.equal(
      r.stdout,
      [
        'seek entry 0@2: 2048, size 8, flags 0x0(NONE)',
        'seek entry 1@11: 0, size 0, flags 0x1(FLUSH)',
        'seek entry 2@12: 0, size 0, flags 0x8(MARK)',
        'skipping 3@13: sector 100, size 512, flags 0x12(FUA|METADATA)',
        'skipping 4@15: sector 4096, size 8192, flags 0x4(DISCARD)',
        "replay device doesn't support discard, switching to writing zeros",
        'replaying 5@16: sector 3000, size 1024, flags 0x0(NONE)',
        'skipping 6@19: sector 10, size 512, flags 0x3(FLUSH|FUA)',
        'replaying 7@21: sector 0, size 0, flags 0x8(MARK)',
        '',
      ].join('\n'),
    );
    const img = await readFile(T);
    assert.ok(img.subarray(4096 * 512, 4096 * 512 + 8192).every((b) => b === 0), 'discard performed');
    assert.ok(img.subarray(100 * 512, 101 * 512).every((b) => b === 0xff), 'entry 3 skipped');
    assert.ok(img.subarray(1536000, 1537024).every((b) => b === 0x43));
  });

  it('--no-discard leaves the discarded range alone', async () => {
    const T = await file(Buffer.alloc(4 << 20, 0xff));
    assert.equal((await replayLog('--log', L, '--replay', T, '--no-discard')).code, 0);
    const img = await readFile(T);
    assert.ok(img.subarray(4096 * 512, 4096 * 512 + 8192).every((b) => b === 0xff));
  });

  it('--end-mark that does not exist replays the whole log, exit 0', async () => {
    const T = await zeroTarget();
    assert.deepEqual(await replayLog('--log', L, '--replay', T, '--end-mark', 'nosuchmark'), { code: 0, stdout: '', stderr: '' });
    const img = await readFile(T);
    assert.equal(createHash('sha256').update(img).digest('hex'), '085f323816a8e3a16fa50a696380822041ad78bdc720b951f424cf2381fc2769');
  });

  it('--end-mark stops after the mark; FLUSH entries do not stop it even with --next-flush', async () => {
    const T = await zeroTarget();
    const r = await replayLog('-v', '--log', L, '--replay', T, '--next-flush', '--end-mark', 'mkfs');
    assert.equal(r.stdout.trim().split('\n').length, 3);
  });

  it('--check flush runs the command after each FLUSH entry; a failing check stops with exit 1', async () => {
    const T = await zeroTarget();
    const counter = join(dir, 'counter');
    await writeFile(counter, '');
    const ok = await replayLog('--log', L, '--replay', T, '--check', 'flush', '--fsck', `echo run >> ${counter}`);
    assert.equal(ok.code, 0);
    assert.equal(await readFile(counter, 'utf8'), 'run\nrun\n');
    assert.deepEqual(await replayLog('--log', L, '--replay', T, '--check', '3', '--fsck', 'false'), {
      code: 1, stdout: '', stderr: 'Fsck errored out on entry 2\n',
    });
    await writeFile(counter, '');
    assert.equal((await replayLog('--log', L, '--replay', T, '--check', 'discard', '--fsck', `echo d >> ${counter}`)).code, 0);
    assert.equal(await readFile(counter, 'utf8'), 'd\n');
    // The check sees the image as replayed so far: after entry 3 only entries 0..3 are there.
    const probe = await replayLog('--log', L, '--replay', T, '--check', 'fua', '--fsck', `od -An -tx1 -j 5120 -N 1 ${T}`);
    assert.equal(probe.code, 0);
    assert.deepEqual(probe.stdout.trim().split('\n').map((s) => s.trim()), ['44', '44']);
  });

  it('refuses bad start positions and option combinations like replay-log', async () => {
    assert.deepEqual(await replayLog('--log', L, '--replay', await zeroTarget(), '--start-entry', '8'), {
      code: 1, stdout: '', stderr: 'Invalid entry number\n',
    });
    assert.deepEqual(await replayLog('--log', L, '--start-mark', 'nope'), { code: 1, stdout: '', stderr: "Couldn't find starting mark\n" });
    const noCheck = await replayLog('--log', L, '--fsck', 'true');
    assert.equal(noCheck.code, 1);
    assert.match(noCheck.stderr, /^Usage: replay-log --log <logfile> \[options\]\n/);
    assert.equal((await replayLog('--log', L, '--check', 'flush')).code, 1);
    assert.deepEqual(await replayLog('--log', L, '--check', '0', '--fsck', 'true'), { code: 1, stdout: '', stderr: 'Invalid entry number\n' });
    assert.deepEqual(await replayLog('--log', L, '--limit', '3x'), { code: 1, stdout: '', stderr: 'Invalid entry number\n' });
    assert.deepEqual(await replayLog('--log', L, '--start-sector', 'x'), { code: 1, stdout: '', stderr: 'Invalid sector number\n' });
    assert.deepEqual(await replayLog('--log', join(dir, 'missing')), { code: 1, stdout: '', stderr: `Couldn't open log ${join(dir, 'missing')}: 2\n` });
    assert.deepEqual(await replayLog('--log', L, '--replay', join(dir, 'missing')), {
      code: 1, stdout: '', stderr: `Couldn't open replay file ${join(dir, 'missing')}: 2\n`,
    });
  });
});

describe('replay-log option parsing (glibc getopt_long)', () => {
  it('parses numbers with strtoull(…, 0)', () => {
    assert.deepEqual(strtoull('0x10'), { value: 16n, whole: true });
    assert.deepEqual(strtoull('010'), { value: 8n, whole: true });
    assert.deepEqual(strtoull('08'), { value: 0n, whole: false });
    assert.deepEqual(strtoull('0x'), { value: 0n, whole: false });
    assert.deepEqual(strtoull('-1'), { value: (1n << 64n) - 1n, whole: true });
    assert.deepEqual(strtoull('99999999999999999999999'), { value: (1n << 64n) - 1n, whole: true });
    assert.deepEqual(strtoull(''), { value: 0n, whole: true });
    assert.deepEqual(strtoull(' 7'), { value: 7n, whole: true });
    assert.deepEqual(strtoull('abc'), { value: 0n, whole: false });
  });

  it('resolves abbreviations to the first option in table order, and reports real ambiguity', async () => {
    const L = await file(buildLog(512, VECTOR));
    assert.deepEqual(await replayLog('--log', L, '--find', '--start', '2', '--n'), { code: 0, stdout: '6@20\n', stderr: '' });
    assert.deepEqual(await replayLog(`--lo=${L}`, '--fi', '--end-m=mkfs'), { code: 0, stdout: '2@12\n', stderr: '' });
    assert.deepEqual(await replayLog('--log', L, '--nu'), { code: 0, stdout: '8\n', stderr: '' });
    const amb = await replayLog('--log', L, '--f');
    assert.equal(amb.code, 1);
    assert.match(amb.stderr, /^replay-log: option '--f' is ambiguous; possibilities: '--find' '--fsck'\nUsage: /);
    const num = await replayLog('--log', L, '--number-entries');
    assert.equal(num.code, 1);
    assert.match(num.stderr, /^replay-log: unrecognized option '--number-entries'\nUsage: /);
    const miss = await replayLog('--log');
    assert.match(miss.stderr, /^replay-log: option '--log' requires an argument\nUsage: /);
    const extra = await replayLog('--log', L, '--find=1');
    assert.match(extra.stderr, /^replay-log: option '--find' doesn't allow an argument\nUsage: /);
    const short = await replayLog('-vx', '--log', L);
    assert.match(short.stderr, /^replay-log: invalid option -- 'x'\nUsage: /);
    const none = await replayLog('stray');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /^Usage: /);
    // Non-options are ignored; `--` ends the options.
    assert.deepEqual(await replayLog('junk', '--log', L, 'more', '--', '--find'), {
      code: 0, stdout: 'Log version=1, sectorsize=512, entries=8\n', stderr: '',
    });
    // dmkit's own options need their full names: --e still means --end-mark.
    assert.deepEqual(await replayLog('--log', L, '--find', '--e', 'mkfs'), { code: 0, stdout: '2@12\n', stderr: '' });
  });
});

describe('replay-log on damaged logs (log-writes §9 negative vectors)', () => {
  const variant = async (patch: (img: Buffer) => void) => {
    const img = buildLog(512, VECTOR);
    patch(img);
    return file(img);
  };

  it('refuses bad super blocks and empty logs', async () => {
    const v2 = await variant((img) => img.writeBigUInt64LE(2n, 8));
    assert.deepEqual(await replayLog('--log', v2), { code: 1, stdout: '', stderr: 'Version mismatch, wanted 1, have 2\n' });
    const zero = await variant((img) => img.fill(0, 0, 512));
    assert.deepEqual(await replayLog('--log', zero), { code: 1, stdout: '', stderr: "Magic doesn't match\n" });
    const empty = await variant((img) => img.writeBigUInt64LE(0n, 16));
    assert.deepEqual(await replayLog('--log', empty, '--num-entries'), { code: 1, stdout: '', stderr: 'Invalid entry number\n' });
    assert.deepEqual(await replayLog('--log', empty, '--start-mark', 'x'), { code: 1, stdout: '', stderr: "Couldn't find starting mark\n" });
    const truncated = await file(Buffer.alloc(512));
    assert.deepEqual(await replayLog('--log', truncated), { code: 1, stdout: '', stderr: "Magic doesn't match\n" });
  });

  it('stops at malformed headers: exit 1 when replaying, 255 in find mode', async () => {
    const dirty = await variant((img) => (img[10 * 512 + 32] = 1));
    assert.deepEqual(await replayLog('--log', dirty, '--replay', await zeroTarget()), { code: 1, stdout: '', stderr: 'Malformed entry @10\n' });
    assert.deepEqual(await replayLog('--log', dirty, '--find', '--end-mark', 'x'), { code: 255, stdout: '', stderr: 'Malformed entry @10\n' });
    const flags = await variant((img) => img.writeBigUInt64LE(0x18n, 11 * 512 + 16));
    assert.deepEqual(await replayLog('--log', flags, '--replay', await zeroTarget()), { code: 1, stdout: '', stderr: 'Malformed entry @11\n' });
    const more = await variant((img) => img.writeBigUInt64LE(9n, 16));
    const r = await replayLog('--log', more, '--replay', await zeroTarget());
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^Error reading entry: \d+\n$/);
    assert.equal((await replayLog('--log', more, '--find', '--end-mark', 'x')).code, 255);
  });
});

describe('replay-log with 4096-byte sectors', () => {
  it('uses the log sectorsize for positions and sizes', async () => {
    const L = await file(buildLog(4096, VECTOR_4K));
    assert.equal((await replayLog('--log', L)).stdout, 'Log version=1, sectorsize=4096, entries=8\n');
    assert.equal((await replayLog('--log', L, '--find', '--next-fua')).stdout, '3@7\n');
    assert.equal((await replayLog('--log', L, '--find', '--end-mark', 'dm-log-writes-end')).stdout, '7@14\n');
    const T = await file(Buffer.alloc(32 << 20));
    const r = await replayLog('-v', '--log', L, '--replay', T);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], 'replaying 0@2: sector 256, size 4096, flags 0x0(NONE)');
    assert.equal(lines[1], 'replaying 1@4: sector 0, size 0, flags 0x1(FLUSH)');
    assert.ok(lines.includes('replaying 4@8: sector 4096, size 65536, flags 0x4(DISCARD)'));
    const img = await readFile(T);
    assert.ok(img.subarray(256 * 4096, 257 * 4096).every((b) => b === 0x41));
    assert.ok(img.subarray(3000 * 4096, 3002 * 4096).every((b) => b === 0x43));
  });
});

describe('replay-log --explore', () => {
  /** Runs `steps` through a log-writes target over memory devices and returns the finished log as a file. */
  async function recordLog(steps: (t: import('../../src/targets/log-writes/log-writes.ts').LogWritesTarget) => Promise<void>): Promise<string> {
    const { MemoryDevice } = await import('../../src/block/memory-device.ts');
    const { LogWritesTarget, logWritesTarget } = await import('../../src/targets/log-writes/log-writes.ts');
    const { fakeContext } = await import('../helpers/target-context.ts');
    const data = new MemoryDevice(128);
    const logdev = new MemoryDevice(1024);
    const t = await logWritesTarget.construct(fakeContext({ d: data, l: logdev }, { length: 128 }), ['d', 'l']);
    assert.ok(t instanceof LogWritesTarget);
    await steps(t);
    await t.close();
    return file(logdev.peek(0, 1024 * 512));
  }
  const block = (v: number) => Buffer.alloc(4096, v);
  const byteAt = (img: Buffer, off: number) => img[off]!;

  it('finds a state where two blocks written before a flush disagree, and the printed line reproduces it', async () => {
    const L = await recordLog(async (t) => {
      for (let g = 1; g <= 3; g++) {
        await t.write(0, block(g), {});
        await t.write(8, block(g), {});
        await t.flush();
      }
    });
    const T = await file(Buffer.alloc(128 * 512));
    const counter = join(dir, 'explore-bad');
    const check = `a=$(od -An -tu1 -N1 -j0 ${T}); b=$(od -An -tu1 -N1 -j4096 ${T}); echo x >> ${counter}; [ "$a" -eq "$b" ]`;
    const r = await replayLog('--log', L, '--replay', T, '--explore', '--fsck', check);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines[0], 'explore: state 2 failed: crash at entry 2 (FLUSH), kept 1 of 2 volatile writes; omitted entries 1');
    assert.equal(lines[1], `reproduce: dmkit replay-log --log ${L} --replay ${T} --limit 3 --explore-state 2 --seed 0 --fsck '${check}'`);
    assert.equal((await readFile(counter, 'utf8')).split('\n').length - 1, 2, 'stopped at the first failing state');
    let img = await readFile(T);
    assert.deepEqual([byteAt(img, 0), byteAt(img, 4096)], [1, 0], 'the target is left in the failing state');

    // Run the reproduce line (split by the shell) on a fresh target.
    await writeFile(T, Buffer.alloc(128 * 512));
    const { execFileSync } = await import('node:child_process');
    const words = execFileSync('/bin/sh', ['-c', `eval "set -- ${lines[1]!.slice('reproduce: '.length).replace(/["$`\\]/g, '\\$&')}"; printf '%s\\0' "$@"`])
      .toString().split('\0').slice(0, -1);
    assert.deepEqual(words.slice(0, 2), ['dmkit', 'replay-log']);
    const again = await replayLog(...words.slice(2));
    assert.equal(again.code, 1);
    assert.equal(again.stdout, 'explore state 2: crash at entry 2 (FLUSH), kept 1 of 2 volatile writes; omitted entries 1\n');
    assert.equal(again.stderr, 'Fsck errored out on explore state 2\n');
    img = await readFile(T);
    assert.deepEqual([byteAt(img, 0), byteAt(img, 4096)], [1, 0]);
  });

  it('passes a shadow-then-commit workload, checking every state it counts', async () => {
    const L = await recordLog(async (t) => {
      for (let g = 1; g <= 3; g++) {
        const slot = (g % 2) * 16;
        await t.write(slot, block(g), {});
        await t.write(slot + 8, block(g), {});
        await t.flush();
        await t.write(64, block(g), {});
        await t.flush();
      }
    });
    const T = await file(Buffer.alloc(128 * 512));
    const counter = join(dir, 'explore-good');
    const check =
      `c=$(od -An -tu1 -N1 -j32768 ${T}); echo x >> ${counter}; [ "$c" -eq 0 ] && exit 0; ` +
      `o=$(( (c % 2) * 8192 )); a=$(od -An -tu1 -N1 -j$o ${T}); b=$(od -An -tu1 -N1 -j$((o + 4096)) ${T}); ` +
      `[ "$a" -eq "$c" ] && [ "$b" -eq "$c" ]`;
    const r = await replayLog('--log', L, '--replay', T, '--explore', '--fsck', check);
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    // 3 rounds × (data flush: 4 states + commit flush: 2 states) + the end mark: 1 state.
    assert.equal(r.stdout, 'explore: 19 states checked at 7 crash points, all passed\n');
    assert.equal((await readFile(counter, 'utf8')).split('\n').length - 1, 19);
    // The target ends as a full replay leaves it.
    const img = await readFile(T);
    assert.deepEqual([byteAt(img, 32768), byteAt(img, 16 * 512), byteAt(img, 24 * 512)], [3, 3, 3]);
  });

  it('--start-mark replays the log up to the mark whole and explores only after it', async () => {
    const L = await recordLog(async (t) => {
      await t.write(80, block(9), {}); // set-up: a crash before its flush could lose it
      await t.flush();
      await t.message(['mark', 'setup']); // (log-writes logs a mark at once, writes at the next flush)
      await t.write(0, block(1), {});
      await t.flush();
    });
    const T = await file(Buffer.alloc(128 * 512));
    const check = `[ "$(od -An -tu1 -N1 -j${80 * 512} ${T})" -eq 9 ]`;
    const all = await replayLog('--log', L, '--replay', T, '--explore', '--fsck', check);
    assert.equal(all.code, 1, 'without a start, states that lose the set-up are explored');
    await writeFile(T, Buffer.alloc(128 * 512));
    const after = await replayLog('--log', L, '--replay', T, '--explore', '--start-mark', 'setup', '--fsck', check);
    assert.deepEqual([after.code, after.stderr], [0, '']);
    assert.equal(after.stdout, 'explore: 3 states checked at 2 crash points, all passed\n'); // the flush, and the mark logged at close
  });

  it('large volatile sets get single omissions and seeded random subsets, the same for the same seed', async () => {
    const L = await recordLog(async (t) => {
      for (let i = 0; i < 6; i++) await t.write(i * 8, block(i + 1), {});
      await t.flush();
    });
    const T = await file(Buffer.alloc(128 * 512));
    const a = await replayLog('-v', '--log', L, '--replay', T, '--explore', '--fsck', 'true', '--seed', '7');
    const b = await replayLog('-v', '--log', L, '--replay', T, '--explore', '--fsck', 'true', '--seed', '7');
    assert.equal(a.code, 0);
    assert.equal(a.stdout, b.stdout);
    const states = a.stdout.trim().split('\n').slice(0, -1);
    assert.equal(states[0], 'explore state 1: crash at entry 6 (FLUSH), kept 0 of 6 volatile writes; omitted entries 0 1 2 3 4 5');
    for (let i = 0; i < 6; i++) {
      assert.equal(states[1 + i], `explore state ${2 + i}: crash at entry 6 (FLUSH), kept 5 of 6 volatile writes; omitted entries ${i}`);
    }
    assert.match(states.at(-2)!, /crash at entry 6 \(FLUSH\), kept 6 of 6 volatile writes$/);
    assert.match(states.at(-1)!, /crash at entry 7 \(MARK\), kept 0 of 0 volatile writes$/);
    assert.ok(states.length > 9 && states.length <= 13, `${states.length} states`);
    assert.match(a.stdout, /explore: \d+ states checked at 2 crash points, all passed\n$/);
    // --explore needs a check command (or one state to materialise).
    assert.equal((await replayLog('--log', L, '--replay', T, '--explore')).code, 1);
    assert.deepEqual(await replayLog('--log', L, '--replay', T, '--explore-state', '999'), { code: 1, stdout: '', stderr: 'Invalid state number\n' });
  });
});
