/**
 * The control ops over the device registry: one function per op, each the
 * daemon's side of one device-mapper ioctl (basic-targets §5).
 */
import { splitArgs } from '../mapper/args.ts';
import type { DeviceRegistry } from '../mapper/device-registry.ts';
import type { MappedDeviceInfo } from '../mapper/mapped-device.ts';
import { DRIVER_VERSION, PACKAGE_VERSION, type DeviceInfo, type Op, type Request, type Requests, type Results } from './protocol.ts';

export function toDeviceInfo(info: MappedDeviceInfo): DeviceInfo {
  return { ...info, readAhead: info.readAhead ?? null };
}

/** What the ops act on: the registry, and the NBD server's connections for `remove --force`. */
export interface OpContext {
  readonly registry: DeviceRegistry;
  /** Ends every NBD connection serving `name` and waits until they are gone. */
  endExport(name: string): Promise<void>;
}

type Handler<K extends Op> = (registry: DeviceRegistry, args: Requests[K], ctx: OpContext, signal: AbortSignal) => Promise<Results[K]> | Results[K];

const HANDLERS: { [K in Op]: Handler<K> } = {
  async create(r, a) {
    return toDeviceInfo(await r.create(a.name, { uuid: a.uuid, table: a.table, readOnly: a.readOnly }));
  },
  async load(r, a) {
    await r.load(a.name, a.table, { readOnly: a.readOnly });
    return toDeviceInfo(r.info(a.name));
  },
  async clear(r, a) {
    await r.clear(a.name);
    return toDeviceInfo(r.info(a.name));
  },
  // --nolockfs: dmkit has no filesystem to freeze, so it changes nothing (§5 DEV_SUSPEND).
  async suspend(r, a) {
    await r.suspend(a.name, { noflush: a.noflush });
    return toDeviceInfo(r.info(a.name));
  },
  async resume(r, a) {
    await r.resume(a.name, { noflush: a.noflush });
    return toDeviceInfo(r.info(a.name));
  },
  async remove(r, a, ctx) {
    if (a.force) await ctx.endExport(a.name);
    await r.remove(a.name);
    return { name: a.name };
  },
  list: (r) => r.list().map((md) => toDeviceInfo(md.info())),
  info: (r, a) => toDeviceInfo(r.info(a.name, { inactive: a.inactive })),
  table: (r, a) => ({
    device: toDeviceInfo(r.info(a.name, { inactive: a.inactive })),
    targets: r.status(a.name, { type: 'table', inactive: a.inactive, target: a.target }),
  }),
  async status(r, a) {
    if (!a.noflush) await r.prepareStatus(a.name, { inactive: a.inactive });
    return {
      device: toDeviceInfo(r.info(a.name, { inactive: a.inactive })),
      targets: r.status(a.name, { type: 'info', inactive: a.inactive, target: a.target }),
    };
  },
  deps: (r, a) => ({
    device: toDeviceInfo(r.info(a.name, { inactive: a.inactive })),
    deps: r.deps(a.name, { inactive: a.inactive }).map((d) => ({ major: d.major, minor: d.minor, name: d.diskName })),
  }),
  async message(r, a) {
    return { reply: (await r.message(a.name, a.sector, splitArgs(a.message))) ?? null };
  },
  // The device as it was when the event came, even if that event was its removal.
  async wait(r, a, _ctx, signal) {
    const md = r.get(a.name);
    await r.wait(a.name, a.eventNr ?? 0, signal);
    return toDeviceInfo(md.info());
  },
  progress: (r, a) => r.progress(a.name),
  targets: (r) => r.targets.list().map((t) => ({ name: t.name, version: [...t.version] as [number, number, number] })),
  version: () => ({ version: PACKAGE_VERSION, driver: DRIVER_VERSION }),
};

/** Runs one checked request; `signal` aborts a `wait` when its connection goes away. */
export async function runOp(ctx: OpContext, request: Request, signal: AbortSignal): Promise<unknown> {
  const handler = HANDLERS[request.op] as Handler<Op>;
  return handler(ctx.registry, request.args, ctx, signal);
}
