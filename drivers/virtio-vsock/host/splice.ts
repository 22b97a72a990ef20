// Joins two byte streams both ways (a vsock socket and a Unix or TCP socket): bytes
// flow with backpressure (pipe), an end on one side becomes an end on the other
// (half-close), and an error or abrupt close on one side destroys the other (a vsock
// RST becomes a socket reset and back).
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * Aborts `s`: a TCP socket is reset (RST, the peer reads ECONNRESET); a plain destroy()
 * would send FIN, and the peer could not tell an aborted stream from a complete one.
 * Unix sockets have no reset: destroy() (the peer reads end of stream).
 */
function abort(s: Duplex): void {
  if (s.destroyed) return;
  if (s instanceof Socket) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // not a TCP handle (ERR_INVALID_HANDLE_TYPE)
    }
  }
  s.destroy();
}

export function spliceStreams(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  const abortOther = (from: Duplex, to: Duplex): void => {
    from.on('error', () => abort(to));
    from.on('close', () => {
      // Closed before its readable side ended: an abort, pass it on.
      if (!from.readableEnded) abort(to);
    });
  };
  abortOther(a, b);
  abortOther(b, a);
}
