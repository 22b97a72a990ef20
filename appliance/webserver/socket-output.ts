// The sending side of one connection as the response code sees it: writes, and one
// promise at a time that settles on the next drain, chunk completion or close.
// Responses on a connection go out one after the other, so one waiter is enough.
import type { Duplex } from 'node:stream';

/** The peer went away while a response was being sent. Not an error worth a log line. */
export class ConnectionClosedError extends Error {
  constructor() {
    super('connection closed');
    this.name = 'ConnectionClosedError';
  }
}

export class SocketOutput {
  closed = false;
  /** Bytes of the current response have been handed to the socket. */
  responseStarted = false;
  /** Last time anything moved, for the idle sweep. */
  lastActivityMs = Date.now();
  private waiter: (() => void) | null = null;

  constructor(readonly socket: Duplex) {
    socket.on('drain', this.wake);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Settles the pending waitEvent, if any. */
  readonly wake = (): void => {
    this.lastActivityMs = Date.now();
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) w();
  };

  /** Resolves on the next drain, wake() or close. */
  waitEvent(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Throws ConnectionClosedError when the socket can no longer take writes. */
  check(): void {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) throw new ConnectionClosedError();
  }

  /** Waits while the socket's buffer is above its high-water mark. */
  async waitDrain(): Promise<void> {
    while (this.socket.writableNeedDrain) {
      this.check();
      await this.waitEvent();
    }
    this.check();
  }

  /** One write. */
  write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean {
    this.check();
    this.responseStarted = true;
    return this.socket.write(chunk, cb);
  }

  /** Head and body as one gathered write (writev where the socket has one): no copy of the body. */
  writeGathered(head: Uint8Array, body: Uint8Array): boolean {
    this.check();
    this.responseStarted = true;
    const s = this.socket;
    s.cork();
    s.write(head);
    const ok = s.write(body);
    s.uncork();
    return ok;
  }
}
