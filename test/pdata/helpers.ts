import assert from 'node:assert/strict';
import type { BlockDevice } from '../../src/block/device.ts';
import { checkThinMetadata } from '../../src/tools/thin/check.ts';
import { dumpThinXml } from '../../src/tools/thin/dump.ts';
import type { ThinMetadata } from '../../src/pdata/thin/metadata.ts';

/** Devices and mappings as a plain model: device id → (virtual block → data block). */
export type MappingModel = Map<number, Map<number, number>>;

export async function dumpToString(md: ThinMetadata, opts: { metadataSnap?: boolean } = {}): Promise<string> {
  const parts: string[] = [];
  await dumpThinXml(md, { write: (t: string) => parts.push(t) }, opts);
  return parts.join('');
}

/** Every device's mappings as read back through the metadata. */
export async function readModel(md: ThinMetadata, opts: { metadataSnap?: boolean } = {}): Promise<MappingModel> {
  const model: MappingModel = new Map();
  const xml = await dumpToString(md, opts);
  let current: Map<number, number> | undefined;
  for (const line of xml.split('\n')) {
    const dev = /<device dev_id="(\d+)"/.exec(line);
    if (dev) model.set(Number(dev[1]), (current = new Map()));
    const single = /single_mapping origin_block="(\d+)" data_block="(\d+)"/.exec(line);
    if (single) current!.set(Number(single[1]), Number(single[2]));
    const range = /range_mapping origin_begin="(\d+)" data_begin="(\d+)" length="(\d+)"/.exec(line);
    if (range) for (let i = 0; i < Number(range[3]); i++) current!.set(Number(range[1]) + i, Number(range[2]) + i);
  }
  return model;
}

export function cloneModel(m: MappingModel): MappingModel {
  return new Map([...m].map(([id, maps]) => [id, new Map(maps)]));
}

/** The full-walk check: every node valid, metadata and data reference counts re-derived and equal. */
export async function assertConsistent(device: BlockDevice): Promise<void> {
  const report = await checkThinMetadata(device);
  assert.deepEqual({ errors: report.errors, warnings: report.warnings }, { errors: [], warnings: [] });
}
