/** `dmkit serve`: the command line of the daemon (src/daemon/serve.ts runs it). */
import { resolve } from 'node:path';
import { DEFAULT_LISTEN } from '../daemon/protocol.ts';
import type { ListenAddress } from '../nbd/server.ts';
import { type Command, usageError } from './command.ts';

export const serve: Command = {
  name: 'serve',
  usage: 'serve [--config FILE] [--data-dir DIR] [--socket PATH] [--listen HOST:PORT]... [--unix PATH]... [--read-only]',
  summary: `run the daemon: devices, control socket, NBD exports (default ${DEFAULT_LISTEN.host}:${DEFAULT_LISTEN.port})`,
  options: {
    config: { type: 'string' },
    listen: { type: 'string', multiple: true },
    unix: { type: 'string', multiple: true },
    'read-only': { type: 'boolean' },
  },
  args: { min: 0, max: 0 },
  async run(ctx) {
    const tcp = ctx.list('listen').map((text) => parseListen(text) ?? fail(text));
    const unix = ctx.list('unix').map((path): ListenAddress => ({ path: resolve(ctx.io.cwd, path) }));
    // Loopback only unless the user names an address.
    const listen = tcp.length + unix.length > 0 ? [...tcp, ...unix] : [DEFAULT_LISTEN];
    const config = ctx.option('config');
    // Loaded here, not at the top: the other commands start faster without the daemon's modules.
    const { serve: runDaemon } = await import('../daemon/serve.ts');
    return runDaemon(
      {
        dataDir: ctx.dataDir,
        socketPath: ctx.socketPath,
        configFile: config === undefined ? undefined : resolve(ctx.io.cwd, config),
        listen,
        readOnly: ctx.flag('read-only'),
      },
      ctx.io,
    );

    function fail(text: string): never {
      throw usageError(ctx.command, `--listen ${text}: expected HOST:PORT, e.g. 127.0.0.1:10809 or [::1]:0 (port 0: any free port)`);
    }
  },
};

/** `HOST:PORT` or `[IPV6]:PORT`; undefined when it is neither. */
export function parseListen(text: string): ListenAddress | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}
