import type { BlockDevice } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { BlockManager, type BlockManagerOptions } from '../block-manager.ts';
import { deleteTree, emptyTree, insert, lookup, remove, removeRange, walk } from '../btree/btree.ts';
import { insertMulti, lookupMulti, removeMulti, updateSubtree } from '../btree/multi-level.ts';
import { type ValueType, metadataBlockValue } from '../btree/value-type.ts';
import { readU64, writeU64 } from '../endian.ts';
import { DiskSpaceMap } from '../space-map/disk.ts';
import { MAX_METADATA_BLOCKS } from '../space-map/index-block.ts';
import { MetadataSpaceMap } from '../space-map/metadata.ts';
import { SPACE_MAP_ROOT_SIZE } from '../space-map/root.ts';
import { type BrokenCommit, TransactionManager } from '../transaction-manager.ts';
import { type BlockTime, MAX_TIME, blockTimeValue, decodeBlockTime, encodeBlockTime } from './block-time.ts';
import { type DeviceDetails, decodeDeviceDetails, deviceDetailsValue, encodeDeviceDetails } from './device-details.ts';
import {
  METADATA_BLOCK_SECTORS, THIN_VERSION, type ThinSuperblock, checkFeatures, decodeSuperblock, encodeSuperblock, superblockValidator,
} from './superblock.ts';

export const MAX_DEVICE_ID = 2 ** 24 - 1;

export interface ThinMetadataOptions extends BlockManagerOptions {
  /** Test-only broken commit variants (CRASH-TESTING §3). */
  brokenCommit?: BrokenCommit;
}

export interface FormatOptions extends ThinMetadataOptions {
  dataBlockSize: number;
  nrDataBlocks: number;
}

/** Superblock fields thin_restore takes from its input (spec/thin-metadata.md §11.2). */
export type RestoredFields = Partial<Pick<ThinSuperblock, 'uuid' | 'time' | 'transactionId' | 'flags' | 'version'>>;

/**
 * Thin-pool metadata (Linux dm-thin-metadata.c, spec/thin-metadata.md §7–8):
 * the superblock, the 2-level mapping tree, the device-details tree and the
 * two space maps, over one transaction manager. Not safe for concurrent
 * callers: the pool serialises metadata operations.
 */
export class ThinMetadata {
  /** In-core superblock fields; written only by commit (§13.1 rules 5 and 9). */
  private sb: ThinSuperblock;
  private readonly details = new Map<number, DeviceDetails>();
  private readonly changedDetails = new Set<number>();
  private readonly mappingValue: ValueType;
  /** Level-0 values as a 1-level tree: deleting one deletes the device's whole mapping tree (§4.6). */
  private readonly deviceTreeValue: ValueType;

  private constructor(
    readonly bm: BlockManager,
    readonly tm: TransactionManager,
    readonly metadataSm: MetadataSpaceMap,
    readonly dataSm: DiskSpaceMap,
    sb: ThinSuperblock,
  ) {
    this.sb = sb;
    this.mappingValue = blockTimeValue(dataSm);
    this.deviceTreeValue = {
      size: 8,
      inc: (v) => tm.inc(readU64(v, 0)),
      dec: (v) => deleteTree(tm, readU64(v, 0), this.mappingValue),
    };
  }

  /** Fresh metadata (§8.1), committed before it is returned. */
  static async format(device: BlockDevice, opts: FormatOptions): Promise<ThinMetadata> {
    const bm = new BlockManager(device, opts);
    const tm = new TransactionManager(bm, opts.brokenCommit ? { brokenCommit: opts.brokenCommit } : {});
    const nrBlocks = Math.min(bm.nrBlocks, MAX_METADATA_BLOCKS);
    const metadataSm = await MetadataSpaceMap.format(tm, nrBlocks);
    const dataSm = await DiskSpaceMap.create(tm, opts.nrDataBlocks);
    const dataMappingRoot = await emptyTree(tm, metadataBlockValue(tm));
    const deviceDetailsRoot = await emptyTree(tm, deviceDetailsValue);
    const sb: ThinSuperblock = {
      flags: 0,
      uuid: Buffer.alloc(16),
      version: THIN_VERSION,
      time: 0,
      transactionId: 0,
      heldRoot: 0,
      dataSpaceMapRoot: Buffer.alloc(SPACE_MAP_ROOT_SIZE),
      metadataSpaceMapRoot: Buffer.alloc(SPACE_MAP_ROOT_SIZE),
      dataMappingRoot,
      deviceDetailsRoot,
      dataBlockSize: opts.dataBlockSize,
      metadataBlockSize: METADATA_BLOCK_SECTORS,
      metadataNrBlocks: Math.floor(Math.min(device.sectors, MAX_METADATA_BLOCKS * METADATA_BLOCK_SECTORS) / METADATA_BLOCK_SECTORS),
      compatFlags: 0,
      compatRoFlags: 0,
      incompatFlags: 0,
    };
    const md = new ThinMetadata(bm, tm, metadataSm, dataSm, sb);
    await md.commit();
    return md;
  }

  /** True when block 0 is all zeroes: Linux formats such a device (§3.3). */
  static async isBlank(device: BlockDevice): Promise<boolean> {
    const bm = new BlockManager(device, { readOnly: true });
    try {
      return !(await bm.readRaw(0)).some((byte) => byte !== 0);
    } finally {
      await bm.close();
    }
  }

  /** Opens committed metadata (§3.3); read-only opens may not change anything. */
  static async open(device: BlockDevice, opts: ThinMetadataOptions = {}): Promise<ThinMetadata> {
    const bm = new BlockManager(device, opts);
    try {
      const block = await bm.readLock(0, superblockValidator);
      const sb = decodeSuperblock(block.data);
      bm.unlock(block);
      checkFeatures(sb, device.name, !bm.readOnly);
      const tm = new TransactionManager(bm, opts.brokenCommit ? { brokenCommit: opts.brokenCommit } : {});
      const metadataSm = await MetadataSpaceMap.open(tm, sb.metadataSpaceMapRoot);
      const dataSm = DiskSpaceMap.open(tm, sb.dataSpaceMapRoot);
      return new ThinMetadata(bm, tm, metadataSm, dataSm, sb);
    } catch (err) {
      await bm.close();
      throw err;
    }
  }

  get superblock(): Readonly<ThinSuperblock> {
    return this.sb;
  }

  get time(): number {
    return this.sb.time;
  }

  get transactionId(): number {
    return this.sb.transactionId;
  }

  get heldRoot(): number {
    return this.sb.heldRoot;
  }

  get dataBlockSize(): number {
    return this.sb.dataBlockSize;
  }

  /** The ids of every device, ascending. */
  async deviceIds(): Promise<number[]> {
    const ids: number[] = [];
    await walk(this.tm, this.sb.deviceDetailsRoot, (id) => {
      ids.push(id);
    });
    for (const id of this.changedDetails) if (!ids.includes(id) && this.details.has(id)) ids.push(id);
    return ids.sort((a, b) => a - b);
  }

  async deviceDetails(id: number): Promise<DeviceDetails | null> {
    const cached = this.details.get(id);
    if (cached) return { ...cached };
    const v = await lookup(this.tm, this.sb.deviceDetailsRoot, id);
    if (!v) return null;
    const d = decodeDeviceDetails(v);
    this.details.set(id, d);
    return { ...d };
  }

  /** create_thin (§7.5). */
  async createThin(id: number): Promise<void> {
    await this.restoreDevice(id, { transactionId: this.sb.transactionId, creationTime: this.sb.time, snapshottedTime: this.sb.time });
  }

  /** A new empty device with the given details (create_thin, or thin_restore's device element). */
  async restoreDevice(id: number, d: Omit<DeviceDetails, 'mappedBlocks'>): Promise<void> {
    await this.checkNewDevice(id);
    const root = await emptyTree(this.tm, this.mappingValue);
    await this.linkDevice(id, root);
    this.setDetails(id, { ...d, mappedBlocks: 0 });
  }

  /** thin_restore: superblock fields from the input, written by the next commit. */
  restoreSuperblock(fields: RestoredFields): void {
    Object.assign(this.sb, fields);
  }

  /** create_snap (§7.5): the snapshot shares the origin's mapping tree; the pool time advances. */
  async createSnap(id: number, origin: number): Promise<void> {
    await this.checkNewDevice(id);
    const v = await lookup(this.tm, this.sb.dataMappingRoot, origin);
    const originDetails = await this.deviceDetails(origin);
    if (!v || !originDetails) throw new IoError('ENODATA', `${this.bm.name}: snapshot origin ${origin} does not exist`);
    if (this.sb.time >= MAX_TIME) throw new IoError('EOVERFLOW', `${this.bm.name}: pool time would reach 2^24 (§7.3)`);
    const root = readU64(v, 0);
    await this.tm.inc(root);
    await this.linkDevice(id, root);
    this.sb.time++;
    this.setDetails(id, {
      mappedBlocks: originDetails.mappedBlocks,
      transactionId: this.sb.transactionId,
      creationTime: this.sb.time,
      snapshottedTime: this.sb.time,
    });
    this.setDetails(origin, { ...originDetails, snapshottedTime: this.sb.time });
  }

  /** delete (§7.5): shared nodes lose one reference, unshared data blocks are released. */
  async deleteDevice(id: number): Promise<void> {
    if (!(await this.deviceDetails(id))) throw new IoError('ENODATA', `${this.bm.name}: thin device ${id} does not exist`);
    this.sb.deviceDetailsRoot = (await remove(this.tm, this.sb.deviceDetailsRoot, id, deviceDetailsValue)).root;
    this.details.delete(id);
    this.changedDetails.delete(id);
    this.sb.dataMappingRoot = (await remove(this.tm, this.sb.dataMappingRoot, id, this.deviceTreeValue)).root;
  }

  async lookupMapping(id: number, vblock: number): Promise<BlockTime | null> {
    const v = await lookupMulti(this.tm, this.sb.dataMappingRoot, [id, vblock]);
    return v ? decodeBlockTime(v) : null;
  }

  /** A new data block, count 1: the reference the mapping inserted next will hold. */
  allocDataBlock(): Promise<number> {
    return this.dataSm.newBlock();
  }

  /**
   * Maps `vblock` of device `id` to `dataBlock` at the current time. The
   * caller owns one reference to `dataBlock` (allocDataBlock); it passes to
   * the mapping. An overwritten mapping releases its old block. `time` is
   * the pool time except when restoring.
   */
  async insertMapping(id: number, vblock: number, dataBlock: number, time = this.sb.time): Promise<void> {
    const details = await this.requireDevice(id);
    const value = encodeBlockTime({ block: dataBlock, time });
    const r = await insertMulti(this.tm, this.sb.dataMappingRoot, [id, vblock], value, this.mappingValue);
    this.sb.dataMappingRoot = r.root;
    if (r.inserted) this.setDetails(id, { ...details, mappedBlocks: details.mappedBlocks + 1 });
  }

  /** Unmaps one block, releasing its data block; false if it was not mapped. */
  async removeMapping(id: number, vblock: number): Promise<boolean> {
    const details = await this.requireDevice(id);
    const r = await removeMulti(this.tm, this.sb.dataMappingRoot, [id, vblock], this.mappingValue);
    this.sb.dataMappingRoot = r.root;
    if (r.removed) this.setDetails(id, { ...details, mappedBlocks: details.mappedBlocks - 1 });
    return r.removed;
  }

  /** Unmaps [begin, end) of device `id` (discard, §7.5 remove range); returns how many blocks were mapped. */
  async removeRange(id: number, begin: number, end: number): Promise<number> {
    const details = await this.requireDevice(id);
    let removed = 0;
    const root = await updateSubtree(this.tm, this.sb.dataMappingRoot, id, async (subtree) => {
      const r = await removeRange(this.tm, subtree, begin, end, this.mappingValue);
      removed = r.removed;
      return r.root;
    });
    if (root !== null) this.sb.dataMappingRoot = root;
    if (removed > 0) this.setDetails(id, { ...details, mappedBlocks: details.mappedBlocks - removed });
    return removed;
  }

  /** set_transaction_id (§7.5): compare-and-swap, persisted by the next commit. */
  setTransactionId(current: number, next: number): void {
    if (current !== this.sb.transactionId) {
      throw new IoError('EINVAL', `${this.bm.name}: mismatched transaction id (expected ${this.sb.transactionId}, got ${current})`);
    }
    this.sb.transactionId = next;
  }

  /**
   * reserve_metadata_snap (§8.3): a copy of the superblock that pins the
   * current trees. held_root is recorded by the commit (§13.1 rule 9).
   */
  async reserveMetadataSnap(): Promise<number> {
    if (this.sb.heldRoot !== 0) {
      throw new IoError('EBUSY', `${this.bm.name}: Pool metadata snapshot already exists: release this before taking another.`);
    }
    await this.commit();
    const copy = await this.tm.newBlock(superblockValidator);
    encodeSuperblock(
      { ...this.sb, dataSpaceMapRoot: Buffer.alloc(SPACE_MAP_ROOT_SIZE), metadataSpaceMapRoot: Buffer.alloc(SPACE_MAP_ROOT_SIZE) },
      copy.data,
    );
    this.tm.unlock(copy);
    await this.tm.inc(this.sb.dataMappingRoot);
    await this.tm.inc(this.sb.deviceDetailsRoot);
    this.sb.heldRoot = copy.nr;
    await this.commit();
    return copy.nr;
  }

  /** release_metadata_snap (§8.3): drops the copy's references to the trees and the copy. */
  async releaseMetadataSnap(): Promise<void> {
    const held = this.sb.heldRoot;
    if (held === 0) throw new IoError('EINVAL', `${this.bm.name}: No pool metadata snapshot found: nothing to release.`);
    const block = await this.tm.readLock(held, superblockValidator);
    const copy = decodeSuperblock(block.data);
    this.tm.unlock(block);
    this.sb.heldRoot = 0;
    await deleteTree(this.tm, copy.dataMappingRoot, this.deviceTreeValue);
    await deleteTree(this.tm, copy.deviceDetailsRoot, deviceDetailsValue);
    await this.tm.dec(held);
    await this.commit();
  }

  /**
   * Commit (§8.2 steps 3–8): changed device records into the details tree,
   * the data space map, then the transaction manager's two-phase commit
   * (R2, R5: see TransactionManager.commit). The caller flushes the data
   * device first (R1).
   */
  async commit(): Promise<void> {
    for (const id of [...this.changedDetails].sort((a, b) => a - b)) {
      const r = await insert(this.tm, this.sb.deviceDetailsRoot, id, encodeDeviceDetails(this.details.get(id)!), deviceDetailsValue);
      this.sb.deviceDetailsRoot = r.root;
    }
    this.changedDetails.clear();
    await this.dataSm.commit();
    await this.tm.commit(superblockValidator, (data) => {
      this.sb.dataSpaceMapRoot = this.dataSm.root();
      this.sb.metadataSpaceMapRoot = this.metadataSm.root();
      encodeSuperblock(this.sb, data);
    });
  }

  /** Drops the cache; uncommitted changes are lost (commit first to keep them). */
  async close(): Promise<void> {
    await this.bm.close();
  }

  private async checkNewDevice(id: number): Promise<void> {
    if (!Number.isSafeInteger(id) || id < 0 || id > MAX_DEVICE_ID) {
      throw new IoError('EINVAL', `${this.bm.name}: invalid thin device id ${id}`);
    }
    if (await this.deviceDetails(id)) throw new IoError('EEXIST', `${this.bm.name}: thin device ${id} already exists`);
  }

  private async requireDevice(id: number): Promise<DeviceDetails> {
    const d = await this.deviceDetails(id);
    if (!d) throw new IoError('ENODATA', `${this.bm.name}: thin device ${id} does not exist`);
    return d;
  }

  private async linkDevice(id: number, root: number): Promise<void> {
    const v = Buffer.alloc(8);
    writeU64(v, 0, root);
    this.sb.dataMappingRoot = (await insert(this.tm, this.sb.dataMappingRoot, id, v, this.deviceTreeValue)).root;
  }

  private setDetails(id: number, d: DeviceDetails): void {
    this.details.set(id, d);
    this.changedDetails.add(id);
  }
}
