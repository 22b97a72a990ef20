// A vsock stream connection without node:stream, for servers whose cost per connection
// and per chunk matters (the webserver under TCG): handlers are called directly, writes
// go straight to the VsockConnection. No Duplex, no EventEmitter, no nextTick per chunk.
//
// The contract (the webserver's ByteConnection has the same shape):
//   onData(chunk)   received bytes, in a Buffer of their own: the handler may keep it.
//   onEnd()         the peer sends no more. Our side stays open (half-open) until end().
//   onDrain()       write() returned false, and everything written has now completed.
//   onClose(err)    gone: after end() once the peer has ended too, after destroy(), or
//                   on an error (err: reset, write failure, broken device). The last call.
//
// Writes: one at a time is with the connection, which does the real work (tx path by
// txMode, credit, tx slots, shutdown, RST); writes made meanwhile queue here and go out
// together as one gathered write. A callback runs when the connection completes its
// write (bytes queued on the ring, or for zero copy returned by the device): in copy
// modes often before write() returns. end() sends SHUTDOWN SEND after the writes.
// Input backpressure: while paused, received bytes are held here and count as
// unconsumed, so the peer's credit shrinks and it stops at our buf_alloc.
import { getDefaultHighWaterMark } from 'node:stream';
import { type ConnectionEvents, type TxMode, type VsockConnection, copyPayload } from './connection.js';
import { VsockError } from './errors.js';

export type RawWriteCallback = (err?: Error | null) => void;

export interface RawConnectionHandlers {
  onData(chunk: Buffer): void;
  onEnd(): void;
  onDrain(): void;
  onClose(err: Error | null): void;
}

export interface RawConnectionOptions {
  /** This connection's transmit path (default: the driver's txMode). */
  txMode?: TxMode;
  /** write() returns false from this many bytes not yet completed on (default: node:stream's). */
  writableHighWaterMark?: number;
}

const DEFAULT_HIGH_WATER_MARK = getDefaultHighWaterMark(false);
const EMPTY = new Uint8Array(0);

export class RawVsockConnection implements ConnectionEvents {
  readonly localPort: number;
  readonly remoteCid: number;
  readonly remotePort: number;
  /** null once closed. */
  private conn: VsockConnection | null;
  private handlers: RawConnectionHandlers | null = null;
  private readonly highWaterMark: number;
  private closed = false;

  // ---- Input
  private paused = false;
  /** Received while paused or before setHandlers, in order. */
  private readonly held: Buffer[] = [];
  private heldBytes = 0;
  private flushScheduled = false;
  private peerEnded = false;
  private endDelivered = false;

  // ---- Output
  /** A write is with the connection; its callbacks are in inflightCbs. */
  private writing = false;
  private inflightCbs: Array<RawWriteCallback | undefined> = [];
  private inflightBytes = 0;
  /** The connection completed the write in flight; pumpWrites runs its callbacks. */
  private completed = false;
  private completedErr: Error | null = null;
  /** Writes waiting for the one in flight, sent next as one gathered write. */
  private readonly queued: Uint8Array[] = [];
  private queuedCbs: Array<RawWriteCallback | undefined> = [];
  private queuedBytes = 0;
  /** pumpWrites is on the stack: completions are recorded, new writes queued. */
  private pumping = false;
  private drainWanted = false;
  private endRequested = false;
  private shutdownStarted = false;
  private finished = false;

  /** @internal Made by a RawVsockListener for an accepted connection. */
  constructor(conn: VsockConnection, opts: RawConnectionOptions = {}) {
    this.conn = conn;
    this.localPort = conn.localPort;
    this.remoteCid = conn.remoteCid;
    this.remotePort = conn.remotePort;
    this.highWaterMark = opts.writableHighWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    conn.attach(this, opts.txMode);
  }

  /** Where events go. Bytes that arrived before are delivered right after (in a microtask). */
  setHandlers(handlers: RawConnectionHandlers): void {
    if (this.closed) {
      queueMicrotask(() => handlers.onClose(null));
      return;
    }
    this.handlers = handlers;
    if (this.held.length > 0 || this.peerEnded) this.scheduleFlush();
  }

  /** write() returned false and no drain has come yet. */
  get needDrain(): boolean {
    return this.drainWanted;
  }

  /** end() or destroy() was called, or the connection closed: writes fail. */
  get writeEnded(): boolean {
    return this.endRequested || this.closed;
  }

  /** The connection state ('ESTABLISHED', ...), for diagnostics. */
  get vsockState(): string {
    return this.conn !== null ? this.conn.stateName : 'CLOSED';
  }

  // ---- Writing

  /** Queues `chunk`; false when the bytes not yet completed reach the high-water mark (wait for onDrain). */
  write(chunk: Uint8Array, cb?: RawWriteCallback): boolean {
    if (this.endRequested || this.closed) return this.refuse(cb);
    const n = chunk.byteLength;
    if (this.writing || this.pumping || this.queued.length > 0) {
      this.queued.push(chunk);
      this.queuedCbs.push(cb);
      this.queuedBytes += n;
    } else {
      this.writing = true;
      this.inflightCbs.push(cb);
      this.inflightBytes = n;
      this.conn!.write(chunk, this.onWritten);
    }
    return this.hasRoom();
  }

  /** Writes `chunks` as one gathered write (one packet where they fit); the array is not kept; cb once for all. */
  writev(chunks: readonly Uint8Array[], cb?: RawWriteCallback): boolean {
    const count = chunks.length;
    if (count === 0) return this.write(EMPTY, cb);
    if (this.endRequested || this.closed) return this.refuse(cb);
    let n = 0;
    for (let i = 0; i < count; i++) n += chunks[i]!.byteLength;
    if (this.writing || this.pumping || this.queued.length > 0) {
      for (let i = 0; i < count; i++) {
        this.queued.push(chunks[i]!);
        this.queuedCbs.push(i === count - 1 ? cb : undefined);
      }
      this.queuedBytes += n;
    } else {
      this.writing = true;
      this.inflightCbs.push(cb);
      this.inflightBytes = n;
      this.conn!.write(chunks, this.onWritten);
    }
    return this.hasRoom();
  }

  /** Half-close: SHUTDOWN SEND once every write has completed. Reading goes on. */
  end(): void {
    if (this.endRequested || this.closed) return;
    this.endRequested = true;
    this.pumpWrites();
  }

  /**
   * Closes now: writes not yet handed to the connection fail; the one in flight
   * completes when the connection is done with it (zero-copy buffers stay the device's
   * until then). The peer sees SHUTDOWN(RCV|SEND). onClose(null) runs before this returns.
   */
  destroy(): void {
    if (this.closed) return;
    this.release();
    this.closeNow(null);
  }

  private hasRoom(): boolean {
    if (this.inflightBytes + this.queuedBytes < this.highWaterMark) return true;
    this.drainWanted = true;
    return false;
  }

  private refuse(cb: RawWriteCallback | undefined): boolean {
    if (cb !== undefined) {
      const err = new VsockError('EPIPE', `write to ${this.describe()} after end() or close`, 'write');
      queueMicrotask(() => cb(err));
    }
    return false;
  }

  private readonly onWritten = (err?: Error | null): void => {
    this.completed = true;
    this.completedErr = err ?? null;
    this.pumpWrites();
  };

  private readonly onShutdownSent = (): void => {
    this.finished = true;
    this.maybeCloseOrderly();
  };

  /**
   * The one place writes move: completion callbacks, the next gathered write, then the
   * SHUTDOWN. A loop rather than recursion, since the connection may complete a write
   * inside conn.write (copy modes).
   */
  private pumpWrites(): void {
    if (this.pumping) return;
    this.pumping = true;
    for (;;) {
      if (this.completed) {
        this.finishWrite();
        continue;
      }
      const conn = this.conn;
      if (conn === null) break;
      if (!this.writing && this.queued.length > 0) {
        this.startQueued(conn);
        continue;
      }
      // A zero-copy write that is all on the ring need not come back first: the
      // SHUTDOWN goes behind it (an HTTP/1.0 response ends one round trip sooner).
      if (this.endRequested && !this.shutdownStarted && this.queued.length === 0 && (!this.writing || conn.writeQueued)) {
        this.shutdownStarted = true;
        conn.shutdownSend(this.onShutdownSent);
        continue;
      }
      break;
    }
    this.pumping = false;
    this.maybeCloseOrderly();
    if (this.drainWanted && !this.closed && this.inflightBytes + this.queuedBytes === 0) {
      this.drainWanted = false;
      this.handlers?.onDrain();
    }
  }

  private finishWrite(): void {
    const err = this.completedErr;
    this.completed = false;
    this.completedErr = null;
    this.inflightBytes = 0;
    // `writing` stays true while the callbacks run, so writes they make queue up.
    const cbs = this.inflightCbs;
    for (let i = 0; i < cbs.length; i++) {
      const cb = cbs[i];
      if (cb !== undefined) cb(err);
    }
    cbs.length = 0;
    this.writing = false;
    if (err !== null && !this.closed) {
      // As a stream does on a failed write: the connection is done.
      this.release();
      this.closeNow(err);
    }
  }

  private startQueued(conn: VsockConnection): void {
    const cbs = this.queuedCbs;
    this.queuedCbs = this.inflightCbs; // empty: finishWrite cleared it
    this.inflightCbs = cbs;
    this.inflightBytes = this.queuedBytes;
    this.queuedBytes = 0;
    this.writing = true;
    const chunks = this.queued;
    if (chunks.length === 1) conn.write(chunks[0]!, this.onWritten);
    else conn.write(chunks, this.onWritten);
    // The connection copied the list; no user code ran meanwhile (pumping defers completions).
    chunks.length = 0;
  }

  // ---- Reading

  /** Holds received bytes (and the peer's end) until resume(); the peer runs out of credit. */
  pause(): void {
    this.paused = true;
  }

  /** Delivers what was held (in a microtask), then bytes as they arrive. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.held.length > 0 || (this.peerEnded && !this.endDelivered)) this.scheduleFlush();
  }

  isPaused(): boolean {
    return this.paused;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flushHeld);
  }

  private readonly flushHeld = (): void => {
    this.flushScheduled = false;
    const held = this.held;
    let i = 0;
    while (i < held.length && !this.paused && this.handlers !== null) {
      const chunk = held[i++]!;
      this.heldBytes -= chunk.byteLength;
      this.handlers.onData(chunk);
    }
    if (i > 0) held.splice(0, i);
    // Credit for what was just consumed (a CREDIT_UPDATE when the peer's window ran low).
    this.conn?.onConsumed();
    if (held.length === 0 && !this.paused && this.peerEnded && !this.endDelivered && this.handlers !== null) this.deliverEnd();
  };

  private deliverEnd(): void {
    this.endDelivered = true;
    this.handlers!.onEnd();
    this.maybeCloseOrderly();
  }

  // ---- Closing

  /** Both directions are finished: let the connection go (it answers or awaits the peer's RST). */
  private maybeCloseOrderly(): void {
    // Not while a write is in flight: its descriptors may still be with the device.
    if (!this.finished || !this.endDelivered || this.closed || this.writing) return;
    this.release();
    this.closeNow(null);
  }

  private release(): void {
    const conn = this.conn;
    this.conn = null;
    conn?.release(false);
  }

  private closeNow(err: Error | null): void {
    this.closed = true;
    this.conn = null;
    this.held.length = 0;
    this.heldBytes = 0;
    if (this.queued.length > 0) {
      const cbs = this.queuedCbs;
      this.queuedCbs = [];
      this.queued.length = 0;
      this.queuedBytes = 0;
      const qerr = err ?? new VsockError('EPIPE', `${this.describe()} closed before the write was sent`, 'write');
      for (const cb of cbs) cb?.(qerr);
    }
    const h = this.handlers;
    this.handlers = null;
    h?.onClose(err);
  }

  describe(): string {
    return `vsock local port ${this.localPort} <-> ${this.remoteCid}:${this.remotePort}`;
  }

  // ---- ConnectionEvents (called by the connection)

  /** @internal Accepted connections are established before we exist. */
  onEstablished(): void {}

  /** @internal */
  onData(bytes: Uint8Array, offset: number, length: number): void {
    const chunk = copyPayload(bytes, offset, length);
    const h = this.handlers;
    if (h === null || this.paused || this.held.length > 0) {
      this.held.push(chunk);
      this.heldBytes += length;
      return;
    }
    h.onData(chunk);
  }

  /** @internal */
  onPeerEnd(): void {
    this.peerEnded = true;
    if (this.handlers !== null && !this.paused && this.held.length === 0) this.deliverEnd();
  }

  /** @internal */
  onError(err: VsockError): void {
    if (this.closed) return;
    this.conn = null;
    this.closeNow(err);
  }

  /** @internal */
  onDriverClosed(): void {
    if (this.closed) return;
    this.conn = null;
    this.closeNow(null);
  }

  /** @internal */
  unconsumedBytes(): number {
    return this.heldBytes;
  }
}
