export * from './args.ts';
export * from './clock.ts';
export * from './device-registry.ts';
export * from './limits.ts';
export * from './mapped-device.ts';
export * from './table.ts';
export * from './table-text.ts';
export * from './target-registry.ts';
export type * from './target.ts';
