import { IoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import { lookup, walk } from '../../pdata/btree/btree.ts';
import { readU64 } from '../../pdata/endian.ts';
import { decodeBlockTime } from '../../pdata/thin/block-time.ts';
import { type DeviceDetails, decodeDeviceDetails } from '../../pdata/thin/device-details.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import { decodeSuperblock, superblockValidator } from '../../pdata/thin/superblock.ts';
import { ChunkedWriter, type TextSink, type ToolIo } from './io.ts';
import { parseArgs, parseNumber } from './options.ts';
import { DEVICE_CLOSE, RunMerger, SUPERBLOCK_CLOSE, deviceOpen, runLine, superblockOpen } from './xml.ts';

export interface DumpOptions {
  /** Dump the held metadata snapshot instead of the live trees (`-m`). */
  metadataSnap?: boolean;
  skipMappings?: boolean;
  /** Only these devices (`--dev-id`, repeatable); all when empty. */
  devIds?: readonly number[];
}

/**
 * Writes thin_dump's XML (spec/thin-metadata.md §11.1) of opened metadata,
 * streaming: one leaf of mappings in memory at a time.
 */
export async function dumpThinXml(md: ThinMetadata, sink: TextSink, opts: DumpOptions = {}): Promise<void> {
  const out = new ChunkedWriter(sink);
  let sb = md.superblock;
  let nrDataBlocks = md.dataSm.nrBlocks;
  if (opts.metadataSnap) {
    if (sb.heldRoot === 0) throw new IoError('ENODATA', `${md.bm.name}: no metadata snapshot is held`);
    const block = await md.tm.readLock(sb.heldRoot, superblockValidator);
    sb = decodeSuperblock(block.data);
    md.tm.unlock(block);
    nrDataBlocks = 0; // the snapshot copy publishes no space maps (§11.1)
  }
  await out.line(superblockOpen({
    uuid: '',
    time: sb.time,
    transaction: sb.transactionId,
    flags: sb.flags,
    version: sb.version,
    dataBlockSize: sb.dataBlockSize,
    nrDataBlocks,
  }));
  const devices: { id: number; details: DeviceDetails }[] = [];
  await walk(md.tm, sb.deviceDetailsRoot, (id, v) => {
    if (!opts.devIds?.length || opts.devIds.includes(id)) devices.push({ id, details: decodeDeviceDetails(v) });
  });
  for (const { id, details } of devices) {
    const root = await lookup(md.tm, sb.dataMappingRoot, id);
    if (!root) throw new IoError('EILSEQ', `${md.bm.name}: device ${id} is in the device tree but has no mappings tree`);
    await out.line(deviceOpen({
      devId: id,
      mappedBlocks: details.mappedBlocks,
      transaction: details.transactionId,
      creationTime: details.creationTime,
      snapTime: details.snapshottedTime,
    }));
    if (!opts.skipMappings) {
      const runs = new RunMerger((r) => out.line(runLine(r)));
      await walk(md.tm, readU64(root, 0), async (vblock, v) => {
        const bt = decodeBlockTime(v);
        await runs.add(vblock, bt.block, bt.time);
      });
      await runs.end();
    }
    await out.line(DEVICE_CLOSE);
  }
  await out.line(SUPERBLOCK_CLOSE);
  await out.flush();
}

const USAGE = `Usage: thin dump [options] {device|file}
Options:
  {-h|--help}
  {-f|--format} {xml}
  {-m|--metadata-snap}
  {-o <xml file>}
  {--dev-id} <dev-id>
  {--skip-mappings}
`;

/** `dmkit thin dump`: thin_dump's options and exit status (0, or 1 with the message on stderr). */
export async function thinDump(argv: readonly string[], io: ToolIo): Promise<number> {
  let device: FileDevice | undefined;
  let metadata: ThinMetadata | undefined;
  let output: { sink: TextSink; close(): Promise<void> } | undefined;
  try {
    const { options, positional } = parseArgs(argv, {
      flags: { help: false, format: true, 'metadata-snap': false, output: true, 'dev-id': true, 'skip-mappings': false },
      aliases: { h: 'help', f: 'format', m: 'metadata-snap', o: 'output' },
    });
    if (options.has('help')) {
      io.stdout.write(USAGE);
      return 0;
    }
    const format = options.get('format')?.at(-1) ?? 'xml';
    if (format !== 'xml') throw new IoError('EINVAL', `unknown format '${format}' (dmkit writes xml only)`);
    if (positional.length !== 1) {
      io.stderr.write(`No input file provided.\n${USAGE}`);
      return 1;
    }
    device = await FileDevice.open(positional[0]!, { readOnly: true });
    metadata = await ThinMetadata.open(device, { readOnly: true });
    output = await openOutput(options.get('output')?.at(-1), io.stdout);
    await dumpThinXml(metadata, output.sink, {
      metadataSnap: options.has('metadata-snap'),
      skipMappings: options.has('skip-mappings'),
      devIds: (options.get('dev-id') ?? []).map((t) => parseNumber(t, 'dev-id')),
    });
    return 0;
  } catch (err) {
    io.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    await output?.close();
    await metadata?.close();
    await device?.close();
  }
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
