import type { Extent } from './device.ts';

/**
 * The extents of [sector, sector+count) on a device that allocates in fixed
 * chunks: runs of allocated chunks are data, runs of unallocated ones are
 * holes that read as zeroes.
 */
export function chunkExtents(sector: number, count: number, chunkSectors: number, isHole: (chunk: number) => boolean): Extent[] {
  const out: Extent[] = [];
  const end = sector + count;
  for (let s = sector; s < end; ) {
    const chunk = Math.floor(s / chunkSectors);
    const next = Math.min(end, (chunk + 1) * chunkSectors);
    const hole = isHole(chunk);
    const last = out[out.length - 1];
    if (last && last.hole === hole) last.count += next - s;
    else out.push({ sector: s, count: next - s, hole, zero: hole });
    s = next;
  }
  return out;
}
