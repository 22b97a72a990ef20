// One vsock stream connection: its state machine and flow control (virtio 1.2, 5.10.6).
//
// Protocol primer (5.10.6.3 - 5.10.6.6):
//   connect      REQUEST ->, <- RESPONSE (or <- RST: refused)
//   data         RW packets; each header carries buf_alloc and fwd_cnt (credit)
//   credit       CREDIT_UPDATE tells the peer our fwd_cnt grew; CREDIT_REQUEST asks for one
//   half-close   SHUTDOWN with SEND (no more data from us) and/or RCV (we read no more)
//   close        SHUTDOWN(RCV|SEND) ->, <- RST. The side that receives a SHUTDOWN making
//                the peer's shutdown complete answers with RST (Linux
//                virtio_transport_recv_connected); without an answer the closing side
//                sends RST itself after a timeout (Linux VSOCK_CLOSE_TIMEOUT, 8 s).
//   abort        RST at any time; an RST is never answered.
//
// States: CONNECTING -> ESTABLISHED -> CLOSING (we sent SHUTDOWN(RCV|SEND), waiting for
// the RST) -> CLOSED. Control packets that find no tx slot are remembered as bits of
// `pendingControl` and sent, in a fixed order, when slots come back.
import { copyBytes } from '../../../kernel/memory/copy.js';
import type { DmaArena } from '../../../kernel/memory/dma.js';
import {
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SEQ_EOM,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_SEQPACKET,
  VSOCK_TYPE_STREAM,
} from '../header.js';
import { CreditState } from './credit.js';
import { VsockError } from './errors.js';
import type { VsockDriverStats } from './stats.js';
import type { PacketEnds, TxPath, ZeroCopyOwner } from './tx-path.js';
import { WriteCursor } from './write-cursor.js';

export type TxMode = 'auto' | 'two-copy' | 'single-copy' | 'zero-copy';


export const CONN_CONNECTING = 0;
export const CONN_ESTABLISHED = 1;
export const CONN_CLOSING = 2;
export const CONN_CLOSED = 3;
export type ConnState = typeof CONN_CONNECTING | typeof CONN_ESTABLISHED | typeof CONN_CLOSING | typeof CONN_CLOSED;
const STATE_NAMES = ['CONNECTING', 'ESTABLISHED', 'CLOSING', 'CLOSED'];

// Control packets waiting for a tx slot, sent in this order.
const PENDING_REQUEST = 1;
const PENDING_RESPONSE = 2;
const PENDING_CREDIT_UPDATE = 4;
const PENDING_SHUTDOWN = 8;
const PENDING_RST = 16;

const SHUTDOWN_BOTH = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;

/** What a connection needs from its driver. */
export interface ConnectionHost {
  readonly tx: TxPath;
  readonly stats: VsockDriverStats;
  readonly txMode: TxMode;
  /** 'auto' copies DMA chunks smaller than this (0: every DMA chunk by descriptor). */
  readonly autoZeroCopyMinBytes: number;
  readonly dma: DmaArena;
  readonly closeTimeoutMs: number;
  /**
   * Connections whose write is all on the ring and waits only for zero-copy chains to
   * come back: only these need tx interrupts (a write still waiting for credit cannot
   * complete before the peer's CREDIT_UPDATE, whose rx interrupt reaps tx too).
   */
  zeroCopyAwaiting: number;
  /** Publish and notify the tx queue soon (once per batch). */
  scheduleFlush(): void;
  /** Call conn.onTxSpace() when tx slots or descriptors come back. */
  waitForTx(conn: VsockConnection): void;
  /** Forget the connection (its ports may be reused). */
  removeConnection(conn: VsockConnection): void;
}

/** What a connection tells its front end: its RawVsockConnection (the only one; VsockSocket is a Duplex over that). */
export interface ConnectionEvents {
  /** The connection is established (outgoing: RESPONSE arrived). */
  onEstablished(): void;
  /** Payload bytes arrived, at bytes[offset, offset + length): copy them now. */
  onData(bytes: Uint8Array, offset: number, length: number): void;
  /** SEQPACKET: the bytes given to onData since the last call form one message (EOM). */
  onMessageEnd(): void;
  /** The peer sends no more (SHUTDOWN SEND). */
  onPeerEnd(): void;
  /** The connection failed (refused, reset, timed out). */
  onError(err: VsockError): void;
  /** The driver stopped: close without an error (as sockets of a process that exits). */
  onDriverClosed(): void;
  /** Bytes received and not yet consumed by the application. */
  unconsumedBytes(): number;
}

/** onData's bytes in a Buffer of their own (the rx buffer is reposted right after onData). */
export function copyPayload(bytes: Uint8Array, offset: number, length: number): Buffer {
  const chunk = Buffer.allocUnsafe(length);
  copyBytes(bytes, offset, chunk, 0, length);
  return chunk;
}

type WriteCallback = (err?: Error | null) => void;

export class VsockConnection implements PacketEnds, ZeroCopyOwner {
  state: ConnState;
  readonly credit: CreditState;
  /** SHUTDOWN flags received from the peer, and sent by us. */
  peerShutdown = 0;
  localShutdown = 0;
  /** Queued in the driver's tx waiters. */
  waitingForTx = false;
  /** The open single-copy packet (TxPath's bookkeeping, see PacketEnds). */
  txOpenSlot = -1;
  txOpenLen = 0;
  private pendingControl = 0;
  private pendingShutdownFlags = 0;
  private blockedOnCredit = false;
  // The write in progress (the RawVsockConnection hands us one at a time).
  private readonly cursor = new WriteCursor();
  private writeCb: WriteCallback | null = null;
  private zcOutstanding = 0;
  /** Counted in host.zeroCopyAwaiting. */
  private awaitingCompletion = false;
  private writeError: VsockError | null = null;
  private finalCb: WriteCallback | null = null;
  private timer: NodeJS.Timeout | null = null;
  events: ConnectionEvents | null = null;
  /** This connection's transmit path; null: the driver's txMode. */
  txMode: TxMode | null = null;

  constructor(
    private readonly host: ConnectionHost,
    readonly localPort: number,
    readonly remoteCid: number,
    readonly remotePort: number,
    bufAlloc: number,
    state: ConnState,
    /** VSOCK_TYPE_STREAM, or VSOCK_TYPE_SEQPACKET: one write is one message (tx-path.ts), EOM ends a received one. */
    readonly type: number = VSOCK_TYPE_STREAM,
  ) {
    this.credit = new CreditState(bufAlloc);
    this.state = state;
  }

  get stateName(): string {
    return STATE_NAMES[this.state]!;
  }

  /** Hands the connection to its RawVsockConnection; txMode overrides the driver's. */
  attach(events: ConnectionEvents, txMode: TxMode | undefined): void {
    this.events = events;
    if (txMode !== undefined) this.txMode = txMode;
  }

  // ---- Opening

  /** Outgoing: sends REQUEST and starts the connect timer. */
  startConnect(timeoutMs: number): void {
    this.sendControl(PENDING_REQUEST);
    if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.state !== CONN_CONNECTING) return;
        this.sendControl(PENDING_RST);
        this.close(new VsockError('ETIMEDOUT', `connect to ${this.remoteCid}:${this.remotePort} timed out after ${timeoutMs} ms`, 'connect'));
      }, timeoutMs);
    }
  }

  /** Incoming: the REQUEST was accepted; sends RESPONSE. */
  accept(): void {
    this.sendControl(PENDING_RESPONSE);
  }

  // ---- Received packets (the driver has matched the header to this connection)

  /** Every packet carries the peer's credit (5.10.6.3); returns true when we may now send more. */
  takeCredit(bufAlloc: number, fwdCnt: number): void {
    this.credit.onPeerHeader(bufAlloc, fwdCnt);
    if (this.blockedOnCredit && this.credit.sendCredit() > 0) {
      this.blockedOnCredit = false;
      this.pump();
    }
  }

  onResponse(): void {
    if (this.state !== CONN_CONNECTING) {
      // A RESPONSE to a connection we did not ask for: reset it (5.10.6.3.1).
      this.sendControl(PENDING_RST);
      this.close(new VsockError('ECONNRESET', 'unexpected RESPONSE', 'read'));
      return;
    }
    this.clearTimer();
    this.state = CONN_ESTABLISHED;
    this.events?.onEstablished();
    if (this.finalCb) this.shutdownSend(this.finalCb);
    this.pump();
  }

  onRst(): void {
    this.host.stats.rstReceived++;
    switch (this.state) {
      case CONN_CONNECTING:
        this.close(new VsockError('ECONNREFUSED', `connect ECONNREFUSED ${this.remoteCid}:${this.remotePort}`, 'connect'));
        return;
      case CONN_ESTABLISHED:
        // After the peer's SHUTDOWN SEND with nothing left to write, an RST is the end
        // of an orderly close; otherwise the peer aborted.
        if ((this.peerShutdown & VSOCK_SHUTDOWN_SEND) !== 0 && this.writeCb === null) this.close(null);
        else this.close(new VsockError('ECONNRESET', `connection ${this.describe()} reset by peer`, 'read'));
        return;
      default:
        this.close(null);
    }
  }

  onShutdown(flags: number): void {
    const fresh = flags & ~this.peerShutdown;
    this.peerShutdown |= flags & SHUTDOWN_BOTH;
    if ((fresh & VSOCK_SHUTDOWN_SEND) !== 0) this.events?.onPeerEnd();
    // A write that is all on the ring was sent before the peer's SHUTDOWN: it completes
    // when the device returns its buffers. Bytes not yet sent cannot go any more.
    if ((fresh & VSOCK_SHUTDOWN_RCV) !== 0 && this.writeCb !== null && !this.writeQueued) this.failWrite(new VsockError('EPIPE', 'the peer receives no more (SHUTDOWN RCV)', 'write'));
    if (this.peerShutdown === SHUTDOWN_BOTH && this.state !== CONN_CLOSED) {
      // The peer closed: answer with RST and forget the connection (Linux does the same).
      this.sendControl(PENDING_RST);
      this.close(null);
    }
  }

  /** RW payload at bytes[offset, offset + length), with the packet's flags (EOM ends a SEQPACKET message). */
  onData(bytes: Uint8Array, offset: number, length: number, flags = 0): void {
    if (this.state !== CONN_ESTABLISHED || (this.localShutdown & VSOCK_SHUTDOWN_RCV) !== 0) {
      this.host.stats.rxDropped++;
      return;
    }
    if (!this.credit.onReceived(length)) {
      // The peer sent more than the credit we gave: a protocol violation (5.10.6.3.1).
      this.host.stats.rxCreditOverruns++;
      this.sendControl(PENDING_RST);
      this.close(new VsockError('ERR_VSOCK_PROTOCOL', `peer overran its credit on ${this.describe()}`, 'read'));
      return;
    }
    this.host.stats.rxBytes += length;
    this.events?.onData(bytes, offset, length);
    if (this.type === VSOCK_TYPE_SEQPACKET && (flags & VSOCK_SEQ_EOM) !== 0) this.events?.onMessageEnd();
    this.onConsumed();
  }

  onCreditRequest(): void {
    this.host.stats.creditRequestsReceived++;
    this.sendControl(PENDING_CREDIT_UPDATE);
  }

  /**
   * The application consumed received bytes (or may have): advance fwd_cnt and send a
   * CREDIT_UPDATE when the peer's view of our free space fell under the threshold.
   */
  onConsumed(): void {
    if (this.state !== CONN_ESTABLISHED || !this.events) return;
    const unconsumed = this.events.unconsumedBytes();
    const stats = this.host.stats;
    if (unconsumed > stats.maxRxUnconsumed) stats.maxRxUnconsumed = unconsumed;
    this.credit.setUnconsumed(unconsumed);
    if (this.credit.needsCreditUpdate()) this.sendControl(PENDING_CREDIT_UPDATE);
  }

  // ---- Writing

  /** Starts a write of `chunks`; `cb` runs when the bytes are in DMA slots (copy) or back from the device (zero copy). */
  write(chunks: readonly Uint8Array[] | Uint8Array, cb: WriteCallback): void {
    if (this.writeCb !== null) throw new Error('vsock: a write is already in progress');
    if (this.state === CONN_CLOSED || this.state === CONN_CLOSING || (this.peerShutdown & VSOCK_SHUTDOWN_RCV) !== 0) {
      cb(new VsockError('EPIPE', `write to ${this.describe()} after it closed`, 'write'));
      return;
    }
    if (chunks instanceof Uint8Array) this.cursor.resetOne(chunks, this.host.dma);
    else this.cursor.reset(chunks, this.host.dma);
    if (this.type === VSOCK_TYPE_SEQPACKET && this.state === CONN_ESTABLISHED && this.cursor.remaining > this.credit.peerBufAlloc) {
      // The peer could never hold it whole (Linux: virtio_transport_seqpacket_enqueue).
      const n = this.cursor.remaining;
      this.cursor.clear();
      cb(new VsockError('EMSGSIZE', `message of ${n} bytes is larger than the peer's receive buffer (${this.credit.peerBufAlloc} bytes) on ${this.describe()}`, 'write'));
      return;
    }
    if ((this.txMode ?? this.host.txMode) === 'zero-copy' && this.cursor.remaining > 0 && !this.cursor.currentIsDma()) this.host.stats.txZeroCopyMisses++;
    this.writeCb = cb;
    this.writeError = null;
    this.pump();
  }

  /**
   * No write, or every byte of the current one is on the tx ring (a zero-copy write may
   * still wait for the device to return its descriptors). A SHUTDOWN sent now follows
   * the data on the ring, and the device takes the ring in order (5.10.6.2).
   */
  get writeQueued(): boolean {
    return this.writeCb === null || this.cursor.remaining === 0;
  }

  /** Sends as much of the pending write as credit and tx slots allow. */
  pump(): void {
    if (this.pendingControl !== 0 && !this.flushControl()) return;
    if (this.writeCb === null || this.state !== CONN_ESTABLISHED) return;
    const cur = this.cursor;
    const host = this.host;
    const mode = this.txMode ?? host.txMode;
    const zeroCopyAllowed = mode === 'auto' || mode === 'zero-copy';
    const zeroCopyMin = mode === 'auto' ? host.autoZeroCopyMinBytes : 0;
    const twoCopy = mode === 'two-copy';
    let sent = false;
    while (cur.remaining > 0) {
      const credit = this.credit.sendCredit();
      if (credit === 0) {
        this.blockedOnCredit = true;
        host.stats.txCreditStalls++;
        break;
      }
      let n: number;
      if (!zeroCopyAllowed) n = host.tx.sendCopy(this, cur, credit, twoCopy);
      else if (cur.currentIsDma() && cur.currentLeft() >= zeroCopyMin) n = this.sendZeroCopy(cur, credit);
      else n = host.tx.sendCopy(this, cur, cur.plainRun(credit, zeroCopyMin), false); // copy up to the next chunk sent by descriptor
      if (n === 0) {
        host.stats.txRingStalls++;
        host.waitForTx(this);
        break;
      }
      sent = true;
    }
    if (sent) host.scheduleFlush();
    if (cur.remaining === 0) {
      if (this.zcOutstanding === 0) this.completeWrite();
      else this.awaitCompletion();
    }
  }

  /** The write is all on the ring; only zero-copy completions are missing. */
  private awaitCompletion(): void {
    if (this.awaitingCompletion || this.writeCb === null) return;
    this.awaitingCompletion = true;
    this.host.zeroCopyAwaiting++;
    this.host.scheduleFlush(); // arms tx interrupts
  }

  private sendZeroCopy(cur: WriteCursor, credit: number): number {
    const n = this.host.tx.sendZeroCopy(this, cur, credit, this);
    if (n > 0) this.zcOutstanding++;
    return n;
  }

  onZeroCopyComplete(): void {
    this.zcOutstanding--;
    if (this.zcOutstanding === 0 && this.cursor.remaining === 0 && this.writeCb !== null) this.completeWrite();
  }

  /** Tx slots came back. */
  onTxSpace(): void {
    this.waitingForTx = false;
    this.pump();
  }

  private completeWrite(): void {
    if (this.awaitingCompletion) {
      this.awaitingCompletion = false;
      this.host.zeroCopyAwaiting--;
    }
    const cb = this.writeCb;
    if (cb === null) return;
    const err = this.writeError;
    this.writeCb = null;
    this.writeError = null;
    this.cursor.clear();
    cb(err);
  }

  /** Ends the pending write with `err` (once the device has returned any zero-copy chains). */
  private failWrite(err: VsockError): void {
    if (this.writeCb === null) return;
    this.writeError = err;
    this.cursor.clear();
    if (this.zcOutstanding === 0) this.completeWrite();
    else this.awaitCompletion();
  }

  /** Half-close of our sending side (raw.end): SHUTDOWN SEND once the data is queued. */
  shutdownSend(cb: WriteCallback): void {
    if (this.state === CONN_CONNECTING) {
      this.finalCb = cb;
      return;
    }
    this.finalCb = null;
    if (this.state === CONN_ESTABLISHED && (this.localShutdown & VSOCK_SHUTDOWN_SEND) === 0) {
      this.localShutdown |= VSOCK_SHUTDOWN_SEND;
      this.pendingShutdownFlags |= VSOCK_SHUTDOWN_SEND;
      this.sendControl(PENDING_SHUTDOWN);
    }
    cb();
  }

  // ---- Closing

  /**
   * The front end let go (destroy, or both sides ended): close our side. ESTABLISHED sends SHUTDOWN(RCV|SEND) and
   * waits (CLOSING) for the peer's RST, sending RST itself after closeTimeoutMs.
   */
  release(abort: boolean): void {
    this.events = null;
    // The peer already shut both ways (its user was told inside onShutdown, which would
    // answer with RST next): answer now instead of a SHUTDOWN it no longer wants.
    const peerDone = this.peerShutdown === SHUTDOWN_BOTH;
    if (this.state === CONN_CONNECTING || ((abort || peerDone) && this.state === CONN_ESTABLISHED)) {
      this.sendControl(PENDING_RST);
      this.close(null);
      return;
    }
    if (this.state !== CONN_ESTABLISHED) return;
    this.localShutdown = SHUTDOWN_BOTH;
    this.pendingShutdownFlags = SHUTDOWN_BOTH;
    this.sendControl(PENDING_SHUTDOWN);
    this.state = CONN_CLOSING;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.state !== CONN_CLOSING) return;
      this.sendControl(PENDING_RST);
      this.close(null);
    }, this.host.closeTimeoutMs);
    this.timer.unref();
  }

  /**
   * Moves to CLOSED: forgets the connection and tells the front end (err: why, or null for
   * an orderly end). Pending control packets (an RST) still go out.
   */
  close(err: VsockError | null): void {
    if (this.state === CONN_CLOSED) return;
    this.state = CONN_CLOSED;
    this.clearTimer();
    this.blockedOnCredit = false;
    this.host.removeConnection(this);
    if (this.finalCb) {
      const cb = this.finalCb;
      this.finalCb = null;
      cb(err);
    }
    // An Error captures a stack trace: build one only for a write that is waiting. After
    // an orderly close a write that is all on the ring still completes normally.
    if (this.writeCb !== null && (err !== null || !this.writeQueued)) this.failWrite(err ?? new VsockError('EPIPE', `write to ${this.describe()} after it closed`, 'write'));
    if (err) this.events?.onError(err);
    else if ((this.peerShutdown & VSOCK_SHUTDOWN_SEND) === 0) {
      this.peerShutdown |= VSOCK_SHUTDOWN_SEND;
      this.events?.onPeerEnd();
    }
  }

  /** The driver stops: forget the connection, close the front end quietly. */
  abandon(): void {
    const events = this.events;
    this.events = null;
    this.close(new VsockError('ERR_VSOCK_DRIVER_CLOSED', 'the vsock driver closed', 'write'));
    events?.onDriverClosed();
  }

  private clearTimer(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  // ---- Control packets

  private sendControl(bit: number): void {
    this.pendingControl |= bit;
    if (!this.flushControl()) this.host.waitForTx(this);
  }

  /** Sends pending control packets in order; false when tx slots ran out. */
  private flushControl(): boolean {
    const tx = this.host.tx;
    const stats = this.host.stats;
    while (this.pendingControl !== 0) {
      const bit = this.pendingControl & -this.pendingControl; // lowest first
      let ok = true;
      switch (bit) {
        case PENDING_REQUEST:
          ok = tx.sendControl(this, VSOCK_OP_REQUEST, 0);
          break;
        case PENDING_RESPONSE:
          ok = tx.sendControl(this, VSOCK_OP_RESPONSE, 0);
          break;
        case PENDING_CREDIT_UPDATE:
          ok = tx.sendControl(this, VSOCK_OP_CREDIT_UPDATE, 0);
          if (ok) stats.creditUpdatesSent++;
          break;
        case PENDING_SHUTDOWN:
          ok = tx.sendControl(this, VSOCK_OP_SHUTDOWN, this.pendingShutdownFlags);
          break;
        case PENDING_RST:
          ok = tx.sendControl(this, VSOCK_OP_RST, 0);
          if (ok) {
            stats.rstSent++;
            this.pendingControl = 0; // nothing may follow an RST
          }
          break;
      }
      if (!ok) return false;
      this.pendingControl &= ~bit;
      this.host.scheduleFlush();
    }
    return true;
  }

  describe(): string {
    return `local port ${this.localPort} <-> ${this.remoteCid}:${this.remotePort}`;
  }
}
