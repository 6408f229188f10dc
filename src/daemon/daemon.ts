/**
 * `dmkit serve`'s parts wired together (ARCHITECTURE §6): the device
 * registry, the devices it starts with, state.json, the control socket and
 * the NBD listeners, started and stopped in the order that keeps each of them
 * from seeing a half-built or half-torn-down other.
 */
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { IoError, toIoError } from '../block/errors.ts';
import { FileDevice } from '../block/file-device.ts';
import { DeviceRegistry } from '../mapper/device-registry.ts';
import type { Logger } from '../mapper/target.ts';
import { NbdDevice } from '../nbd/client-device.ts';
import { type ListenAddress, NbdServer } from '../nbd/server.ts';
import { builtinTargets } from '../targets/index.ts';
import { type ConfigDevice, readConfig } from './config.ts';
import { ControlServer, assertNoDaemon } from './control.ts';
import { defaultDevices } from './default-devices.ts';
import { RegistryExports } from './exports.ts';
import { runOp } from './operations.ts';
import { SOCKET_NAME } from './protocol.ts';
import { StateWriter, currentState, readState } from './state.ts';

export interface DaemonOptions {
  dataDir: string;
  /** Default `<dataDir>/dmkit.sock`. */
  socketPath?: string;
  configFile?: string;
  /** NBD listeners; none means none. */
  listen: ListenAddress[];
  /** Every NBD export read-only. */
  readOnly?: boolean;
  /** One line of diagnostics (stderr in `dmkit serve`). */
  log?: (line: string) => void;
}

/** Where the first devices come from, for messages naming it. */
interface Startup {
  source: string;
  devices: (ConfigDevice & { minor?: number })[];
}

export class Daemon {
  private constructor(
    readonly registry: DeviceRegistry,
    readonly control: ControlServer,
    readonly nbd: NbdServer,
    /** Bound NBD addresses: `127.0.0.1:10809`, `[::1]:10809`, `unix:/path`. */
    readonly addresses: string[],
    private readonly state: StateWriter,
    private readonly onChange: () => void,
  ) {}

  get socketPath(): string {
    return this.control.path;
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const log = opts.log ?? ((line: string) => console.error(line));
    const dataDir = resolve(opts.dataDir);
    const socketPath = resolve(opts.socketPath ?? join(dataDir, SOCKET_NAME));
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await assertNoDaemon(socketPath);

    const readOnly = opts.readOnly ?? false;
    const openNbd = (uri: string) => NbdDevice.connect(uri, { logger: prefixed(log, `dmkit: ${uri}: `) });
    const registry = new DeviceRegistry({
      targets: builtinTargets(),
      openFile: (path) => FileDevice.open(path),
      // Tables may stand on another host's export (ARCHITECTURE §8).
      openers: { nbd: openNbd, 'nbd+unix': openNbd },
      logger: (name) => prefixed(log, `dmkit: ${name}: `),
    });
    const state = new StateWriter(join(dataDir, 'state.json'), (err) => log(`dmkit: ${err.message}`));
    const onChange = (): void => void state.save(currentState(registry));
    const nbd = new NbdServer(new RegistryExports(registry, readOnly), { logger: prefixed(log, 'dmkit: ') });
    let control: ControlServer | undefined;
    try {
      const startup = await startupDevices(dataDir, state.path, opts.configFile, log);
      for (const d of startup.devices) {
        await registry.create(d.name, { uuid: d.uuid, table: d.table, readOnly: d.readOnly, minor: d.minor }).catch((err) => {
          const e = toIoError(err);
          throw new IoError(e.code, `${startup.source}: device "${d.name}": ${e.message}`, { cause: err });
        });
      }
      registry.on('change', onChange);
      await state.save(currentState(registry));
      const ops = { registry, endExport: (name: string) => nbd.endExport(name) };
      // A change is on disk before its reply goes out: a command that returned survives a crash.
      control = await ControlServer.listen(socketPath, async (request, signal) => {
        try {
          return await runOp(ops, request, signal);
        } finally {
          await state.idle();
        }
      });
      const addresses: string[] = [];
      for (const addr of opts.listen) addresses.push(formatAddress(await nbd.listen(addr)));
      return new Daemon(registry, control, nbd, addresses, state, onChange);
    } catch (err) {
      await control?.close();
      await nbd.close();
      registry.off('change', onChange); // tearing down must not record an empty state
      await state.idle();
      await registry.shutdown();
      throw err;
    }
  }

  /**
   * Stops accepting control and NBD connections, lets running requests
   * finish, saves the last state, then flushes and closes every device, top
   * of each stack first (registry.shutdown).
   */
  async stop(): Promise<void> {
    await this.control.close();
    await this.nbd.close();
    this.registry.off('change', this.onChange);
    await this.state.idle();
    await this.registry.shutdown();
  }
}

/**
 * state.json when there is one (it records every change, config devices
 * included: a restart changes nothing), else the config file, else the
 * embedded default.
 */
async function startupDevices(dataDir: string, statePath: string, configFile: string | undefined, log: (line: string) => void): Promise<Startup> {
  const saved = await readState(statePath);
  if (saved) {
    if (configFile) log(`dmkit: ${statePath} exists, so config ${resolve(configFile)} is not applied (remove state.json to start from the config)`);
    return { source: statePath, devices: saved };
  }
  if (configFile) return { source: `config ${resolve(configFile)}`, devices: await readConfig(configFile) };
  return { source: 'embedded default', devices: await defaultDevices(dataDir) };
}

function formatAddress(addr: AddressInfo | string): string {
  if (typeof addr === 'string') return `unix:${addr}`;
  return addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
}

function prefixed(log: (line: string) => void, prefix: string): Logger {
  return {
    info: (msg) => log(`${prefix}${msg}`),
    warn: (msg) => log(`${prefix}warning: ${msg}`),
    error: (msg) => log(`${prefix}error: ${msg}`),
  };
}
