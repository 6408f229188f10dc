/**
 * The top-device oracle (CRASH-TESTING §2.3): from the top device's recorded
 * requests, what each sector may hold after a crash at a given cut.
 */
import { SECTOR_SIZE } from '../block/device.ts';
import type { Recording } from './recording.ts';

/** A top-level write, write-zeroes or discard, with what the crash model makes of it. */
export interface TopRequest {
  readonly id: number;
  readonly op: 'write' | 'write-zeroes' | 'discard';
  readonly submitted: number;
  /** Event of its completion; Infinity if it never completed. */
  readonly completed: number;
  readonly ok: boolean;
  readonly fua: boolean;
  readonly sector: number;
  readonly count: number;
  /** null: zeroes. */
  readonly data: Buffer | null;
  /** A discard on a device that does not promise zeroes: adds zeroes as a possibility, guarantees nothing. */
  readonly weak: boolean;
  /** The first event after which this request must survive (FUA completion or a covering flush's completion); Infinity: never. */
  readonly durableAt: number;
}

const ZERO = Buffer.alloc(SECTOR_SIZE);

/**
 * The top device's writes, write-zeroes and discards in submission order,
 * each with the event from which a crash must keep it (R6: a completed
 * flush covers every write that completed before it was submitted).
 */
export function topRequests(recording: Recording, top: number): TopRequest[] {
  const requests: { -readonly [K in keyof TopRequest]: TopRequest[K] }[] = [];
  const byId = new Map<number, (typeof requests)[number]>();
  const flushes: { submitted: number; completed: number }[] = [];
  const flushById = new Map<number, { submitted: number; completed: number }>();
  const discardZeroes = recording.devices[top]!.limits.discardZeroes;
  for (const e of recording.events) {
    if (e.dev !== top) continue;
    if (e.type === 'submit') {
      if (e.op === 'flush') {
        flushById.set(e.id, { submitted: e.seq, completed: Infinity });
        continue;
      }
      const r: (typeof requests)[number] = {
        id: e.id, op: e.op, submitted: e.seq, completed: Infinity, ok: false, fua: e.fua, sector: e.sector, count: e.count,
        data: e.op === 'write' ? e.data : null, weak: e.op === 'discard' && !discardZeroes, durableAt: Infinity,
      };
      byId.set(e.id, r);
      requests.push(r);
    } else {
      const r = byId.get(e.id);
      if (r) {
        r.completed = e.seq;
        r.ok = e.ok;
      }
      const f = flushById.get(e.id);
      if (f && e.ok) {
        f.completed = e.seq;
        flushes.push(f);
      }
    }
  }
  for (const r of requests) {
    if (!r.ok || r.weak) continue;
    if (r.fua) r.durableAt = r.completed;
    for (const f of flushes) if (f.submitted > r.completed) r.durableAt = Math.min(r.durableAt, f.completed);
  }
  return requests;
}

export class TopModel {
  private readonly writes: readonly TopRequest[];

  /** `initial`: the top device's whole content before the workload. */
  constructor(recording: Recording, readonly top: number, private readonly initial: Buffer) {
    this.writes = topRequests(recording, top);
  }

  /** Per sector, the index of the newest write to `sector` that must survive a crash at `cut`, if any. */
  private guaranteed(cut: number): Int32Array {
    const g = new Int32Array(this.initial.length / SECTOR_SIZE).fill(-1);
    const durable = [...this.writes.keys()].filter((i) => this.writes[i]!.durableAt < cut)
      .sort((a, b) => this.writes[a]!.completed - this.writes[b]!.completed);
    for (const i of durable) g.fill(i, this.writes[i]!.sector, this.writes[i]!.sector + this.writes[i]!.count);
    return g;
  }

  /**
   * Checks the recovered top content at `cut`: acknowledged-and-flushed data
   * survives, and every sector holds, whole, the last durable value or a value
   * some later, concurrent or unfinished write produced (never garbage or
   * another sector's data). Overlapping writes in flight at the same time are
   * unordered on a stacked device (Linux promises nothing for them): a target
   * may complete a FUA write after an overlapping plain one that its disk
   * stored later. Returns the first violation, or undefined.
   */
  check(cut: number, got: Buffer): string | undefined {
    const sectors = this.initial.length / SECTOR_SIZE;
    const g = this.guaranteed(cut);
    const ok = new Uint8Array(sectors);
    for (let s = 0; s < sectors; s++) ok[s] = this.expected(g[s]!, s).equals(sectorOf(got, s)) ? 1 : 0;
    for (const w of this.writes) {
      if (w.submitted >= cut) continue;
      const undecided = w.completed >= cut || !w.ok || w.weak;
      for (let s = w.sector; s < w.sector + w.count; s++) {
        if (ok[s]) continue;
        const gw = g[s]! >= 0 ? this.writes[g[s]!] : undefined;
        // A write that completed before the durable one was even submitted is superseded.
        // One in flight at the same time is not: overlapping concurrent writes are unordered.
        if (!undecided && gw && w !== gw && w.completed < gw.submitted) continue;
        if (valueOf(w, s).equals(sectorOf(got, s))) ok[s] = 1;
      }
    }
    const bad = ok.indexOf(0);
    if (bad < 0) return undefined;
    return this.explain(cut, g, bad, sectorOf(got, bad));
  }

  private expected(g: number, s: number): Buffer {
    return g < 0 ? sectorOf(this.initial, s) : valueOf(this.writes[g]!, s);
  }

  private explain(cut: number, g: Int32Array, s: number, actual: Buffer): string {
    const gw = g[s]! >= 0 ? this.writes[g[s]!] : undefined;
    const want = gw ? `top write #${gw.id} (${gw.sector}+${gw.count}, durable since event ${gw.durableAt})` : 'its initial content';
    const source = this.writes.find((w) => w.submitted < cut && s >= w.sector && s < w.sector + w.count && valueOf(w, s).equals(actual));
    const what = source
      ? `the value of top write #${source.id}, which ${gw ? `write #${gw.id}` : 'nothing'} durably replaced`
      : sectorOf(this.initial, s).equals(actual)
        ? 'its initial content: acknowledged, flushed data was lost'
        : `data no write put there (${actual.subarray(0, 16).toString('hex')}…)`;
    return `top sector ${s} holds ${what}; it must hold ${want} or a later write`;
  }
}

function sectorOf(buf: Buffer, s: number): Buffer {
  return buf.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
}

function valueOf(w: TopRequest, s: number): Buffer {
  return w.data ? sectorOf(w.data, s - w.sector) : ZERO;
}
