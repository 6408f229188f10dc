/**
 * The commit-point lint (CRASH-TESTING §2.5): a static check of a recording.
 * For each write tagged `superblock`, every write it may depend on — the
 * `metadata` writes to its device since the previous superblock write, and
 * the `data` writes (on any device) that completed since then — must have
 * been made durable on its own device, by FUA or by a flush submitted after
 * it completed, before the superblock write was submitted. Catches R1, R2 and
 * R3 violations without enumerating a single crash state.
 *
 * A recording does not say which data a commit points at; a target that can
 * tell (by decoding its superblock) passes `references`, and then each newly
 * referenced data sector must be durable through some data write. Without it
 * the lint assumes every data write completed since the previous commit is
 * referenced (exact for one request at a time; with concurrent requests it
 * may flag a write that raced with a commit it was not part of).
 */
import type { CompleteEvent, Recording, SubmitEvent } from './recording.ts';
import { type Span, subtractSpan } from '../sim/spans.ts';
import { describe } from './families.ts';

export interface LintViolation {
  readonly superblock: SubmitEvent;
  readonly dependency: SubmitEvent;
  readonly message: string;
}

/**
 * The data sectors a superblock write newly points at (e.g. blocks its bitmap
 * marks that the previous superblock did not), as recorded device index and
 * sector range; a target that can decode its superblock supplies this.
 */
export type References = (superblock: SubmitEvent, previous: SubmitEvent | undefined) =>
  readonly { readonly dev: number; readonly sector: number; readonly count: number }[];

export function commitPointLint(recording: Recording, references?: References): LintViolation[] {
  const completion = new Map<string, CompleteEvent>();
  for (const e of recording.events) if (e.type === 'complete') completion.set(`${e.dev}:${e.id}`, e);
  const done = (s: SubmitEvent) => completion.get(`${s.dev}:${s.id}`);
  const submits = recording.events.filter((e): e is SubmitEvent => e.type === 'submit' && recording.devices[e.dev]?.initial !== undefined);
  const flushes = submits.filter((s) => s.op === 'flush');
  /** Was `w` durable, by FUA or by a flush submitted after it completed, before `sb` was submitted? */
  const durable = (w: SubmitEvent, sb: SubmitEvent): boolean => {
    const wd = done(w);
    if (!wd || !wd.ok || wd.seq > sb.seq) return false;
    if (w.fua) return true;
    return flushes.some((f) => {
      const fd = done(f);
      return f.dev === w.dev && f.seq > wd.seq && fd !== undefined && fd.ok && fd.seq < sb.seq;
    });
  };
  /** Parts of `span` on `dev` not made durable before `sb` by data writes submitted after `since`. */
  const notDurable = (dev: number, span: Span, since: number, sb: SubmitEvent): Span[] => {
    let left: Span[] = [span];
    for (const w of submits) {
      if (w.dev === dev && w.tag === 'data' && w.seq > since && w.op !== 'flush' && durable(w, sb)) {
        left = subtractSpan(left, w.sector, w.sector + w.count);
      }
    }
    return left;
  };
  const out: LintViolation[] = [];
  const lastCommit = new Map<number, SubmitEvent>();
  const report = (sb: SubmitEvent, dep: SubmitEvent, why: string) => out.push({
    superblock: sb, dependency: dep,
    message: `${describe(recording, dep.dev, dep.id)} had to be durable before ${describe(recording, sb.dev, sb.id)}: ${why}`,
  });
  const why = (dep: SubmitEvent, sb: SubmitEvent) => {
    const d = done(dep);
    return !d || !d.ok || d.seq > sb.seq
      ? `it had not completed successfully when the superblock write was submitted (event ${sb.seq})`
      : `no flush of ${recording.devices[dep.dev]!.name} completed between events ${d.seq} and ${sb.seq}`;
  };

  for (const sb of submits) {
    if (sb.tag !== 'superblock' || sb.op === 'flush') continue;
    const previous = lastCommit.get(sb.dev);
    const since = previous?.seq ?? -1;
    lastCommit.set(sb.dev, sb);
    const between = submits.filter((w) => w.seq > since && w.seq < sb.seq && w.op !== 'flush');
    for (const dep of between) {
      if (dep.tag === 'metadata' && dep.dev === sb.dev && !durable(dep, sb)) report(sb, dep, why(dep, sb));
    }
    if (references) {
      for (const r of references(sb, previous)) {
        for (const [s, e] of notDurable(r.dev, [r.sector, r.sector + r.count], -1, sb)) {
          const dep = submits.filter((w) => w.dev === r.dev && w.tag === 'data' && w.seq < sb.seq && w.sector < e && w.sector + w.count > s).pop();
          if (dep) report(sb, dep, why(dep, sb));
          else out.push({ superblock: sb, dependency: sb, message: `${describe(recording, sb.dev, sb.id)} points at sectors ${s}+${e - s} of ${recording.devices[r.dev]!.name}, which no data write wrote` });
        }
      }
      continue;
    }
    // Without references: every data write completed since the previous commit is assumed referenced.
    for (const dep of between) {
      const d = done(dep);
      if (dep.tag !== 'data' || !d || d.seq > sb.seq) continue;
      if (notDurable(dep.dev, [dep.sector, dep.sector + dep.count], since, sb).length > 0) report(sb, dep, why(dep, sb));
    }
  }
  return out;
}
