// The host end of a vsock connection, as a node:stream Duplex (net.Socket-like):
//  - readable side: the guest's bytes, 'end' when the guest sends SHUTDOWN(SEND);
//  - writable side: bytes to the guest; end() sends SHUTDOWN(SEND) after them;
//  - destroy() before both sides ended sends RST; an RST from the guest destroys the
//    socket with an error whose code is 'ECONNRESET'.
// Backpressure: the readable side asks the connection for bytes only while below its
// highWaterMark (the guest's credit follows); the writable side holds its callback
// while the guest grants no credit and the connection's queue is full.
//
// Zero copy: readViews(reader) replaces 'data' with views of the guest's memory, each
// valid until the reader calls done() (e.g. as a net.Socket write callback); the guest's
// buffer and its credit come back then, so a reader that holds views stalls its guest
// by credit. 'end' still comes once the guest ends and every piece was handed.
import { Duplex } from 'node:stream';
import type { VsockConnection, ViewReader } from './connection.js';
import { HOST_SOCKET_HIGH_WATER_MARK_BYTES } from './constants.js';

const finishedAlready = (): void => {};

export class VsockHostSocket extends Duplex {
  /** The host-side port of the connection (CID 2). */
  readonly localPort: number;
  /** The guest-side port. */
  readonly remotePort: number;
  /** The guest's CID. */
  readonly remoteCid: number;
  private conn: VsockConnection | null;

  constructor(conn: VsockConnection) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: HOST_SOCKET_HIGH_WATER_MARK_BYTES,
      writableHighWaterMark: HOST_SOCKET_HIGH_WATER_MARK_BYTES,
    });
    this.conn = conn;
    this.localPort = conn.localPort;
    this.remotePort = conn.peerPort;
    this.remoteCid = conn.peerCid;
  }

  /**
   * Reads the guest's bytes as views instead of 'data' events: `reader(view, done)` gets
   * each payload in order; the view stays valid until `done()` is called for it, in the
   * order given (net.Socket write callbacks run in that order). Call once, before or
   * soon after the first bytes; bytes already read in come first, as copies.
   */
  readViews(reader: ViewReader): void {
    const conn = this.conn;
    if (conn === null) return;
    // Bytes the stream side took in already (copies, credited then) go first.
    let c: Buffer | null;
    while ((c = this.read() as Buffer | null) !== null) reader(c, finishedAlready);
    conn.setViewReader(reader);
    // Flowing, so that 'end' is emitted: no 'data' comes any more.
    this.resume();
  }

  /**
   * Writes bytes[0, length) for the guest, copied before this returns, so the caller may reuse its
   * buffer (a host socket's read buffer: host/user-buffer-read.ts). Bypasses the writable
   * stream: do not mix with write() on one socket, end() still ends after these bytes.
   * Returns false when the writer should stop; `resume` is called when it may go on.
   */
  writeCopied(bytes: Buffer, length: number, resume: () => void): boolean {
    const c = this.conn;
    return c === null ? true : c.hostWriteCopy(bytes, length, resume);
  }

  /** Called by the connection when it is gone: further writes are discarded. */
  detach(): void {
    this.conn = null;
  }

  override _read(): void {
    this.conn?.hostRead();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    const c = this.conn;
    if (c === null) cb();
    else c.hostWrite(chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.conn?.hostEnd();
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    const c = this.conn;
    this.conn = null;
    if (c !== null) c.hostClosed(err === null && this.readableEnded && this.writableFinished);
    cb(err);
  }
}
