// The host-side API of the vsock device (device.host): host programs in the device's
// thread open and accept guest connections as node:stream Duplex sockets.
import type { VsockHostSocket } from './host-socket.js';

export interface VsockListenHandle {
  close(): void;
}

/**
 * A guest REQUEST to a host port that has no listen() listener, offered to the
 * listenAny() handler, which decides (possibly later, asynchronously): accept() sends
 * RESPONSE and returns the socket, or null when the guest gave up meanwhile (RST, or
 * a transport reset); refuse() sends RST.
 */
export interface VsockIncomingRequest {
  /** The host port the guest connects to. */
  readonly port: number;
  readonly peerCid: number;
  readonly peerPort: number;
  accept(): VsockHostSocket | null;
  refuse(): void;
}

export interface VsockHost {
  /** Accepts guest connections to (CID 2, port). Throws EADDRINUSE when taken. */
  listen(port: number, onConnection: (s: VsockHostSocket) => void): VsockListenHandle;
  /**
   * Opens a connection to the guest's port. Resolves on RESPONSE; rejects with code
   * 'ECONNREFUSED' on RST, 'ETIMEDOUT' after timeoutMs (default 10000).
   */
  connect(port: number, opts?: { timeoutMs?: number }): Promise<VsockHostSocket>;
  /**
   * Receives guest REQUESTs to ports without a listen() listener (the hybrid Unix back
   * end's "<uds-path>_<port>"). One handler; a later call replaces it.
   */
  listenAny(onRequest: (req: VsockIncomingRequest) => void): VsockListenHandle;
}
