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

/**
 * The file-system calls state.json's reads and writes make, shaped as
 * node:fs/promises: the daemon uses that, the crash test a simulated file
 * system that can lose power between any two calls.
 */
export interface StateFileSystem {
  /** 'w' creates or truncates a file to write; 'r' opens the directory to fsync it. */
  open(path: string, flags: 'w' | 'r', mode?: number): Promise<StateFileHandle>;
  rename(from: string, to: string): Promise<void>;
  readFile(path: string, encoding: 'utf8'): Promise<string>;
}

export interface StateFileHandle {
  writeFile(text: string): Promise<void>;
  /** fsync(2) */
  sync(): Promise<void>;
  close(): Promise<void>;
}

const nodeFileSystem: StateFileSystem = { open, rename, readFile };

/**
 * Test-only broken writes (CRASH-TESTING §3), kept for the crash test to
 * catch. 'rename-before-fsync': the rename commits text that may not be
 * durable yet (R2 broken: a crash leaves state.json torn or empty).
 * 'no-dir-fsync': save() returns before the rename is durable (a crash may
 * bring back the state before an acknowledged change).
 */
export type BrokenStateWrite = 'rename-before-fsync' | 'no-dir-fsync';

export interface StateWriterOptions {
  files?: StateFileSystem;
  broken?: BrokenStateWrite;
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
export async function readState(path: string, files: StateFileSystem = nodeFileSystem): Promise<StateDevice[] | undefined> {
  let text: string;
  try {
    text = await files.readFile(path, 'utf8');
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
  private readonly files: StateFileSystem;
  private readonly broken: BrokenStateWrite | undefined;

  constructor(
    readonly path: string,
    private readonly onError: (err: IoError) => void,
    options: StateWriterOptions = {},
  ) {
    this.files = options.files ?? nodeFileSystem;
    this.broken = options.broken;
  }

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
          await writeDurably(this.files, this.path, `${JSON.stringify({ version: 1, devices } satisfies StateFile, null, 2)}\n`, this.broken);
        } catch (err) {
          this.onError(new IoError(toIoError(err).code, `${this.path}: state not saved: ${toIoError(err).message}`, { cause: err }));
        }
      }
    } finally {
      this.writing = undefined;
    }
  }
}

/**
 * temp → fsync → rename → fsync(dir): R2 for a file. The new text is durable
 * before the rename commits it, so after a crash state.json is the old text
 * or the new one, never torn; the directory's fsync makes the rename durable
 * before save() returns. Crash-tested, with both broken variants caught, in
 * test/daemon/state-crash.test.ts.
 */
async function writeDurably(files: StateFileSystem, path: string, text: string, broken: BrokenStateWrite | undefined): Promise<void> {
  const temp = `${path}.tmp`;
  const file = await files.open(temp, 'w', 0o600);
  try {
    await file.writeFile(text);
    if (broken === 'rename-before-fsync') await files.rename(temp, path);
    await file.sync();
  } finally {
    await file.close();
  }
  if (broken !== 'rename-before-fsync') await files.rename(temp, path);
  if (broken === 'no-dir-fsync') return;
  const dir = await files.open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
