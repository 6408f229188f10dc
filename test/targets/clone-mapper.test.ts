/**
 * A clone device through the mapper, opened as a program opens
 * /dev/mapper/NAME, passes the BlockDevice conformance suite — with
 * background hydration running, without it, and over 4096-byte blocks.
 */
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { cloneTarget } from '../../src/targets/clone/clone.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';
import { memoryRegistry } from '../helpers/registry.ts';
import { sourceData } from './clone-support.ts';

function cloned(table: string, limits: { logicalBlockSize?: number } = {}) {
  return async () => {
    const { registry } = memoryRegistry([cloneTarget], { '/dev/meta': 8192 });
    const source = new MemoryDevice(16384, { name: 'source', limits });
    await source.write(0, sourceData(0, 16384));
    registry.attach('/dev/dest', new MemoryDevice(16384, { name: 'dest', limits }));
    registry.attach('/dev/source', source);
    const lines = [`0 16384 clone /dev/meta /dev/dest /dev/source ${table}`];
    await registry.create('clone', { table: lines });
    return {
      dev: registry.open('clone'),
      // A reload: suspend (which commits), load a new table over the same metadata, resume.
      reopen: async () => {
        await registry.suspend('clone');
        await registry.load('clone', lines);
        await registry.resume('clone');
        return registry.open('clone');
      },
      cleanup: () => registry.shutdown(),
    };
  };
}

blockDeviceConformance('clone, hydrating in batches', cloned('64 0 4 hydration_threshold 4 hydration_batch_size 4'));
blockDeviceConformance('clone, no background hydration', cloned('8 1 no_hydration'));
blockDeviceConformance('clone over 4096-byte blocks, no discard passdown', cloned('16 1 no_discard_passdown', { logicalBlockSize: 4096 }));
