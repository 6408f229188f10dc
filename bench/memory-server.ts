/**
 * A dmkit server whose one device, `mem`, is `linear` over a MemoryDevice:
 * the mapper and NBD path with no file system under it. `dmkit serve` opens
 * only files and nbd:// URIs, so the benchmark runs this in a child process
 * of its own (its CPU and memory are measured like the daemon's).
 *
 *   node --import tsx bench/memory-server.ts SECTORS
 * prints `port PORT` once listening; SIGTERM closes it.
 */
import { MemoryDevice } from '../src/block/memory-device.ts';
import { RegistryExports } from '../src/daemon/exports.ts';
import { DeviceRegistry } from '../src/mapper/device-registry.ts';
import { NbdServer } from '../src/nbd/server.ts';
import { builtinTargets } from '../src/targets/index.ts';

const sectors = Number(process.argv[2]);
if (!Number.isSafeInteger(sectors) || sectors <= 0) throw new Error(`usage: memory-server.ts SECTORS (got ${process.argv[2]})`);

const registry = new DeviceRegistry({
  targets: builtinTargets(),
  openFile: () => Promise.reject(new Error('memory-server opens no files')),
});
registry.attach('memory0', new MemoryDevice(sectors, { name: 'memory0' }));
await registry.create('mem', { table: [`0 ${sectors} linear memory0 0`] });
const server = new NbdServer(new RegistryExports(registry, false));
const addr = await server.listen({ host: '127.0.0.1', port: 0 });
if (typeof addr === 'string') throw new Error('expected a TCP address');
process.stdout.write(`port ${addr.port}\n`);

process.once('SIGTERM', () => {
  void server.close().then(() => registry.shutdown());
});
