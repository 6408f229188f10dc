import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { BlockDevice } from '../../block/device.ts';
import { IoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import { METADATA_BLOCK_SIZE } from '../../pdata/block-manager.ts';
import { ThinMetadata } from '../../pdata/thin/metadata.ts';
import type { ToolIo } from './io.ts';
import { OVERRIDE_OPTIONS, inputOutputPaths, parseNumber, parseOverrides, runTool } from './options.ts';
import {
  type DeviceAttrs, type Run, type SuperblockAttrs, type SuperblockOverrides, type ThinEmitter, type XmlTag, XmlTagReader,
} from './xml.ts';

/** thin_restore refuses smaller outputs (spec/thin-metadata.md §11.2). */
const MIN_OUTPUT_BYTES = 32 * 1024;

/**
 * Builds fresh metadata from a dump (§11.2): new unshared trees per device,
 * one data reference per mapping, mapped_blocks recomputed. Committed at
 * the end of the superblock; until then the device holds format's empty
 * metadata, which buildOrZero wipes if the restore fails.
 */
export class MetadataRestorer implements ThinEmitter {
  private md: ThinMetadata | undefined;
  private device = -1;

  constructor(private readonly output: BlockDevice) {}

  async beginSuperblock(s: SuperblockAttrs): Promise<void> {
    this.md = await ThinMetadata.format(this.output, { dataBlockSize: s.dataBlockSize, nrDataBlocks: s.nrDataBlocks });
    this.md.restoreSuperblock({
      uuid: Buffer.from(s.uuid).subarray(0, 16),
      time: s.time,
      transactionId: s.transaction,
      flags: s.flags,
      version: s.version,
    });
  }

  async beginDevice(d: DeviceAttrs): Promise<void> {
    const md = this.metadata();
    if (await md.deviceDetails(d.devId)) throw new IoError('EEXIST', `Device already exists: ${d.devId}`);
    await md.restoreDevice(d.devId, {
      transactionId: d.transaction,
      creationTime: d.creationTime % 2 ** 32,
      snapshottedTime: d.snapTime % 2 ** 32,
    });
    this.device = d.devId;
  }

  async mapping(r: Run): Promise<void> {
    const md = this.metadata();
    const nr = md.dataSm.nrBlocks;
    if (r.data + r.length > nr) throw new IoError('EINVAL', `mapping beyond end of data device (${Math.max(r.data, nr)} >= ${nr})`);
    for (let i = 0; i < r.length; i++) {
      await md.dataSm.inc(r.data + i);
      await md.insertMapping(this.device, r.origin + i, r.data + i, r.time);
    }
  }

  async endDevice(): Promise<void> {
    this.device = -1;
  }

  async endSuperblock(): Promise<void> {
    // R2: ThinMetadata.commit, pdata's one commit path (crash-tested in test/pdata/crash.test.ts), writes the superblock last.
    await this.metadata().commit();
  }

  async close(): Promise<void> {
    await this.md?.close();
  }

  private metadata(): ThinMetadata {
    if (!this.md) throw new IoError('EINVAL', 'restore: no superblock begun');
    return this.md;
  }
}

/**
 * Restores thin_dump XML read chunk by chunk (§11.2): the tags drive a
 * MetadataRestorer; version 1 and flags 0 when the input names none, and
 * an overridden field need not be in the input.
 */
export async function restoreThinXml(chunks: AsyncIterable<string>, device: BlockDevice, over: SuperblockOverrides = {}): Promise<void> {
  const reader = new XmlTagReader();
  const restorer = new MetadataRestorer(device);
  let inSuperblock = false;
  let inDevice = false;
  let finished = false;
  const attr = (tag: XmlTag, name: string, fallback?: number): number => {
    const text = tag.attrs.get(name);
    if (text === undefined) {
      if (fallback !== undefined) return fallback;
      throw new IoError('EINVAL', `missing attribute '${name}' in <${tag.name}>`);
    }
    return parseNumber(text, name);
  };
  const mapping = (tag: XmlTag, r: Run): Promise<void> => {
    if (!inDevice) throw new IoError('EINVAL', `<${tag.name}> not in device`);
    return restorer.mapping(r);
  };
  try {
    for await (const chunk of chunks) {
      for (const tag of reader.feed(chunk)) {
        if (finished) throw new IoError('EINVAL', `<${tag.name}> after the superblock ended`);
        if (tag.name === 'superblock' && tag.open) {
          if (inSuperblock) throw new IoError('EINVAL', 'nested superblock');
          await restorer.beginSuperblock({
            uuid: tag.attrs.get('uuid') ?? '',
            time: attr(tag, 'time'),
            transaction: over.transactionId ?? attr(tag, 'transaction'),
            flags: attr(tag, 'flags', 0),
            version: attr(tag, 'version', 1),
            dataBlockSize: over.dataBlockSize ?? attr(tag, 'data_block_size'),
            nrDataBlocks: over.nrDataBlocks ?? attr(tag, 'nr_data_blocks'),
          });
          inSuperblock = true;
        } else if (tag.name === 'superblock') {
          if (!inSuperblock) throw new IoError('EINVAL', '</superblock> without <superblock>');
          await restorer.endSuperblock();
          finished = true;
        } else if (tag.name === 'device' && tag.open) {
          if (!inSuperblock || inDevice) throw new IoError('EINVAL', '<device> outside the superblock');
          await restorer.beginDevice({
            devId: attr(tag, 'dev_id'),
            mappedBlocks: 0,
            transaction: attr(tag, 'transaction'),
            creationTime: attr(tag, 'creation_time'),
            snapTime: attr(tag, 'snap_time'),
          });
          inDevice = !tag.close;
          if (tag.close) await restorer.endDevice();
        } else if (tag.name === 'device') {
          inDevice = false;
          await restorer.endDevice();
        } else if (tag.name === 'single_mapping') {
          await mapping(tag, { origin: attr(tag, 'origin_block'), data: attr(tag, 'data_block'), length: 1, time: attr(tag, 'time') });
        } else if (tag.name === 'range_mapping') {
          await mapping(tag, { origin: attr(tag, 'origin_begin'), data: attr(tag, 'data_begin'), length: attr(tag, 'length'), time: attr(tag, 'time') });
        } else if (tag.open) {
          throw new IoError('EINVAL', `unknown tag type: ${tag.name}`);
        }
      }
    }
    reader.end();
    if (!finished) throw new IoError('EINVAL', 'no complete superblock in the input');
  } finally {
    await restorer.close();
  }
}

/**
 * Opens the output of thin_restore or thin_repair (§11.2): it must exist,
 * and a regular file must be at least 32 KiB.
 */
export async function openOutputMetadata(path: string): Promise<FileDevice> {
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new IoError('ENOENT', `Output file does not exist: ${path}`);
    throw err;
  });
  if (st.isFile() && st.size < MIN_OUTPUT_BYTES) throw new IoError('ENOSPC', `Output file too small: ${path} (${st.size} bytes, at least ${MIN_OUTPUT_BYTES})`);
  return FileDevice.open(path);
}

/**
 * Runs `build` on the output and flushes it; on any failure the first 4 KiB
 * are zeroed (as the tools do), so nothing opens half-built metadata.
 */
export async function buildOrZero(output: FileDevice, build: () => Promise<void>): Promise<void> {
  try {
    await build();
    await output.flush();
  } catch (err) {
    await output.write(0, Buffer.alloc(METADATA_BLOCK_SIZE));
    await output.flush();
    throw err;
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
export function thinRestore(argv: readonly string[], io: ToolIo): Promise<number> {
  const spec = { flags: { input: true, output: true, quiet: false, ...OVERRIDE_OPTIONS }, aliases: { i: 'input', o: 'output', q: 'quiet' } };
  return runTool(argv, io, USAGE, spec, async ({ options, closeAtEnd }) => {
    const { input, output } = inputOutputPaths(options);
    const over = parseOverrides(options);
    const device = closeAtEnd(await openOutputMetadata(output));
    await stat(input);
    await buildOrZero(device, () => restoreThinXml(createReadStream(input, { encoding: 'utf8' }), device, over));
    return 0;
  });
}
