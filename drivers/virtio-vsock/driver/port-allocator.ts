// Local port allocation for outgoing connections and listen(0): ports are picked
// round-robin from an ephemeral range, skipping those in use (by a listener or by any
// connection's local end). Linux's vsock_auto_bind does the same over its own range.
import { VsockError } from './errors.js';

/** The IANA dynamic range, as default (RFC 6335). */
export const EPHEMERAL_PORT_MIN = 49152;
export const EPHEMERAL_PORT_MAX = 65535;

export class PortAllocator {
  private next: number;

  constructor(
    readonly min = EPHEMERAL_PORT_MIN,
    readonly max = EPHEMERAL_PORT_MAX,
  ) {
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max > 0xfffffffe || min > max) {
      throw new RangeError(`ephemeral port range [${min}, ${max}] is invalid`);
    }
    this.next = min;
  }

  /** A free port in the range, or throws EADDRNOTAVAIL when every one is in use. */
  allocate(inUse: (port: number) => boolean): number {
    const span = this.max - this.min + 1;
    for (let i = 0; i < span; i++) {
      const port = this.next;
      this.next = port === this.max ? this.min : port + 1;
      if (!inUse(port)) return port;
    }
    throw new VsockError('EADDRNOTAVAIL', `no free local port in [${this.min}, ${this.max}]`, 'connect');
  }
}
