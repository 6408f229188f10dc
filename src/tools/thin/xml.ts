import { IoError } from '../../block/errors.ts';
import { ChunkedWriter, type TextSink } from './io.ts';

/*
 * thin_dump's XML (spec/thin-metadata.md §11.1): one superblock element, its
 * devices in ascending id, each with its mappings as runs. Two spaces of
 * indent per level, attributes in a fixed order, decimal values.
 */

export interface SuperblockAttrs {
  uuid: string;
  time: number;
  transaction: number;
  flags: number;
  version: number;
  dataBlockSize: number;
  nrDataBlocks: number;
}

export interface DeviceAttrs {
  devId: number;
  mappedBlocks: number;
  transaction: number;
  creationTime: number;
  snapTime: number;
}

export interface Run {
  origin: number;
  data: number;
  length: number;
  time: number;
}

export function superblockOpen(s: SuperblockAttrs): string {
  return `<superblock uuid="${s.uuid}" time="${s.time}" transaction="${s.transaction}" flags="${s.flags}" version="${s.version}" data_block_size="${s.dataBlockSize}" nr_data_blocks="${s.nrDataBlocks}">`;
}

export const SUPERBLOCK_CLOSE = '</superblock>';

export function deviceOpen(d: DeviceAttrs): string {
  return `  <device dev_id="${d.devId}" mapped_blocks="${d.mappedBlocks}" transaction="${d.transaction}" creation_time="${d.creationTime}" snap_time="${d.snapTime}">`;
}

export const DEVICE_CLOSE = '  </device>';

/**
 * Superblock fields given on the command line (`--transaction-id`,
 * `--data-block-size`, `--nr-data-blocks`): they replace what the metadata
 * or the XML says, and stand in for a superblock too damaged to read.
 */
export interface SuperblockOverrides {
  transactionId?: number;
  dataBlockSize?: number;
  nrDataBlocks?: number;
}

export function withOverrides(s: SuperblockAttrs, over: SuperblockOverrides): SuperblockAttrs {
  return {
    ...s,
    transaction: over.transactionId ?? s.transaction,
    dataBlockSize: over.dataBlockSize ?? s.dataBlockSize,
    nrDataBlocks: over.nrDataBlocks ?? s.nrDataBlocks,
  };
}

/**
 * Receives a dump in order, as thin-provisioning-tools' emitter: one
 * superblock, its devices ascending, each device's runs ascending. XmlEmitter
 * prints it; restore's MetadataRestorer builds metadata from it, so that
 * `thin repair` pipes a dump into a restore without any text in between.
 */
export interface ThinEmitter {
  beginSuperblock(s: SuperblockAttrs): Promise<void>;
  beginDevice(d: DeviceAttrs): Promise<void>;
  mapping(r: Run): Promise<void>;
  endDevice(): Promise<void>;
  endSuperblock(): Promise<void>;
}

/** Prints a dump as thin_dump's XML, streaming. */
export class XmlEmitter implements ThinEmitter {
  private readonly out: ChunkedWriter;
  constructor(sink: TextSink) {
    this.out = new ChunkedWriter(sink);
  }

  beginSuperblock(s: SuperblockAttrs): Promise<void> {
    return this.out.line(superblockOpen(s));
  }

  beginDevice(d: DeviceAttrs): Promise<void> {
    return this.out.line(deviceOpen(d));
  }

  mapping(r: Run): Promise<void> {
    return this.out.line(runLine(r));
  }

  endDevice(): Promise<void> {
    return this.out.line(DEVICE_CLOSE);
  }

  async endSuperblock(): Promise<void> {
    await this.out.line(SUPERBLOCK_CLOSE);
    await this.out.flush();
  }
}

/** A run of length 1 is a single_mapping, a longer one a range_mapping. */
export function runLine(r: Run): string {
  return r.length === 1
    ? `    <single_mapping origin_block="${r.origin}" data_block="${r.data}" time="${r.time}"/>`
    : `    <range_mapping origin_begin="${r.origin}" data_begin="${r.data}" length="${r.length}" time="${r.time}"/>`;
}

/**
 * Merges mappings visited in key order into runs (§11.1): a mapping extends
 * the run iff origin and data both continue it and the time is the same.
 */
export class RunMerger {
  private run: Run | null = null;
  constructor(private readonly emit: (r: Run) => Promise<void>) {}

  async add(origin: number, data: number, time: number): Promise<void> {
    const r = this.run;
    if (r && origin === r.origin + r.length && data === r.data + r.length && time === r.time) {
      r.length++;
      return;
    }
    await this.end();
    this.run = { origin, data, length: 1, time };
  }

  async end(): Promise<void> {
    const r = this.run;
    this.run = null;
    if (r) await this.emit(r);
  }
}

/** One parsed tag: `<name a="1">` (open), `<name a="1"/>` (open + close), `</name>` (close). */
export interface XmlTag {
  name: string;
  attrs: Map<string, string>;
  open: boolean;
  close: boolean;
}

const ATTR = /([A-Za-z_][\w.-]*)\s*=\s*"([^"]*)"/g;

/**
 * Incremental tag reader: feed it text in chunks of any size; it yields each
 * complete tag. Text between tags, comments and an XML declaration are
 * skipped; the tools' XML has no entities to decode.
 */
export class XmlTagReader {
  private pending = '';

  *feed(text: string): Generator<XmlTag> {
    this.pending += text;
    let at = 0;
    for (;;) {
      const lt = this.pending.indexOf('<', at);
      if (lt < 0) {
        at = this.pending.length;
        break;
      }
      const gt = this.pending.indexOf('>', lt);
      if (gt < 0) {
        at = lt;
        break;
      }
      at = gt + 1;
      const body = this.pending.slice(lt + 1, gt).trim();
      if (body.startsWith('?') || body.startsWith('!')) continue;
      yield parseTag(body);
    }
    this.pending = this.pending.slice(at);
  }

  /** Throws if the input ended inside a tag. */
  end(): void {
    if (this.pending.trim().length > 0) throw new IoError('EINVAL', `XML ends inside a tag: ${this.pending.slice(0, 40)}`);
  }
}

function parseTag(body: string): XmlTag {
  if (body.startsWith('/')) return { name: body.slice(1).trim(), attrs: new Map(), open: false, close: true };
  const selfClosing = body.endsWith('/');
  const inner = selfClosing ? body.slice(0, -1) : body;
  const m = /^[^\s/>]+/.exec(inner);
  const name = m ? m[0] : '';
  const attrs = new Map<string, string>();
  for (const a of inner.slice(name.length).matchAll(ATTR)) attrs.set(a[1]!, a[2]!);
  return { name, attrs, open: true, close: selfClosing };
}
