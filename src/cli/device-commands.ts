/**
 * Commands that change a device: create, load/reload, clear, suspend,
 * resume, remove, message, wait (basic-targets §6.1–6.3). Like dmsetup they
 * print nothing on success; `--json` prints the daemon's result.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { type Command, type Context, forEachDevice, usageError } from './command.ts';
import { formatMessageReply, formatProgress } from './format.ts';
import { readTableArg } from './table-input.ts';

const TABLE_OPTIONS = {
  table: { type: 'string', multiple: true },
  file: { type: 'string' },
  readonly: { type: 'boolean', short: 'r' },
} as const;

const SUSPEND_OPTIONS = {
  noflush: { type: 'boolean' },
  nolockfs: { type: 'boolean' },
} as const;

/** One request per named device, printing each result under `--json`. */
async function each(ctx: Context, names: readonly string[], call: (name: string) => Promise<unknown>): Promise<number> {
  return forEachDevice(ctx, names, async (name) => {
    const result = await call(name);
    if (ctx.json) ctx.printJson(result);
  });
}

export const create: Command = {
  name: 'create',
  usage: 'create NAME [--table LINE]... [--file F | TABLE_FILE] [-u UUID] [-r|--readonly] [--notable]',
  summary: 'create a device; load and resume its table if it has one (table from --table, a file or stdin)',
  options: { ...TABLE_OPTIONS, uuid: { type: 'string', short: 'u' }, notable: { type: 'boolean', short: 'n' } },
  args: { min: 1, max: 2 },
  async run(ctx) {
    const name = ctx.args[0]!;
    const table = ctx.flag('notable') ? [] : await readTableArg(ctx);
    const client = await ctx.client();
    return each(ctx, [name], () => client.call('create', { name, table, uuid: ctx.option('uuid'), readOnly: ctx.flag('readonly') }));
  },
};

const loadCommand = (name: 'load' | 'reload'): Command => ({
  name,
  usage: `${name} NAME [--table LINE]... [--file F | TABLE_FILE] [-r|--readonly]`,
  summary: 'stage a table as the inactive table; resume makes it live',
  options: TABLE_OPTIONS,
  args: { min: 1, max: 2 },
  async run(ctx) {
    const device = ctx.args[0]!;
    const table = await readTableArg(ctx);
    const client = await ctx.client();
    return each(ctx, [device], () => client.call('load', { name: device, table, readOnly: ctx.flag('readonly') }));
  },
});

export const load = loadCommand('load');
export const reload = loadCommand('reload');

export const clear: Command = {
  name: 'clear',
  usage: 'clear NAME',
  summary: 'drop the inactive table',
  options: {},
  args: { min: 1, max: 1 },
  async run(ctx) {
    const client = await ctx.client();
    return each(ctx, ctx.args, (name) => client.call('clear', { name }));
  },
};

const suspendCommand = (op: 'suspend' | 'resume', summary: string): Command => ({
  name: op,
  usage: `${op} [--noflush] [--nolockfs] NAME...`,
  summary,
  options: SUSPEND_OPTIONS,
  args: { min: 1, max: Infinity },
  async run(ctx) {
    const client = await ctx.client();
    const flags = { noflush: ctx.flag('noflush'), nolockfs: ctx.flag('nolockfs') };
    return each(ctx, ctx.args, (name) => client.call(op, { name, ...flags }));
  },
});

export const suspend = suspendCommand('suspend', 'hold new I/O and wait for in-flight I/O to finish');
export const resume = suspendCommand('resume', 'make a staged table live and let I/O through again');

export const remove: Command = {
  name: 'remove',
  usage: 'remove [-f|--force] NAME...',
  summary: 'remove devices (--force first disconnects their NBD clients)',
  options: { force: { type: 'boolean', short: 'f' } },
  args: { min: 1, max: Infinity },
  async run(ctx) {
    const client = await ctx.client();
    return each(ctx, ctx.args, (name) => client.call('remove', { name, force: ctx.flag('force') }));
  },
};

export const message: Command = {
  name: 'message',
  usage: 'message NAME SECTOR WORD...',
  summary: 'send a message to the target at SECTOR and print its reply',
  options: {},
  args: { min: 3, max: Infinity },
  async run(ctx) {
    const [name, sectorText, ...words] = ctx.args as [string, string, ...string[]];
    // dmsetup takes a plain decimal and nothing else.
    if (!/^\d+$/.test(sectorText)) {
      ctx.error(`message ${name}: Invalid sector.`, { device: name, code: 'EINVAL' });
      return 1;
    }
    // Past 2^53 every sector is outside every device; the daemon says so.
    const sector = Math.min(Number(sectorText), Number.MAX_SAFE_INTEGER);
    const client = await ctx.client();
    return forEachDevice(ctx, [name], async () => {
      const result = await client.call('message', { name, sector, message: words.join(' ') });
      if (ctx.json) ctx.printJson(result);
      else ctx.print(formatMessageReply(result.reply));
    });
  },
};

export const wait: Command = {
  name: 'wait',
  usage: 'wait [--progress] NAME [EVENT_NR]',
  summary: "block until the device's event number differs from EVENT_NR (default 0); --progress: follow its resync or hydration to the end",
  options: { progress: { type: 'boolean' } },
  args: { min: 1, max: 2 },
  async run(ctx) {
    const [name, eventText = '0'] = ctx.args as [string, string?];
    if (ctx.flag('progress')) return followProgress(ctx, name);
    if (!/^\d+$/.test(eventText) || Number(eventText) > 0xffffffff) throw usageError(ctx.command, `invalid event number "${eventText}"`);
    const client = await ctx.client();
    return each(ctx, [name], () => client.call('wait', { name, eventNr: Number(eventText) }));
  },
};

const PROGRESS_POLL_MS = 500;

/**
 * Follows the device's background work (ARCHITECTURE §7) until every target
 * reports it done: one redrawn line on a terminal, a line per change otherwise.
 */
async function followProgress(ctx: Context, name: string): Promise<number> {
  const client = await ctx.client();
  const tty = (ctx.io.stdout as { isTTY?: boolean }).isTTY === true;
  let last = '';
  for (;;) {
    const entries = await client.call('progress', { name });
    const done = entries.every((e) => e.done >= e.total);
    if (ctx.json) {
      if (done) ctx.printJson(entries);
    } else {
      const line = entries.length === 0 ? `${name}: no background work` : formatProgress(name, entries);
      if (line !== last) ctx.print(tty ? `\r${line}\x1b[K` : `${line}\n`);
      last = line;
      if (done && tty) ctx.print('\n');
    }
    if (done) return 0;
    await delay(PROGRESS_POLL_MS);
  }
}
