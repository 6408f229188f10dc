import type { BlockDevice } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { BlockManager } from '../../pdata/block-manager.ts';
import { type TreeSpec, checkTree } from '../../pdata/btree/check.ts';
import { blockChecksum } from '../../pdata/checksum.ts';
import { readU64 } from '../../pdata/endian.ts';
import { decodeSpaceMapRoot } from '../../pdata/space-map/root.ts';
import { decodeBlockTime } from '../../pdata/thin/block-time.ts';
import { DEVICE_DETAILS_SIZE, type DeviceDetails, decodeDeviceDetails } from '../../pdata/thin/device-details.ts';
import { THIN_VERSION, decodeSuperblock } from '../../pdata/thin/superblock.ts';
import { TransactionManager } from '../../pdata/transaction-manager.ts';
import { SALT } from '../../pdata/validators.ts';
import { type DumpOptions, deviceAttrs, selected, superblockAttrs } from './dump.ts';
import { findBestRoots, walksCleanly } from './root-scan.ts';
import { RunMerger, type SuperblockAttrs, type SuperblockOverrides, type ThinEmitter, withOverrides } from './xml.ts';

/*
 * thin_dump --repair (spec/thin-metadata.md §11.1–11.2; thin-provisioning-tools
 * 0.9.0 metadata_repair): dump whatever the metadata still holds, for
 * thin_repair to restore into fresh metadata.
 *
 * - The superblock counts if its checksum is right; otherwise one is made up
 *   from --transaction-id, --data-block-size and --nr-data-blocks, which are
 *   then required, with time 100000 and no trees.
 * - If the details tree or the mapping tree's top level does not walk
 *   cleanly from the superblock's roots, every metadata block is scanned for
 *   better roots (root-scan.ts); if none is found the damaged ones are used.
 * - The walk then skips every node that fails thin_check's node checks, with
 *   all the mappings below it; a device keeps its element (and its details'
 *   mapped_blocks, which restore recomputes anyway) even if all of its
 *   mappings are lost.
 * - A device in the mapping tree without details is dropped, and so is the
 *   rest of the top-level leaf it is in: 0.9.0 raises "mappings present for
 *   device N, but it isn't present in device tree" while visiting that leaf,
 *   and --repair treats the leaf as damaged. Devices with details but no
 *   mapping tree are not dumped.
 * - Space maps are never read: restore rebuilds them from the mappings.
 * - --dev-id and --skip-mappings apply as in a plain dump (0.9.0's repair
 *   path ignores them).
 */

/** The superblock fields a repair uses. */
interface RepairSuperblock {
  attrs: SuperblockAttrs;
  deviceDetailsRoot: number;
  dataMappingRoot: number;
}

/** The time 0.9.0 gives a made-up superblock when no trees are found (its own FIXME). */
const RECREATED_TIME = 100000;

export async function dumpRepaired(device: BlockDevice, e: ThinEmitter, opts: DumpOptions = {}): Promise<void> {
  const bm = new BlockManager(device, { readOnly: true });
  try {
    const tm = TransactionManager.readOnly(bm);
    const sb = (await readSuperblock(bm)) ?? recreateSuperblock(opts.overrides ?? {});
    if (bm.nrBlocks === 0) throw new IoError('EINVAL', `${device.name}: metadata is not large enough for a superblock`);
    const usable = (await walksCleanly(tm, bm.nrBlocks, sb.deviceDetailsRoot, DEVICE_DETAILS_SIZE))
      && (await walksCleanly(tm, bm.nrBlocks, sb.dataMappingRoot, 8));
    if (!usable) {
      const found = await findBestRoots(bm, tm);
      if (found) {
        sb.attrs.time = found.time;
        sb.deviceDetailsRoot = found.detailsRoot;
        sb.dataMappingRoot = found.mappingRoot;
      }
    }
    await new Salvage(tm, bm.nrBlocks, e, opts).dump(sb);
  } finally {
    await bm.close();
  }
}

/** Block 0 if its checksum is right (the only check 0.9.0 makes), else null. */
async function readSuperblock(bm: BlockManager): Promise<RepairSuperblock | null> {
  if (bm.nrBlocks === 0) return null;
  const raw = await bm.readRaw(0);
  if (raw.readUInt32LE(0) !== blockChecksum(raw, SALT.thinSuperblock)) return null;
  const sb = decodeSuperblock(raw);
  return {
    attrs: superblockAttrs(sb, decodeSpaceMapRoot(sb.dataSpaceMapRoot).nrBlocks),
    deviceDetailsRoot: sb.deviceDetailsRoot,
    dataMappingRoot: sb.dataMappingRoot,
  };
}

function recreateSuperblock(over: SuperblockOverrides): RepairSuperblock {
  const need = (value: number | undefined, field: string): number => {
    if (value === undefined) {
      throw new IoError('EINVAL', `The following field needs to be provided on the command line due to corruption in the superblock: ${field}`);
    }
    return value;
  };
  return {
    attrs: {
      uuid: '',
      time: RECREATED_TIME,
      transaction: need(over.transactionId, 'transaction id'),
      flags: 0,
      version: THIN_VERSION,
      dataBlockSize: need(over.dataBlockSize, 'data block size'),
      nrDataBlocks: need(over.nrDataBlocks, 'nr data blocks'),
    },
    deviceDetailsRoot: 0,
    dataMappingRoot: 0,
  };
}

/** The lenient walk: each tree walked with thin_check's node checks, damaged subtrees skipped. */
class Salvage {
  /** Blocks seen by the walk of the top level, and by the current walk of another tree: each walk is separate, as in 0.9.0. */
  private readonly topSeen: Uint32Array;
  private readonly deviceSeen: Uint32Array;

  constructor(private readonly tm: TransactionManager, nrBlocks: number, private readonly e: ThinEmitter, private readonly opts: DumpOptions) {
    this.topSeen = new Uint32Array(nrBlocks);
    this.deviceSeen = new Uint32Array(nrBlocks);
  }

  async dump(sb: RepairSuperblock): Promise<void> {
    const details = new Map<number, DeviceDetails>();
    await this.walk(this.deviceSeen, sb.deviceDetailsRoot, {
      name: 'device details tree',
      valueSize: DEVICE_DETAILS_SIZE,
      onValue: (id, leaf, at) => {
        details.set(id, decodeDeviceDetails(leaf.subarray(at)));
      },
    });
    await this.e.beginSuperblock(withOverrides(sb.attrs, this.opts.overrides ?? {}));
    let droppedLeaf = -1;
    await this.walk(this.topSeen, sb.dataMappingRoot, {
      name: 'mapping tree',
      valueSize: 8,
      onValue: async (id, data, at, leaf) => {
        if (leaf === droppedLeaf || !selected(this.opts, id)) return;
        const d = details.get(id);
        if (!d) {
          droppedLeaf = leaf;
          return;
        }
        await this.e.beginDevice(deviceAttrs(id, d));
        if (!this.opts.skipMappings) await this.mappings(id, readU64(data.subarray(at, at + 8), 0)); // EOVERFLOW names the byte within the value
        await this.e.endDevice();
      },
    });
    await this.e.endSuperblock();
  }

  private async mappings(id: number, root: number): Promise<void> {
    const runs = new RunMerger((r) => this.e.mapping(r));
    await this.walk(this.deviceSeen, root, {
      name: `mapping tree of device ${id}`,
      valueSize: 8,
      onValue: async (vblock, leaf, at) => {
        const bt = decodeBlockTime(leaf, at);
        await runs.add(vblock, bt.block, bt.time);
      },
    });
    await runs.end();
  }

  /** One walk; what it finds damaged is skipped, and forgotten: --repair reports nothing. */
  private async walk(seen: Uint32Array, root: number, spec: TreeSpec): Promise<void> {
    seen.fill(0);
    await checkTree({ tm: this.tm, refs: seen, errors: [] }, root, spec);
  }
}
