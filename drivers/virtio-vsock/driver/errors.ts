// Errors raised by the vsock driver: one class, stable codes. Socket-level codes use
// the errno names Node's net module uses (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE,
// EADDRINUSE) so code written for net.Socket handles them unchanged.

export type VsockErrorCode =
  | 'ECONNREFUSED' // the peer answered our REQUEST with RST (nobody listens)
  | 'ECONNRESET' // the peer reset an established connection, or TRANSPORT_RESET
  | 'ETIMEDOUT' // no RESPONSE within the connect timeout
  | 'EPIPE' // write after the peer said it receives no more (SHUTDOWN RCV) or the connection closed
  | 'EADDRINUSE' // listen() on a port already bound
  | 'EADDRNOTAVAIL' // no free ephemeral port
  | 'EMSGSIZE' // a SEQPACKET message larger than the peer's receive buffer (buf_alloc)
  | 'ESOCKTNOSUPPORT' // a SEQPACKET socket on a device without VIRTIO_VSOCK_F_SEQPACKET
  | 'ERR_VSOCK_NO_DEVICE' // the device lacks something the driver needs (VERSION_1, queues)
  | 'ERR_VSOCK_PROTOCOL' // the peer broke the protocol (credit overrun, bad header)
  | 'ERR_VSOCK_DRIVER_CLOSED' // the driver was closed under the socket
  | 'ERR_VSOCK_DEVICE_BROKEN' // the device broke a virtqueue (bad used id/len/index): every connection fails
  | 'ERR_VSOCK_NOT_LISTENING'; // server.close() on a server that is not listening

export class VsockError extends Error {
  readonly code: VsockErrorCode;
  /** The operation, as Node's errors carry it ('connect', 'write', 'listen'). */
  readonly syscall: string | undefined;

  constructor(code: VsockErrorCode, message: string, syscall?: string) {
    super(message);
    this.name = 'VsockError';
    this.code = code;
    this.syscall = syscall;
  }
}
