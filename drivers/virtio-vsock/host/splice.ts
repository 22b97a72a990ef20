// Joins two byte streams both ways (a vsock socket and a Unix or TCP socket): bytes
// flow with backpressure (pipe), an end on one side becomes an end on the other
// (half-close), and an error or abrupt close on one side destroys the other (a vsock
// RST becomes a socket reset and back).
//
// Guest to host goes without a copy: the host socket is written from views of the
// guest's memory (VsockHostSocket.readViews), and the guest gets its buffer back once the
// bytes are in the kernel (forward, below). Writes queued behind a full socket go out
// together (writev). Credit bounds what is in flight: the guest stops when the host
// socket does not drain.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { VsockHostSocket } from '../device/host-socket.js';
import { adoptUserBuffer } from './user-buffer-read.js';

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

/**
 * Host to guest: the host socket reads into one buffer shared by every socket of this
 * thread (reads are synchronous callbacks, and each is copied out before the next), and
 * the connection copies the bytes into recycled blocks until the guest takes them. A
 * Buffer per read made V8 run a full collection every few dozen ms under a flood
 * (host-block-pool.ts). Pauses while the guest's queues are full, like pipe().
 */
function forwardToGuest(from: Socket, to: VsockHostSocket): boolean {
  const resume = (): void => {
    from.resume();
  };
  const onBytes = (bytes: Buffer, n: number): boolean => to.writeCopied(bytes, n, resume);
  if (!adoptUserBuffer(from, hostReadBuffer(), onBytes)) return false;
  // What the socket read in before (e.g. after a CONNECT line) goes first.
  let c: Buffer | null;
  let more = true;
  while ((c = from.read() as Buffer | null) !== null) more = to.writeCopied(c, c.length, resume) && more;
  // The client may have ended already (its EOF came with the CONNECT line): pipe() passes
  // that on too.
  if (from.readableEnded) to.end();
  else from.once('end', () => to.end());
  if (more) from.resume();
  return true;
}

let readBuffer: Buffer | null = null;
const hostReadBuffer = (): Buffer => (readBuffer ??= Buffer.allocUnsafeSlow(HOST_READ_BUFFER_BYTES));
/** As large as Node's own read size: a read takes what one takes today. */
const HOST_READ_BUFFER_BYTES = 64 * 1024;

/** Bytes from `from` to `to`, with backpressure and half-close. */
function forward(from: Duplex, to: Duplex): void {
  if (to instanceof VsockHostSocket && from instanceof Socket && forwardToGuest(from, to)) return;
  if (!(from instanceof VsockHostSocket)) {
    from.pipe(to);
    return;
  }
  // A view must stay valid until its bytes are in the kernel. A write that went straight
  // through (nothing left buffered: the socket took it, and every write before it) frees
  // the view at once, and its callback, which Node runs a tick later, is then skipped;
  // otherwise the callback frees it. Callbacks run in write order, and done() finishes
  // the oldest piece, so a view is never freed before its bytes are written. Freeing at
  // once keeps guest buffers held only while a host socket is backed up.
  let finish: () => void = noop;
  let finishedAhead = 0;
  const written = (): void => {
    if (finishedAhead > 0) finishedAhead--;
    else finish();
  };
  from.readViews((view, done) => {
    finish = done;
    to.write(view, written);
    if (to.writableLength === 0) {
      finishedAhead++;
      done();
    }
  });
  from.once('end', () => to.end());
}

const noop = (): void => {};

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
