/**
 * `dmkit replay-log`: fstests' replay-log (log-writes §5) over dmkit
 * BlockDevices — the same options, output, messages and exit statuses — plus
 * `--explore` (explore.ts).
 *
 * runReplayLog opens the files named on the command line; replayLog is the
 * engine over already-open devices.
 */
import { stat } from 'node:fs/promises';
import type { BlockDevice } from '../../block/device.ts';
import { errnoNumber, toIoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import { LOG_DISCARD_FLAG, LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG } from '../../targets/log-writes/log-format.ts';
import { explore } from './explore.ts';
import { runFsck } from './fsck.ts';
import { LogReader, shouldStop, type LogIo, type ReplayTarget, type Step } from './log-reader.ts';
import { parseOptions, usage, type ReplayLogOptions } from './options.ts';

export type ReplayLogIo = LogIo;

/** The program: `argv` are the arguments after `replay-log`. Returns the exit status. */
export async function runReplayLog(argv: string[], io: ReplayLogIo): Promise<number> {
  const opts = parseOptions(argv, io.stderr);
  if ('exit' in opts) return opts.exit;
  if (opts.log === undefined) return usage(io.stderr).exit;

  let log: BlockDevice;
  try {
    log = await FileDevice.open(opts.log, { readOnly: true });
  } catch (err) {
    io.stderr.write(`Couldn't open log ${opts.log}: ${errnoNumber(toIoError(err).code)}\n`);
    return 1;
  }
  let target: ReplayTarget | undefined;
  try {
    if (opts.replay !== undefined) target = await openReplayTarget(opts.replay);
  } catch (err) {
    io.stderr.write(`Couldn't open replay file ${opts.replay}: ${errnoNumber(toIoError(err).code)}\n`);
    await log.close();
    return 1;
  }
  try {
    return await replayLog(opts, log, target, io, (state, limit) => reproduceLine(opts, state, limit));
  } finally {
    await target?.device.close();
    await log.close();
  }
}

/**
 * Opened for writing, never created. replay-log discards with the BLKDISCARD
 * ioctl, which only block devices accept: on a regular file it writes zeroes.
 */
async function openReplayTarget(path: string): Promise<ReplayTarget> {
  const device = await FileDevice.open(path);
  const blockDevice = (await stat(path)).isBlockDevice();
  return { device, discard: blockDevice && device.limits.discard };
}

/**
 * The engine, in replay-log's order (log-writes §5.1): super block, start
 * position, option consistency, then find / num-entries / info / replay.
 * `reproduce` names the command line of one --explore state.
 */
export async function replayLog(
  opts: ReplayLogOptions,
  log: BlockDevice,
  target: ReplayTarget | undefined,
  io: ReplayLogIo,
  reproduce: (state: bigint, limit: number) => string = (state, limit) =>
    `replay-log --limit ${limit} --explore-state ${state} --seed ${opts.seed}`,
): Promise<number> {
  const reader = await LogReader.open(log, target, io);
  if (!reader) return 1;
  reader.verbose = opts.verbose;
  reader.ignoreDiscard = !opts.discard;
  reader.startSector = opts.startSector;
  reader.endSector = opts.endSector;

  if (opts.explore) {
    if (!target || (opts.fsck === undefined && opts.exploreState === undefined)) return usage(io.stderr).exit;
    // The log up to the start (a mark, or --start-entry) is replayed whole:
    // exploration begins there, e.g. after the mkfs a test does not care about.
    let startAfter = Number(opts.startEntry) - 1;
    if (opts.startMark) {
      if (!(await seekToMark(reader, opts.startMark, io))) return 1;
      startAfter = Number(reader.curEntry - 1n);
    }
    return explore(reader, target, io, {
      seed: opts.seed,
      limit: opts.limit,
      startAfter,
      ...(opts.fsck !== undefined ? { fsck: opts.fsck } : {}),
      ...(opts.exploreState !== undefined ? { state: opts.exploreState } : {}),
      reproduce,
    });
  }

  if (opts.startMark) {
    if (!(await seekToMark(reader, opts.startMark, io))) return 1;
  } else if (!(await reader.seekEntry(opts.startEntry))) {
    return 1;
  }
  if ((opts.fsck === undefined) !== (opts.check === undefined)) return usage(io.stderr).exit;

  const stops = (count: bigint): boolean =>
    (opts.limit !== 0n && count === opts.limit) || shouldStop(reader.entry, reader.block, opts.stopFlags, opts.endMark);

  if (opts.find) {
    let count = 0n;
    let step: Step;
    while ((step = await reader.seekNextEntry()) === 'ok') {
      count++;
      if (stops(count)) {
        io.stdout.write(`${reader.curEntry - 1n}@${Math.floor(reader.pos / reader.sectorSize)}\n`);
        return 0;
      }
    }
    if (step === 'error') return 255;
    io.stderr.write("Couldn't find entry\n");
    return 1;
  }
  if (opts.numEntries) {
    io.stdout.write(`${reader.nrEntries}\n`);
    return 0;
  }
  if (!target) {
    io.stdout.write(`Log version=1, sectorsize=${reader.sectorSize}, entries=${reader.nrEntries}\n`);
    return 0;
  }

  let failed = false;
  let count = 0n;
  for (;;) {
    const step = await reader.replayNextEntry();
    if (step !== 'ok') {
      failed = step === 'error';
      break;
    }
    count++;
    if (opts.fsck !== undefined && checkDue(opts, count, reader) && !(await runFsck(target.device, opts.fsck, io))) {
      io.stderr.write(`Fsck errored out on entry ${reader.curEntry - 1n}\n`);
      failed = true;
      break;
    }
    if (stops(count)) break;
  }
  // replay-log ignores the result of its final fsync.
  await target.device.flush().catch(() => undefined);
  return failed ? 1 : 0;
}

/** seek_to_mark: skip up to and including the named mark. */
async function seekToMark(reader: LogReader, mark: Buffer, io: ReplayLogIo): Promise<boolean> {
  let step: Step;
  while ((step = await reader.seekNextEntry()) === 'ok') {
    if (shouldStop(reader.entry, reader.block, LOG_MARK_FLAG, mark)) return true;
  }
  if (step === 'end') io.stderr.write("Couldn't find starting mark\n");
  return false;
}

function checkDue(opts: ReplayLogOptions, count: bigint, reader: LogReader): boolean {
  const flag = (bit: number) => shouldStop(reader.entry, reader.block, bit);
  switch (opts.check) {
    case 'number': return count % opts.checkNumber === 0n;
    case 'fua': return flag(LOG_FUA_FLAG);
    case 'flush': return flag(LOG_FLUSH_FLAG);
    case 'discard': return flag(LOG_DISCARD_FLAG);
    case undefined: return false;
  }
}

/** The command line that reproduces one explored state: the user's options, the crash point and the state. */
function reproduceLine(opts: ReplayLogOptions, state: bigint, limit: number): string {
  const words = ['dmkit', 'replay-log', '--log', opts.log!, '--replay', opts.replay!];
  if (!opts.discard) words.push('--no-discard');
  if (opts.startMark) words.push('--start-mark', opts.startMark.toString('latin1'));
  else if (opts.startEntry > 0n) words.push('--start-entry', String(opts.startEntry));
  words.push('--limit', String(limit), '--explore-state', String(state), '--seed', String(opts.seed));
  if (opts.fsck !== undefined) words.push('--fsck', opts.fsck);
  return words.map(shellQuote).join(' ');
}

function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
