/**
 * NBD URIs (spec §12, NetworkBlockDevice/nbd doc/uri.md):
 *   nbd://[user@]host[:port][/export-name]
 *   nbd+unix:///[export-name]?socket=PATH
 * TLS schemes and parameters are refused: dmkit has no TLS.
 */
import { IoError } from '../block/errors.ts';
import { DEFAULT_PORT } from './protocol.ts';

export type NbdAddress =
  | { host: string; port: number; exportName: string }
  | { path: string; exportName: string };

export function parseNbdUri(uri: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new IoError('EINVAL', `${uri}: not a valid NBD URI`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme === 'nbds' || scheme === 'nbds+unix') throw new IoError('EINVAL', `${uri}: TLS is not supported`);
  if (scheme !== 'nbd' && scheme !== 'nbd+unix') throw new IoError('EINVAL', `${uri}: unknown scheme '${scheme}'`);
  // The export name is the path without its first '/', percent-decoded: nbd://h//disk names '/disk'.
  let exportName: string;
  try {
    exportName = decodeURIComponent(url.pathname.slice(1));
  } catch {
    throw new IoError('EINVAL', `${uri}: bad percent-encoding in the export name`);
  }
  let socket: string | undefined;
  for (const [key, value] of url.searchParams) {
    if (key === 'socket') socket = value;
    else if (key.startsWith('tls')) throw new IoError('EINVAL', `${uri}: TLS is not supported`);
    else if (!key.startsWith('x-')) throw new IoError('EINVAL', `${uri}: unknown parameter '${key}'`);
  }
  if (scheme === 'nbd+unix') {
    if (socket === undefined || socket === '') throw new IoError('EINVAL', `${uri}: nbd+unix needs a socket= parameter`);
    if (url.host !== '') throw new IoError('EINVAL', `${uri}: nbd+unix takes no host`);
    return { path: socket, exportName };
  }
  if (socket !== undefined) throw new IoError('EINVAL', `${uri}: socket= is only for nbd+unix`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw new IoError('EINVAL', `${uri}: no host`);
  return { host, port: url.port === '' ? DEFAULT_PORT : Number(url.port), exportName };
}

/** The URI of an address, as nbdinfo prints it. */
export function formatNbdUri(a: NbdAddress): string {
  const name = encodeURIComponent(a.exportName).replace(/%2F/g, '/');
  if ('path' in a) return `nbd+unix:///${name}?socket=${encodeURIComponent(a.path).replace(/%2F/g, '/')}`;
  const host = a.host.includes(':') ? `[${a.host}]` : a.host;
  return `nbd://${host}:${a.port}/${name}`;
}
