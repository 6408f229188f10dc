/**
 * The control protocol between `dmkit` commands and `dmkit serve`: one JSON
 * object a line over a Unix socket (ARCHITECTURE §6).
 *
 *   → {"id":1,"op":"create","name":"a","table":["0 2048 linear /x 0"]}
 *   ← {"id":1,"ok":true,"result":{…}}
 *   ← {"id":1,"ok":false,"error":{"code":"EINVAL","message":"line 1: …"}}
 *
 * Each op is one device-mapper ioctl (basic-targets §5); the CLI builds
 * dmsetup's multiple-device mode out of `list` plus one call per device.
 */
import { readFileSync } from 'node:fs';
import type { StatusLine } from '../mapper/device-registry.ts';
import type { MappedDeviceInfo } from '../mapper/mapped-device.ts';

/** Where `dmkit serve` keeps its state and control socket unless told otherwise. */
export const DEFAULT_DATA_DIR = './dmkit-data';
/** The control socket's name inside the data dir. */
export const SOCKET_NAME = 'dmkit.sock';
/** NBD's registered port, on loopback only unless the user names another address. */
export const DEFAULT_LISTEN = { host: '127.0.0.1', port: 10809 } as const;

/** Longest request line accepted, without its newline. */
export const MAX_LINE_BYTES = 1024 * 1024;

/** The device-mapper interface version dmkit implements (`dmsetup version`: Driver version). */
export const DRIVER_VERSION = '4.50.0';

/** dmkit's own version, from package.json (`dmkit version`: Library version). */
export const PACKAGE_VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

/**
 * What DEV_STATUS returns (basic-targets §5), as JSON: the mapper's info with
 * readAhead null (not absent) until the first table was loaded, so dmsetup's
 * formatter can omit the line.
 */
export type DeviceInfo = Omit<MappedDeviceInfo, 'readAhead'> & { readAhead: number | null };

export interface TableResult {
  device: DeviceInfo;
  targets: StatusLine[];
}

export interface DepsResult {
  device: DeviceInfo;
  deps: { major: number; minor: number; name: string }[];
}

export interface ProgressEntry {
  start: number;
  type: string;
  what: string;
  done: number;
  total: number;
}

export interface TargetVersion {
  name: string;
  version: [number, number, number];
}

/** Arguments of every op. */
export interface Requests {
  create: { name: string; table?: string[]; uuid?: string; readOnly?: boolean };
  load: { name: string; table: string[]; readOnly?: boolean };
  clear: { name: string };
  suspend: { name: string; noflush?: boolean; nolockfs?: boolean };
  resume: { name: string; noflush?: boolean; nolockfs?: boolean };
  /** `force`: end the device's NBD connections first (they get ESHUTDOWN) instead of failing with EBUSY. */
  remove: { name: string; force?: boolean };
  list: Record<string, never>;
  info: { name: string; inactive?: boolean };
  table: { name: string; inactive?: boolean; target?: string };
  /** `noflush`: dmsetup status --noflush, the figures without the commit thin-pool and clone run first. */
  status: { name: string; inactive?: boolean; target?: string; noflush?: boolean };
  deps: { name: string; inactive?: boolean };
  /** The message text, split into words by the daemon as the kernel does (dm_split_args). */
  message: { name: string; sector: number; message: string };
  wait: { name: string; eventNr?: number };
  progress: { name: string };
  targets: Record<string, never>;
  version: Record<string, never>;
}

/** Result of every op. */
export interface Results {
  create: DeviceInfo;
  load: DeviceInfo;
  clear: DeviceInfo;
  suspend: DeviceInfo;
  resume: DeviceInfo;
  remove: { name: string };
  list: DeviceInfo[];
  info: DeviceInfo;
  table: TableResult;
  status: TableResult;
  deps: DepsResult;
  message: { reply: string | null };
  /** The device once its event number differs from the one waited on. */
  wait: DeviceInfo;
  /** Background work of the live table's targets (hydration, resync …); empty when there is none. */
  progress: ProgressEntry[];
  targets: TargetVersion[];
  version: { version: string; driver: string };
}

export type Op = keyof Requests;

export interface ErrorBody {
  code: string;
  message: string;
}

export type Reply =
  | { id: RequestId; ok: true; result: unknown }
  | { id: RequestId; ok: false; error: ErrorBody };

export type RequestId = number | string | null;

type FieldType = 'string' | 'boolean' | 'integer' | 'string[]';
interface FieldSpec {
  type: FieldType;
  required: boolean;
}

const req = (type: FieldType): FieldSpec => ({ type, required: true });
const opt = (type: FieldType): FieldSpec => ({ type, required: false });

/** Field types of every op; the key sets are checked against `Requests` by the compiler. */
const FIELDS: { [K in Op]: { [F in keyof Requests[K]]-?: FieldSpec } } = {
  create: { name: req('string'), table: opt('string[]'), uuid: opt('string'), readOnly: opt('boolean') },
  load: { name: req('string'), table: req('string[]'), readOnly: opt('boolean') },
  clear: { name: req('string') },
  suspend: { name: req('string'), noflush: opt('boolean'), nolockfs: opt('boolean') },
  resume: { name: req('string'), noflush: opt('boolean'), nolockfs: opt('boolean') },
  remove: { name: req('string'), force: opt('boolean') },
  list: {},
  info: { name: req('string'), inactive: opt('boolean') },
  table: { name: req('string'), inactive: opt('boolean'), target: opt('string') },
  status: { name: req('string'), inactive: opt('boolean'), target: opt('string'), noflush: opt('boolean') },
  deps: { name: req('string'), inactive: opt('boolean') },
  message: { name: req('string'), sector: req('integer'), message: req('string') },
  wait: { name: req('string'), eventNr: opt('integer') },
  progress: { name: req('string') },
  targets: {},
  version: {},
};

export type Request = { [K in Op]: { id: RequestId; op: K; args: Requests[K] } }[Op];

/** A request line that could not be taken apart; `id` is the request's where it had a usable one. */
export class ProtocolError extends Error {
  constructor(readonly id: RequestId, message: string) {
    super(message);
  }
}

/**
 * Parses and checks one request line: valid JSON, an object, a known op, and
 * exactly the fields that op takes with the right types.
 */
export function parseRequest(line: string): Request {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new ProtocolError(null, `malformed request: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(null, 'malformed request: expected a JSON object');
  }
  const obj = value as Record<string, unknown>;
  const rawId = obj.id;
  const idOk = rawId === undefined || typeof rawId === 'string' || (typeof rawId === 'number' && Number.isFinite(rawId));
  const id: RequestId = idOk ? ((rawId as number | string | undefined) ?? null) : null;
  if (!idOk) throw new ProtocolError(null, 'malformed request: "id" must be a number or a string');
  const op = obj.op;
  if (typeof op !== 'string') throw new ProtocolError(id, 'malformed request: "op" must be a string');
  if (!Object.hasOwn(FIELDS, op)) throw new ProtocolError(id, `unknown op "${op}"`);
  const fields = FIELDS[op as Op] as Record<string, FieldSpec>;
  const args: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(obj)) {
    if (key === 'id' || key === 'op') continue;
    const spec = fields[key];
    if (!spec) throw new ProtocolError(id, `${op}: unknown field "${key}"`);
    if (!hasType(v, spec.type)) throw new ProtocolError(id, `${op}: field "${key}" must be ${describe(spec.type)}`);
    args[key] = v;
  }
  for (const [key, spec] of Object.entries(fields)) {
    if (spec.required && !(key in args)) throw new ProtocolError(id, `${op}: missing field "${key}"`);
  }
  return { id, op, args } as Request;
}

function hasType(v: unknown, type: FieldType): boolean {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'integer':
      return Number.isSafeInteger(v);
    case 'string[]':
      return Array.isArray(v) && v.every((s) => typeof s === 'string');
  }
}

function describe(type: FieldType): string {
  return { string: 'a string', boolean: 'true or false', integer: 'an integer', 'string[]': 'an array of strings' }[type];
}
