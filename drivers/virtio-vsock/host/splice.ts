// Joins two byte streams both ways (a vsock socket and a Unix or TCP socket): bytes
// flow with backpressure (pipe), an end on one side becomes an end on the other
// (half-close), and an error or abrupt close on one side destroys the other (a vsock
// RST becomes a socket reset and back).
//
// Guest to host goes without a copy: the host socket is written from views of the
// guest's memory (VsockHostSocket.readViews), and each write's callback gives the guest
// its buffer back. Writes queued behind a full socket go out together (writev). Credit
// bounds what is in flight: the guest stops when the host socket does not drain.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { VsockHostSocket } from '../device/host-socket.js';

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

/** Bytes from `from` to `to`, with backpressure and half-close. */
function forward(from: Duplex, to: Duplex): void {
  if (!(from instanceof VsockHostSocket)) {
    from.pipe(to);
    return;
  }
  // The view stays valid until done, which the write calls once its bytes are in the
  // kernel (or the write failed: the socket is gone, and so is the need).
  from.readViews((view, done) => {
    to.write(view, done);
  });
  from.once('end', () => to.end());
}

export function spliceStreams(a: Duplex, b: Duplex): void {
  forward(a, b);
  forward(b, a);
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
