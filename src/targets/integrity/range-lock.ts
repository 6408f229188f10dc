/**
 * dm-integrity's range locks (integrity.md §4.1): overlapping requests are
 * serialized; a later overlapping request waits, and waiters are served in
 * arrival order (a request also waits behind an earlier waiter it overlaps).
 */
interface Holder {
  readonly start: number;
  readonly end: number;
  granted: boolean;
  wake?: () => void;
}

export class RangeLocks {
  private readonly list: Holder[] = [];

  /** Locks [start, end); resolves to the unlock function. */
  async lock(start: number, end: number): Promise<() => void> {
    const h: Holder = { start, end, granted: false };
    const blocked = this.list.some((o) => overlaps(o, h));
    this.list.push(h);
    if (blocked) await new Promise<void>((wake) => (h.wake = wake));
    h.granted = true;
    return () => this.unlock(h);
  }

  private unlock(h: Holder): void {
    this.list.splice(this.list.indexOf(h), 1);
    for (let i = 0; i < this.list.length; i++) {
      const w = this.list[i]!;
      if (w.granted || !w.wake) continue;
      if (this.list.slice(0, i).some((o) => overlaps(o, w))) continue;
      const wake = w.wake;
      w.wake = undefined;
      w.granted = true;
      wake();
    }
  }
}

function overlaps(a: Holder, b: Holder): boolean {
  return a.start < b.end && b.start < a.end;
}
