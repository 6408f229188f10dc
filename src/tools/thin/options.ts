import { IoError } from '../../block/errors.ts';
import type { ToolIo } from './io.ts';
import type { SuperblockOverrides } from './xml.ts';

/** A getopt_long-style option table: name → takes a value. Short aliases map to long names. */
export interface OptionSpec {
  flags: Record<string, boolean>;
  aliases?: Record<string, string>;
}

export interface ParsedArgs {
  options: Map<string, string[]>;
  positional: string[];
}

/** Parses argv like the tools do: `--name value`, `--name=value`, `-x value`; throws EINVAL on anything unknown. */
export function parseArgs(argv: readonly string[], spec: OptionSpec): ParsedArgs {
  const options = new Map<string, string[]>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    let name = arg.replace(/^--?/, '');
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    name = spec.aliases?.[name] ?? name;
    const takesValue = spec.flags[name];
    if (takesValue === undefined) throw new IoError('EINVAL', `unrecognized option '${arg}'`);
    if (takesValue && value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new IoError('EINVAL', `option '${arg}' requires an argument`);
    }
    const list = options.get(name) ?? [];
    list.push(value ?? '');
    options.set(name, list);
  }
  return { options, positional };
}

/** What a tool's body gets: its arguments, and `closeAtEnd` for what it opens. */
export interface ToolRun extends ParsedArgs {
  /** Closes `resource` when the tool ends, however it ends, newest first. */
  closeAtEnd<T extends { close(): Promise<void> }>(resource: T): T;
}

/**
 * The frame every thin tool shares: argv parsed against `spec` plus
 * -h/--help (which prints `usage`), then `body`. An error, of the body or of
 * closing what it opened, is one line on stderr and exit status 1, as the
 * tools report them.
 */
export async function runTool(
  argv: readonly string[],
  io: ToolIo,
  usage: string,
  spec: OptionSpec,
  body: (run: ToolRun) => Promise<number>,
): Promise<number> {
  const opened: { close(): Promise<void> }[] = [];
  const fail = (err: unknown): number => {
    io.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  };
  let status: number;
  try {
    const parsed = parseArgs(argv, { flags: { help: false, ...spec.flags }, aliases: { h: 'help', ...spec.aliases } });
    if (parsed.options.has('help')) {
      io.stdout.write(usage);
      return 0;
    }
    status = await body({
      ...parsed,
      closeAtEnd: (resource) => {
        opened.push(resource);
        return resource;
      },
    });
  } catch (err) {
    status = fail(err);
  }
  for (const resource of opened.reverse()) await resource.close().catch((err: unknown) => (status = fail(err)));
  return status;
}

/** A decimal number argument, as the tools' boost::lexical_cast wants it. */
export function parseNumber(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new IoError('EINVAL', `couldn't parse ${what}: '${text}'`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new IoError('EOVERFLOW', `${what} too large: '${text}'`);
  return n;
}

/** The -i and -o paths of thin_restore and thin_repair (the last of each), with the tools' texts when one is missing. */
export function inputOutputPaths(options: ReadonlyMap<string, string[]>): { input: string; output: string } {
  const input = options.get('input')?.at(-1);
  const output = options.get('output')?.at(-1);
  if (input === undefined) throw new IoError('EINVAL', 'No input file provided.');
  if (output === undefined) throw new IoError('EINVAL', 'No output file provided.');
  return { input, output };
}

/** The override options of thin_dump, thin_restore and thin_repair, each taking a value. */
export const OVERRIDE_OPTIONS = { 'transaction-id': true, 'data-block-size': true, 'nr-data-blocks': true } as const;

/** The overrides given (the last of each), named in messages as the tools name them. */
export function parseOverrides(options: ReadonlyMap<string, string[]>): SuperblockOverrides {
  const over: SuperblockOverrides = {};
  const value = (name: keyof typeof OVERRIDE_OPTIONS, what: string): number | undefined => {
    const text = options.get(name)?.at(-1);
    return text === undefined ? undefined : parseNumber(text, what);
  };
  const transactionId = value('transaction-id', 'transaction id');
  const dataBlockSize = value('data-block-size', 'data block size');
  const nrDataBlocks = value('nr-data-blocks', 'nr data blocks');
  if (transactionId !== undefined) over.transactionId = transactionId;
  if (dataBlockSize !== undefined) {
    if (dataBlockSize > 0xffffffff) throw new IoError('EOVERFLOW', `data block size too large: '${dataBlockSize}' (a le32 field)`);
    over.dataBlockSize = dataBlockSize;
  }
  if (nrDataBlocks !== undefined) over.nrDataBlocks = nrDataBlocks;
  return over;
}
