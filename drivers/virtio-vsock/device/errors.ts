// Errors of the vsock device emulator and its host API, with stable codes. The
// socket-level codes are Node's own (ECONNREFUSED, ECONNRESET...) so host programs
// can treat a VsockHostSocket like a net.Socket.

export type VsockErrorCode =
  | 'ECONNREFUSED' // the guest answered our REQUEST with RST
  | 'ECONNRESET' // the guest reset the connection, or the transport was reset
  | 'ETIMEDOUT' // no RESPONSE within the connect timeout
  | 'EADDRINUSE' // listen() on a port that already has a listener
  | 'EADDRNOTAVAIL' // no free local port for a host-initiated connection
  | 'ERR_VSOCK_BAD_PORT' // a port outside 0..2^32-1
  | 'ERR_VSOCK_DUPLICATE_CID' // two devices joined one sibling router with the same CID
  | 'ERR_VSOCK_BAD_GROUP' // a sibling group name outside [A-Za-z0-9_.-]{1,64}
  | 'ERR_VSOCK_VIEW_READER'; // readViews() called a second time on one socket

export class VsockError extends Error {
  constructor(
    readonly code: VsockErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'VsockError';
  }
}
