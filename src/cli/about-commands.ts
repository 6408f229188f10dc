/** `dmkit targets` and `dmkit version` (basic-targets §6.8). */
import { PACKAGE_VERSION } from '../daemon/protocol.ts';
import type { Command } from './command.ts';
import { formatDriverVersion, formatLibraryVersion, formatTargets } from './format.ts';

export const targets: Command = {
  name: 'targets',
  usage: 'targets',
  summary: 'list the target types and their versions',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    const list = await (await ctx.client()).call('targets', {});
    if (ctx.json) ctx.printJson(list);
    else ctx.print(formatTargets(list));
    return 0;
  },
};

export const version: Command = {
  name: 'version',
  usage: 'version',
  summary: "print dmkit's version and the device-mapper interface version of the daemon",
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    const library = `dmkit ${PACKAGE_VERSION}`;
    // Like dmsetup, the library line comes first even when the driver cannot be asked.
    if (!ctx.json) ctx.print(formatLibraryVersion(library));
    const daemon = await (await ctx.client()).call('version', {});
    if (ctx.json) ctx.printJson({ library, driver: daemon.driver, daemon: daemon.version });
    else ctx.print(formatDriverVersion(daemon.driver));
    return 0;
  },
};
