/**
 * Test-only target types for the mapper's own tests: `testmap <dev> <offset>
 * [<max_io>]` maps like linear and checks that no piece crosses a max_io
 * boundary; it answers messages (`event` raises one, anything else echoes)
 * and logs its suspend hooks.
 */
import { IoError } from '../../src/block/errors.ts';
import { inheritLimits } from '../../src/mapper/limits.ts';
import type { Target, TargetType } from '../../src/mapper/target.ts';

export const hookLog: string[] = [];

export const testmapTarget: TargetType = {
  name: 'testmap',
  version: [0, 0, 1],
  async construct(ctx, argv) {
    if (argv.length < 2 || argv.length > 3) throw new IoError('EINVAL', 'Invalid argument count');
    const offset = Number(argv[1]);
    const maxIo = argv[2] === undefined ? undefined : Number(argv[2]);
    if (!Number.isSafeInteger(offset)) throw new IoError('EINVAL', 'Invalid device sector');
    const ref = await ctx.openDevice(argv[0]!);
    const dev = ref.device;
    const checkPiece = (rel: number, n: number): void => {
      if (rel < 0 || rel + n > ctx.length) throw new Error(`piece [${rel}, +${n}) outside target of ${ctx.length}`);
      if (maxIo && Math.floor(rel / maxIo) !== Math.floor((rel + n - 1) / maxIo)) throw new Error(`piece [${rel}, +${n}) crosses max_io ${maxIo}`);
    };
    const target: Target = {
      maxIoSectors: maxIo,
      read: (s, buf) => (checkPiece(s, buf.length / 512), dev.read(offset + s, buf)),
      write: (s, buf, o) => (checkPiece(s, buf.length / 512), dev.write(offset + s, buf, o)),
      flush: () => dev.flush(),
      discard: (s, n) => dev.discard(offset + s, n),
      writeZeroes: (s, n, o) => dev.writeZeroes(offset + s, n, o),
      limits: () => inheritLimits([ref]),
      areas: () => [{ ref, start: offset, length: ctx.length }],
      status: (type) => (type === 'table' ? `${ref.id} ${offset}${maxIo ? ` ${maxIo}` : ''}` : 'ok'),
      async message(words) {
        if (words[0] === 'event') ctx.raiseEvent();
        return words.join('+');
      },
      async presuspend() {
        hookLog.push(`presuspend ${ctx.begin}`);
      },
      async postsuspend() {
        hookLog.push(`postsuspend ${ctx.begin}`);
      },
      async resume() {
        hookLog.push(`resume ${ctx.begin}`);
      },
      async close() {
        hookLog.push(`close ${ctx.begin}`);
      },
    };
    return target;
  },
};

/** `nodev`: no devices, no I/O (like a plain error target), for limit-check tests. */
export const nodevTarget: TargetType = {
  name: 'nodev',
  version: [0, 0, 1],
  async construct() {
    const fail = () => Promise.reject(new IoError('EIO', 'nodev'));
    return {
      read: fail,
      write: fail,
      flush: () => Promise.resolve(),
      discard: fail,
      writeZeroes: fail,
      limits: () => inheritLimits([]),
      areas: () => [],
      status: () => '',
      close: () => Promise.resolve(),
    };
  },
};
