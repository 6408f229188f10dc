/**
 * `replay-log --explore`: the crash states a write-back cache can leave
 * behind, checked with the user's --fsck command (CRASH-TESTING §2.2,
 * log-writes §7 rule 11).
 *
 * A log replayed to entry k is one crash state: everything flushed, every FUA
 * write, and the writes logged so far in completion order. A real cache may
 * instead have kept any subset of the writes that were still volatile there —
 * the plain writes and discards logged since the last FLUSH entry (ARCHITECTURE
 * §1 items 4–5). At every crash point (each FLUSH or FUA entry, and the last
 * entry) this explores:
 *   - every subset, when there are at most EXHAUSTIVE_MAX volatile entries;
 *   - otherwise: none kept, each of the last OMIT_LAST omitted alone, and
 *     RANDOM_SUBSETS seeded random subsets;
 *   - and finally all kept (the plain prefix replay), which becomes the base
 *     for the next crash point.
 * With --start-mark or --start-entry the log up to there is replayed whole
 * and exploration begins after it. States are numbered from 1 in that order;
 * the numbering depends only on the log, the start, --limit and --seed, so
 * `--limit K --explore-state N --seed S` reproduces state N alone.
 *
 * The replay target holds the base state; a state's entries are applied with
 * an undo record (the target's previous bytes), checked, and undone. The check
 * command must not modify the image (as with replay-log's --fsck).
 */
import {
  LOG_DISCARD_FLAG, LOG_FLUSH_FLAG, LOG_FUA_FLAG, LOG_MARK_FLAG, type LogEntry,
} from '../../targets/log-writes/log-format.ts';
import { toIoError } from '../../block/errors.ts';
import { Rng } from '../../sim/rng.ts';
import { runFsck } from './fsck.ts';
import { readAt, writeAt } from './image-io.ts';
import { flagsToString, type LogIo, type LogReader, type ReplayTarget } from './log-reader.ts';

export const EXHAUSTIVE_MAX = 4;
export const OMIT_LAST = 16;
export const RANDOM_SUBSETS = 4;
/** Largest single range the undo record copies. */
const UNDO_MAX = 256 * 1024 * 1024;

export interface ExploreSettings {
  seed: number;
  /** Only entries below this index take part (0: all). */
  limit: bigint;
  /** Entries up to and including this index are replayed whole, unexplored (-1: none). */
  startAfter: number;
  fsck?: string;
  /** Materialise only this state and stop. */
  state?: bigint;
  /** The command line that reproduces `state` alone with entries below `limit`. */
  reproduce(state: bigint, limit: number): string;
}

interface Indexed {
  index: number;
  entry: LogEntry;
  /** Byte offset of the payload in the log. */
  payloadPos: number;
}

interface Undo {
  offset: number;
  old: Buffer;
}

const has = (e: LogEntry, flag: number): boolean => (e.flags & BigInt(flag)) !== 0n;

/** A plain write or discard: in a write-back cache until a flush covers it. */
const isVolatile = (e: LogEntry): boolean => !has(e, LOG_FLUSH_FLAG | LOG_FUA_FLAG | LOG_MARK_FLAG);

export async function explore(reader: LogReader, target: ReplayTarget, io: LogIo, s: ExploreSettings): Promise<number> {
  const entries = await index(reader, s.limit);
  if (!entries) return 1;
  const rng = new Rng(s.seed);
  let base = Math.min(s.startAfter, entries.length - 1); // entries [0, base] are applied to the target
  if (!(await apply(reader, target, entries.slice(0, base + 1), undefined))) return 1;
  const points = entries.filter(
    (x, i) => i > base && (has(x.entry, LOG_FLUSH_FLAG | LOG_FUA_FLAG) || i === entries.length - 1),
  );

  let state = 0n;
  for (const point of points) {
    const between = entries.slice(base + 1, point.index + 1);
    const volatile = between.filter((x) => isVolatile(x.entry)).map((x) => x.index);
    const subsets = [...crashSubsets(volatile, rng), new Set(volatile)];
    for (const kept of subsets) {
      state++;
      const all = kept.size === volatile.length;
      const applied = between.filter((x) => !isVolatile(x.entry) || kept.has(x.index));
      const wanted = s.state === undefined || s.state === state;
      if (!wanted) {
        if (all && !(await apply(reader, target, applied, undefined))) return 1;
        continue;
      }
      const what =
        `crash at entry ${point.index} (${flagsToString(point.entry.flags)}), ` +
        `kept ${kept.size} of ${volatile.length} volatile writes${omitted(volatile, kept)}`;
      if (reader.verbose || s.state !== undefined) io.stdout.write(`explore state ${state}: ${what}\n`);
      const undo: Undo[] | undefined = all || s.state !== undefined ? undefined : [];
      if (!(await apply(reader, target, applied, undo))) return 1;
      if (s.fsck && !(await runFsck(target.device, s.fsck, io))) {
        if (s.state !== undefined) {
          io.stderr.write(`Fsck errored out on explore state ${state}\n`);
          return 1;
        }
        io.stderr.write(`explore: state ${state} failed: ${what}\n`);
        io.stderr.write(`reproduce: ${s.reproduce(state, point.index + 1)}\n`);
        return 1;
      }
      if (s.state !== undefined) return 0;
      if (undo && !(await restore(target, undo, io))) return 1;
    }
    base = point.index;
  }
  if (s.state !== undefined) {
    io.stderr.write('Invalid state number\n');
    return 1;
  }
  io.stdout.write(`explore: ${state} states checked at ${points.length} crash points, all passed\n`);
  return 0;
}

/** Headers and payload positions of entries [0, limit), read once. */
async function index(reader: LogReader, limit: bigint): Promise<Indexed[] | undefined> {
  if (!(await reader.seekEntry(0n))) return undefined;
  const out: Indexed[] = [];
  const verbose = reader.verbose;
  reader.verbose = 0;
  try {
    while (limit === 0n || BigInt(out.length) < limit) {
      const headerPos = reader.pos;
      const step = await reader.seekNextEntry();
      if (step === 'error') return undefined;
      if (step === 'end') break;
      out.push({ index: out.length, entry: reader.entry, payloadPos: headerPos + reader.sectorSize });
    }
  } finally {
    reader.verbose = verbose;
  }
  return out;
}

/** The partial states of one crash point, deduplicated, without "all kept". */
function crashSubsets(volatile: number[], rng: Rng): Set<number>[] {
  const out = new Map<string, Set<number>>();
  const add = (kept: number[]) => {
    if (kept.length < volatile.length) out.set(kept.join(','), new Set(kept));
  };
  if (volatile.length <= EXHAUSTIVE_MAX) {
    for (let mask = 0; mask < 1 << volatile.length; mask++) add(volatile.filter((_, i) => mask & (1 << i)));
    return [...out.values()];
  }
  add([]);
  for (const drop of volatile.slice(-OMIT_LAST)) add(volatile.filter((i) => i !== drop));
  for (let r = 0; r < RANDOM_SUBSETS; r++) add(volatile.filter(() => rng.u32() & 1));
  return [...out.values()];
}

function omitted(volatile: number[], kept: Set<number>): string {
  const gone = volatile.filter((i) => !kept.has(i));
  return gone.length ? `; omitted entries ${gone.join(' ')}` : '';
}

/** Applies entries in log order, first saving what they overwrite when `undo` is given. */
async function apply(reader: LogReader, target: ReplayTarget, applied: Indexed[], undo: Undo[] | undefined): Promise<boolean> {
  for (const { entry, payloadPos } of applied) {
    const bytes = reader.payloadBytes(entry);
    if (bytes === 0) continue;
    const discard = has(entry, LOG_DISCARD_FLAG);
    if (discard && reader.ignoreDiscard) continue;
    if (undo) {
      if (bytes > UNDO_MAX) {
        reader.io.stderr.write(`explore: entry of ${bytes} bytes is too large to undo (limit ${UNDO_MAX})\n`);
        return false;
      }
      const old = Buffer.alloc(bytes);
      await readAt(target.device, reader.byteOffset(entry), old);
      undo.push({ offset: reader.byteOffset(entry), old });
    }
    const ok = discard ? await reader.applyDiscard(entry) : await reader.applyData(entry, payloadPos);
    if (!ok) return false;
  }
  return true;
}

async function restore(target: ReplayTarget, undo: Undo[], io: LogIo): Promise<boolean> {
  try {
    for (const u of undo.reverse()) await writeAt(target.device, u.offset, u.old);
    return true;
  } catch (err) {
    io.stderr.write(`explore: restoring the replay target failed: ${toIoError(err).message}\n`);
    return false;
  }
}
