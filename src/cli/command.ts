/**
 * What every `dmkit` command is and gets: its options, the parsed command
 * line, the daemon connection (opened on first use), and the one way output
 * and errors are written.
 */
import type { ParseArgsConfig } from 'node:util';
import { toIoError } from '../block/errors.ts';
import { CliError, ControlClient, DaemonError } from './client.ts';
import { formatDeviceError } from './format.ts';

export interface CliIo {
  stdin: NodeJS.ReadableStream;
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: Record<string, string | undefined>;
  cwd: string;
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export interface Command {
  readonly name: string;
  /** After `dmkit `: `create NAME [--table LINE]...`. */
  readonly usage: string;
  readonly summary: string;
  readonly options: NonNullable<ParseArgsConfig['options']>;
  /** Positional arguments allowed; more is a usage error. */
  readonly args: { min: number; max: number };
  /** Takes its argv unparsed (offline tools with their own options). */
  readonly raw?: boolean;
  /** What dmsetup prints, alone, for a device that does not exist (info, status). */
  readonly missingDevice?: string;
  run(ctx: Context): Promise<number>;
}

export class Context {
  private connection: Promise<ControlClient> | undefined;

  constructor(
    readonly command: Command,
    readonly io: CliIo,
    readonly values: OptionValues,
    readonly args: string[],
    readonly socketPath: string,
    readonly dataDir: string,
  ) {}

  get json(): boolean {
    return this.values.json === true;
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  option(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  list(name: string): string[] {
    const v = this.values[name];
    return Array.isArray(v) ? v : [];
  }

  client(): Promise<ControlClient> {
    this.connection ??= ControlClient.connect(this.socketPath);
    return this.connection;
  }

  /** Closes the daemon connection, if one was opened. */
  async close(): Promise<void> {
    const c = await this.connection?.catch(() => undefined);
    c?.close();
  }

  print(text: string): void {
    this.io.stdout.write(text);
  }

  /** `--json` output: the raw result objects. */
  printJson(value: unknown): void {
    this.io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** One error line on stderr: `dmkit: <message>`, or a JSON object under `--json`. */
  error(message: string, detail: { device?: string; code?: string } = {}): void {
    if (this.json) {
      this.io.stderr.write(`${JSON.stringify({ error: { command: this.command.name, ...detail, message } })}\n`);
    } else {
      this.io.stderr.write(`dmkit: ${message}\n`);
    }
  }

  /**
   * Reports a failed request about device `name`. Daemon errors name the
   * command, the device and the errno; anything else is not about the device
   * (the daemon went away) and is rethrown.
   */
  deviceError(name: string, err: unknown): void {
    if (!(err instanceof DaemonError)) throw err;
    if (err.code === 'ENXIO' && this.command.missingDevice && !this.json) {
      this.io.stderr.write(`${this.command.missingDevice}\n`);
      return;
    }
    if (this.json) this.error(err.message, { device: name, code: err.code });
    else this.error(formatDeviceError(this.command.name, name, err.code, err.message));
  }
}

/** A usage error of `command`: one line with its usage. */
export function usageError(command: Command, problem: string): CliError {
  return new CliError(`${command.name}: ${problem} (usage: dmkit ${command.usage})`);
}

/** Runs `fn` for every name, reporting each failure; 0 when all succeeded. */
export async function forEachDevice(ctx: Context, names: readonly string[], fn: (name: string) => Promise<void>): Promise<number> {
  let status = 0;
  for (const name of names) {
    try {
      await fn(name);
    } catch (err) {
      ctx.deviceError(name, err);
      status = 1;
    }
  }
  return status;
}

/** The message of anything thrown, for the last-resort error line. */
export function errorMessage(err: unknown): string {
  return err instanceof CliError || err instanceof DaemonError ? err.message : toIoError(err).message;
}
