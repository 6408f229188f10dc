/**
 * clone and mirror survive `kill -9` of the daemon in the middle of their
 * background copy (issues 11 and 13): a real `dmkit serve`, the real CLI,
 * qemu-io writing over NBD while hydration / resync runs, SIGKILL, a restart
 * on the same data dir (state.json recreates the devices on the same
 * metadata), and the result checked byte for byte with `cmp` against a model.
 *
 * The copy is slowed by a `delay` device in the same daemon (the clone's
 * source, the mirror's second leg), so it is still running after a few
 * qemu-io runs whatever the machine's speed; after the restart a linear
 * table replaces the delay and the copy finishes quickly. Nothing here
 * measures time.
 *
 * Acknowledged: a qemu-io run (writes, then `flush`, cache mode writeback)
 * that exited 0 — every one of its writes must be there after the restart.
 * The run in flight at the kill promises nothing: each sector it wrote must
 * hold the old or the new data, and is taken from the result into the model.
 */
import assert from 'node:assert/strict';
import { open, readFile, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { SECTOR_SIZE } from '../../src/block/device.ts';
import { type Daemon, Harness } from '../helpers/daemon.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
/** Both devices are this large: 65536 sectors. */
const SIZE = 32 * MiB;
const SECTORS = SIZE / SECTOR_SIZE;
/** Each write of a run lies in its own slot, never reused: no write overlaps another. */
const SLOT = 96 * KiB;
const WRITES_PER_RUN = 3;
/** Acknowledged runs before the kill. */
const RUNS_BEFORE_KILL = 2;
/** How long to wait for the copy to finish after the restart before failing. */
const FINISH_WITHIN_MS = 40_000;
/** One `dmkit wait` is killed after this, and the loop looks at the status again. */
const WAIT_SLICE_MS = 5_000;

let h: Harness;

before(async () => {
  h = await Harness.create('dmkit-kill9-');
  await writeFile(h.path('empty.json'), '{"devices":[]}');
});

after(() => h.cleanup());

/**
 * A sparse file of SIZE whose sectors name themselves: each 64 KiB chunk but
 * every fourth is filled with 8-byte records `s, ~s` (s its sector number);
 * the others stay holes. Returns the file's contents.
 */
async function patternedFile(name: string): Promise<Buffer> {
  const content = Buffer.alloc(SIZE);
  const chunk = 64 * KiB;
  for (let off = 0; off < SIZE; off += chunk) {
    if ((off / chunk) % 4 === 3) continue;
    for (let s = off / SECTOR_SIZE; s < (off + chunk) / SECTOR_SIZE; s++) {
      for (let i = s * SECTOR_SIZE; i < (s + 1) * SECTOR_SIZE; i += 8) {
        content.writeUInt32LE(s, i);
        content.writeUInt32LE(~s >>> 0, i + 4);
      }
    }
  }
  const file = await open(h.path(name), 'w');
  try {
    await file.truncate(SIZE);
    for (let off = 0; off < SIZE; off += chunk) {
      if ((off / chunk) % 4 !== 3) await file.write(content, off, chunk, off);
    }
  } finally {
    await file.close();
  }
  return content;
}

interface Write {
  offset: number;
  length: number;
  pattern: number;
}

/**
 * The writes of qemu-io runs, from a fixed-seed generator (xorshift32) so a
 * failure repeats. Slots are taken in a shuffled order: writes land all over
 * the device, mostly on regions the copy (which runs upwards from region 0)
 * has not reached.
 */
class Writes {
  private seed = 0x9e3779b9;
  private readonly slots: number[] = [];
  private runs = 0;

  constructor() {
    for (let i = 0; i < Math.floor(SIZE / SLOT); i++) this.slots.push(i);
    for (let i = this.slots.length - 1; i > 0; i--) {
      const j = this.random(i + 1);
      [this.slots[i], this.slots[j]] = [this.slots[j]!, this.slots[i]!];
    }
  }

  private random(n: number): number {
    this.seed ^= this.seed << 13;
    this.seed ^= this.seed >>> 17;
    this.seed ^= this.seed << 5;
    return (this.seed >>> 0) % n;
  }

  /** WRITES_PER_RUN writes, each in a fresh slot at a random sector offset and length (partial and whole regions). */
  run(): Write[] {
    this.runs++;
    return Array.from({ length: WRITES_PER_RUN }, (_, i) => {
      const slot = this.slots.pop();
      assert.ok(slot !== undefined, 'out of slots for writes');
      const start = this.random(SLOT / SECTOR_SIZE / 2);
      const length = 1 + this.random(SLOT / SECTOR_SIZE - start);
      return { offset: slot * SLOT + start * SECTOR_SIZE, length: length * SECTOR_SIZE, pattern: 1 + ((this.runs * 7 + i * 31) % 254) };
    });
  }
}

/** The data a device must hold: its initial contents with every acknowledged write applied. */
class Model {
  constructor(readonly data: Buffer) {}

  apply(writes: Write[]): void {
    for (const w of writes) this.data.fill(w.pattern, w.offset, w.offset + w.length);
  }

  /**
   * The writes of a run that was cut off: each sector must hold the model's
   * old data or the write's pattern; the model then takes what is there.
   */
  settle(writes: Write[], actual: Buffer): void {
    for (const w of writes) {
      for (let i = w.offset; i < w.offset + w.length; i += SECTOR_SIZE) {
        const got = actual.subarray(i, i + SECTOR_SIZE);
        const isNew = got.every((b) => b === w.pattern);
        assert.ok(isNew || got.equals(this.data.subarray(i, i + SECTOR_SIZE)),
          `sector ${i / SECTOR_SIZE} (unacknowledged write of 0x${w.pattern.toString(16)} at ${w.offset}+${w.length}) holds neither the old data nor the new`);
        got.copy(this.data, i);
      }
    }
  }

  /** `cmp` of `path` against the model, through a file holding the model. */
  async cmp(path: string, label: string): Promise<void> {
    const modelFile = h.path(`${label}.model`);
    await writeFile(modelFile, this.data);
    const r = await h.run('cmp', [modelFile, path]);
    assert.deepEqual(r, { stdout: '', stderr: '', status: 0 }, `${label} differs from its model`);
  }
}

/**
 * One qemu-io run of `writes` then a flush on the export `name`, resolving
 * whether it was acknowledged: exited 0 with every write and the flush done.
 */
async function writeRun(d: Daemon, name: string, writes: Write[]): Promise<boolean> {
  const r = await h.qemuIoRun(d.uri(name), ...writes.map((w) => `write -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`), 'flush');
  return r.status === 0 && !/failed/i.test(r.stdout + r.stderr) && (r.stdout.match(/^wrote \d+\/\d+ bytes/gm) ?? []).length === writes.length;
}

/** qemu-io read -P of every write on the export: each must read back as written. */
async function assertWritesRead(d: Daemon, name: string, writes: Write[]): Promise<void> {
  const r = await h.qemuIoRun(d.uri(name), ...writes.map((w) => `read -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`));
  assert.doesNotMatch(r.stdout, /Pattern verification failed/, `acknowledged writes lost on ${name}:\n${r.stdout}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal((r.stdout.match(/^read \d+\/\d+ bytes/gm) ?? []).length, writes.length, r.stdout);
}

/**
 * The copy's progress in a status line: word 6 in both `0 LEN clone 8
 * USED/TOTAL REGION HYDRATED/REGIONS …` and `0 LEN mirror 2 LEG LEG
 * INSYNC/REGIONS …` (two legs).
 */
function progress(status: string): { done: number; total: number } {
  const m = /^(\d+)\/(\d+)$/.exec(status.split(' ')[6] ?? '');
  assert.ok(m, `no progress field in "${status}"`);
  return { done: Number(m[1]), total: Number(m[2]) };
}

const eventNr = async (d: Daemon, name: string): Promise<number> => JSON.parse(await d.dmkit('info', name, '--json')).eventNr;

/**
 * Waits until the device raised an event after `since` and its status shows
 * the copy complete, with `dmkit wait` between looks; fails after
 * FINISH_WITHIN_MS with the last status. Returns that status.
 */
async function waitComplete(d: Daemon, name: string, since: number): Promise<string> {
  const deadline = Date.now() + FINISH_WITHIN_MS;
  for (;;) {
    const ev = await eventNr(d, name);
    const status = await d.dmkit('status', name);
    const { done, total } = progress(status);
    if (ev > since && done === total) return status;
    assert.ok(Date.now() < deadline, `${name}: copy not complete with its event after ${FINISH_WITHIN_MS} ms; last status ${status.trim()}, event ${ev}`);
    const waited = await d.cli(['wait', name, String(ev)], { timeoutMs: WAIT_SLICE_MS });
    assert.ok(waited.status === 0 || waited.status === null, `dmkit wait ${name}: ${waited.stderr}`);
  }
}

/**
 * Runs acknowledged qemu-io runs on `name` until RUNS_BEFORE_KILL of them
 * began after the status showed copy progress; the status is read before
 * every run and must show the copy still incomplete. Right after the last,
 * starts one more run and SIGKILLs the daemon while it runs: the kill comes
 * so soon after the last acknowledged flush that the periodic commit (every
 * second) has seldom run in between, so what that flush did not make
 * durable is lost. Returns the acknowledged writes in order, the cut-off
 * run's writes, and `committed`: the progress read before the last
 * acknowledged run began — its flush came after all of it.
 */
async function writeThenKill(d: Daemon, name: string, writes: Writes): Promise<{ acked: Write[]; cutOff: Write[]; committed: number }> {
  const acked: Write[] = [];
  let committed = 0;
  for (let runs = 0; runs < RUNS_BEFORE_KILL;) {
    const { done, total } = progress(await d.dmkit('status', name));
    assert.ok(done < total, `${name}: the copy finished before the kill (${done}/${total}); slow its delay device down`);
    const run = writes.run();
    assert.ok(await writeRun(d, name, run), `qemu-io run on ${name} failed`);
    acked.push(...run);
    if (done > 0) {
      committed = done;
      runs++;
    }
  }
  const run = writes.run();
  const inFlight = writeRun(d, name, run);
  await delay(30); // aims the kill into the run; it may land before or after it too
  assert.equal(await d.kill('SIGKILL'), null);
  if (await inFlight) return { acked: [...acked, ...run], cutOff: [], committed };
  return { acked, cutOff: run, committed };
}

/**
 * Swaps the delay device `name` for a linear mapping of the same file: the
 * copy has been slow for as long as the test needed, now it may finish fast.
 */
async function removeDelay(d: Daemon, name: string, file: string): Promise<void> {
  await d.dmkit('load', name, '--table', `0 ${SECTORS} linear ${file} 0`);
  await d.dmkit('resume', name);
}

describe('kill -9 during background copies', () => {
  it('clone: acknowledged writes survive, hydration resumes from its last commit and completes', async () => {
    const source = h.path('clone-src.img');
    const model = new Model(await patternedFile('clone-src.img'));
    const meta = await h.blankFile('clone-meta.img', 4 * MiB);
    const dest = await h.blankFile('clone-dest.img', SIZE);
    let d = await h.serve({ dataDir: h.path('clone-data'), args: ['--config', 'empty.json'] });

    // 16 KiB regions, one at a time, each read through a 20 ms delay: 2048 regions would take
    // 40 s. Hydration is off in the table so that after the restart the status shows exactly
    // what was committed; a message turns it on now and again after the restart.
    await d.dmkit('create', 'slowsrc', '--table', `0 ${SECTORS} delay ${source} 0 20`);
    const table = `0 ${SECTORS} clone ${meta} ${dest} /dev/mapper/slowsrc 32 1 no_hydration 4 hydration_threshold 1 hydration_batch_size 1`;
    await d.dmkit('create', 'cl', '--table', table);
    const clTable = await d.dmkit('table', 'cl');
    await d.dmkit('message', 'cl', '0', 'enable_hydration');

    const { acked, cutOff, committed } = await writeThenKill(d, 'cl', new Writes());
    model.apply(acked);
    assert.ok(committed > 0, 'no hydration progress was seen before a flush');

    d = await d.restart();
    const [tableAfter, reopened, events] = await Promise.all([d.dmkit('table', 'cl'), d.dmkit('status', 'cl'), eventNr(d, 'cl')]);
    assert.equal(tableAfter, clTable);
    // The metadata was reopened: at least everything hydrated before the last acknowledged flush.
    assert.match(reopened, /^0 65536 clone 8 \d+\/\d+ 32 \d+\/2048 0 1 no_hydration 4 hydration_threshold 1 hydration_batch_size 1 rw\n$/);
    const { done } = progress(reopened);
    assert.ok(done >= committed, `after the restart ${done} regions are hydrated, but ${committed} were before an acknowledged flush`);
    assert.equal(events, 0); // a recreated device counts its events from 0, as a new dm device does
    await assertWritesRead(d, 'cl', acked);

    await removeDelay(d, 'slowsrc', source);
    await d.dmkit('message', 'cl', '0', 'enable_hydration');
    assert.match(await waitComplete(d, 'cl', 0), / 2048\/2048 0 0 4 hydration_threshold 1 hydration_batch_size 1 rw\n$/);
    await assertWritesRead(d, 'cl', acked);
    assert.equal(await d.stop(), 0, d.stderr());

    model.settle(cutOff, await readFile(dest));
    await model.cmp(dest, 'clone-dest');
  });

  it('mirror: acknowledged writes survive, resync finishes after the restart, and the legs are identical', async () => {
    const leg0 = h.path('leg0.img');
    const model = new Model(await patternedFile('leg0.img'));
    const leg1 = await h.blankFile('leg1.img', SIZE);
    await h.qemuIo(leg1, `write -P 0xbb 0 ${SIZE}`); // differs from leg 0 everywhere, holes included
    const log = await h.blankFile('mirror-log.img', MiB);
    let d = await h.serve({ dataDir: h.path('mirror-data'), args: ['--config', 'empty.json'] });

    // 64 KiB regions; each copy and each log flush goes through a 20 ms write delay on leg 1:
    // the 512 regions would take 20 s.
    await d.dmkit('create', 'slowleg', '--table', `0 ${SECTORS} delay ${leg1} 0 0 ${leg1} 0 20`);
    await d.dmkit('create', 'm', '--table', `0 ${SECTORS} mirror disk 2 ${log} 128 2 ${leg0} 0 /dev/mapper/slowleg 0 1 handle_errors`);
    const mTable = await d.dmkit('table', 'm');

    const { acked, cutOff } = await writeThenKill(d, 'm', new Writes());
    model.apply(acked);

    d = await d.restart();
    assert.equal(await d.dmkit('table', 'm'), mTable);
    await removeDelay(d, 'slowleg', leg1);
    await assertWritesRead(d, 'm', acked);
    // The resync runs from the restart on, so the in-sync event may have come already:
    // the recreated device counts events from 0, so any event number above 0 is it.
    assert.match(await waitComplete(d, 'm', 0), /^0 65536 mirror 2 7:\d+ 253:\d+ 512\/512 1 AA 3 disk 7:\d+ A\n$/);
    assert.equal(await d.stop(), 0, d.stderr());

    const r = await h.run('cmp', [leg0, leg1]);
    assert.deepEqual(r, { stdout: '', stderr: '', status: 0 }, 'the legs differ after the resync');
    model.settle(cutOff, await readFile(leg1));
    await model.cmp(leg1, 'leg1');
  });
});
