/**
 * Thin volumes and snapshots, opened through the mapper as /dev/mapper/NAME,
 * pass the BlockDevice conformance suite (ARCHITECTURE §3), including
 * "flushed data survives close and reopen" on a pool rebuilt from the same
 * metadata and data disks.
 */
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';
import { ThinStack, pattern } from './thin-support.ts';

const VOLUME = 16384;

function thinSubject(opts: { features?: string[]; snapshot?: boolean; blockSectors?: number } = {}) {
  return async () => {
    const meta = new MemoryDevice(8192, { name: 'meta' });
    const data = new MemoryDevice(65536, { name: 'data' });
    const setup = { meta, data, features: opts.features ?? [], blockSectors: opts.blockSectors ?? 128 };
    const stacks: ThinStack[] = [];
    const open = async (fresh: boolean) => {
      const s = await new ThinStack(setup).createPool();
      stacks.push(s);
      if (!opts.snapshot) return s.volume('vol', 1, VOLUME, { existing: !fresh });
      if (fresh) {
        const origin = await s.volume('origin', 1, VOLUME);
        await origin.write(0, pattern(7, 1024));
        await origin.write(8192, pattern(8, 512));
        await s.message('create_snap', '2', '1');
        await origin.write(0, pattern(9, 256));
      }
      return s.volume('vol', 2, VOLUME, { existing: true });
    };
    const dev = await open(true);
    return {
      dev,
      // The first stack stays up (idle: everything was flushed) so the closed handle keeps its size; cleanup ends both.
      reopen: () => open(false),
      cleanup: async () => {
        for (const s of stacks.splice(0)) await s.close();
      },
    };
  };
}

blockDeviceConformance('thin volume', thinSubject());
blockDeviceConformance('thin snapshot of a written origin', thinSubject({ snapshot: true }));
blockDeviceConformance('thin volume, 192 KiB blocks, skip_block_zeroing', thinSubject({ blockSectors: 384, features: ['skip_block_zeroing'] }));
blockDeviceConformance('thin volume, no_discard_passdown', thinSubject({ features: ['no_discard_passdown'] }));
