/**
 * dmsetup's output, byte for byte, from the daemon's JSON results
 * (basic-targets §6; lvm2 libdm/dm-tools/dmsetup.c). Pure functions: each
 * returns the text a command prints on stdout.
 */
import type { DepsResult, DeviceInfo, TableResult, TargetVersion } from '../daemon/protocol.ts';

/**
 * `dmsetup info`, the long format (§6.4): labels 19 columns wide, `UUID:`
 * with one space and only for a device that has one, no Read Ahead line
 * before the first table load, and an empty line after every device.
 */
export function formatInfo(d: DeviceInfo): string {
  const tables = d.liveTable || d.inactiveTable
    ? `${d.liveTable ? 'LIVE' : ''}${d.liveTable && d.inactiveTable ? ' & ' : ''}${d.inactiveTable ? 'INACTIVE' : ''}`
    : 'None';
  return [
    `Name:              ${d.name}\n`,
    `State:             ${d.suspended ? 'SUSPENDED' : 'ACTIVE'}${d.readOnly ? ' (READ-ONLY)' : ''}\n`,
    d.readAhead === null ? '' : `Read Ahead:        ${d.readAhead}\n`,
    `Tables present:    ${tables}\n`,
    `Open count:        ${d.openCount}\n`,
    `Event number:      ${d.eventNr}\n`,
    `Major, minor:      ${d.major}, ${d.minor}\n`,
    `Number of targets: ${d.targetCount}\n`,
    d.uuid ? `UUID: ${d.uuid}\n` : '',
    '\n',
  ].join('');
}

/** `dmsetup ls` (§6.5): `name<TAB>(major:minor)` in name order. */
export function formatLs(devices: readonly DeviceInfo[]): string {
  if (devices.length === 0) return NO_DEVICES;
  return devices.map((d) => `${d.name}\t(${d.major}:${d.minor})\n`).join('');
}

export const NO_DEVICES = 'No devices found\n';

/**
 * `dmsetup table` / `status` for one device (§6.6): `start length type ` —
 * always that space, so an empty target text leaves it trailing — then the
 * text. A device with no targets prints one empty line, unless `--target`
 * filtered (then nothing). In multiple-device mode every line starts with
 * `name: `.
 */
export function formatTable(r: TableResult, opts: { multiple: boolean; target?: string }): string {
  const prefix = opts.multiple ? `${r.device.name}: ` : '';
  if (r.device.targetCount === 0) return opts.target === undefined ? `${prefix}\n` : '';
  return r.targets.map((t) => `${prefix}${t.start} ${t.length} ${t.type} ${t.params}\n`).join('');
}

/**
 * `dmsetup table --concise` (§6.6): every device on one line,
 * `name,uuid,minor,ro|rw` then `,start length type params` per target,
 * devices separated by `;`, with `,` `;` `\` escaped in name, uuid and params.
 * Devices filtered out entirely by `--target` do not appear; nothing at all
 * printed means no newline either.
 */
export function formatConcise(results: readonly TableResult[], opts: { target?: string } = {}): string {
  const devices = results
    .filter((r) => r.targets.length > 0 || (r.device.targetCount === 0 && opts.target === undefined))
    .map((r) => {
      const d = r.device;
      const head = `${quoteConcise(d.name)},${quoteConcise(d.uuid)},${d.minor},${d.readOnly ? 'ro' : 'rw'}`;
      return head + r.targets.map((t) => `,${t.start} ${t.length} ${t.type} ${quoteConcise(t.params)}`).join('');
    });
  return devices.length === 0 ? '' : `${devices.join(';')}\n`;
}

function quoteConcise(s: string): string {
  return s.replace(/[,;\\]/g, '\\$&');
}

/**
 * `dmsetup deps` (§6.7): `N dependencies<TAB>:` then ` (major, minor)` per
 * underlying device, most recently first referenced first.
 */
export function formatDeps(r: DepsResult, opts: { multiple: boolean }): string {
  const prefix = opts.multiple ? `${r.device.name}: ` : '';
  return `${prefix}${r.deps.length} dependencies\t:${r.deps.map((d) => ` (${d.major}, ${d.minor})`).join('')}\n`;
}

/** `dmsetup targets` (§6.8): `%-16s v%d.%d.%d`. */
export function formatTargets(targets: readonly TargetVersion[]): string {
  return targets.map((t) => `${t.name.padEnd(16)} v${t.version.join('.')}\n`).join('');
}

/** `dmsetup version`'s first line (§6.8), with dmkit's version where libdm's would be. */
export function formatLibraryVersion(library: string): string {
  return `Library version:   ${library}\n`;
}

/** `dmsetup version`'s second line: the device-mapper interface version. */
export function formatDriverVersion(driver: string): string {
  return `Driver version:    ${driver}\n`;
}

/** `dmsetup message` prints a target's reply with a newline added unless it has one. */
export function formatMessageReply(reply: string | null): string {
  if (!reply) return '';
  return reply.endsWith('\n') ? reply : `${reply}\n`;
}

/**
 * One error line (without `dmkit: `): the command, the device, the daemon's
 * message without a repeated `name: ` lead, and the errno as the kernel
 * prints it (`-EBUSY`) unless the message already ends in it.
 */
export function formatDeviceError(command: string, name: string, code: string, message: string): string {
  const text = message.startsWith(`${name}: `) ? message.slice(name.length + 2) : message;
  return `${command} ${name}: ${text}${text.includes(`(-${code})`) ? '' : ` (-${code})`}`;
}

const BAR_WIDTH = 30;

/** `vol: [#########.....................]  31% 1290/4096 regions hydrated` (one target: its line; several: joined). */
export function formatProgress(name: string, entries: readonly { type: string; what: string; done: number; total: number }[]): string {
  return `${name}: ` + entries.map((e) => {
    const frac = e.total === 0 ? 1 : Math.min(1, e.done / e.total);
    const filled = Math.floor(frac * BAR_WIDTH);
    return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(frac * 100)).padStart(3)}% ${e.done}/${e.total} ${e.what}`;
  }).join(', ');
}
