/**
 * The NBD request path without fio: decoding a request, building replies,
 * and whole round trips through dmkit's NbdServer and NbdDevice client over
 * loopback TCP in one process (MemoryDevice behind the server), one request
 * at a time and 32 at once.
 *
 *   node --import tsx bench/micro/nbd.ts
 */
import { Bench } from 'tinybench';

import { MemoryDevice } from '../../src/block/memory-device.ts';
import { NbdDevice } from '../../src/nbd/client-device.ts';
import { CMD_READ, REQUEST_SIZE, decodeRequest, encodeRequest } from '../../src/nbd/protocol.ts';
import { simpleReply, structuredReadReply } from '../../src/nbd/replies.ts';
import { NbdServer, StaticExports } from '../../src/nbd/server.ts';

const SECTORS = 64 * 2048; // 64 MiB
const BLOCK = 4096;
const QUEUE = 32;

const request = Buffer.alloc(REQUEST_SIZE);
encodeRequest(request, 0, { flags: 0, type: CMD_READ, cookie: 7n, offset: 1 << 20, length: BLOCK });

const memory = new MemoryDevice(SECTORS, { name: 'memory' });
const fill = Buffer.alloc(1 << 20, 0x5a); // allocated everywhere: reads copy real data
for (let s = 0; s < SECTORS; s += fill.length / 512) await memory.write(s, fill);
const server = new NbdServer(new StaticExports(new Map([['memory', memory]])));
const addr = await server.listen({ host: '127.0.0.1', port: 0 });
if (typeof addr === 'string') throw new Error('expected a TCP address');
const client = await NbdDevice.connect({ host: '127.0.0.1', port: addr.port, exportName: 'memory' });

let next = 0;
/** A different 4 KiB block each call, spread over the device. */
const nextSector = (): number => ((next = (next + 2053) % (SECTORS / 8)) * 8);
const buffers = Array.from({ length: QUEUE }, () => Buffer.alloc(BLOCK));

const bench = new Bench({ name: 'NBD request path', time: 1000 });
bench
  .add('decodeRequest (28 B header)', () => {
    decodeRequest(request, 0);
  })
  .add('simpleReply (16 B)', () => {
    simpleReply(0, 7n);
  })
  .add('structuredReadReply, 4 KiB data chunk', () => {
    structuredReadReply(7n, [{ offset: 1 << 20, length: BLOCK, hole: false }]);
  })
  .add('round trip: 4 KiB read, qd1', async () => {
    await client.read(nextSector(), buffers[0]!);
  })
  .add(`round trip: ${QUEUE} × 4 KiB reads, qd${QUEUE} (per batch)`, async () => {
    await Promise.all(buffers.map((b) => client.read(nextSector(), b)));
  })
  .add('round trip: 4 KiB write, qd1', async () => {
    await client.write(nextSector(), buffers[0]!);
  });

try {
  await bench.run();
  console.log(bench.name);
  console.table(bench.table());
} finally {
  await client.close();
  await server.close();
}
