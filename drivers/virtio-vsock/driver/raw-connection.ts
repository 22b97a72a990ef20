// The one front end of a vsock connection (a VsockConnection, the protocol core): every
// connection has exactly one RawVsockConnection, which owns writes, half-close, input
// backpressure and release. Servers whose cost per connection and per chunk matters
// (the webserver under TCG) use it directly (driver.listenRaw); VsockSocket is a
// node:stream Duplex adapter over it (createServer, connect, http.Server). Handlers are
// called directly: no Duplex, no EventEmitter, no nextTick per chunk.
//
// The contract (the webserver's ByteConnection has the same shape):
//   onConnect()     outgoing only: the peer accepted (RESPONSE, virtio 1.2 5.10.6.3).
//   onData(chunk)   received bytes, in a Buffer of their own: the handler may keep it.
//                   SEQPACKET: one call per message, gathered up to the packet with EOM.
//   onEnd()         the peer sends no more. Our side stays open (half-open) until end().
//   onDrain()       write() returned false, and everything written has now completed.
//   onClose(err)    gone: after end() once the peer has ended too, after destroy(), or
//                   on an error (err: reset, write failure, broken device). The last call.
//
// Writes: one at a time is with the connection, which does the real work (tx path by
// txMode, credit, tx slots, shutdown, RST); writes made meanwhile queue here and go out
// together as one gathered write (SEQPACKET: one message at a time, never merged). A
// callback runs when the connection completes its write (bytes queued on the ring, or
// for zero copy returned by the device): in copy modes often before write() returns.
// end() sends SHUTDOWN SEND after the writes.
// Input backpressure: while paused, received bytes are held here and count as
// unconsumed, so the peer's credit shrinks and it stops at our buf_alloc (5.10.6.3).
import { getDefaultHighWaterMark } from 'node:stream';
import { VSOCK_TYPE_SEQPACKET } from '../header.js';
import { CONN_CONNECTING, type ConnectionEvents, type TxMode, type VsockConnection, copyPayload } from './connection.js';
import { VsockError } from './errors.js';

export type RawWriteCallback = (err?: Error | null) => void;

export interface RawConnectionHandlers {
  onData(chunk: Buffer): void;
  onEnd(): void;
  onDrain(): void;
  onClose(err: Error | null): void;
  /** Outgoing connections: the peer accepted. */
  onConnect?(): void;
  /**
   * Bytes given to onData that the application has not read yet (a stream's readable
   * buffer): they count against the peer's credit as held bytes do. Call consumed()
   * when this shrinks.
   */
  unreadBytes?(): number;
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
  /** SEQPACKET: a write is a message, onData gets whole messages. */
  readonly messages: boolean;
  /** null once closed. */
  private conn: VsockConnection | null;
  private handlers: RawConnectionHandlers | null = null;
  private readonly highWaterMark: number;
  private closed = false;
  /** Payload bytes received. */
  private receivedBytes = 0;
  /** bytesWritten when the connection was let go. */
  private sentAtRelease = 0;

  // ---- Input
  private paused = false;
  /** Received while paused or before setHandlers, in order. */
  private readonly held: Buffer[] = [];
  private heldBytes = 0;
  private flushScheduled = false;
  private peerEnded = false;
  private endDelivered = false;
  /** SEQPACKET: pieces of the message being received (until EOM). */
  private readonly parts: Buffer[] = [];
  private partBytes = 0;

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
  /** SEQPACKET: chunks per queued message, in order. */
  private readonly queuedMessageChunks: number[] = [];
  /** pumpWrites is on the stack: completions are recorded, new writes queued. */
  private pumping = false;
  private drainWanted = false;
  private endRequested = false;
  private endCb: RawWriteCallback | null = null;
  private shutdownStarted = false;
  private finished = false;

  /** @internal Made by a RawVsockListener (accepted), or for a VsockSocket by the driver or a VsockServer. */
  constructor(conn: VsockConnection, opts: RawConnectionOptions = {}) {
    this.conn = conn;
    this.localPort = conn.localPort;
    this.remoteCid = conn.remoteCid;
    this.remotePort = conn.remotePort;
    this.messages = conn.type === VSOCK_TYPE_SEQPACKET;
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

  /** Outgoing: the REQUEST is not answered yet. */
  get connecting(): boolean {
    return this.conn !== null && this.conn.state === CONN_CONNECTING;
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

  /** Payload bytes received (as net.Socket's bytesRead). */
  get bytesRead(): number {
    return this.receivedBytes;
  }

  /** Payload bytes sent (our tx_cnt, 5.10.6.3: a u32 that wraps at 4 GiB). */
  get bytesWritten(): number {
    return this.conn !== null ? this.conn.credit.txCnt : this.sentAtRelease;
  }

  // ---- Writing

  /** Queues `chunk` (SEQPACKET: one message); false when the bytes not yet completed reach the high-water mark (wait for onDrain). */
  write(chunk: Uint8Array, cb?: RawWriteCallback): boolean {
    if (this.endRequested || this.closed) return this.refuse(cb);
    const n = chunk.byteLength;
    if (this.writing || this.pumping || this.queued.length > 0) {
      this.queued.push(chunk);
      this.queuedCbs.push(cb);
      this.queuedBytes += n;
      if (this.messages) this.queuedMessageChunks.push(1);
    } else {
      this.writing = true;
      this.inflightCbs.push(cb);
      this.inflightBytes = n;
      this.conn!.write(chunk, this.onWritten);
    }
    return this.hasRoom();
  }

  /** Writes `chunks` as one gathered write (one packet where they fit; SEQPACKET: one message); the array is not kept; cb once for all. */
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
      if (this.messages) this.queuedMessageChunks.push(count);
    } else {
      this.writing = true;
      this.inflightCbs.push(cb);
      this.inflightBytes = n;
      this.conn!.write(chunks, this.onWritten);
    }
    return this.hasRoom();
  }

  /**
   * Half-close: SHUTDOWN SEND once every write has completed (a connect still under way
   * finishes first). Reading goes on. cb runs when the SHUTDOWN is queued, or with the
   * error that closed the connection first.
   */
  end(cb?: RawWriteCallback): void {
    if (this.endRequested || this.closed) {
      cb?.();
      return;
    }
    this.endRequested = true;
    this.endCb = cb ?? null;
    this.pumpWrites();
  }

  /**
   * Closes now: writes not yet handed to the connection fail; the one in flight
   * completes when the connection is done with it (zero-copy buffers stay the device's
   * until then). The peer sees SHUTDOWN(RCV|SEND). onClose(null) runs before this returns.
   */
  destroy(): void {
    if (this.closed) return;
    this.release(false);
    this.closeNow(null);
  }

  /** As destroy(), but the peer sees RST instead of the orderly SHUTDOWN (net.Socket.resetAndDestroy). */
  reset(): void {
    if (this.closed) return;
    this.release(true);
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

  private readonly onShutdownSent = (err?: Error | null): void => {
    this.finished = true;
    const cb = this.endCb;
    this.endCb = null;
    cb?.(err);
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
      // SHUTDOWN goes behind it, as the device takes the ring in order (5.10.6.2).
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
      this.release(false);
      this.closeNow(err);
    }
  }

  private startQueued(conn: VsockConnection): void {
    if (this.messages && this.queuedMessageChunks[0]! < this.queued.length) {
      this.startQueuedMessage(conn);
      return;
    }
    this.queuedMessageChunks.length = 0;
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

  /** SEQPACKET with several messages queued: the first goes alone (a write is one message). */
  private startQueuedMessage(conn: VsockConnection): void {
    const count = this.queuedMessageChunks.shift()!;
    const chunks = this.queued.splice(0, count);
    const cbs = this.queuedCbs.splice(0, count);
    let n = 0;
    for (let i = 0; i < count; i++) {
      n += chunks[i]!.byteLength;
      this.inflightCbs.push(cbs[i]);
    }
    this.queuedBytes -= n;
    this.inflightBytes = n;
    this.writing = true;
    if (count === 1) conn.write(chunks[0]!, this.onWritten);
    else conn.write(chunks, this.onWritten);
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

  /** The application read bytes it had been handed (handlers.unreadBytes shrank): the peer may get credit back. */
  consumed(): void {
    this.conn?.onConsumed();
  }

  /** Bytes received and not yet read: held here, part of a message, or unread by the handler. */
  unconsumedBytes(): number {
    const h = this.handlers;
    return this.heldBytes + this.partBytes + (h !== null && h.unreadBytes !== undefined ? h.unreadBytes() : 0);
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
      // Credit for each chunk consumed: a CREDIT_UPDATE as soon as the peer's window
      // allows one, not only after the last held chunk.
      this.conn?.onConsumed();
    }
    if (i > 0) held.splice(0, i);
    else this.conn?.onConsumed();
    if (held.length === 0 && !this.paused && this.peerEnded && !this.endDelivered && this.handlers !== null) this.deliverEnd();
  };

  /** To the handler, or held while paused (in order behind what is held already). */
  private deliver(chunk: Buffer): void {
    const h = this.handlers;
    if (h === null || this.paused || this.held.length > 0) {
      this.held.push(chunk);
      this.heldBytes += chunk.byteLength;
      return;
    }
    h.onData(chunk);
  }

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
    this.release(false);
    this.closeNow(null);
  }

  /** Lets the connection go: SHUTDOWN(RCV|SEND) and wait for the RST, or (abort) RST now (5.10.6.5). */
  private release(abort: boolean): void {
    const conn = this.detach();
    conn?.release(abort);
  }

  private detach(): VsockConnection | null {
    const conn = this.conn;
    if (conn !== null) {
      this.sentAtRelease = conn.credit.txCnt;
      this.conn = null;
    }
    return conn;
  }

  private closeNow(err: Error | null): void {
    this.closed = true;
    this.detach();
    this.held.length = 0;
    this.heldBytes = 0;
    this.parts.length = 0;
    this.partBytes = 0;
    if (this.queued.length > 0) {
      const cbs = this.queuedCbs;
      this.queuedCbs = [];
      this.queued.length = 0;
      this.queuedBytes = 0;
      this.queuedMessageChunks.length = 0;
      const qerr = err ?? new VsockError('EPIPE', `${this.describe()} closed before the write was sent`, 'write');
      for (const cb of cbs) cb?.(qerr);
    }
    const endCb = this.endCb;
    this.endCb = null;
    endCb?.(err);
    const h = this.handlers;
    this.handlers = null;
    h?.onClose(err);
  }

  describe(): string {
    return `vsock local port ${this.localPort} <-> ${this.remoteCid}:${this.remotePort}`;
  }

  // ---- ConnectionEvents (called by the connection)

  /** @internal Outgoing: RESPONSE arrived. */
  onEstablished(): void {
    this.handlers?.onConnect?.();
  }

  /** @internal Copies the payload out of the rx buffer (which is reposted right after). */
  onData(bytes: Uint8Array, offset: number, length: number): void {
    this.receivedBytes += length;
    const chunk = copyPayload(bytes, offset, length);
    if (!this.messages) {
      this.deliver(chunk);
      return;
    }
    this.parts.push(chunk);
    this.partBytes += length;
  }

  /** @internal SEQPACKET EOM (5.10.6.4): the pieces since the last one are one message. */
  onMessageEnd(): void {
    const parts = this.parts;
    const msg = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.partBytes);
    parts.length = 0;
    this.partBytes = 0;
    this.deliver(msg);
  }

  /** @internal */
  onPeerEnd(): void {
    this.peerEnded = true;
    if (this.handlers !== null && !this.paused && this.held.length === 0) this.deliverEnd();
  }

  /** @internal */
  onError(err: VsockError): void {
    if (this.closed) return;
    this.detach();
    this.closeNow(err);
  }

  /** @internal */
  onDriverClosed(): void {
    if (this.closed) return;
    this.detach();
    this.closeNow(null);
  }
}
