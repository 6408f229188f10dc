/**
 * Random numbers for flakey's random_read_corrupt / random_write_corrupt
 * (flakey §4.3).
 *
 * Linux draws from get_random_u64()/get_random_u32()/get_random_u8() and has
 * no seed. dmkit injects the source instead (makeFlakeyTarget) so that tests
 * and the crash explorer can reproduce a run bit for bit from one seed (the
 * simulator's seeded Rng in src/sim/rng.ts fits this interface); the
 * registered `flakey` type uses the unseeded crypto source, as Linux does.
 */
import { randomFillSync } from 'node:crypto';

export interface RandomSource {
  /** A uniformly distributed unsigned 32-bit integer. */
  u32(): number;
}

/** get_random_u64(): two 32-bit draws, high word first. */
export function randomU64(rng: RandomSource): bigint {
  const hi = BigInt(rng.u32());
  return (hi << 32n) | BigInt(rng.u32());
}

const BATCH = 256;

/** The kernel's unseeded randomness: the OS CSPRNG, read in batches. */
export function cryptoRandom(): RandomSource {
  const words = new Uint32Array(BATCH);
  let next = BATCH;
  return {
    u32() {
      if (next === BATCH) {
        randomFillSync(words);
        next = 0;
      }
      return words[next++]!;
    },
  };
}
