/**
 * `npm run crash` (CRASH-TESTING §2.7) as a user runs it, in a child
 * process: it lists every target and broken variant, explores each target
 * that is not a basic stack for one seed on a small budget, reports a broken
 * variant with a non-zero exit, the seed, family and failed check, and the
 * rerun line it prints reproduces the same violation.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

import { BUILTIN_STACKS } from '../../src/crash/targets/basic.ts';
import { BROKEN_CRASH_TARGETS, CRASH_TARGETS } from '../../src/crash/targets/index.ts';
import { run } from '../nbd/helpers.ts';

const CLI = fileURLToPath(new URL('../../src/crash/cli.ts', import.meta.url));
const crash = (args: string[]) => run(process.execPath, ['--import', 'tsx', CLI, ...args], 60_000);

describe('npm run crash', () => {
  it('names each built-in target and broken variant as the target it builds', async () => {
    for (const [name, build] of Object.entries({ ...CRASH_TARGETS, ...BROKEN_CRASH_TARGETS })) assert.equal((await build()).name, name);
  });

  it('--help lists every target and every broken variant', async () => {
    const r = await crash(['--help']);
    assert.equal(r.code, 0, r.stderr);
    const listed = r.stdout.split('\n').filter((l) => /^ {2}\S+$/.test(l)).map((l) => l.trim());
    assert.deepEqual(listed, [...Object.keys(CRASH_TARGETS), ...Object.keys(BROKEN_CRASH_TARGETS)]);
  });

  it('explores thin, clone, mirror and integrity for one seed', async () => {
    const basic = new Set(BUILTIN_STACKS.map((s) => s.name));
    const names = Object.keys(CRASH_TARGETS).filter((n) => !basic.has(n));
    const r = await crash([...names.flatMap((n) => ['--target', n]), '--seed', '1', '--ops', '8', '--states', '4']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.map((l) => l.split(' ')[0]), names);
    for (const line of lines) assert.match(line, /^\S+ seed 1: ok \(persistence 4, all-none 4, single 4, subsets 4, torn 4, .*\)$/);
  });

  it('reports a broken variant with exit 1, and its rerun line reruns the same failure', async () => {
    const r = await crash(['--target', 'mirror-seed-bug', '--seed', '1', '--ops', '16', '--family', 'persistence', '--states', '30', '--minimise-ms', '0']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^mirror-seed-bug seed 1: FAILED /);
    for (const part of ['crash explorer: mirror-seed-bug: checker check failed', 'seed:     1', 'family:   persistence']) {
      assert.ok(r.stdout.includes(part), `the report lacks "${part}":\n${r.stdout}`);
    }
    const violated = /^ {2}violated: (.*)$/m.exec(r.stdout)?.[1];
    assert.match(violated ?? '', /is clean in the on-disk log but its legs differ at power-on/);
    const rerun = /^ {2}rerun: {4}npm run crash -- (.*)$/m.exec(r.stdout)?.[1];
    assert.equal(rerun, '--seed 1 --target mirror-seed-bug --ops 16 --family persistence --states 30 --minimise-ms 0');
    const again = await crash(rerun!.split(' '));
    assert.equal(again.code, 1, again.stdout + again.stderr);
    assert.ok(again.stdout.includes(`violated: ${violated}`), again.stdout);
  });

  it('rejects an unknown target with exit 2 and one line naming it', async () => {
    const r = await crash(['--target', 'thinn', '--seed', '1']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^crash: no crash target thinn in the built-in targets \(has: linear, .*thin, .*\)\nusage: /);
  });
});
