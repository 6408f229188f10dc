/**
 * Crash safety of state.json's commit (R2 for a file, see writeDurably):
 * StateWriter saves a run of states, some overlapping so that the coalescing
 * loop folds them, over a simulated file system; power is lost after every
 * call, with every outcome the file model allows. After each crash,
 * readState must load a state whose save() had started, complete — never a
 * torn, empty or unparseable file — and no older than the newest save()
 * that had returned. The deliberately broken writes must be caught.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import type { IoError } from '../../src/block/errors.ts';
import { type BrokenStateWrite, type StateDevice, StateWriter, readState } from '../../src/daemon/state.ts';
import { SimulatedFileSystem } from '../helpers/simulated-file-system.ts';

const DIRECTORY = '/simulated/data-dir';
const PATH = join(DIRECTORY, 'state.json');

/** The states saved, in order: state k has k devices, so each text differs from the others. */
const STATES: StateDevice[][] = Array.from({ length: 5 }, (_, k) => Array.from({ length: k }, (_, i) => ({
  name: `dev${i}`,
  uuid: `uuid-${i}`,
  minor: i,
  readOnly: i % 2 === 1,
  table: [`0 ${8 * (i + 1)} linear /images/disk${i}.img 0`],
})));

interface Run {
  fs: SimulatedFileSystem;
  /** Per state, the number of file-system calls made when its save() was called, and when it returned. */
  started: number[];
  returned: number[];
}

/**
 * Saves state 0; then state 1, with states 2 and 3 arriving while state 1 is
 * written (2 is folded into 3); then state 4.
 */
async function saveStates(broken?: BrokenStateWrite): Promise<Run> {
  const fs = new SimulatedFileSystem(DIRECTORY);
  const errors: IoError[] = [];
  const writer = new StateWriter(PATH, (err) => errors.push(err), { files: fs, broken });
  const started: number[] = [];
  const returned: number[] = [];
  const save = (k: number): Promise<void> => {
    started[k] = fs.calls;
    return writer.save(STATES[k]!).then(() => {
      returned[k] = fs.calls;
    });
  };
  await save(0);
  const overlapping: Promise<void>[] = [];
  fs.afterCall = () => {
    fs.afterCall = undefined;
    overlapping.push(save(2), save(3));
  };
  await save(1);
  await Promise.all(overlapping);
  await save(4);
  assert.deepEqual(errors, []);
  assert.deepEqual(await readState(PATH, fs), STATES[4]);
  return { fs, started, returned };
}

/** The newest state whose event (save() called or returned) came within the first `calls` calls; -1 if none. */
function newestBefore(events: number[], calls: number): number {
  let newest = -1;
  events.forEach((at, k) => {
    if (at <= calls) newest = k;
  });
  return newest;
}

/** Every crash state of a run; returns how many there were and each violation found. */
async function crashStates({ fs, started, returned }: Run): Promise<{ explored: number; violations: string[] }> {
  let explored = 0;
  const violations: string[] = [];
  for (const point of fs.crashPoints) {
    const newestReturned = newestBefore(returned, point.calls);
    for (const outcome of point.outcomes(PATH)) {
      explored++;
      const where = `power lost after call ${point.calls} (${point.call}), ${outcome.how}`;
      const files = new Map(outcome.content ? [[PATH, outcome.content]] : []);
      let loaded: StateDevice[] | undefined;
      try {
        loaded = await readState(PATH, SimulatedFileSystem.restarted(DIRECTORY, files));
      } catch (err) {
        violations.push(`${where}: ${(err as Error).message}`);
        continue;
      }
      const k = loaded === undefined ? -1 : STATES.findIndex((s) => isDeepStrictEqual(s, loaded));
      if (loaded !== undefined && k < 0) {
        violations.push(`${where}: loads a state never passed to save()`);
      } else if (k > newestBefore(started, point.calls)) {
        violations.push(`${where}: loads state ${k}, whose save() had not been called`);
      } else if (k < newestReturned) {
        violations.push(`${where}: loads ${loaded === undefined ? 'no state' : `state ${k}`}, but save() of state ${newestReturned} had returned`);
      }
    }
  }
  return { explored, violations };
}

describe('the simulated file system', () => {
  /** What `name` may hold after power loss now; undefined: no such file. */
  const contents = (fs: SimulatedFileSystem, name: string): Set<string | undefined> =>
    new Set(fs.crashPoints.at(-1)!.outcomes(join(DIRECTORY, name)).map((o) => o.content?.toString('latin1')));

  it('loses, tears or zero-fills unsynced data, keeps fsynced data, and keeps a prefix of the directory changes', async () => {
    const fs = new SimulatedFileSystem(DIRECTORY);
    const file = await fs.open(join(DIRECTORY, 'a'), 'w');
    await file.writeFile('xy');
    assert.deepEqual(contents(fs, 'a'), new Set([undefined, '', 'x', 'x\0', '\0\0', 'xy']));
    await file.sync();
    assert.deepEqual(contents(fs, 'a'), new Set([undefined, 'xy']));
    await fs.rename(join(DIRECTORY, 'a'), join(DIRECTORY, 'b'));
    assert.deepEqual(contents(fs, 'a'), new Set([undefined, 'xy']));
    assert.deepEqual(contents(fs, 'b'), new Set([undefined, 'xy']));
    const dir = await fs.open(DIRECTORY, 'r');
    await dir.sync();
    assert.deepEqual(contents(fs, 'a'), new Set([undefined]));
    assert.deepEqual(contents(fs, 'b'), new Set(['xy']));
  });
});

describe('state.json crash safety', () => {
  it('the real write leaves state.json complete, never older than a save() that returned', async (t) => {
    const run = await saveStates();
    const renames = run.fs.crashPoints.filter((p) => p.call.startsWith('rename ')).length;
    assert.equal(renames, 4, 'five saves, two of them folded into one write');
    const { explored, violations } = await crashStates(run);
    t.diagnostic(`${run.fs.calls} calls, ${explored} crash states`);
    assert.deepEqual(violations, []);
    assert.ok(explored > run.fs.calls, 'some crash point has more than one outcome');
  });

  it('catches the rename before the fsync: state.json torn or empty', async (t) => {
    const { explored, violations } = await crashStates(await saveStates('rename-before-fsync'));
    t.diagnostic(`${explored} crash states, ${violations.length} violations, e.g. ${violations[0]}`);
    assert.ok(violations.some((v) => v.includes('not valid JSON')), violations.join('\n'));
  });

  it('catches the missing directory fsync: a returned save() lost', async (t) => {
    const { explored, violations } = await crashStates(await saveStates('no-dir-fsync'));
    t.diagnostic(`${explored} crash states, ${violations.length} violations, e.g. ${violations[0]}`);
    assert.ok(violations.length > 0);
    assert.ok(violations.every((v) => v.includes('had returned')), violations.join('\n'));
  });
});
