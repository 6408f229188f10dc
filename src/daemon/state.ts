/**
 * `<data-dir>/state.json`: the devices of the running daemon, rewritten on
 * every registry change and recreated on the next start, so a restart changes
 * nothing a user can see (ARCHITECTURE §6): names, uuids, minors, read-only
 * flags and live tables, listed so that a device comes after every device its
 * table stands on.
 *
 * A write is temp file → fsync → rename → fsync of the directory: after a
 * crash the file is the old state or the new one, never a torn mix. Writes
 * are serialised; changes arriving during a write are folded into the next
 * one, which always writes the newest state.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { IoError, toIoError } from '../block/errors.ts';
import type { DeviceRegistry } from '../mapper/device-registry.ts';
import { MappedDevice } from '../mapper/mapped-device.ts';

export interface StateDevice {
  name: string;
  uuid: string;
  minor: number;
  readOnly: boolean;
  /** The live table's lines as they were given; empty for a device without a table. */
  table: string[];
}

interface StateFile {
  version: 1;
  devices: StateDevice[];
}

/** The registry's devices, each after the devices its live table uses, otherwise in creation order. */
export function currentState(registry: DeviceRegistry): StateDevice[] {
  const snapshot = registry.snapshot();
  const byName = new Map(snapshot.map((d) => [d.name, d]));
  const ordered: StateDevice[] = [];
  const placed = new Set<string>();
  const place = (name: string): void => {
    if (placed.has(name)) return;
    placed.add(name);
    for (const dep of registry.deps(name)) if (dep.device instanceof MappedDevice) place(dep.device.name);
    const d = byName.get(name)!;
    ordered.push({ name: d.name, uuid: d.uuid, minor: registry.info(name).minor, readOnly: d.readOnly, table: d.table });
  };
  for (const d of snapshot) place(d.name);
  return ordered;
}

/** The devices recorded in `path`; undefined when there is no such file. */
export async function readState(path: string): Promise<StateDevice[] | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (toIoError(err).code === 'ENOENT') return undefined;
    throw new IoError(toIoError(err).code, `${path}: ${toIoError(err).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new IoError('EINVAL', `${path}: not valid JSON: ${(err as Error).message}`);
  }
  const file = parsed as Partial<StateFile> | null;
  if (typeof file !== 'object' || file === null || file.version !== 1 || !Array.isArray(file.devices)) {
    throw new IoError('EINVAL', `${path}: expected {"version":1,"devices":[…]}`);
  }
  file.devices.forEach((d, i) => {
    const ok = typeof d === 'object' && d !== null && typeof d.name === 'string' && typeof d.uuid === 'string'
      && Number.isSafeInteger(d.minor) && typeof d.readOnly === 'boolean'
      && Array.isArray(d.table) && d.table.every((l) => typeof l === 'string');
    if (!ok) throw new IoError('EINVAL', `${path}: device ${i + 1} is not {name, uuid, minor, readOnly, table}`);
  });
  return file.devices;
}

/** Writes state.json durably, one write at a time, always ending with the newest state. */
export class StateWriter {
  private writing: Promise<void> | undefined;
  private next: StateDevice[] | undefined;

  constructor(
    readonly path: string,
    private readonly onError: (err: IoError) => void,
  ) {}

  /** Records `devices`; returns when they (or something newer) are on disk. */
  save(devices: StateDevice[]): Promise<void> {
    this.next = devices;
    this.writing ??= this.drain();
    return this.writing;
  }

  /** Resolves once no write is pending. */
  async idle(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /** The loop's last check of `next` and the reset of `writing` run in one step, so no save is missed. */
  private async drain(): Promise<void> {
    try {
      while (this.next) {
        const devices = this.next;
        this.next = undefined;
        try {
          await writeDurably(this.path, `${JSON.stringify({ version: 1, devices } satisfies StateFile, null, 2)}\n`);
        } catch (err) {
          this.onError(new IoError(toIoError(err).code, `${this.path}: state not saved: ${toIoError(err).message}`, { cause: err }));
        }
      }
    } finally {
      this.writing = undefined;
    }
  }
}

/** temp → fsync → rename → fsync(dir): R2 for a file — the new text is durable before the rename commits it, so after a crash the file is either the old or the new text. */
async function writeDurably(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp`;
  const file = await open(temp, 'w', 0o600);
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
