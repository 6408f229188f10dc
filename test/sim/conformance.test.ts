import { Scheduler } from '../../src/sim/scheduler.ts';
import { SimulatedDisk } from '../../src/sim/simulated-disk.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';

/** A disk plus its reopen: power comes back with only what was durable. */
function subject(sectors: number, limits: ConstructorParameters<typeof SimulatedDisk>[0]['limits'] = {}) {
  return async () => {
    const scheduler = new Scheduler({ seed: 7 });
    const dev = new SimulatedDisk({ name: 'sim0', sectors, scheduler, limits });
    return {
      dev,
      reopen: async () => new SimulatedDisk({ name: 'sim0', image: dev.crash({ volatile: 'none' }), scheduler, limits }),
    };
  };
}

blockDeviceConformance('SimulatedDisk', subject(16384));
blockDeviceConformance('SimulatedDisk, 4096-byte logical blocks', subject(16384, { logicalBlockSize: 4096 }));
blockDeviceConformance('SimulatedDisk, discard without zeroes, small maxTransfer', subject(3001, { discardZeroes: false, maxTransfer: 64 }));
blockDeviceConformance('SimulatedDisk, write-through, read-only', subject(4096, { flush: false, readOnly: true }));
