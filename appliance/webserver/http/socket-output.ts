// The sending side of one connection as the response code sees it: writes, and one
// promise at a time that settles on the next drain, chunk completion or close.
// Responses on a connection go out one after the other, so one waiter is enough.
import type { ByteConnection, WriteCallback } from './byte-connection.js';

/** The peer went away while a response was being sent. Not an error worth a log line. */
export class ConnectionClosedError extends Error {
  constructor() {
    super('connection closed');
    this.name = 'ConnectionClosedError';
  }
}

export class SocketOutput {
  closed = false;
  /** Bytes of the current response have been handed to the connection. */
  responseStarted = false;
  /** Last time anything moved, for the idle sweep. */
  lastActivityMs = Date.now();
  private waiter: (() => void) | null = null;
  /** writeGathered's list, reused: writev does not keep the array. */
  private readonly pair: Uint8Array[] = [EMPTY, EMPTY];

  constructor(readonly conn: ByteConnection) {}

  /** Settles the pending waitEvent, if any (also the connection's drain). */
  readonly wake = (): void => {
    this.lastActivityMs = Date.now();
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) w();
  };

  /** The connection closed. */
  onClose(): void {
    this.closed = true;
    this.wake();
  }

  /** Resolves on the next drain, wake() or close. */
  waitEvent(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Throws ConnectionClosedError when the connection can no longer take writes. */
  check(): void {
    if (this.closed || this.conn.writeEnded) throw new ConnectionClosedError();
  }

  /** Waits while the connection's output is above its high-water mark. */
  async waitDrain(): Promise<void> {
    while (this.conn.needDrain) {
      this.check();
      await this.waitEvent();
    }
    this.check();
  }

  /** One write. */
  write(chunk: Uint8Array, cb?: WriteCallback): boolean {
    this.check();
    this.responseStarted = true;
    return this.conn.write(chunk, cb);
  }

  /** Head and body as one gathered write (one packet where they fit): no copy of the body. cb once both are done. */
  writeGathered(head: Uint8Array, body: Uint8Array, cb?: WriteCallback): boolean {
    this.check();
    this.responseStarted = true;
    const pair = this.pair;
    pair[0] = head;
    pair[1] = body;
    const ok = this.conn.writev(pair, cb);
    pair[0] = pair[1] = EMPTY;
    return ok;
  }
}

const EMPTY = new Uint8Array(0);
