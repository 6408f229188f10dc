/**
 * The crash-state families of CRASH-TESTING §2.2 over a recording. Each state
 * is a cut (a prefix of the recorded events) plus, for every underlying
 * device, which volatile writes survive and which writes tear.
 */
import { SECTOR_SIZE } from '../block/device.ts';
import type { CrashSelection, KeptWrite, PendingWrite } from '../sim/disk-state.ts';
import { Rng } from '../sim/rng.ts';
import type { Recording } from './recording.ts';
import { Replay } from './replay.ts';

export const FAMILIES = ['persistence', 'all-none', 'single', 'subsets', 'torn', 'per-device', 'recovery'] as const;
export type FamilyName = (typeof FAMILIES)[number];
/** The families generated from one recording (recovery needs the target, see explorer.ts). */
export type StateFamily = Exclude<FamilyName, 'recovery'>;

export interface CrashState {
  readonly family: FamilyName;
  /** Events applied: the crash happens right after event cut-1. */
  readonly cut: number;
  /** Device index → its selection; every underlying device has one. */
  readonly disks: ReadonlyMap<number, CrashSelection>;
  /** What was chosen, for reports: "omit #3 on meta". */
  readonly note: string;
}

export interface GenerateOptions {
  families: readonly StateFamily[];
  seed: number;
  /** Single omission/inclusion look at the last K volatile writes (default 16). */
  k?: number;
  /** Exhaustive subsets up to this many volatile writes (default 10), else random ones. */
  exhaustiveUpTo?: number;
  /** Random subsets per cut when there are too many volatile writes (default 16). */
  randomSubsets?: number;
  /** States kept per family, sampled uniformly over the whole run (default: all). */
  maxStates?: number;
}

interface Volatile {
  readonly dev: number;
  readonly w: PendingWrite;
}

/**
 * Enumerates every state of the chosen families and keeps a seeded uniform
 * sample of at most maxStates per family (reservoir sampling, so a state is
 * only built when it is kept), ordered by cut.
 */
export function generateStates(recording: Recording, opts: GenerateOptions): CrashState[] {
  const rng = new Rng(opts.seed);
  const cap = opts.maxStates ?? Infinity;
  const reservoirs = new Map<StateFamily, Reservoir>();
  for (const f of opts.families) reservoirs.set(f, new Reservoir(cap));
  // Offers are gathered per cut, then sampled uniformly, except subsets: each
  // cut's subsets share one weight, so a cut with a thousand subsets does not
  // crowd out the cuts with a few.
  let offers = new Map<StateFamily, (() => CrashState)[]>();
  const offer = (family: StateFamily, make: () => CrashState) => {
    if (!reservoirs.has(family)) return;
    const list = offers.get(family) ?? [];
    list.push(make);
    offers.set(family, list);
  };
  const sampleCut = () => {
    for (const [family, list] of offers) for (const make of list) reservoirs.get(family)!.offer(rng, family === 'subsets' ? 1 / list.length : 1, make);
    offers = new Map();
  };
  const replay = new Replay(recording);
  const completedAt = completionOrder(recording);
  const k = opts.k ?? 16;
  const exhaustiveUpTo = opts.exhaustiveUpTo ?? 10;
  const randomSubsets = opts.randomSubsets ?? 16;
  const devs = [...replay.disks.keys()];
  const { events } = recording;

  for (let cut = 1; cut <= events.length; cut++) {
    replay.advanceTo(cut);
    const ev = events[cut - 1]!;
    if (ev.type !== 'complete') continue;
    const vol: Volatile[] = [];
    for (const [dev, st] of replay.disks) for (const w of st.volatileWrites()) vol.push({ dev, w });
    vol.sort((a, b) => completedAt.get(key(a.dev, a.w.req.id))! - completedAt.get(key(b.dev, b.w.req.id))!);
    const inflight: Volatile[] = [];
    for (const [dev, st] of replay.disks) for (const w of st.inflightWrites()) inflight.push({ dev, w });
    const state = (family: FamilyName, note: string, pick: (dev: number) => CrashSelection): CrashState =>
      ({ family, cut, note, disks: new Map(devs.map((d) => [d, pick(d)])) });
    const keep = (family: FamilyName, note: string, kept: readonly Volatile[], torn: readonly { v: Volatile; k: KeptWrite }[] = []) =>
      state(family, note, (d) => ({
        volatile: [
          ...kept.filter((v) => v.dev === d && !torn.some((t) => t.v === v)).map((v) => ({ id: v.w.req.id })),
          ...torn.filter((t) => t.v.dev === d && vol.includes(t.v)).map((t) => t.k),
        ],
        inflight: torn.filter((t) => t.v.dev === d && !vol.includes(t.v)).map((t) => t.k),
      }));
    const none = (family: FamilyName, note: string) => state(family, note, () => ({ volatile: 'none' }));
    const all = (family: FamilyName, note: string) => state(family, note, () => ({ volatile: 'all' }));

    // 1. Persistence points: right after a flush or FUA write completes, nothing volatile survives.
    const sub = recording.submitOf(ev.dev, ev.id);
    if (ev.ok && replay.disks.has(ev.dev) && sub && (sub.op === 'flush' || sub.fua)) {
      offer('persistence', () => none('persistence', `after ${describe(recording, ev.dev, ev.id)} completed, cache lost`));
    }
    // 2. All or none at every completion.
    offer('all-none', () => all('all-none', 'every volatile write kept'));
    offer('all-none', () => none('all-none', 'no volatile write kept'));
    // 3. Single omission / inclusion over the last K volatile writes.
    for (const v of vol.slice(-k)) {
      offer('single', () => keep('single', `omit ${describe(recording, v.dev, v.w.req.id)}`, vol.filter((x) => x !== v)));
      offer('single', () => keep('single', `only ${describe(recording, v.dev, v.w.req.id)}`, [v]));
    }
    // 4. Subsets: exhaustive when small, else seeded random.
    if (vol.length > 1 && vol.length <= exhaustiveUpTo) {
      for (let mask = 1; mask < (1 << vol.length) - 1; mask++) {
        offer('subsets', () => keep('subsets', `subset ${mask.toString(2).padStart(vol.length, '0')}`, vol.filter((_, i) => (mask >> i) & 1)));
      }
    } else if (vol.length > exhaustiveUpTo) {
      for (let i = 0; i < randomSubsets; i++) {
        offer('subsets', () => keep('subsets', 'random subset', vol.filter(() => rng.chance(0.5))));
      }
    }
    // 5. Torn writes: one multi-unit write (volatile or in flight) torn, every other volatile write kept.
    for (const v of [...vol.slice(-k), ...inflight]) {
      const unit = recording.devices[v.dev]!.limits.logicalBlockSize / SECTOR_SIZE;
      if (unitsOf(v.w, unit).length < 2) continue;
      offer('torn', () => {
        const t = tear(rng, v.w, unit);
        return keep('torn', `tear ${describe(recording, v.dev, v.w.req.id)} to ${formatRanges(t)}`, vol, [{ v, k: t }]);
      });
    }
    // 6. Independent per-device choices (ARCHITECTURE §1.8).
    if (devs.length > 1) {
      for (const d of devs) {
        const name = recording.devices[d]!.name;
        offer('per-device', () => state('per-device', `${name} keeps all, others none`, (x) => ({ volatile: x === d ? 'all' : 'none' })));
        offer('per-device', () => state('per-device', `${name} keeps none, others all`, (x) => ({ volatile: x === d ? 'none' : 'all' })));
      }
      offer('per-device', () => keep('per-device', 'random per-device subsets', vol.filter(() => rng.chance(0.5))));
    }
    sampleCut();
  }
  return [...reservoirs.values()]
    .flatMap((r) => r.kept)
    .sort((a, b) => a.state.cut - b.state.cut || a.order - b.order)
    .map((x) => x.state);
}

/**
 * Weighted reservoir sampling (Efraimidis–Spirakis A-Res): keeps `cap` items
 * with probability proportional to their weight; an item is built only when
 * it is kept, while the replay stands at its cut.
 */
class Reservoir {
  readonly kept: { order: number; key: number; state: CrashState }[] = [];
  private seen = 0;
  private min = -1;

  constructor(private readonly cap: number) {}

  offer(rng: Rng, weight: number, make: () => CrashState): void {
    const order = this.seen++;
    const key = Math.log((rng.u32() + 1) / 0x100000001) / weight;
    if (this.kept.length < this.cap) {
      this.kept.push({ order, key, state: make() });
      this.min = -1;
      return;
    }
    if (this.min < 0) this.min = this.lowest();
    if (key <= this.kept[this.min]!.key) return;
    this.kept[this.min] = { order, key, state: make() };
    this.min = -1;
  }

  private lowest(): number {
    let at = 0;
    this.kept.forEach((k, i) => {
      if (k.key < this.kept[at]!.key) at = i;
    });
    return at;
  }
}

/** Materialises the crash images of states (sorted by cut), one device index → image map each. */
export function* crashImages(recording: Recording, states: readonly CrashState[]) {
  const replay = new Replay(recording);
  for (const s of states) {
    replay.advanceTo(s.cut);
    const images = new Map([...s.disks].map(([dev, sel]) => [dev, replay.disks.get(dev)!.crash(sel)]));
    yield { state: s, images, replay };
  }
}

/** "write #3 (superblock) on meta, sectors 0+1". */
export function describe(recording: Recording, dev: number, id: number): string {
  const sub = recording.submitOf(dev, id);
  const name = recording.devices[dev]?.name ?? `device ${dev}`;
  if (!sub) return `request #${id} on ${name}`;
  if (sub.op === 'flush') return `flush #${id} on ${name}`;
  const tag = sub.tag ? ` (${sub.tag})` : '';
  return `${sub.fua ? 'FUA ' : ''}${sub.op} #${id}${tag} on ${name}, sectors ${sub.sector}+${sub.count}`;
}

function key(dev: number, id: number): string {
  return `${dev}:${id}`;
}

function completionOrder(recording: Recording): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of recording.events) if (e.type === 'complete') out.set(key(e.dev, e.id), e.seq);
  return out;
}

function unitsOf(w: PendingWrite, unit: number): number[] {
  const out: number[] = [];
  for (const [s, e] of w.live) for (let u = s; u < e; u += unit) out.push(u);
  return out;
}

/** A random non-empty proper subset of the write's live atomic units. */
function tear(rng: Rng, w: PendingWrite, unit: number): KeptWrite {
  const units = unitsOf(w, unit);
  let kept: number[] = [];
  while (kept.length === 0 || kept.length === units.length) kept = units.filter(() => rng.chance(0.5));
  return { id: w.req.id, ranges: kept.map((sector) => ({ sector, count: unit })) };
}

function formatRanges(k: KeptWrite): string {
  return (k.ranges ?? []).map((r) => `${r.sector}+${r.count}`).join(',');
}
