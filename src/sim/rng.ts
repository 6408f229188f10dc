/**
 * A small seeded PRNG (xoshiro128**, state seeded by splitmix32) so that one
 * seed reproduces a simulated run bit for bit (CRASH-TESTING §1). Math.random
 * is never used anywhere in src/sim or src/crash.
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`rng seed ${seed} is not a safe integer`);
    // splitmix32 over both halves of the seed fills the 128-bit state.
    let s = (seed >>> 0) ^ Math.floor(seed / 0x100000000);
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() | 1; // never the all-zero state
  }

  /** A uniform unsigned 32-bit integer. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** A uniform integer in [0, n), n ≤ 2^32. */
  below(n: number): number {
    if (!(n > 0) || n > 0x100000000) throw new RangeError(`rng range ${n} is not in (0, 2^32]`);
    // Rejection sampling keeps the distribution exactly uniform.
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const x = this.u32();
      if (x < limit) return x % n;
    }
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() < p * 0x100000000;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('rng pick from an empty list');
    return items[this.below(items.length)] as T;
  }

  /** A 53-bit seed for a child generator: independent streams from one seed. */
  seed(): number {
    return (this.u32() & 0x1fffff) * 0x100000000 + this.u32();
  }

  fork(): Rng {
    return new Rng(this.seed());
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
