import { constants } from 'node:os';

/** errno-style codes a block device or the mapper may report. NBD maps them one to one. */
export type Errno =
  | 'EIO' | 'EINVAL' | 'ENOSPC' | 'EPERM' | 'EILSEQ' | 'ENOTSUP' | 'EOPNOTSUPP'
  | 'ESHUTDOWN' | 'ETIMEDOUT' | 'EOVERFLOW' | 'ENOENT' | 'ENODEV' | 'ENOTBLK'
  | 'EBUSY' | 'ENXIO' | 'EAGAIN' | 'ENOMEM' | 'EEXIST' | 'EROFS' | 'EINTR'
  | 'ENODATA' | 'EBADMSG';

export interface IoErrorDetail {
  /** The device (or mapped device) the error belongs to. */
  device?: string;
  /** The first sector of the request that failed, when there was one. */
  sector?: number;
  cause?: unknown;
}

/** The one error type of dmkit: an errno code plus a one-line message naming what and where. */
export class IoError extends Error {
  override readonly name = 'IoError';
  readonly code: Errno;
  readonly device?: string;
  readonly sector?: number;

  constructor(code: Errno, message: string, detail: IoErrorDetail = {}) {
    super(message, detail.cause === undefined ? undefined : { cause: detail.cause });
    this.code = code;
    if (detail.device !== undefined) this.device = detail.device;
    if (detail.sector !== undefined) this.sector = detail.sector;
  }

  /** The positive errno number (EIO = 5, …) of this error's code on this OS. */
  get errno(): number {
    return errnoNumber(this.code);
  }
}

export function errnoNumber(code: Errno): number {
  if (code === 'ENOTSUP') return constants.errno.ENOTSUP ?? constants.errno.EOPNOTSUPP;
  return (constants.errno as Record<string, number>)[code] ?? constants.errno.EIO;
}

/** Kernel-style symbolic errno as printed with %pe: `-EINVAL`. */
export function symbolicErrno(code: Errno): string {
  return `-${code}`;
}

/**
 * Turns whatever a lower layer threw into an IoError: Node system errors keep
 * their code when dmkit knows it, everything else becomes EIO.
 */
export function toIoError(err: unknown, detail: IoErrorDetail = {}): IoError {
  if (err instanceof IoError) return err;
  const sys = err as NodeJS.ErrnoException | undefined;
  const code = (sys && typeof sys.code === 'string' && KNOWN.has(sys.code) ? sys.code : 'EIO') as Errno;
  const message = sys instanceof Error ? sys.message : String(err);
  return new IoError(code, message, { ...detail, cause: err });
}

const KNOWN = new Set<string>([
  'EIO', 'EINVAL', 'ENOSPC', 'EPERM', 'EILSEQ', 'ENOTSUP', 'EOPNOTSUPP', 'ESHUTDOWN', 'ETIMEDOUT',
  'EOVERFLOW', 'ENOENT', 'ENODEV', 'ENOTBLK', 'EBUSY', 'ENXIO', 'EAGAIN', 'ENOMEM', 'EEXIST',
  'EROFS', 'EINTR', 'ENODATA', 'EBADMSG',
]);

/** glibc's strerror text for the codes dmsetup prints. */
export function strerror(code: Errno): string {
  return STRERROR[code] ?? code;
}

const STRERROR: Partial<Record<Errno, string>> = {
  EIO: 'Input/output error',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  EPERM: 'Operation not permitted',
  EILSEQ: 'Invalid or incomplete multibyte or wide character',
  ENOTSUP: 'Operation not supported',
  EOPNOTSUPP: 'Operation not supported',
  ESHUTDOWN: 'Cannot send after transport endpoint shutdown',
  ETIMEDOUT: 'Connection timed out',
  EOVERFLOW: 'Value too large for defined data type',
  ENOENT: 'No such file or directory',
  ENODEV: 'No such device',
  ENOTBLK: 'Block device required',
  EBUSY: 'Device or resource busy',
  ENXIO: 'No such device or address',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EEXIST: 'File exists',
  EROFS: 'Read-only file system',
  EINTR: 'Interrupted system call',
  ENODATA: 'No data available',
  EBADMSG: 'Bad message',
};
