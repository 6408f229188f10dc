/** Half-open sector intervals [start, end), sorted and disjoint within one list. */
export type Span = readonly [start: number, end: number];

/** The parts of `spans` outside [start, end). */
export function subtractSpan(spans: readonly Span[], start: number, end: number): Span[] {
  const out: Span[] = [];
  for (const [s, e] of spans) {
    if (e <= start || s >= end) {
      out.push([s, e]);
      continue;
    }
    if (s < start) out.push([s, start]);
    if (e > end) out.push([end, e]);
  }
  return out;
}

/** The parts of `spans` inside any of `within` (both sorted, disjoint). */
export function intersectSpans(spans: readonly Span[], within: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const [s, e] of spans) {
    for (const [ws, we] of within) {
      const lo = Math.max(s, ws);
      const hi = Math.min(e, we);
      if (lo < hi) out.push([lo, hi]);
    }
  }
  return out;
}

export function spanSectors(spans: readonly Span[]): number {
  let n = 0;
  for (const [s, e] of spans) n += e - s;
  return n;
}
