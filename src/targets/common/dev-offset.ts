/**
 * Constructor pieces shared by the targets that take `<dev> <offset>` pairs
 * (linear, error, striped per stripe, delay per class): the ctr error, the
 * `%llu%c` offset, and dm_get_device with the target's own message.
 */
import { IoError, toIoError, type Errno } from '../../block/errors.ts';
import { parseSector } from '../../mapper/args.ts';
import type { DeviceRef, TargetContext } from '../../mapper/target.ts';

/** A constructor failure: `message` is Linux's ti->error, `code` the errno the ctr returns. */
export function ctrError(message: string, code: Errno = 'EINVAL'): IoError {
  return new IoError(code, message);
}

/**
 * `sscanf("%llu%c")` of a sector offset (basic-targets §2.4).
 *
 * Linux saturates values above 2^64-1 and accepts anything up to that here,
 * leaving the device-area check (§3.3) to refuse the table; dmkit positions are
 * numbers, so offsets beyond 2^53 are refused here with the same errno (EINVAL).
 * The only visible difference is the log text, and that a reload is refused at
 * load rather than at resume.
 */
export function parseOffset(word: string, message: string): number {
  const offset = parseSector(word);
  if (offset === undefined) throw ctrError(message);
  return offset;
}

/** dm_get_device: the ctr message replaces the lookup's text, the lookup's errno stays. */
export async function lookupDevice(ctx: TargetContext, word: string, message: string): Promise<DeviceRef> {
  try {
    return await ctx.openDevice(word);
  } catch (err) {
    throw new IoError(toIoError(err).code, message, { cause: err });
  }
}

/** An underlying device and where this target's area starts on it. */
export interface DevOffset {
  readonly ref: DeviceRef;
  /** First sector of the area on the device. */
  readonly offset: number;
}

export interface DevOffsetMessages {
  badOffset: string;
  lookupFailed: string;
}

/** linear_ctr's texts, shared by error's `<dev> <offset>` form. */
export const LINEAR_MESSAGES: DevOffsetMessages = {
  badOffset: 'Invalid device sector',
  lookupFailed: 'Device lookup failed',
};

/** `<dev> <offset>`, in Linux's order: the offset is parsed before the device is looked up. */
export async function parseDevOffset(
  ctx: TargetContext,
  devWord: string,
  offsetWord: string,
  messages: DevOffsetMessages = LINEAR_MESSAGES,
): Promise<DevOffset> {
  const offset = parseOffset(offsetWord, messages.badOffset);
  const ref = await lookupDevice(ctx, devWord, messages.lookupFailed);
  return { ref, offset };
}

/** `"%s %llu"`: how every table line prints a device and its offset. */
export function formatDevOffset({ ref, offset }: DevOffset): string {
  return `${ref.id} ${offset}`;
}
