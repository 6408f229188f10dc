/**
 * The config file: the devices `dmkit serve --config FILE` creates, in order.
 *
 *   {"devices":[{"name":"a","table":["0 2048 linear disk.img 0"],"readOnly":false,"uuid":""}]}
 *
 * Relative file arguments in tables are taken relative to the config file's
 * directory (table-paths.ts), so a config and its backing files can move
 * together. Every error names the file and the device.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { IoError, toIoError } from '../block/errors.ts';
import { resolveTablePaths } from './table-paths.ts';

export interface ConfigDevice {
  name: string;
  table: string[];
  readOnly: boolean;
  uuid: string;
}

const DEVICE_FIELDS = new Set(['name', 'table', 'readOnly', 'uuid']);

export async function readConfig(file: string): Promise<ConfigDevice[]> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new IoError(toIoError(err).code, `config ${path}: ${toIoError(err).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new IoError('EINVAL', `config ${path}: not valid JSON: ${(err as Error).message}`);
  }
  const top = parsed as { devices?: unknown } | null;
  if (typeof top !== 'object' || top === null || Array.isArray(top) || !Array.isArray(top.devices)) {
    throw new IoError('EINVAL', `config ${path}: expected {"devices":[…]}`);
  }
  const baseDir = dirname(path);
  const seen = new Set<string>();
  const devices: ConfigDevice[] = [];
  for (const [i, raw] of top.devices.entries()) {
    const where = `config ${path}: device ${typeof raw?.name === 'string' ? `"${raw.name}"` : i + 1}`;
    const fail = (msg: string): never => {
      throw new IoError('EINVAL', `${where}: ${msg}`);
    };
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('expected an object');
    const d = raw as Record<string, unknown>;
    for (const key of Object.keys(d)) if (!DEVICE_FIELDS.has(key)) fail(`unknown field "${key}"`);
    if (typeof d.name !== 'string' || d.name === '') fail('"name" must be a non-empty string');
    if (seen.has(d.name as string)) fail('declared twice');
    seen.add(d.name as string);
    if (d.table !== undefined && !(Array.isArray(d.table) && d.table.every((l) => typeof l === 'string'))) {
      fail('"table" must be an array of strings');
    }
    if (d.readOnly !== undefined && typeof d.readOnly !== 'boolean') fail('"readOnly" must be true or false');
    if (d.uuid !== undefined && typeof d.uuid !== 'string') fail('"uuid" must be a string');
    const table = await Promise.all(((d.table as string[] | undefined) ?? []).map((line) => resolveTablePaths(line, baseDir)));
    devices.push({ name: d.name as string, table, readOnly: (d.readOnly as boolean | undefined) ?? false, uuid: (d.uuid as string | undefined) ?? '' });
  }
  return devices;
}
