/**
 * log-writes as a crash target, and its checker (CRASH-TESTING §2.4): the
 * log on the log disk is well formed at every crash point and replays to a
 * prefix-consistent image.
 */
import { SECTOR_SIZE } from '../../block/device.ts';
import { MemoryDevice } from '../../block/memory-device.ts';
import {
  LOG_DISCARD_FLAG, LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG, LOG_METADATA_FLAG, decodeEntry, decodeSuper, payloadBlocks,
} from '../../targets/log-writes/log-format.ts';
import { isValidEntry, superProblem } from '../../targets/log-writes/log-validate.ts';
import { END_MARK } from '../../targets/log-writes/log-writes.ts';
import type { Checker } from '../explorer.ts';
import type { Recording, SubmitEvent } from '../recording.ts';
import { type StackSpec, staleDisk } from './stack.ts';

const LOG_DATA = 96;
/** Room for about 1600 logged requests: a log that overflows disables logging (log-writes §4.9). */
const LOG_SECTORS = 8192;

export const LOG_WRITES: StackSpec = {
  name: 'log-writes',
  disks: [staleDisk('data', LOG_DATA), { name: 'log', sectors: LOG_SECTORS }],
  devices: [{ name: 'lw', table: [`0 ${LOG_DATA} log-writes /dev/data /dev/log`] }],
  checkers: [logWritesChecker(0, 1)],
};

interface ReadEntry {
  readonly flags: number;
  /** Data-device sectors (512 bytes). */
  readonly sector: number;
  readonly count: number;
  readonly payload?: Buffer;
  readonly mark?: string;
}

/**
 * At every crash state the log on the log disk must be well formed and
 * replay to a prefix-consistent image:
 *
 * - The super block is blank (nothing logged with a FUA or MARK yet) or valid,
 *   with the data device's block size (log-writes §3.1).
 * - Linux never flushes the log device while logging (log-writes §4.6), so a
 *   crash may leave a super block counting entries that never became
 *   durable; a reader stops at the first header that is not valid or points
 *   outside the devices (§7 rule 12), and a payload may not have reached the
 *   log (it still reads as the log disk's old content, which no reader can
 *   tell). Replaying the entries before it onto the initial data image must
 *   leave, in every sector not replayed from a lost payload, its initial
 *   content or the whole value of some top-level write or discard of that
 *   sector — never garbage, nor another sector's data.
 * - Once teardown has flushed the log device (the end of a clean run), the
 *   log is complete: every entry and payload is there, the super block counts every
 *   top-level write, discard and flush plus the end mark, which comes last,
 *   and each acknowledged write and discard is in it with its data (§4.5).
 */
export function logWritesChecker(dataDisk: number, logDisk: number): Checker {
  return async ({ disks, cut, recording }) => {
    const data = disks[dataDisk]!;
    const log = disks[logDisk]!;
    const tornDown = logFlushedBefore(recording, logDisk, cut);
    const blockSize = data.limits.logicalBlockSize;
    const per = blockSize / SECTOR_SIZE;
    const sb = Buffer.alloc(blockSize);
    await log.read(0, sb);
    if (sb.every((b) => b === 0)) return tornDown ? 'log-writes: the log has no super block after teardown flushed the log device' : undefined;
    const sup = decodeSuper(sb);
    const problem = superProblem(sup) ?? (sup.sectorSize === blockSize ? undefined : `sectorsize ${sup.sectorSize}, the data device's block is ${blockSize}`);
    if (problem) return `log-writes: the log super block is malformed: ${problem}`;

    const image = new MemoryDevice(data.sectors, { name: 'replay' });
    const initial = recording.devices[dataDisk]!.initial!;
    const whole = Buffer.alloc(data.sectors * SECTOR_SIZE);
    initial.read(0, whole);
    await image.write(0, whole);
    const logInitial = recording.devices[logDisk]!.initial!;
    const entries: ReadEntry[] = [];
    /** Data sectors last replayed from log sectors whose payload was lost in the crash. */
    const unlogged = new Set<number>();
    const header = Buffer.alloc(blockSize);
    let pos = per;
    for (let i = 0n; i < sup.nrEntries; i++) {
      await log.read(pos, header);
      const e = decodeEntry(header);
      const blocks = payloadBlocks(e);
      const inside = e.flags & BigInt(LOG_MARK_FLAG) || e.sector + e.nrSectors <= BigInt(data.sectors / per);
      if (!isValidEntry(e, header) || !inside || BigInt(pos + per) + blocks * BigInt(per) > BigInt(log.sectors)) {
        if (tornDown) return `log-writes: entry ${i} at log sector ${pos} is malformed after teardown flushed the log device`;
        break;
      }
      const entry: ReadEntry = {
        flags: Number(e.flags), sector: Number(e.sector) * per, count: Number(e.nrSectors) * per,
        ...(e.flags & BigInt(LOG_MARK_FLAG) ? { mark: header.toString('latin1', 32, 32 + Number(e.dataLen)) } : {}),
      };
      if (blocks > 0n) {
        const payload = Buffer.alloc(entry.count * SECTOR_SIZE);
        await log.read(pos + per, payload);
        await image.write(entry.sector, payload);
        entries.push({ ...entry, payload });
        // A payload sector that still holds what the log disk held before never reached it.
        const before = Buffer.alloc(payload.length);
        logInitial.read(pos + per, before);
        for (let k = 0; k < entry.count; k++) {
          const at = k * SECTOR_SIZE;
          if (payload.subarray(at, at + SECTOR_SIZE).equals(before.subarray(at, at + SECTOR_SIZE))) unlogged.add(entry.sector + k);
          else unlogged.delete(entry.sector + k);
        }
      } else {
        if (entry.flags & LOG_DISCARD_FLAG) {
          await image.writeZeroes(entry.sector, entry.count);
          for (let k = 0; k < entry.count; k++) unlogged.delete(entry.sector + k);
        }
        entries.push(entry);
      }
      pos += per + Number(blocks) * per;
    }

    const top = topWrites(recording, cut);
    const replayed = Buffer.alloc(data.sectors * SECTOR_SIZE);
    await image.read(0, replayed);
    const lost = [...unlogged].sort((a, b) => a - b)[0];
    if (tornDown && lost !== undefined) return `log-writes: after teardown the log holds no payload for data sector ${lost}`;
    const bad = foreignSector(replayed, whole, top, unlogged);
    if (bad !== undefined) {
      return `log-writes: replaying the ${entries.length} readable log entries puts data no top-level write wrote at data sector ${bad}`;
    }
    return tornDown ? incomplete(recording, entries, sup.nrEntries, top) : undefined;
  };
}

/** A flush of the log device completed before the cut: only teardown flushes it. */
function logFlushedBefore(recording: Recording, dev: number, cut: number): boolean {
  const events = recording.events.slice(0, cut);
  return events.some((s) => s.type === 'submit' && s.dev === dev && s.op === 'flush' &&
    events.some((c) => c.type === 'complete' && c.dev === dev && c.id === s.id && c.ok));
}

/** The top device's write, discard and flush submissions before the cut. */
function topWrites(recording: Recording, cut: number): SubmitEvent[] {
  const top = recording.devices.find((d) => d.initial === undefined)!.index;
  return recording.events.slice(0, cut).filter((e): e is SubmitEvent => e.type === 'submit' && e.dev === top);
}

/**
 * The first sector holding neither its initial content nor the whole value
 * some top-level write gave it, leaving out those replayed from a lost payload.
 */
function foreignSector(got: Buffer, initial: Buffer, top: readonly SubmitEvent[], unlogged: ReadonlySet<number>): number | undefined {
  const zero = Buffer.alloc(SECTOR_SIZE);
  for (let s = 0; s < got.length / SECTOR_SIZE; s++) {
    if (unlogged.has(s)) continue;
    const sector = got.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
    if (sector.equals(initial.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE))) continue;
    const ok = top.some((w) => w.op !== 'flush' && s >= w.sector && s < w.sector + w.count &&
      sector.equals(w.data ? w.data.subarray((s - w.sector) * SECTOR_SIZE, (s - w.sector + 1) * SECTOR_SIZE) : zero));
    if (!ok) return s;
  }
  return undefined;
}

/** After teardown: the whole log, ending with the end mark, holding every top-level request once. */
function incomplete(recording: Recording, entries: readonly ReadEntry[], nrEntries: bigint, top: readonly SubmitEvent[]): string | undefined {
  const expected = top.length + 1;
  const last = entries[entries.length - 1];
  if (BigInt(expected) !== nrEntries || last?.mark !== END_MARK) {
    return `log-writes: after teardown the super block counts ${nrEntries} entries and the last readable one is ` +
      `${last?.mark !== undefined ? `mark "${last.mark}"` : 'not a mark'}; the run made ${top.length} top-level requests, ` +
      `so ${expected} entries ending with mark "${END_MARK}" (log-writes §4.5)`;
  }
  const unused = new Set(entries);
  for (const w of top) {
    const flags = w.op === 'flush' ? LOG_FLUSH_FLAG : w.op === 'discard' ? LOG_DISCARD_FLAG : w.fua ? LOG_FUA_FLAG : 0;
    const match = [...unused].find((e) => (e.flags & ~LOG_METADATA_FLAG) === flags &&
      (w.op === 'flush' || (e.sector === w.sector && e.count === w.count && (!w.data || w.data.equals(e.payload ?? Buffer.alloc(0))))));
    if (!match) {
      const name = recording.devices[w.dev]!.name;
      return `log-writes: after teardown the log lacks top-level ${w.op} #${w.id} on ${name}` +
        (w.op === 'flush' ? '' : `, sectors ${w.sector}+${w.count}`);
    }
    unused.delete(match);
  }
  return undefined;
}
