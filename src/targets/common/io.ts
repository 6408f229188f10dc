/** I/O helpers shared by the basic targets. */
import { IoError, type Errno } from '../../block/errors.ts';
import type { TargetContext } from '../../mapper/target.ts';

/** Operation names as they appear in error texts. */
export type TargetOp = 'read' | 'write' | 'flush' | 'discard' | 'write-zeroes';

/**
 * Fails one request on a target, naming the mapped device, the target type and
 * the mapped-device sector. `sector` is target-relative.
 */
export function targetIoError(
  ctx: TargetContext,
  type: string,
  code: Errno,
  op: TargetOp,
  sector: number,
  why: string,
): IoError {
  const at = ctx.begin + sector;
  return new IoError(code, `${ctx.deviceName}: ${op} at sector ${at}: ${why} (${type} target)`, {
    device: ctx.deviceName,
    sector: at,
  });
}

/** The target declares no bios for this operation: Linux fails it with EOPNOTSUPP. */
export function unsupported(ctx: TargetContext, type: string, op: TargetOp, sector: number): IoError {
  return targetIoError(ctx, type, 'EOPNOTSUPP', op, sector, 'operation not supported');
}

/** Errors that mean "not supported" rather than "the device failed". */
export function isNotSupported(err: unknown): boolean {
  return err instanceof IoError && (err.code === 'EOPNOTSUPP' || err.code === 'ENOTSUP');
}

/**
 * Waits for every piece of a split request (basic-targets §4.2, §10.1 rule 1):
 * the request completes only when all pieces have, and fails with the last
 * error recorded if any piece failed.
 */
export async function completeAll(pieces: readonly Promise<void>[]): Promise<void> {
  let failed = false;
  let last: unknown;
  await Promise.all(
    pieces.map((p) =>
      p.catch((err: unknown) => {
        failed = true;
        last = err;
      }),
    ),
  );
  if (failed) throw last;
}
