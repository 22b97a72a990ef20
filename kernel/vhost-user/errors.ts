// One error type for the vhost-user back-end, with a stable code per failure.
// Every protocol error names the request (when known) and what was wrong with it; the
// server logs it, drops that client and goes on serving.

export type VhostUserErrorCode =
  | 'ERR_VHOST_USER_TRUNCATED' // the stream ended inside a header or a payload
  | 'ERR_VHOST_USER_VERSION' // flags do not carry version 1
  | 'ERR_VHOST_USER_FLAGS' // unknown flag bits, or REPLY set on a request
  | 'ERR_VHOST_USER_UNKNOWN_REQUEST' // request id not in the protocol
  | 'ERR_VHOST_USER_UNSUPPORTED' // a known request this back-end does not implement or did not negotiate
  | 'ERR_VHOST_USER_SIZE' // payload size wrong for the request
  | 'ERR_VHOST_USER_FDS' // missing, extra or too many file descriptors
  | 'ERR_VHOST_USER_PAYLOAD' // a payload field is invalid (index, size, count, flags)
  | 'ERR_VHOST_USER_FEATURES' // features not offered were acked
  | 'ERR_VHOST_USER_MEMORY' // a memory region is invalid, does not fit its fd, or cannot be mapped
  | 'ERR_VHOST_USER_MEMORY_NOT_SHARED' // guest RAM is not shared with the back-end
  | 'ERR_VHOST_USER_RING' // a ring cannot be started (addresses, size, alignment)
  | 'ERR_VHOST_USER_SOCKET' // the socket failed (ECONNRESET, ...)
  | 'ERR_VHOST_USER_NOT_READING' // the front-end sends requests but does not read the replies (the reply queue is bounded)
  | 'ERR_VHOST_USER_DEVICE' // the device model threw
  | 'ERR_VHOST_USER_INTERNAL'; // a bug in the back-end itself (the client is dropped, the server goes on)

export class VhostUserError extends Error {
  constructor(
    readonly code: VhostUserErrorCode,
    message: string,
    /** The request at fault (its number), or -1. */
    readonly request = -1,
  ) {
    super(message);
    this.name = 'VhostUserError';
  }
}
