import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { IoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import { METADATA_BLOCK_SIZE } from '../../pdata/block-manager.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import type { ToolIo } from './io.ts';
import { parseArgs, parseNumber } from './options.ts';
import { type XmlTag, XmlTagReader } from './xml.ts';

/** thin_restore refuses smaller outputs (spec/thin-metadata.md §11.2). */
const MIN_OUTPUT_BYTES = 32 * 1024;

export interface RestoreOverrides {
  transactionId?: number;
  dataBlockSize?: number;
  nrDataBlocks?: number;
}

/**
 * Builds fresh metadata from thin_dump XML read chunk by chunk (§11.2): new
 * unshared trees per device, one data reference per mapping, mapped_blocks
 * recomputed, version 1 when the input names none. Committed once, at the
 * closing superblock tag.
 */
export async function restoreThinXml(chunks: AsyncIterable<string>, device: FileDevice, over: RestoreOverrides = {}): Promise<void> {
  const reader = new XmlTagReader();
  let md: ThinMetadata | undefined;
  let current: number | null = null;
  let finished = false;
  const attr = (tag: XmlTag, name: string, fallback?: number): number => {
    const text = tag.attrs.get(name);
    if (text === undefined) {
      if (fallback !== undefined) return fallback;
      throw new IoError('EINVAL', `missing attribute '${name}' in <${tag.name}>`);
    }
    return parseNumber(text, name);
  };
  const inDevice = (tag: XmlTag): { md: ThinMetadata; id: number } => {
    if (!md || current === null) throw new IoError('EINVAL', `<${tag.name}> not in device`);
    return { md, id: current };
  };
  const map = async (tag: XmlTag, origin: number, data: number, length: number, time: number): Promise<void> => {
    const d = inDevice(tag);
    const nr = d.md.dataSm.nrBlocks;
    if (data + length > nr) throw new IoError('EINVAL', `mapping beyond end of data device (${Math.max(data, nr)} >= ${nr})`);
    for (let i = 0; i < length; i++) {
      await d.md.dataSm.inc(data + i);
      await d.md.insertMapping(d.id, origin + i, data + i, time);
    }
  };
  try {
    for await (const chunk of chunks) {
      for (const tag of reader.feed(chunk)) {
        if (finished) throw new IoError('EINVAL', `<${tag.name}> after the superblock ended`);
        if (tag.name === 'superblock' && tag.open) {
          if (md) throw new IoError('EINVAL', 'nested superblock');
          md = await ThinMetadata.format(device, {
            dataBlockSize: over.dataBlockSize ?? attr(tag, 'data_block_size'),
            nrDataBlocks: over.nrDataBlocks ?? attr(tag, 'nr_data_blocks'),
          });
          md.restoreSuperblock({
            uuid: Buffer.from(tag.attrs.get('uuid') ?? '').subarray(0, 16),
            time: attr(tag, 'time'),
            transactionId: over.transactionId ?? attr(tag, 'transaction'),
            flags: attr(tag, 'flags', 0),
            version: attr(tag, 'version', 1),
          });
        } else if (tag.name === 'superblock') {
          if (!md) throw new IoError('EINVAL', '</superblock> without <superblock>');
          await md.commit();
          finished = true;
        } else if (tag.name === 'device' && tag.open) {
          if (!md || current !== null) throw new IoError('EINVAL', '<device> outside the superblock');
          const id = attr(tag, 'dev_id');
          if (await md.deviceDetails(id)) throw new IoError('EEXIST', `Device already exists: ${id}`);
          await md.restoreDevice(id, {
            transactionId: attr(tag, 'transaction'),
            creationTime: attr(tag, 'creation_time') % 2 ** 32,
            snapshottedTime: attr(tag, 'snap_time') % 2 ** 32,
          });
          current = id;
          if (tag.close) current = null;
        } else if (tag.name === 'device') {
          current = null;
        } else if (tag.name === 'single_mapping') {
          await map(tag, attr(tag, 'origin_block'), attr(tag, 'data_block'), 1, attr(tag, 'time'));
        } else if (tag.name === 'range_mapping') {
          await map(tag, attr(tag, 'origin_begin'), attr(tag, 'data_begin'), attr(tag, 'length'), attr(tag, 'time'));
        } else if (tag.open) {
          throw new IoError('EINVAL', `unknown tag type: ${tag.name}`);
        }
      }
    }
    reader.end();
    if (!finished) throw new IoError('EINVAL', 'no complete superblock in the input');
  } finally {
    await md?.close();
  }
}

const USAGE = `Usage: thin restore [options]
Options:
  {-h|--help}
  {-i|--input} <input xml file>
  {-o|--output} <output device or file>
  {--transaction-id} <natural>
  {--data-block-size} <natural>
  {--nr-data-blocks} <natural>
  {-q|--quiet}
`;

/** `dmkit thin restore -i XML -o META`: thin_restore's behaviour and exit status. */
export async function thinRestore(argv: readonly string[], io: ToolIo): Promise<number> {
  let device: FileDevice | undefined;
  try {
    const { options } = parseArgs(argv, {
      flags: { help: false, input: true, output: true, quiet: false, 'transaction-id': true, 'data-block-size': true, 'nr-data-blocks': true },
      aliases: { h: 'help', i: 'input', o: 'output', q: 'quiet' },
    });
    if (options.has('help')) {
      io.stdout.write(USAGE);
      return 0;
    }
    const input = options.get('input')?.at(-1);
    const output = options.get('output')?.at(-1);
    if (input === undefined) throw new IoError('EINVAL', 'No input file provided.');
    if (output === undefined) throw new IoError('EINVAL', 'No output file provided.');
    const st = await stat(output);
    if (st.isFile() && st.size < MIN_OUTPUT_BYTES) throw new IoError('ENOSPC', 'Output file too small.');
    await stat(input);
    device = await FileDevice.open(output);
    const over: RestoreOverrides = {};
    const num = (name: string): number | undefined => {
      const t = options.get(name)?.at(-1);
      return t === undefined ? undefined : parseNumber(t, name);
    };
    if (num('transaction-id') !== undefined) over.transactionId = num('transaction-id')!;
    if (num('data-block-size') !== undefined) over.dataBlockSize = num('data-block-size')!;
    if (num('nr-data-blocks') !== undefined) over.nrDataBlocks = num('nr-data-blocks')!;
    try {
      await restoreThinXml(createReadStream(input, { encoding: 'utf8' }), device, over);
      await device.flush();
    } catch (err) {
      // thin_restore zeroes the superblock of a failed restore, so nothing opens half-built metadata.
      await device.write(0, Buffer.alloc(METADATA_BLOCK_SIZE));
      await device.flush();
      throw err;
    }
    return 0;
  } catch (err) {
    io.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    await device?.close();
  }
}
