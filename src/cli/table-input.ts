/**
 * Where `create` and `load` get their table, as dmsetup does (basic-targets
 * §2.2, §6.1): `--table` text, else a table file, else standard input.
 * Relative paths in it are made absolute against the user's working directory
 * (src/daemon/table-paths.ts), since the daemon runs elsewhere.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { strerror, toIoError } from '../block/errors.ts';
import { resolveTablePaths } from '../daemon/table-paths.ts';
import { CliError } from './client.ts';
import { type Context, usageError } from './command.ts';

/** `--table`, `--file`/TABLE_FILE (the positional after NAME), or stdin, split into lines. */
export async function readTableArg(ctx: Context): Promise<string[]> {
  const inline = ctx.list('table');
  const file = ctx.option('file');
  const positional = ctx.args[1];
  const sources = [inline.length > 0, file !== undefined, positional !== undefined].filter(Boolean).length;
  if (sources > 1) throw usageError(ctx.command, 'give the table once: --table, --file or a table file');
  const text = inline.length > 0 ? inline.join('\n') : await readSource(ctx, file ?? positional);
  return Promise.all(text.split('\n').map((line) => resolveTablePaths(line, ctx.io.cwd)));
}

async function readSource(ctx: Context, file: string | undefined): Promise<string> {
  if (file === undefined) return readStream(ctx.io.stdin);
  try {
    return await readFile(resolve(ctx.io.cwd, file), 'utf8');
  } catch (err) {
    throw new CliError(`${ctx.command.name}: table file ${file}: ${strerror(toIoError(err).code)}`);
  }
}

async function readStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}
