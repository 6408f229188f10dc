import { IoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import { lookup, walk } from '../../pdata/btree/btree.ts';
import { readU64 } from '../../pdata/endian.ts';
import { decodeBlockTime } from '../../pdata/thin/block-time.ts';
import { type DeviceDetails, decodeDeviceDetails } from '../../pdata/thin/device-details.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import { type ThinSuperblock, decodeSuperblock, superblockValidator } from '../../pdata/thin/superblock.ts';
import type { TextSink, ToolIo } from './io.ts';
import { OVERRIDE_OPTIONS, parseNumber, parseOverrides, runTool } from './options.ts';
import { type DeviceAttrs, RunMerger, type SuperblockAttrs, type SuperblockOverrides, type ThinEmitter, XmlEmitter, withOverrides } from './xml.ts';

export interface DumpOptions {
  /** Dump the held metadata snapshot instead of the live trees (`-m`). */
  metadataSnap?: boolean;
  skipMappings?: boolean;
  /** Only these devices (`--dev-id`, repeatable); all when empty. */
  devIds?: readonly number[];
  /** Superblock fields printed instead of the metadata's. */
  overrides?: SuperblockOverrides;
}

/**
 * Writes thin_dump's XML (spec/thin-metadata.md §11.1) of opened metadata,
 * streaming: one leaf of mappings in memory at a time.
 */
export function dumpThinXml(md: ThinMetadata, sink: TextSink, opts: DumpOptions = {}): Promise<void> {
  return dumpThin(md, new XmlEmitter(sink), opts);
}

/** The device element's attributes from a details record. */
export function deviceAttrs(devId: number, d: DeviceDetails): DeviceAttrs {
  return { devId, mappedBlocks: d.mappedBlocks, transaction: d.transactionId, creationTime: d.creationTime, snapTime: d.snapshottedTime };
}

/** The superblock element's attributes (thin_dump prints no uuid). */
export function superblockAttrs(sb: ThinSuperblock, nrDataBlocks: number): SuperblockAttrs {
  return { uuid: '', time: sb.time, transaction: sb.transactionId, flags: sb.flags, version: sb.version, dataBlockSize: sb.dataBlockSize, nrDataBlocks };
}

/** Whether `--dev-id` selects device `id` (all are selected when none is given). */
export function selected(opts: DumpOptions, id: number): boolean {
  return !opts.devIds?.length || opts.devIds.includes(id);
}

/** A dump of undamaged metadata: any damage met is an error. */
export async function dumpThin(md: ThinMetadata, e: ThinEmitter, opts: DumpOptions = {}): Promise<void> {
  let sb = md.superblock;
  let nrDataBlocks = md.dataSm.nrBlocks;
  if (opts.metadataSnap) {
    if (sb.heldRoot === 0) throw new IoError('ENODATA', `${md.bm.name}: no metadata snapshot is held`);
    const block = await md.tm.readLock(sb.heldRoot, superblockValidator);
    sb = decodeSuperblock(block.data);
    md.tm.unlock(block);
    nrDataBlocks = 0; // the snapshot copy publishes no space maps (§11.1)
  }
  await e.beginSuperblock(withOverrides(superblockAttrs(sb, nrDataBlocks), opts.overrides ?? {}));
  const devices: { id: number; details: DeviceDetails }[] = [];
  await walk(md.tm, sb.deviceDetailsRoot, (id, v) => {
    if (selected(opts, id)) devices.push({ id, details: decodeDeviceDetails(v) });
  });
  for (const { id, details } of devices) {
    const root = await lookup(md.tm, sb.dataMappingRoot, id);
    if (!root) throw new IoError('EILSEQ', `${md.bm.name}: device ${id} is in the device tree but has no mappings tree`);
    await e.beginDevice(deviceAttrs(id, details));
    if (!opts.skipMappings) {
      const runs = new RunMerger((r) => e.mapping(r));
      await walk(md.tm, readU64(root, 0), async (vblock, v) => {
        const bt = decodeBlockTime(v);
        await runs.add(vblock, bt.block, bt.time);
      });
      await runs.end();
    }
    await e.endDevice();
  }
  await e.endSuperblock();
}

const USAGE = `Usage: thin dump [options] {device|file}
Options:
  {-h|--help}
  {-f|--format} {xml}
  {-r|--repair}
  {-m|--metadata-snap}
  {-o <xml file>}
  {--dev-id} <dev-id>
  {--skip-mappings}
  {--transaction-id} <natural>
  {--data-block-size} <natural>
  {--nr-data-blocks} <natural>
`;

/**
 * `dmkit thin dump`: thin_dump's options and exit status (0, or 1 with the
 * message on stderr). `--repair` dumps what can be salvaged (salvage.ts);
 * the overrides replace superblock fields in the output, and stand in for
 * them when the superblock is unreadable.
 */
export function thinDump(argv: readonly string[], io: ToolIo): Promise<number> {
  const spec = {
    flags: { format: true, repair: false, 'metadata-snap': false, output: true, 'dev-id': true, 'skip-mappings': false, ...OVERRIDE_OPTIONS },
    aliases: { f: 'format', r: 'repair', m: 'metadata-snap', o: 'output' },
  };
  return runTool(argv, io, USAGE, spec, async ({ options, positional, closeAtEnd }) => {
    const format = options.get('format')?.at(-1) ?? 'xml';
    if (format !== 'xml') throw new IoError('EINVAL', `unknown format '${format}' (dmkit writes xml only)`);
    if (positional.length !== 1) {
      io.stderr.write(`No input file provided.\n${USAGE}`);
      return 1;
    }
    const opts: DumpOptions = {
      metadataSnap: options.has('metadata-snap'),
      skipMappings: options.has('skip-mappings'),
      devIds: (options.get('dev-id') ?? []).map((t) => parseNumber(t, 'dev-id')),
      overrides: parseOverrides(options),
    };
    // thin_dump 0.9.0 silently dumps the live trees for `-r -m`; refused here rather than surprise.
    if (opts.metadataSnap && options.has('repair')) throw new IoError('EINVAL', '--repair works on the live metadata, not with --metadata-snap');
    const device = closeAtEnd(await FileDevice.open(positional[0]!, { readOnly: true }));
    const metadata = options.has('repair') ? undefined : closeAtEnd(await ThinMetadata.open(device, { readOnly: true }));
    const output = closeAtEnd(await openOutput(options.get('output')?.at(-1), io.stdout));
    if (metadata) {
      await dumpThinXml(metadata, output.sink, opts);
    } else {
      const { dumpRepaired } = await import('./salvage.ts'); // salvage.ts builds on this module
      await dumpRepaired(device, new XmlEmitter(output.sink), opts);
    }
    return 0;
  });
}

async function openOutput(path: string | undefined, stdout: TextSink): Promise<{ sink: TextSink; close(): Promise<void> }> {
  if (path === undefined) return { sink: stdout, close: async () => {} };
  const { createWriteStream } = await import('node:fs');
  const stream = createWriteStream(path);
  return {
    sink: stream,
    close: () => new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve()))),
  };
}
