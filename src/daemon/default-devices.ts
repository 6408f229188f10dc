/**
 * The embedded default: what `dmkit serve` creates on a data dir with no
 * state and no config, so that a first start serves something useful. Two
 * sparse 1 GiB backing files, and two 1 GiB devices that use every sector of
 * them without overlapping:
 *
 *   dmkit0  linear:  first half of disk0, then first half of disk1
 *   dmkit1  striped: 2 stripes of 64 KiB chunks over the second halves
 */
import { join } from 'node:path';
import { FileDevice } from '../block/file-device.ts';
import type { ConfigDevice } from './config.ts';

const DISK_SECTORS = 2 * 1024 * 1024; // 1 GiB
const HALF = DISK_SECTORS / 2;

/** Creates the backing files when missing and returns the devices. */
export async function defaultDevices(dataDir: string): Promise<ConfigDevice[]> {
  const disk0 = join(dataDir, 'disk0.img');
  const disk1 = join(dataDir, 'disk1.img');
  await createSparse(disk0, DISK_SECTORS);
  await createSparse(disk1, DISK_SECTORS);
  return [
    {
      name: 'dmkit0',
      uuid: '',
      readOnly: false,
      table: [`0 ${HALF} linear ${disk0} 0`, `${HALF} ${HALF} linear ${disk1} 0`],
    },
    {
      name: 'dmkit1',
      uuid: '',
      readOnly: false,
      table: [`0 ${DISK_SECTORS} striped 2 128 ${disk0} ${HALF} ${disk1} ${HALF}`],
    },
  ];
}

/** FileDevice creates the file, or extends a shorter one sparsely; a longer one is left alone. */
async function createSparse(path: string, sectors: number): Promise<void> {
  const device = await FileDevice.open(path, { sectors });
  await device.close();
}
