/**
 * `dmkit serve`: start the daemon, say so in one line, and run until SIGTERM
 * or SIGINT; then stop accepting, drain, flush and close every device in
 * dependency order, remove the control socket and exit 0 (ARCHITECTURE §6).
 */
import { toIoError } from '../block/errors.ts';
import { Daemon, type DaemonOptions } from './daemon.ts';

export interface ServeIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

export async function serve(opts: DaemonOptions, io: ServeIo): Promise<number> {
  const log = (line: string): void => void io.stderr.write(`${line}\n`);
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({ ...opts, log });
  } catch (err) {
    log(`dmkit: serve: ${toIoError(err).message}`);
    return 1;
  }
  const n = daemon.registry.list().length;
  const where = daemon.addresses.length > 0 ? daemon.addresses.join(' and ') : 'no NBD address';
  io.stdout.write(`dmkit: serving ${n} device${n === 1 ? '' : 's'} on ${where}, control socket ${daemon.socketPath}\n`);

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const stop = (s: NodeJS.Signals): void => {
      for (const x of SIGNALS) process.off(x, stop);
      resolve(s);
    };
    for (const s of SIGNALS) process.on(s, stop);
  });
  // A second signal while draining means "now": leave without the orderly close.
  const impatient = (): never => {
    log('dmkit: second signal during shutdown; exiting without closing devices');
    process.exit(1);
  };
  for (const s of SIGNALS) process.on(s, impatient);
  try {
    await daemon.stop();
  } catch (err) {
    log(`dmkit: shutdown after ${signal}: ${toIoError(err).message}`);
    return 1;
  } finally {
    for (const s of SIGNALS) process.off(s, impatient);
  }
  return 0;
}
