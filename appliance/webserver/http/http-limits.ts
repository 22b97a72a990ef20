// Limits on what a client may send, and their defaults.

export interface HttpLimits {
  /** Longest request target (URI) in bytes; longer gets 414. */
  maxUriBytes: number;
  /** Most bytes of header lines (after the request line); more gets 431. */
  maxHeaderBytes: number;
  /** Most header lines; more gets 431. */
  maxHeaderCount: number;
  /** Largest request body in bytes (read and discarded); larger gets 413. */
  maxBodyBytes: number;
}

export const DEFAULT_HTTP_LIMITS: Readonly<HttpLimits> = Object.freeze({
  maxUriBytes: 4096,
  maxHeaderBytes: 16 * 1024,
  maxHeaderCount: 100,
  maxBodyBytes: 64 * 1024,
});
