/**
 * Commands that report: ls, info, table, status, deps (basic-targets
 * §6.4–6.7). With no device argument they cover every device in name order
 * (`No devices found` when there is none); with none or several they are in
 * dmsetup's multiple-device mode, which prefixes table, status and deps lines
 * with `NAME: `.
 */
import type { ControlClient } from './client.ts';
import { type Command, type Context, forEachDevice } from './command.ts';
import { NO_DEVICES, formatConcise, formatDeps, formatInfo, formatLs, formatTable } from './format.ts';

interface Selection {
  names: string[];
  multiple: boolean;
}

/** The named devices, or all of them; undefined when there are none at all. */
async function select(ctx: Context, client: ControlClient): Promise<Selection | undefined> {
  if (ctx.args.length > 0) return { names: ctx.args, multiple: ctx.args.length > 1 };
  const all = await client.call('list', {});
  return all.length === 0 ? undefined : { names: all.map((d) => d.name), multiple: true };
}

/**
 * Fetches each device's result, printing text as it goes (`format`) or, under
 * `--json`, the results at the end: one object for one device, else a list.
 */
async function report<T>(
  ctx: Context,
  fetch: (client: ControlClient, name: string) => Promise<T>,
  format: (result: T, multiple: boolean) => string,
): Promise<number> {
  const client = await ctx.client();
  const selection = await select(ctx, client);
  if (!selection) {
    if (ctx.json) ctx.printJson([]);
    else ctx.print(NO_DEVICES);
    return 0;
  }
  const results: T[] = [];
  const status = await forEachDevice(ctx, selection.names, async (name) => {
    const result = await fetch(client, name);
    results.push(result);
    if (!ctx.json) ctx.print(format(result, selection.multiple));
  });
  if (ctx.json && (results.length > 0 || status === 0)) ctx.printJson(selection.multiple ? results : results[0]);
  return status;
}

export const ls: Command = {
  name: 'ls',
  usage: 'ls',
  summary: 'list devices: NAME<TAB>(MAJOR:MINOR)',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    const devices = await (await ctx.client()).call('list', {});
    if (ctx.json) ctx.printJson(devices);
    else ctx.print(formatLs(devices));
    return 0;
  },
};

export const info: Command = {
  name: 'info',
  usage: 'info [--inactive] [NAME...]',
  summary: 'show device state (all devices when no NAME is given)',
  options: { inactive: { type: 'boolean' } },
  args: { min: 0, max: Infinity },
  missingDevice: 'Device does not exist.',
  run: (ctx) => report(ctx, (c, name) => c.call('info', { name, inactive: ctx.flag('inactive') }), (r) => formatInfo(r)),
};

const tableOrStatus = (name: 'table' | 'status', summary: string, extra: Command['options']): Command => ({
  name,
  usage: `${name} [--inactive] [--target TYPE]${name === 'table' ? ' [--concise]' : ' [--noflush]'} [NAME...]`,
  summary,
  options: { inactive: { type: 'boolean' }, target: { type: 'string' }, ...extra },
  args: { min: 0, max: Infinity },
  ...(name === 'status' ? { missingDevice: 'Device does not exist.' } : {}),
  async run(ctx) {
    const target = ctx.option('target');
    const noflush = name === 'status' ? { noflush: ctx.flag('noflush') } : {};
    const fetch = (c: ControlClient, device: string) => c.call(name, { name: device, inactive: ctx.flag('inactive'), target, ...noflush });
    if (!ctx.flag('concise') || ctx.json) return report(ctx, fetch, (r, multiple) => formatTable(r, { multiple, target }));
    const client = await ctx.client();
    const selection = await select(ctx, client);
    if (!selection) {
      ctx.print(NO_DEVICES);
      return 0;
    }
    const results: Awaited<ReturnType<typeof fetch>>[] = [];
    const status = await forEachDevice(ctx, selection.names, async (device) => void results.push(await fetch(client, device)));
    ctx.print(formatConcise(results, { target }));
    return status;
  },
});

export const table = tableOrStatus('table', "show the devices' tables", { concise: { type: 'boolean' } });
export const status = tableOrStatus('status', "show the targets' status; thin-pool and clone commit first unless --noflush", { noflush: { type: 'boolean' } });

export const deps: Command = {
  name: 'deps',
  usage: 'deps [--inactive] [NAME...]',
  summary: 'list the devices each device stands on',
  options: { inactive: { type: 'boolean' } },
  args: { min: 0, max: Infinity },
  run: (ctx) => report(ctx, (c, name) => c.call('deps', { name, inactive: ctx.flag('inactive') }), (r, multiple) => formatDeps(r, { multiple })),
};
