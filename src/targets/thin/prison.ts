/**
 * Serialisation helpers of the thin targets, after Linux's bio prison
 * (dm-bio-prison-v1): I/O to one virtual block, or a discard of a range of
 * them, holds a cell so that no other request sees the block between its
 * lookup and its remap (a provisioning or a sharing break in progress, a
 * discard unmapping it). Requests on other blocks run in parallel.
 */

interface Cell {
  readonly begin: number;
  readonly end: number;
}

export class BlockPrison {
  private readonly cells = new Set<Cell>();
  private waiters: (() => void)[] = [];

  /** Holds [begin, end) once no held cell overlaps it; returns the release function. */
  async lock(begin: number, end = begin + 1): Promise<() => void> {
    while (this.overlaps(begin, end)) await new Promise<void>((wake) => this.waiters.push(wake));
    const cell: Cell = { begin, end };
    this.cells.add(cell);
    return () => {
      this.cells.delete(cell);
      const waiters = this.waiters;
      this.waiters = [];
      for (const wake of waiters) wake();
    };
  }

  private overlaps(begin: number, end: number): boolean {
    for (const c of this.cells) if (c.begin < end && begin < c.end) return true;
    return false;
  }
}

/** One holder at a time, in arrival order (the pool's metadata lock, Linux's pmd->root_lock). */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * Counts requests in flight on one thin device and can hold new ones back
 * while it waits for the count to reach zero: create_snap quiesces its
 * origin this way, so no write races with the snapshot (spec §9.5).
 */
export class IoGate {
  private inflight = 0;
  private closed = 0;
  private drained: (() => void)[] = [];
  private reopened: (() => void)[] = [];

  async enter(): Promise<void> {
    while (this.closed > 0) await new Promise<void>((wake) => this.reopened.push(wake));
    this.inflight++;
  }

  leave(): void {
    if (--this.inflight === 0) for (const wake of this.drained.splice(0)) wake();
  }

  /** Runs `fn` with no request of this device in flight and none admitted. */
  async quiesce<T>(fn: () => Promise<T>): Promise<T> {
    this.closed++;
    try {
      while (this.inflight > 0) await new Promise<void>((wake) => this.drained.push(wake));
      return await fn();
    } finally {
      if (--this.closed === 0) for (const wake of this.reopened.splice(0)) wake();
    }
  }
}
