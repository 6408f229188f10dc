/**
 * `dmkit COMMAND …`: dmsetup's commands against a running `dmkit serve`,
 * the daemon itself, and offline tools (ARCHITECTURE §7). Global options may
 * stand anywhere: `--socket PATH` (env DMKIT_SOCKET), `--data-dir DIR` (env
 * DMKIT_DATA_DIR; the socket defaults to DIR/dmkit.sock), `--json`.
 */
import { join, resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { DEFAULT_DATA_DIR, SOCKET_NAME } from '../daemon/protocol.ts';
import { targets, version } from './about-commands.ts';
import { CliError } from './client.ts';
import { type CliIo, type Command, Context, errorMessage, usageError } from './command.ts';
import { clear, create, load, message, reload, remove, resume, suspend, wait } from './device-commands.ts';
import { deps, info, ls, status, table } from './query-commands.ts';
import { serve } from './serve-command.ts';
import { replayLog, thin } from './tool-commands.ts';

const GLOBAL_OPTIONS = {
  socket: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const help: Command = {
  name: 'help',
  usage: 'help [COMMAND]',
  summary: 'show this help, or the usage of one command',
  options: {},
  args: { min: 0, max: 1 },
  async run(ctx) {
    const name = ctx.args[0];
    if (name === undefined) {
      ctx.print(helpText());
      return 0;
    }
    const command = COMMANDS.get(name);
    if (!command) throw unknownCommand(name);
    ctx.print(commandHelp(command));
    return 0;
  },
};

const COMMANDS = new Map<string, Command>(
  [serve, create, load, reload, suspend, resume, clear, remove, ls, info, table, status, deps, message, wait, targets, version, replayLog, thin, help]
    .map((c) => [c.name, c]),
);

const processIo = (): CliIo => ({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() });

/** Runs one command line; resolves with the exit status. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const at = commandIndex(argv);
  if (at < 0) {
    const wantsHelp = argv.includes('--help') || argv.includes('-h');
    (wantsHelp ? io.stdout : io.stderr).write(helpText());
    return wantsHelp ? 0 : 1;
  }
  const command = COMMANDS.get(argv[at]!);
  if (!command) {
    io.stderr.write(`dmkit: ${unknownCommand(argv[at]!).message}\n`);
    return 1;
  }
  const rest = [...argv.slice(0, at), ...argv.slice(at + 1)];
  let ctx: Context | undefined;
  try {
    if (command.raw) return await command.run(new Context(command, io, {}, argv.slice(at + 1), '', ''));
    const { values, positionals } = parseCommandLine(command, rest);
    if (values.help) {
      io.stdout.write(commandHelp(command));
      return 0;
    }
    if (positionals.length < command.args.min) throw usageError(command, positionals.length === 0 ? 'missing device name' : 'missing argument');
    if (positionals.length > command.args.max) throw usageError(command, `unexpected argument "${positionals[command.args.max]}"`);
    const dataDir = resolve(io.cwd, stringValue(values['data-dir']) ?? io.env.DMKIT_DATA_DIR ?? DEFAULT_DATA_DIR);
    const socketPath = resolve(io.cwd, stringValue(values.socket) ?? io.env.DMKIT_SOCKET ?? join(dataDir, SOCKET_NAME));
    ctx = new Context(command, io, values, positionals, socketPath, dataDir);
    return await command.run(ctx);
  } catch (err) {
    const text = err instanceof CliError ? err.message : `${command.name}: ${errorMessage(err)}`;
    if (ctx) ctx.error(text);
    else io.stderr.write(`dmkit: ${text}\n`);
    return 1;
  } finally {
    await ctx?.close();
  }
}

/** Where the command word is: the first argument that is neither an option nor a global option's value. */
function commandIndex(argv: readonly string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--socket' || a === '--data-dir') i++;
    else if (!a.startsWith('-')) return i;
  }
  return -1;
}

function parseCommandLine(command: Command, args: string[]): { values: Context['values']; positionals: string[] } {
  try {
    const parsed = parseArgs({ args, options: { ...GLOBAL_OPTIONS, ...command.options }, allowPositionals: true, strict: true });
    return { values: parsed.values, positionals: parsed.positionals };
  } catch (err) {
    // node's texts run on ("To specify a positional argument …"); the first sentence is the problem.
    const first = (err as Error).message.split(/(?<=\.) /)[0]!.replace(/\.$/, '');
    throw usageError(command, first.charAt(0).toLowerCase() + first.slice(1));
  }
}

function stringValue(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function unknownCommand(name: string): CliError {
  return new CliError(`unknown command "${name}" (see "dmkit help")`);
}

function commandHelp(command: Command): string {
  return `usage: dmkit ${command.usage}\n  ${command.summary}\n`;
}

function helpText(): string {
  const lines = [...COMMANDS.values()].map((c) => `  ${c.usage}\n      ${c.summary}\n`);
  return [
    'usage: dmkit [--socket PATH] [--data-dir DIR] [--json] COMMAND [ARGS...]\n',
    '\n',
    'device-mapper in user space: dmsetup-style tables served over NBD.\n',
    '\n',
    'commands:\n',
    ...lines,
    '\n',
    `The control socket is --socket, else $DMKIT_SOCKET, else DIR/dmkit.sock where DIR is\n`,
    `--data-dir, else $DMKIT_DATA_DIR, else ${DEFAULT_DATA_DIR}. --json prints the daemon's results as JSON.\n`,
  ].join('');
}
