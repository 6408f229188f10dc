/**
 * The embedded default: what `dmkit serve` creates on a data dir with no
 * state and no config, so that a first start serves something useful. A
 * thin pool in two sparse files, and one thin volume on it:
 *
 *   pool   thin-pool: 64 MiB metadata (thin-meta.img), 4 GiB data
 *          (thin-data.img), 64 KiB blocks
 *   vol0   thin: 2 GiB volume, thin device 0 of the pool
 *
 * The volume's create_thin is done here, on the metadata file, only when
 * that file is still blank; a data dir whose metadata exists (state.json
 * gone, say) is reopened as it is, never reformatted.
 */
import { join } from 'node:path';
import { FileDevice } from '../block/file-device.ts';
import { ThinMetadata } from '../pdata/thin/metadata.ts';
import type { ConfigDevice } from './config.ts';

const META_SECTORS = 64 * 2048; // 64 MiB
const DATA_SECTORS = 4 * 1024 * 2048; // 4 GiB
const BLOCK_SECTORS = 128; // 64 KiB
const LOW_WATER_BLOCKS = 1024; // 64 MiB left: dmkit wait pool wakes up
const VOLUME_SECTORS = 2 * 1024 * 2048; // 2 GiB
const VOLUME_ID = 0;

/** Creates the backing files when missing, the volume on fresh metadata, and returns the devices. */
export async function defaultDevices(dataDir: string): Promise<ConfigDevice[]> {
  const meta = join(dataDir, 'thin-meta.img');
  const data = join(dataDir, 'thin-data.img');
  await createSparse(data, DATA_SECTORS);
  await prepareMetadata(meta);
  return [
    {
      name: 'pool',
      uuid: '',
      readOnly: false,
      table: [`0 ${DATA_SECTORS} thin-pool ${meta} ${data} ${BLOCK_SECTORS} ${LOW_WATER_BLOCKS}`],
    },
    {
      name: 'vol0',
      uuid: '',
      readOnly: false,
      table: [`0 ${VOLUME_SECTORS} thin /dev/mapper/pool ${VOLUME_ID}`],
    },
  ];
}

/** Formats blank metadata and creates thin device 0 in it (create_thin, committed); existing metadata is left alone. */
async function prepareMetadata(path: string): Promise<void> {
  const device = await FileDevice.open(path, { sectors: META_SECTORS });
  try {
    if (!(await ThinMetadata.isBlank(device))) return;
    const md = await ThinMetadata.format(device, { dataBlockSize: BLOCK_SECTORS, nrDataBlocks: DATA_SECTORS / BLOCK_SECTORS });
    await md.createThin(VOLUME_ID);
    await md.commit();
    await md.close();
  } finally {
    await device.close();
  }
}

/** FileDevice creates the file, or extends a shorter one sparsely; a longer one is left alone. */
async function createSparse(path: string, sectors: number): Promise<void> {
  const device = await FileDevice.open(path, { sectors });
  await device.close();
}
