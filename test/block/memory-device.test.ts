import { MemoryDevice } from '../../src/block/memory-device.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';

blockDeviceConformance('MemoryDevice', async () => ({ dev: new MemoryDevice(16384, { name: 'mem0' }) }));

blockDeviceConformance('MemoryDevice, 4096-byte logical blocks', async () => ({
  dev: new MemoryDevice(16384, { name: 'mem4k', limits: { logicalBlockSize: 4096 } }),
}));

blockDeviceConformance('MemoryDevice, small maxTransfer, odd size', async () => ({
  dev: new MemoryDevice(3001, { name: 'mem-odd', limits: { maxTransfer: 64 } }),
}));

blockDeviceConformance('MemoryDevice, read-only', async () => ({
  dev: new MemoryDevice(4096, { name: 'mem-ro', limits: { readOnly: true } }),
}));
