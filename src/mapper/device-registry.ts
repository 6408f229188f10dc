/**
 * The named devices of one dmkit instance and the namespace tables open
 * underlying devices in: `/dev/mapper/NAME` and `253:N` are mapped devices,
 * `scheme://…` goes to a registered opener (nbd), any other path is a file or
 * a block device, shared by every table that names it (basic-targets §2.4, §5).
 */
import { EventEmitter } from 'node:events';
import { realpath, stat } from 'node:fs/promises';
import type { BlockDevice } from '../block/device.ts';
import { IoError, toIoError } from '../block/errors.ts';
import { parseDevT } from './args.ts';
import { silentLogger, systemClock } from './clock.ts';
import { DeviceHandle } from './device-handle.ts';
import { DM_MAJOR, MappedDevice, type MappedDeviceInfo } from './mapped-device.ts';
import { Table, type TableEnv } from './table.ts';
import { parseTableText } from './table-text.ts';
import type { TargetRegistry } from './target-registry.ts';
import type { Clock, DeviceRef, Logger, StatusType, TargetProgress } from './target.ts';

/** Loop-device major: backing files are numbered 7:N as losetup would. */
export const LOOP_MAJOR = 7;
/** NBD major: `nbd://` devices are numbered 43:N like the kernel's nbd driver. */
export const NBD_MAJOR = 43;
const MAX_NAME_BYTES = 127;
const MAX_UUID_BYTES = 128;
/** A dev_t minor has 20 bits. */
const MAX_MINOR = 1 << 20;

export type BackingOpener = (path: string) => Promise<BlockDevice>;

export interface RegistryOptions {
  targets: TargetRegistry;
  /** Opens a regular file or block device path (the daemon passes FileDevice.open). */
  openFile: BackingOpener;
  /** Openers by URI scheme, e.g. `nbd`. */
  openers?: Record<string, BackingOpener>;
  clock?: Clock;
  logger?: (device: string) => Logger;
}

export interface StatusLine {
  start: number;
  length: number;
  type: string;
  params: string;
}

/** What state.json keeps of a device: enough to create it again. */
export interface DeviceState {
  name: string;
  uuid: string;
  readOnly: boolean;
  table: string[];
}

interface Backing {
  readonly key: string;
  readonly ref: DeviceRef;
  users: number;
  /** Attached by the owner (tests, the embedded default): not closed on last release. */
  readonly pinned: boolean;
}

export interface ExportHandle {
  readonly device: MappedDevice;
  release(): void;
}

export class DeviceRegistry extends EventEmitter {
  private readonly devices = new Map<string, MappedDevice>();
  private readonly backing = new Map<string, Backing>();
  private readonly opts: RegistryOptions;
  private readonly clock: Clock;

  constructor(opts: RegistryOptions) {
    super();
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
  }

  get targets(): TargetRegistry {
    return this.opts.targets;
  }

  // ---- lookup ------------------------------------------------------------

  /** The device called `name`; ENXIO when there is none (dmsetup: "No such device or address"). */
  get(name: string): MappedDevice {
    const md = this.devices.get(name);
    if (!md) throw new IoError('ENXIO', `${name}: no such device`);
    return md;
  }

  has(name: string): boolean {
    return this.devices.has(name);
  }

  /** Every device, sorted by name byte-wise as the kernel lists them. */
  list(): MappedDevice[] {
    return [...this.devices.values()].sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  }

  // ---- device operations -------------------------------------------------

  /**
   * dmsetup create: DEV_CREATE, then TABLE_LOAD and resume when the table has
   * targets. Any failure removes the new device again: nothing is left behind.
   * `minor` asks for a fixed minor (dmsetup -m; the daemon keeps minors across
   * restarts): EBUSY when taken, EINVAL past 2^20.
   */
  async create(
    name: string,
    opts: { uuid?: string; table?: string | readonly string[]; readOnly?: boolean; minor?: number } = {},
  ): Promise<MappedDeviceInfo> {
    const lines = parseTableText(opts.table ?? []);
    checkName(name);
    const uuid = opts.uuid ?? '';
    if (Buffer.byteLength(uuid) > MAX_UUID_BYTES) throw new IoError('EINVAL', `uuid of ${name} is longer than ${MAX_UUID_BYTES} bytes`);
    if (this.devices.has(name)) throw new IoError('EBUSY', `${name}: a device of that name exists`);
    if (uuid && this.list().some((d) => d.uuid === uuid)) throw new IoError('EBUSY', `uuid ${uuid} is in use`);
    const minor = opts.minor ?? this.lowestFreeMinor();
    if (!Number.isSafeInteger(minor) || minor < 0 || minor >= MAX_MINOR) throw new IoError('EINVAL', `${name}: minor ${minor} is out of range`);
    if (this.list().some((d) => d.minor === minor)) throw new IoError('EBUSY', `${name}: minor ${minor} is in use`);
    const md = new MappedDevice(name, minor, uuid);
    this.devices.set(name, md);
    try {
      if (lines.length > 0) {
        await this.load(name, opts.table ?? [], { readOnly: opts.readOnly });
        await this.resume(name);
      }
    } catch (err) {
      await md.destroy();
      this.devices.delete(name);
      throw err;
    }
    this.changed();
    return md.info();
  }

  /** TABLE_LOAD: builds and stages a table; the device's live table is untouched on failure. */
  async load(name: string, text: string | readonly string[], opts: { readOnly?: boolean } = {}): Promise<void> {
    const md = this.get(name);
    const lines = parseTableText(text);
    await md.serialize(async () => {
      const table = await Table.build(lines, this.tableEnv(md, opts.readOnly ?? false));
      try {
        this.checkReplacement(md, table);
        if (md.neverLoaded) table.checkDeviceAreas();
      } catch (err) {
        await table.close();
        throw err;
      }
      await md.stage(table);
      if (md.neverLoaded) md.registerDisk(table);
    });
    this.changed();
  }

  async clear(name: string): Promise<void> {
    const md = this.get(name);
    await md.serialize(() => md.clear());
    this.changed();
  }

  async suspend(name: string, opts: { noflush?: boolean } = {}): Promise<void> {
    const md = this.get(name);
    await md.serialize(() => md.suspend({ noflush: opts.noflush ?? false }));
    this.changed();
  }

  async resume(name: string, opts: { noflush?: boolean } = {}): Promise<void> {
    const md = this.get(name);
    try {
      await md.serialize(() => md.resume({ noflush: opts.noflush ?? false }));
    } finally {
      this.changed();
    }
  }

  /** DEV_REMOVE: EBUSY while anything holds the device (a table above it, an NBD export). */
  async remove(name: string): Promise<void> {
    const md = this.get(name);
    await md.serialize(async () => {
      if (md.openCount > 0) throw new IoError('EBUSY', `${name}: device is in use (open count ${md.openCount})`);
      this.devices.delete(name);
      await md.destroy();
    });
    this.changed();
  }

  info(name: string, opts: { inactive?: boolean } = {}): MappedDeviceInfo {
    return this.get(name).info(opts.inactive);
  }

  /**
   * TABLE_STATUS: one line per target of the live (or staged) table,
   * `--target` filtering. The figures as they are: a status request without
   * --noflush runs prepareStatus first.
   */
  status(name: string, opts: { type: StatusType; inactive?: boolean; target?: string }): StatusLine[] {
    const md = this.get(name);
    const table = opts.inactive ? md.inactive : md.live;
    return (table?.entries ?? [])
      .filter((e) => opts.target === undefined || e.type.name === opts.target)
      .map((e) => ({ start: e.begin, length: e.length, type: e.type.name, params: e.target.status(opts.type) }));
  }

  /**
   * What a status request without --noflush runs before the figures are
   * read (TABLE_STATUS without DM_STATUS_NOFLUSH_FLAG): every target of the
   * live (or staged) table that brings its figures up to date does so —
   * thin-pool and clone commit. Not serialised with the control operations,
   * as Linux's status takes no suspend lock.
   */
  async prepareStatus(name: string, opts: { inactive?: boolean } = {}): Promise<void> {
    const md = this.get(name);
    const table = opts.inactive ? md.inactive : md.live;
    for (const e of table?.entries ?? []) await e.target.prepareStatus?.();
  }

  /** Background work of every target of the live table that has some, in table order. */
  progress(name: string): (TargetProgress & { start: number; type: string })[] {
    const out: (TargetProgress & { start: number; type: string })[] = [];
    for (const e of this.get(name).live?.entries ?? []) {
      const p = e.target.progress?.();
      if (p) out.push({ start: e.begin, type: e.type.name, ...p });
    }
    return out;
  }

  /** TABLE_DEPS: distinct underlying devices, most recently first referenced first. */
  deps(name: string, opts: { inactive?: boolean } = {}): DeviceRef[] {
    const md = this.get(name);
    return [...((opts.inactive ? md.inactive : md.live)?.deps ?? [])];
  }

  /** TARGET_MSG: to the target covering `sector` of the live table. */
  async message(name: string, sector: number, argv: readonly string[]): Promise<string | undefined> {
    const md = this.get(name);
    if (argv.length === 0 || argv[0] === '') throw new IoError('EINVAL', `${name}: empty message`);
    if (argv[0]!.startsWith('@')) throw new IoError('EINVAL', `${name}: Unsupported message sent to DM core: ${argv.join(' ')}`);
    const table = md.live;
    if (!table) throw new IoError('EINVAL', `${name}: The device has no table.`);
    if (!Number.isSafeInteger(sector) || sector < 0 || sector >= table.sectors) {
      throw new IoError('EINVAL', `${name}: Target message sector outside device.`);
    }
    const entry = table.entries[table.find(sector)]!;
    if (!entry.target.message) throw new IoError('EINVAL', `${name}: ${entry.type.name}: Target type does not support messages`);
    const reply = await entry.target.message([...argv]);
    this.changed();
    return reply;
  }

  /** DEV_WAIT */
  wait(name: string, eventNr: number, signal?: AbortSignal): Promise<number> {
    return this.get(name).waitEvent(eventNr, signal);
  }

  /** Holds a device for an NBD export: it counts in the open count, so remove fails with EBUSY. */
  acquire(name: string): ExportHandle {
    const md = this.get(name);
    md.openCount++;
    let released = false;
    return {
      device: md,
      release: () => {
        if (released) return;
        released = true;
        md.openCount--;
      },
    };
  }

  /** Opens a device as a program opens /dev/mapper/NAME: a handle that holds it until closed. */
  open(name: string): DeviceHandle {
    const held = this.acquire(name);
    return new DeviceHandle(held.device, held.release);
  }

  /**
   * Makes `device` available to tables under `path` (tests, the embedded
   * default's scratch devices). It is numbered 7:N like a backing file and
   * stays open until the registry shuts down.
   */
  attach(path: string, device: BlockDevice): DeviceRef {
    if (this.backing.has(path)) throw new IoError('EBUSY', `${path} is already attached`);
    const ref = this.backingRef(device, LOOP_MAJOR, this.lowestFreeMinorOf(LOOP_MAJOR));
    this.backing.set(path, { key: path, ref, users: 0, pinned: true });
    return ref;
  }

  /** What state.json keeps: every device with its live table's source lines, in creation order. */
  snapshot(): DeviceState[] {
    return [...this.devices.values()].map((md) => ({
      name: md.name,
      uuid: md.uuid,
      readOnly: md.live?.readOnly ?? false,
      table: (md.live?.entries ?? []).map((e) => `${e.source.start} ${e.source.length} ${e.source.type} ${e.source.params}`.trimEnd()),
    }));
  }

  /**
   * Flushes and removes every device, devices nothing holds first (top of
   * each stack before what it stands on), then closes backing devices.
   */
  async shutdown(): Promise<void> {
    while (this.devices.size > 0) {
      const free = [...this.devices.values()].filter((md) => md.openCount === 0);
      if (free.length === 0) throw new IoError('EBUSY', `devices still held: ${[...this.devices.keys()].join(', ')}`);
      for (const md of free) {
        await md.serialize(async () => {
          // A device held by an internal suspend (its pool is suspended) would hold the flush too.
          if (md.live && !md.isSuspended && !md.isSuspendedInternally) {
            await md.flush().catch((err) => this.logger(md.name).error(`flush at shutdown failed: ${toIoError(err).message}`));
          }
          this.devices.delete(md.name);
          await md.destroy();
        });
      }
    }
    for (const b of this.backing.values()) await b.ref.device.close();
    this.backing.clear();
    this.changed();
  }

  // ---- the table namespace -------------------------------------------------

  private tableEnv(md: MappedDevice, readOnly: boolean): TableEnv {
    return {
      deviceName: md.name,
      md: md.id,
      readOnly,
      clock: this.clock,
      log: this.logger(md.name),
      lookupType: (type) => this.opts.targets.get(type),
      openDevice: (arg) => this.openDevice(md, arg),
      releaseDevice: (ref) => this.releaseDevice(ref),
      raiseEvent: (table) => {
        if (md.live === table) md.raiseEvent();
      },
      internalSuspend: () => md.internalSuspend(),
      internalResume: () => md.internalResume(),
    };
  }

  /** dm_get_device in dmkit's namespace (basic-targets §2.4). */
  private async openDevice(holder: MappedDevice, arg: string): Promise<DeviceRef> {
    const devt = parseDevT(arg);
    if (devt) {
      if (devt.major === DM_MAJOR) return this.holdMapped(holder, this.list().find((d) => d.minor === devt.minor), arg);
      const b = [...this.backing.values()].find((x) => x.ref.major === devt.major && x.ref.minor === devt.minor);
      if (!b) throw new IoError('ENXIO', `${arg}: no such device`);
      b.users++;
      return b.ref;
    }
    if (arg.startsWith('/dev/mapper/')) return this.holdMapped(holder, this.devices.get(arg.slice('/dev/mapper/'.length)), arg);
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(arg)?.[1];
    if (scheme) return this.openBacking(arg, () => this.openUri(scheme, arg), () => ({ major: NBD_MAJOR, minor: this.lowestFreeMinorOf(NBD_MAJOR) }));
    const attached = this.backing.get(arg);
    if (attached) {
      attached.users++;
      return attached.ref;
    }
    const st = await stat(arg).catch((err) => {
      throw new IoError(toIoError(err).code === 'ENOENT' ? 'ENOENT' : 'ENODEV', `${arg}: ${toIoError(err).message}`);
    });
    if (!st.isFile() && !st.isBlockDevice()) throw new IoError('ENOTBLK', `${arg}: not a regular file or block device`);
    const key = await realpath(arg);
    const devt2 = st.isBlockDevice()
      ? { major: (st.rdev >> 8) & 0xfff, minor: (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00) }
      : undefined;
    return this.openBacking(key, () => this.opts.openFile(key), () => devt2 ?? { major: LOOP_MAJOR, minor: this.lowestFreeMinorOf(LOOP_MAJOR) });
  }

  private async openBacking(key: string, open: () => Promise<BlockDevice>, number: () => { major: number; minor: number }): Promise<DeviceRef> {
    const existing = this.backing.get(key);
    if (existing) {
      existing.users++;
      return existing.ref;
    }
    const device = await open();
    const again = this.backing.get(key); // another table may have opened it meanwhile
    if (again) {
      await device.close();
      again.users++;
      return again.ref;
    }
    const { major, minor } = number();
    const ref = this.backingRef(device, major, minor);
    this.backing.set(key, { key, ref, users: 1, pinned: false });
    return ref;
  }

  private openUri(scheme: string, uri: string): Promise<BlockDevice> {
    const opener = this.opts.openers?.[scheme.toLowerCase()];
    if (!opener) throw new IoError('EINVAL', `${uri}: no opener for ${scheme}:// devices`);
    return opener(uri);
  }

  private holdMapped(holder: MappedDevice, md: MappedDevice | undefined, arg: string): DeviceRef {
    if (!md) throw new IoError('ENOENT', `${arg}: no such mapped device`);
    if (md === holder || this.dependsOn(md, holder)) {
      throw new IoError('EINVAL', `${arg}: ${holder.name} cannot be stacked on a device that depends on it`);
    }
    md.openCount++;
    return { device: md, major: md.major, minor: md.minor, id: md.id, diskName: `dm-${md.minor}` };
  }

  private dependsOn(md: MappedDevice, on: MappedDevice): boolean {
    const refs = [...(md.live?.deps ?? []), ...(md.inactive?.deps ?? [])];
    return refs.some((r) => r.device === on || (r.device instanceof MappedDevice && this.dependsOn(r.device, on)));
  }

  private releaseDevice(ref: DeviceRef): void {
    if (ref.device instanceof MappedDevice) {
      ref.device.openCount--;
      return;
    }
    const b = [...this.backing.values()].find((x) => x.ref === ref);
    if (!b) return;
    if (--b.users === 0 && !b.pinned) {
      this.backing.delete(b.key);
      b.ref.device.close().catch((err) => this.logger(b.key).error(`close failed: ${toIoError(err).message}`));
    }
  }

  private backingRef(device: BlockDevice, major: number, minor: number): DeviceRef {
    const diskName = major === LOOP_MAJOR ? `loop${minor}` : major === NBD_MAJOR ? `nbd${minor}` : `${major}:${minor}`;
    return { device, major, minor, id: `${major}:${minor}`, diskName };
  }

  /** The changed table or device set: the daemon persists state.json on this. */
  private changed(): void {
    this.emit('change');
  }

  private checkReplacement(md: MappedDevice, table: Table): void {
    const liveType = md.live?.entries[0]?.type;
    const newType = table.entries[0]!.type;
    if (liveType?.features?.immutable && liveType !== newType && !newType.features?.wildcard) {
      throw new IoError('EINVAL', `${md.name}: can't replace immutable target type ${liveType.name}`);
    }
  }

  private lowestFreeMinor(): number {
    const used = new Set([...this.devices.values()].map((d) => d.minor));
    let m = 0;
    while (used.has(m)) m++;
    return m;
  }

  private lowestFreeMinorOf(major: number): number {
    const used = new Set([...this.backing.values()].filter((b) => b.ref.major === major).map((b) => b.ref.minor));
    let m = 0;
    while (used.has(m)) m++;
    return m;
  }

  private logger(name: string): Logger {
    return this.opts.logger?.(name) ?? silentLogger;
  }
}

/** Device names: 1..127 bytes, no `/`, not `control`, `.` or `..` (basic-targets §1). */
function checkName(name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0 || bytes > MAX_NAME_BYTES || name.includes('/') || name === 'control' || name === '.' || name === '..') {
    throw new IoError('EINVAL', `invalid device name "${name}": 1 to ${MAX_NAME_BYTES} bytes, no "/", not "control", "." or ".."`);
  }
}
