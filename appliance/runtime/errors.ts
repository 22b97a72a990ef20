// Errors of the guest API (tsvirtio/guest), with stable codes. A program may get two
// copies of this class (its own bundle's and the runtime's): test `err.code`, not
// instanceof.
export type GuestApiErrorCode =
  /** The API was called outside a guest started by `tsvirtio run` (no runtime installed). */
  | 'ERR_TSVIRTIO_NOT_IN_GUEST'
  /** No shared folder, or none with that tag (`--share DIR[:TAG]`). */
  | 'ERR_TSVIRTIO_NO_SHARE'
  /** A bad argument (a port, a CID, an exit status). */
  | 'ERR_TSVIRTIO_ARGUMENT';

export class GuestApiError extends Error {
  constructor(
    readonly code: GuestApiErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'GuestApiError';
  }
}
