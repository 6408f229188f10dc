/**
 * The target types dmkit registers, in registration order. `dmkit targets`
 * lists the most recently registered first, so error, linear and striped come
 * first here and print last, as on Linux (basic-targets §6.8).
 */
import { TargetRegistry } from '../mapper/target-registry.ts';
import type { TargetType } from '../mapper/target.ts';
import { cloneTarget } from './clone/clone.ts';
import { delayTarget } from './delay/delay.ts';
import { errorTarget } from './error/error.ts';
import { flakeyTarget } from './flakey/flakey.ts';
import { integrityTarget } from './integrity/integrity.ts';
import { linearTarget } from './linear/linear.ts';
import { logWritesTarget } from './log-writes/log-writes.ts';
import { mirrorTarget } from './mirror/mirror.ts';
import { stripedTarget } from './striped/striped.ts';
import { thinPoolTarget } from './thin/pool.ts';
import { thinTarget } from './thin/thin.ts';
import { zeroTarget } from './zero/zero.ts';

export const BUILTIN_TARGETS: readonly TargetType[] = [
  errorTarget, linearTarget, stripedTarget, zeroTarget, delayTarget, flakeyTarget, logWritesTarget,
  mirrorTarget, thinPoolTarget, thinTarget, cloneTarget, integrityTarget,
];

export function builtinTargets(): TargetRegistry {
  const registry = new TargetRegistry();
  for (const t of BUILTIN_TARGETS) registry.register(t);
  return registry;
}
