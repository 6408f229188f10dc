/**
 * What the NBD layer logs through. Structurally the same as the mapper's
 * Logger, declared here because `nbd` depends only on `block` (ARCHITECTURE §2).
 */
export interface NbdLogger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export const quietLogger: NbdLogger = { info() {}, warn() {}, error() {} };
