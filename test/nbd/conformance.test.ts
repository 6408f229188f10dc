/** NbdDevice passes the shared BlockDevice conformance suite over dmkit's server and over nbdkit. */
import { MemoryDevice } from '../../src/block/memory-device.ts';
import { NbdDevice } from '../../src/nbd/client-device.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';
import { serve, startNbdkit } from './helpers.ts';

blockDeviceConformance('NbdDevice over dmkit NbdServer', async () => {
  const s = await serve({ disk: new MemoryDevice(16384, { name: 'disk' }) });
  return {
    dev: await NbdDevice.connect(s.uri('disk')),
    reopen: () => NbdDevice.connect(s.uri('disk')),
    cleanup: () => s.close(),
  };
});

blockDeviceConformance('NbdDevice over a read-only dmkit export', async () => {
  const s = await serve({ ro: new MemoryDevice(4096, { name: 'ro' }) }, { readOnly: new Set(['ro']) });
  return { dev: await NbdDevice.connect(s.uri('ro')), cleanup: () => s.close() };
});

blockDeviceConformance('NbdDevice over nbdkit memory', async () => {
  const k = await startNbdkit(['memory', '8M']);
  return {
    dev: await NbdDevice.connect(k.uri),
    reopen: () => NbdDevice.connect(k.uri),
    cleanup: () => k.stop(),
  };
});
