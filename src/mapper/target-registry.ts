import { IoError } from '../block/errors.ts';
import type { TargetType } from './target.ts';

/**
 * Registered target types. `list()` is in Linux's order: most recently
 * registered first (basic-targets §6.8), so register error, linear, striped first.
 */
export class TargetRegistry {
  private readonly types: TargetType[] = [];

  register(type: TargetType): void {
    if (this.get(type.name)) throw new IoError('EBUSY', `target type ${type.name} is already registered`);
    this.types.unshift(type);
  }

  get(name: string): TargetType | undefined {
    return this.types.find((t) => t.name === name);
  }

  list(): readonly TargetType[] {
    return this.types;
  }
}

export function formatVersion(v: readonly [number, number, number]): string {
  return `v${v[0]}.${v[1]}.${v[2]}`;
}
