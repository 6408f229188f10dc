import { setTimeout as sleep } from 'node:timers/promises';
import type { Clock, Logger } from './target.ts';

/** Wall-clock time for production; tests inject a virtual clock (src/sim). */
export const systemClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleep(ms, undefined, signal ? { signal } : undefined).then(() => undefined),
};

/** Logs to stderr with a prefix; the daemon passes one per device. */
export function consoleLogger(prefix: string): Logger {
  return {
    info: (msg) => console.error(`${prefix}: ${msg}`),
    warn: (msg) => console.error(`${prefix}: warning: ${msg}`),
    error: (msg) => console.error(`${prefix}: error: ${msg}`),
  };
}

/** Discards everything: for tests that do not read logs. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
