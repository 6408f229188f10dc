/**
 * A reference count per block of a device (spec/thin-metadata.md §5): the
 * metadata space map counts metadata blocks, the data space map data blocks.
 */
export interface SpaceMap {
  readonly nrBlocks: number;
  /** Blocks that can still be allocated (§5.8: committed free minus this transaction's allocations). */
  nrFree(): number;
  count(b: number): Promise<number>;
  inc(b: number): Promise<void>;
  dec(b: number): Promise<void>;
  /** A block free now and at the last commit, its count set to 1 (§5.8). */
  newBlock(): Promise<number>;
  /** Grows the device by `extra` blocks. */
  extend(extra: number): Promise<void>;
  /** Writes the space map's own changes; afterwards `root()` describes it. */
  commit(): Promise<void>;
  /** The 32-byte space-map root (§5.1) as of the last commit(). */
  root(): Buffer;
}
