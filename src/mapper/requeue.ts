import { IoError } from '../block/errors.ts';

/**
 * DM_MAPIO_REQUEUE / DM_ENDIO_REQUEUE: a target hands a request back to the
 * core instead of completing it (mirror's held writes on a noflush suspend).
 * The mapped device issues it again once the device is resumed, through the
 * table live then. It never reaches the requester.
 */
export class RequeueRequest extends IoError {
  constructor(device: string, sector?: number) {
    super('EAGAIN', `${device}: request handed back to the core for reissue after resume`, {
      device,
      ...(sector === undefined ? {} : { sector }),
    });
  }
}
