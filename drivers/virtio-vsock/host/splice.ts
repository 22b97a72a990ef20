// Joins two byte streams both ways (a vsock socket and a Unix or TCP socket): bytes
// flow with backpressure (pipe), an end on one side becomes an end on the other
// (half-close), and an error or abrupt close on one side destroys the other (a vsock
// RST becomes a socket reset and back).
import type { Duplex } from 'node:stream';

export function spliceStreams(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  const abortOther = (from: Duplex, to: Duplex): void => {
    from.on('error', () => {
      if (!to.destroyed) to.destroy();
    });
    from.on('close', () => {
      // Closed before its readable side ended: an abort, pass it on.
      if (!from.readableEnded && !to.destroyed) to.destroy();
    });
  };
  abortOther(a, b);
  abortOther(b, a);
}
