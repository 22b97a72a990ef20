// One vsock stream connection between a guest port and a host port, seen from the
// device: its state machine, credit accounting in both directions, and the bytes
// buffered on the host side.
//
// Protocol primer (virtio 1.2, 5.10.6):
//  - A connection is named by (local cid, local port, peer cid, peer port); here local
//    is the host (CID 2) and peer is the guest. Either side opens it with REQUEST and
//    the other answers RESPONSE (accept) or RST (refuse). Nothing but the RESPONSE may
//    be sent on a connection before it.
//  - Data travels in RW packets. Flow control is by credit (5.10.6.3): every packet
//    carries the sender's buf_alloc (its receive buffer) and fwd_cnt (bytes it has
//    consumed from that buffer). A sender keeps tx_cnt (bytes sent) and may send at
//    most peer_buf_alloc - (tx_cnt - peer_fwd_cnt) more. CREDIT_UPDATE carries fresh
//    numbers unasked; CREDIT_REQUEST asks the peer for a CREDIT_UPDATE.
//  - SHUTDOWN with flag SEND (2) means "I send no more" (the receiver sees end of
//    stream, the other direction keeps going); RCV (1) means "I receive no more".
//    When a side has been told both, it resets the connection with RST (Linux does so
//    in virtio_transport_recv_connected); RST closes at once and is never answered.
//
// A host reader takes the guest's bytes one of two ways. As a stream ('data'), each
// payload is copied out of guest memory into a host-side chunk and the guest's buffer
// goes back at once. As views (readViews), the reader gets the payload where it lies in
// guest memory and the guest's buffer goes back when the reader says it is done: no copy
// (held-chains.ts budgets how many tx descriptors may be held; beyond it, a copy). Either
// way the credit we advertise bounds what the host side holds: fwd_cnt moves only when
// the reader takes (stream) or finishes (views) bytes, so a slow reader stops its guest
// sender instead of growing our memory, and never holds up another connection.
import type { DescriptorChain } from '../../../kernel/virtqueue/device-queue.js';
import {
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VsockHeader,
  encodeHeader,
  opName,
} from '../header.js';
import { ChunkQueue } from './chunk-queue.js';
import { HOST_BLOCK_BYTES, type HostBlockPool } from './host-block-pool.js';
import {
  CONN_CREDIT_UPDATE_THRESHOLD_BYTES,
  HOST_TO_GUEST_QUEUE_LIMIT_BYTES,
  MAX_PKT_PAYLOAD_BYTES,
  SMALL_PAYLOAD_MAX_BYTES,
  STAGING_BUFFER_BYTES,
} from './constants.js';
import { VsockError } from './errors.js';
import { VsockHostSocket } from './host-socket.js';
import {
  PENDING_CREDIT_REQUEST,
  PENDING_CREDIT_UPDATE,
  PENDING_REQUEST,
  PENDING_RESPONSE,
  PENDING_SHUTDOWN,
  PendingRxSet,
} from './pending-rx.js';
import { countDrop, type DropReason, type VsockDeviceStats, type VsockLog } from './stats.js';
import type { ChunkSlab } from './chunk-slab.js';
import { HandedPieces, type HeldTxChains, NO_TICKET, handReadableViews, readableSegmentCount } from './held-chains.js';

/** A host reader of views: `view` stays valid until done() (the same function each time; finish views in the order given). */
export type ViewReader = (view: Buffer, done: () => void) => void;

/** The host sent (or will send) REQUEST and waits for the guest's RESPONSE. */
export const CONN_LOCAL_INIT = 0;
/** The guest sent REQUEST; a host acceptor has not decided yet (listenAny). */
export const CONN_PEER_INIT = 1;
export const CONN_ESTABLISHED = 2;
/** Forgotten by the muxer; nothing more is sent or accepted. */
export const CONN_CLOSED = 3;
export type ConnState = typeof CONN_LOCAL_INIT | typeof CONN_PEER_INIT | typeof CONN_ESTABLISHED | typeof CONN_CLOSED;

const SHUTDOWN_BOTH = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;

/** What a connection needs from the muxer that owns it. */
export interface ConnectionOwner {
  readonly stats: VsockDeviceStats;
  /** Where payloads bound for host readers are copied to (chunk-slab.ts). */
  readonly chunks: ChunkSlab;
  /** Where host bytes copied for the guest wait (host-block-pool.ts). */
  readonly hostBlocks: HostBlockPool;
  /** The receive window each connection advertises (buf_alloc, bytes). */
  readonly bufAlloc: number;
  /** Tx chains held for readers of views (held-chains.ts); null: never hold, copy. */
  readonly heldChains: HeldTxChains | null;
  readonly log: VsockLog | undefined;
  /** The connection has work for the guest: queue it for the next rx fill. */
  schedule(conn: VsockConnection): void;
  /** As schedule(), filling the rx buffers at once when the device is idle. */
  scheduleNow(conn: VsockConnection): void;
  /** Removes the connection; with sendRst, queues a RST for its address. */
  forget(conn: VsockConnection, sendRst: boolean): void;
  /** Host-to-guest bytes queued (positive) or gone (negative): the VM-wide count. */
  countToGuest(delta: number): void;
  /** Whether the VM's host-to-guest queue, with the room promised to writers let go, is below its limit (HOST_TO_GUEST_VM_LIMIT_BYTES). */
  hasHostToGuestRoom(): boolean;
  /** Counts a held writer's next write against the VM's room until a poll phase has passed (HOST_READ_PROMISE_BYTES). */
  promiseHostToGuestRoom(): void;
  /** Calls conn.releaseWriteIfRoom() once the VM's queue has room again (oldest first). */
  waitForHostToGuestRoom(conn: VsockConnection): void;
}

/** Reusable scratch for encoding one header (owned by the muxer, no per-packet allocation). */
export interface HeaderScratch {
  readonly header: VsockHeader;
  readonly bytes: Buffer;
  readonly view: DataView;
}

interface ConnectWaiter {
  resolve(s: VsockHostSocket): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout> | null;
}

export class VsockConnection {
  state: ConnState;
  readonly pending = new PendingRxSet();
  /** True while the connection sits in the muxer's urgent / normal list of connections with work. */
  inUrgentList = false;
  inNormalList = false;
  /** True while the connection waits in the muxer for room in the VM's host-to-guest queue. */
  inRoomWaitList = false;
  socket: VsockHostSocket | null = null;

  // Guest -> host. rxCnt: payload bytes received from the guest; fwdCnt: bytes handed
  // to the host reader; lastFwdCntSent: the fwd_cnt the guest was last told.
  private readonly toHost = new ChunkQueue();
  /** Small payloads not yet in toHost: staging[stagingStart, stagingEnd). */
  private staging: Buffer | null = null;
  private stagingStart = 0;
  private stagingEnd = 0;
  private rxCnt = 0;
  private fwdCnt = 0;
  private lastFwdCntSent = 0;
  private hostWantsData = false;
  private delivering = false;
  private eofPushed = false;
  /** SHUTDOWN flags received from the guest (cumulative). */
  private peerShutdown = 0;
  /** The host reads views (readViews): payloads are handed at once and credited when done. */
  private viewReader: ViewReader | null = null;
  private readonly handed = new HandedPieces();
  private readonly viewDone = (): void => this.onViewDone();

  // Host -> guest. txCnt: payload bytes sent; peerBufAlloc/peerFwdCnt: the guest's
  // latest credit numbers.
  private readonly toGuest = new ChunkQueue((c) => {
    const pool = this.owner.hostBlocks;
    if (pool.owns(c)) pool.give(c);
  });
  private txCnt = 0;
  private peerBufAlloc = 0;
  private peerFwdCnt = 0;
  /** A CREDIT_REQUEST went out and no fresh credit numbers came back yet. */
  private creditRequested = false;
  /** A host write callback held back until toGuest drains below its limit. */
  private heldWrite: ((err?: Error | null) => void) | null = null;
  /** SHUTDOWN flags to send once toGuest is empty. */
  private shutdownFlags = 0;
  /** The host socket closed gracefully: after our final SHUTDOWN, forget the connection. */
  private closeAfterShutdown = false;
  private waiter: ConnectWaiter | null = null;

  constructor(
    private readonly owner: ConnectionOwner,
    readonly localCid: number,
    readonly localPort: number,
    readonly peerCid: number,
    readonly peerPort: number,
    state: ConnState,
  ) {
    this.state = state;
  }

  /** Host-initiated: queue the REQUEST; the promise settles on RESPONSE, RST or timeout. */
  startConnect(timeoutMs: number): Promise<VsockHostSocket> {
    return new Promise<VsockHostSocket>((resolve, reject) => {
      const waiter: ConnectWaiter = { resolve, reject, timer: null };
      waiter.timer = setTimeout(() => {
        if (this.waiter !== waiter) return;
        this.waiter = null;
        reject(new VsockError('ETIMEDOUT', `vsock connect to guest port ${this.peerPort}: no answer within ${timeoutMs} ms`));
        this.close(true);
      }, timeoutMs);
      this.waiter = waiter;
      this.pending.insert(PENDING_REQUEST);
      this.owner.schedule(this);
    });
  }

  /** Guest-initiated: accept at once (queues the RESPONSE) and returns the host socket. */
  accept(): VsockHostSocket {
    this.state = CONN_ESTABLISHED;
    this.pending.insert(PENDING_RESPONSE);
    this.socket = new VsockHostSocket(this);
    this.owner.schedule(this);
    return this.socket;
  }

  // ---- Packets from the guest -------------------------------------------------------

  /** Takes the guest's credit numbers (buf_alloc, fwd_cnt) from a packet header. */
  setPeerCredit(bufAlloc: number, fwdCnt: number): void {
    if (bufAlloc !== this.peerBufAlloc || fwdCnt !== this.peerFwdCnt) {
      this.peerBufAlloc = bufAlloc;
      this.peerFwdCnt = fwdCnt;
      this.creditRequested = false;
    }
  }

  /**
   * Handles a guest packet addressed to this connection. The header passed the
   * connection-independent checks; `chain` holds header.len payload bytes after the
   * header.
   */
  onGuestPacket(h: VsockHeader, chain: DescriptorChain): void {
    if (h.op === VSOCK_OP_RST) {
      this.owner.stats.rstReceived++;
      this.onGuestReset();
      return;
    }
    // Every packet carries the guest's credit numbers (5.10.6.3).
    this.setPeerCredit(h.bufAlloc, h.fwdCnt);
    switch (this.state) {
      case CONN_LOCAL_INIT:
        if (h.op === VSOCK_OP_RESPONSE) this.onResponse();
        else this.violation(h, 'protocolViolation', 'expected RESPONSE');
        return;
      case CONN_PEER_INIT:
        this.violation(h, 'protocolViolation', 'packet before the connection was accepted');
        return;
      case CONN_ESTABLISHED:
        break;
      default:
        return;
    }
    switch (h.op) {
      case VSOCK_OP_RW:
        this.onGuestData(h, chain);
        break;
      case VSOCK_OP_CREDIT_UPDATE:
        break; // the numbers were taken above
      case VSOCK_OP_CREDIT_REQUEST:
        this.pending.insert(PENDING_CREDIT_UPDATE);
        break;
      case VSOCK_OP_SHUTDOWN:
        this.onGuestShutdown(h.flags);
        break;
      default: // REQUEST or RESPONSE on an established connection
        this.violation(h, 'protocolViolation', 'not allowed on an established connection');
        return;
    }
    if (this.hasRxWork()) this.owner.schedule(this);
  }

  private onResponse(): void {
    this.state = CONN_ESTABLISHED;
    this.owner.stats.connectionsOpened++;
    this.socket = new VsockHostSocket(this);
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) {
      if (w.timer !== null) clearTimeout(w.timer);
      w.resolve(this.socket);
    }
  }

  private onGuestData(h: VsockHeader, chain: DescriptorChain): void {
    const len = h.len;
    if (len === 0) return;
    if ((this.peerShutdown & VSOCK_SHUTDOWN_SEND) !== 0) {
      this.violation(h, 'protocolViolation', 'data after SHUTDOWN(SEND)');
      return;
    }
    const held = (this.rxCnt - this.fwdCnt) >>> 0;
    const bufAlloc = this.owner.bufAlloc;
    if (held + len > bufAlloc) {
      this.violation(h, 'creditViolation', `${len} bytes with ${held} of ${bufAlloc} already held`);
      return;
    }
    this.rxCnt = (this.rxCnt + len) >>> 0;
    this.owner.stats.txBytes += len;
    // The guest's window into us is now full: it waits until the host reader takes bytes.
    if (held + len === bufAlloc) this.owner.stats.guestToHostCreditStalls++;
    if (this.socket === null) {
      // The host side is gone (closing gracefully): nobody will read; count as consumed.
      this.fwdCnt = (this.fwdCnt + len) >>> 0;
      return;
    }
    if (this.viewReader !== null) {
      this.handToViewReader(this.viewReader, chain, len);
      return;
    }
    // The one copy out of guest memory: the guest buffer goes back to the guest now, the
    // bytes become the host reader's.
    this.owner.stats.toHostCopiedBytes += len;
    if (len <= SMALL_PAYLOAD_MAX_BYTES && this.hostWantsData && this.toHost.isEmpty && this.stagingEnd === this.stagingStart) {
      // The reader takes it at once: a chunk of its own, a slice of Node's shared pool
      // (Buffer.allocUnsafe below 4 KiB), so that the thousands of connections that move a
      // little now and then keep no staging buffer each (16 KiB: 100 MB for 6400 of them).
      const buf = Buffer.allocUnsafe(len);
      chain.read(VSOCK_HEADER_SIZE, buf, 0, len);
      this.toHost.push(buf);
    } else if (len <= SMALL_PAYLOAD_MAX_BYTES) {
      if (this.staging === null || STAGING_BUFFER_BYTES - this.stagingEnd < len) {
        this.flushStaging();
        this.staging = Buffer.allocUnsafe(STAGING_BUFFER_BYTES);
        this.stagingStart = this.stagingEnd = 0;
      }
      chain.read(VSOCK_HEADER_SIZE, this.staging, this.stagingEnd, len);
      this.stagingEnd += len;
    } else {
      this.flushStaging();
      this.toHost.push(this.copyToChunk(chain, len));
    }
    this.deliverToHost();
  }

  /**
   * Hands a payload to the reader of views: views of guest memory (one per descriptor it
   * lies in) with its chain held, when the budget allows; a copy otherwise.
   */
  private handToViewReader(reader: ViewReader, chain: DescriptorChain, len: number): void {
    const held = this.owner.heldChains;
    if (held !== null && readableSegmentCount(chain, VSOCK_HEADER_SIZE, len) > 0) {
      const ticket = held.hold(chain, this.handed.holding);
      if (ticket !== NO_TICKET) {
        this.owner.stats.toHostViewBytes += len;
        handReadableViews(chain, VSOCK_HEADER_SIZE, len, ticket, this.handed, reader, this.viewDone);
        return;
      }
    }
    const piece = this.copyToChunk(chain, len);
    this.owner.stats.toHostCopiedBytes += len;
    this.handed.push(NO_TICKET, len);
    reader(piece, this.viewDone);
  }

  /** The packet's payload copied into a slab chunk of its own (chunk-slab.ts). */
  private copyToChunk(chain: DescriptorChain, len: number): Buffer {
    const buf = this.owner.chunks.take(len);
    chain.read(VSOCK_HEADER_SIZE, buf, 0, len);
    return buf;
  }

  /** The reader of views finished its oldest piece: the guest gets the buffer and the credit back. */
  private onViewDone(): void {
    if (this.handed.size === 0) return; // a done() too many: nothing to finish
    this.owner.heldChains?.release(this.handed.shift());
    if (this.state === CONN_CLOSED) return;
    this.fwdCnt = (this.fwdCnt + this.handed.lastLength) >>> 0;
    this.sendCreditUpdateIfDue();
  }

  /**
   * From now on the host reader gets views (VsockHostSocket.readViews). Bytes already
   * copied for it go first, as pieces of their own.
   */
  setViewReader(reader: ViewReader): void {
    if (this.viewReader !== null) throw new VsockError('ERR_VSOCK_VIEW_READER', `vsock connection ${this.describe()}: readViews() was called already`);
    this.flushStaging();
    while (!this.toHost.isEmpty) {
      const c = this.toHost.shift();
      this.handed.push(NO_TICKET, c.byteLength);
      reader(c as Buffer, this.viewDone);
    }
    this.viewReader = reader;
  }

  /** The reader holds guest tx buffers (views it has not finished). */
  get holdsGuestBuffers(): boolean {
    return this.handed.holding > 0;
  }

  /** Moves staged small payloads into toHost as one chunk (keeps byte order). */
  private flushStaging(): void {
    if (this.stagingEnd > this.stagingStart) {
      this.toHost.push(this.staging!.subarray(this.stagingStart, this.stagingEnd));
      this.stagingStart = this.stagingEnd;
    }
  }

  private onGuestShutdown(flags: number): void {
    this.peerShutdown |= flags & SHUTDOWN_BOTH;
    if ((flags & VSOCK_SHUTDOWN_RCV) !== 0) {
      // The guest reads no more: what the host still wants to send is discarded.
      this.owner.stats.hostBytesDiscarded += this.toGuest.length;
      this.clearToGuest();
      this.releaseHeldWrite();
    }
    this.deliverToHost();
  }

  private onGuestReset(): void {
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      if (w.timer !== null) clearTimeout(w.timer);
      w.reject(new VsockError('ECONNREFUSED', `vsock connect to guest port ${this.peerPort}: refused (RST)`));
    }
    const s = this.socket;
    const finished = s !== null && s.readableEnded && s.writableFinished;
    this.close(false);
    if (s !== null && !s.destroyed) {
      if (finished) s.destroy();
      else s.destroy(new VsockError('ECONNRESET', `vsock connection ${this.describe()} reset by the guest`));
    }
  }

  /** A packet the connection's state does not allow: count, log, reset both sides. */
  private violation(h: VsockHeader, reason: DropReason, why: string): void {
    countDrop(this.owner.stats, this.owner.log, reason, `${opName(h.op)} on ${this.describe()}: ${why}`);
    this.reset(reason);
  }

  /** Resets the connection: RST to the guest, ECONNRESET (or ECONNREFUSED) on the host side. */
  reset(why: string): void {
    if (this.state === CONN_CLOSED) return;
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      if (w.timer !== null) clearTimeout(w.timer);
      w.reject(new VsockError('ECONNREFUSED', `vsock connect to guest port ${this.peerPort} failed: ${why}`));
    }
    const s = this.socket;
    this.close(true);
    if (s !== null && !s.destroyed) s.destroy(new VsockError('ECONNRESET', `vsock connection ${this.describe()} reset: ${why}`));
  }

  /** Payload bytes received from the guest (what an RST reports as consumed: muxer.forget). */
  get guestBytesReceived(): number {
    return this.rxCnt;
  }

  /**
   * Forgets the connection (the muxer drops it, a RST is queued when sendRst) and
   * detaches the host socket, which the caller destroys or leaves to its owner.
   */
  close(sendRst: boolean): void {
    if (this.state === CONN_CLOSED) return;
    this.state = CONN_CLOSED;
    this.pending.clear();
    this.releaseHeldWrite();
    this.clearToGuest();
    this.toHost.clear();
    this.staging = null;
    this.stagingStart = this.stagingEnd = 0;
    const s = this.socket;
    this.socket = null;
    if (s !== null) s.detach();
    this.owner.stats.connectionsClosed++;
    this.owner.forget(this, sendRst);
  }

  /**
   * Hands queued guest bytes to the host reader while it wants them, then end of stream
   * once the guest has shut down its send side. Re-entrant: push() may run the reader's
   * 'data' handler, which may write, read or destroy.
   */
  private deliverToHost(): void {
    if (this.delivering) return;
    const s = this.socket;
    if (s === null) return;
    this.delivering = true;
    try {
      while (this.hostWantsData && this.socket === s) {
        if (this.toHost.isEmpty) {
          // Staged bytes go out only when everything before them has: while the reader
          // is slow they keep coalescing.
          if (this.stagingEnd === this.stagingStart) break;
          this.flushStaging();
        }
        const c = this.toHost.shift();
        this.fwdCnt = (this.fwdCnt + c.byteLength) >>> 0;
        this.hostWantsData = s.push(c);
      }
      if (this.toHost.isEmpty && this.stagingEnd === this.stagingStart && this.staging !== null) {
        // Drained: the staging buffer is let go (the bytes handed out keep their memory
        // only until read); a reader that falls behind again gets a fresh one.
        this.staging = null;
        this.stagingStart = this.stagingEnd = 0;
      }
      if (this.socket === s && this.toHost.isEmpty && this.stagingEnd === this.stagingStart && (this.peerShutdown & VSOCK_SHUTDOWN_SEND) !== 0 && !this.eofPushed) {
        this.eofPushed = true;
        s.push(null);
      }
    } finally {
      this.delivering = false;
    }
    if (this.state !== CONN_ESTABLISHED) return;
    if (this.eofPushed && this.peerShutdown === SHUTDOWN_BOTH) {
      // The guest closed both ways and everything it sent reached the host: finish with
      // RST, as Linux does. The host socket keeps its buffered bytes and 'end'.
      this.close(true);
      return;
    }
    this.sendCreditUpdateIfDue();
  }

  /** Queues a CREDIT_UPDATE once the reader took enough bytes the guest was not told of. */
  private sendCreditUpdateIfDue(): void {
    if (((this.fwdCnt - this.lastFwdCntSent) >>> 0) >= CONN_CREDIT_UPDATE_THRESHOLD_BYTES && !this.pending.has(PENDING_CREDIT_UPDATE)) {
      this.pending.insert(PENDING_CREDIT_UPDATE);
      this.owner.schedule(this);
    }
  }

  // ---- Calls from the host socket ---------------------------------------------------

  /** The host reader wants bytes (Readable._read). */
  hostRead(): void {
    this.hostWantsData = true;
    this.deliverToHost();
  }

  /** Bytes from the host writer (Writable._write); cb is held while too much is queued. */
  hostWrite(chunk: Uint8Array, cb: (err?: Error | null) => void): void {
    if (this.discardsHostBytes(chunk.byteLength)) {
      cb();
      return;
    }
    this.toGuest.push(chunk);
    this.owner.stats.hostBytesAsWritten += chunk.byteLength;
    this.owner.countToGuest(chunk.byteLength);
    if (this.peerCredit() > 0) this.owner.schedule(this);
    else this.requestCreditOnce();
    this.heldWrite = cb;
    this.releaseWriteIfRoom(false);
  }

  /**
   * bytes[0, n) from a host reader that reuses its buffer (host/user-buffer-read.ts):
   * copied before this returns. Returns false when the reader should pause:
   * `resume` is called once this connection's queue and its VM's have room again.
   */
  hostWriteCopy(bytes: Buffer, n: number, resume: () => void): boolean {
    if (this.discardsHostBytes(n) || n === 0) return true;
    const small = n < HOST_BLOCK_BYTES / 4;
    const wasIdle = this.toGuest.isEmpty;
    if (small) {
      // Small reads (a request, a paced writer's few bytes) get a slice of Node's shared
      // pool: a 16 KiB block each would hold 100 MB for 6,400 connections with a little
      // queued, and small reads are too slow to press the collector.
      const copy = Buffer.allocUnsafe(n);
      bytes.copy(copy, 0, 0, n);
      this.toGuest.push(copy);
    } else this.copyToBlocks(bytes, n);
    this.owner.stats.hostBytesCopied += n;
    this.owner.countToGuest(n);
    if (this.peerCredit() === 0) this.requestCreditOnce();
    // A few bytes on a quiet connection go at once (latency); bulk waits for the turn's batch.
    else if (small && wasIdle) this.owner.scheduleNow(this);
    else this.owner.schedule(this);
    if (this.toGuest.length < HOST_TO_GUEST_QUEUE_LIMIT_BYTES && this.owner.hasHostToGuestRoom()) return true;
    this.heldWrite = resume;
    if (this.toGuest.length < HOST_TO_GUEST_QUEUE_LIMIT_BYTES) this.owner.waitForHostToGuestRoom(this);
    return false;
  }

  /** bytes[0, n) into pool blocks, queued; only a partly filled last block needs a view of its own. */
  private copyToBlocks(bytes: Buffer, n: number): void {
    const pool = this.owner.hostBlocks;
    for (let off = 0; off < n; off += HOST_BLOCK_BYTES) {
      const m = Math.min(HOST_BLOCK_BYTES, n - off);
      const block = pool.take();
      bytes.copy(block, 0, off, off + m);
      this.toGuest.push(m === HOST_BLOCK_BYTES ? block : block.subarray(0, m));
    }
  }

  /** Host bytes the guest will never read (not established, it shut down receiving, or we ended): counted and dropped. */
  private discardsHostBytes(n: number): boolean {
    if (this.state === CONN_ESTABLISHED && (this.peerShutdown & VSOCK_SHUTDOWN_RCV) === 0 && (this.shutdownFlags & VSOCK_SHUTDOWN_SEND) === 0) return false;
    this.owner.stats.hostBytesDiscarded += n;
    return true;
  }

  /**
   * Lets the held host write go when both this connection's queue and its VM's are below
   * their limits (true if it went); when only the VM's is full, waits in the muxer (oldest
   * first). `held` (the default): the writer waited, and its next write comes in a later
   * poll phase, so the room it will take is promised now (HOST_READ_PROMISE_BYTES); false
   * for the write in progress.
   */
  releaseWriteIfRoom(held = true): boolean {
    if (this.heldWrite === null || this.toGuest.length >= HOST_TO_GUEST_QUEUE_LIMIT_BYTES) return false;
    if (this.owner.hasHostToGuestRoom()) {
      if (held) this.owner.promiseHostToGuestRoom();
      this.releaseHeldWrite();
      return true;
    }
    this.owner.waitForHostToGuestRoom(this);
    return false;
  }

  private clearToGuest(): void {
    const n = this.toGuest.length;
    this.toGuest.clear();
    if (n > 0) this.owner.countToGuest(-n);
  }

  /** The host writer ended (Writable._final): SHUTDOWN(SEND) after the queued bytes. */
  hostEnd(): void {
    if (this.state !== CONN_ESTABLISHED) return;
    this.shutdownFlags |= VSOCK_SHUTDOWN_SEND;
    this.pending.insert(PENDING_SHUTDOWN);
    this.owner.schedule(this);
  }

  /**
   * The host socket was destroyed. Graceful (both directions ended, no error): tell the
   * guest with SHUTDOWN(RCV|SEND) after the queued bytes, as Linux close() does, then
   * forget the connection (the guest's answering RST finds no connection and is not
   * answered). Otherwise: RST at once.
   */
  hostClosed(graceful: boolean): void {
    this.socket = null;
    if (this.state === CONN_CLOSED) return;
    if (!graceful || this.state !== CONN_ESTABLISHED) {
      this.close(true);
      return;
    }
    this.shutdownFlags |= SHUTDOWN_BOTH;
    this.closeAfterShutdown = true;
    this.pending.insert(PENDING_SHUTDOWN);
    this.owner.schedule(this);
  }

  private releaseHeldWrite(): void {
    const cb = this.heldWrite;
    if (cb !== null) {
      this.heldWrite = null;
      cb();
    }
  }

  // ---- Packets to the guest ---------------------------------------------------------

  /** Bytes the guest can take now: peer_buf_alloc - (tx_cnt - peer_fwd_cnt), never negative. */
  peerCredit(): number {
    const inFlight = (this.txCnt - this.peerFwdCnt) >>> 0;
    return inFlight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  private requestCreditOnce(): void {
    if (this.creditRequested || this.state !== CONN_ESTABLISHED) return;
    this.creditRequested = true;
    this.owner.stats.hostToGuestCreditStalls++;
    this.pending.insert(PENDING_CREDIT_REQUEST);
    this.owner.schedule(this);
  }

  private canSendData(): boolean {
    return this.state === CONN_ESTABLISHED && !this.toGuest.isEmpty && this.peerCredit() > 0;
  }

  /** True when the next packet opens the connection or carries credit the guest may wait for. */
  hasUrgentWork(): boolean {
    return (this.pending.bits & (PENDING_REQUEST | PENDING_RESPONSE | PENDING_CREDIT_UPDATE | PENDING_CREDIT_REQUEST)) !== 0;
  }

  /** True when emitPacket() would write a packet now. */
  hasRxWork(): boolean {
    if (this.state === CONN_CLOSED) return false;
    const p = this.pending.bits;
    if ((p & (PENDING_REQUEST | PENDING_RESPONSE | PENDING_CREDIT_UPDATE | PENDING_CREDIT_REQUEST)) !== 0) return true;
    if (this.canSendData()) return true;
    return (p & PENDING_SHUTDOWN) !== 0 && this.toGuest.isEmpty;
  }

  /**
   * Writes the next packet of this connection (header, then payload) into `chain`,
   * which has at least 44 writable bytes. Returns the bytes written, 0 when there was
   * nothing to send.
   */
  emitPacket(chain: DescriptorChain, scratch: HeaderScratch): number {
    const p = this.pending;
    let op: number;
    let len = 0;
    let flags = 0;
    if (p.has(PENDING_REQUEST)) {
      op = VSOCK_OP_REQUEST;
      p.remove(PENDING_REQUEST);
    } else if (p.has(PENDING_RESPONSE)) {
      op = VSOCK_OP_RESPONSE;
      p.remove(PENDING_RESPONSE);
      this.owner.stats.connectionsOpened++;
    } else if (this.canSendData()) {
      op = VSOCK_OP_RW;
      len = Math.min(this.toGuest.length, this.peerCredit(), chain.writableLength - VSOCK_HEADER_SIZE, MAX_PKT_PAYLOAD_BYTES);
      if (len === 0) return 0; // an rx buffer with room for the header only
    } else if (p.has(PENDING_SHUTDOWN) && this.toGuest.isEmpty) {
      op = VSOCK_OP_SHUTDOWN;
      flags = this.shutdownFlags;
      p.remove(PENDING_SHUTDOWN);
    } else if (p.has(PENDING_CREDIT_UPDATE)) {
      op = VSOCK_OP_CREDIT_UPDATE;
      this.owner.stats.creditUpdatesSent++;
    } else if (p.has(PENDING_CREDIT_REQUEST)) {
      op = VSOCK_OP_CREDIT_REQUEST;
      p.remove(PENDING_CREDIT_REQUEST);
      this.owner.stats.creditRequestsSent++;
    } else {
      return 0;
    }
    // Every packet carries our credit numbers, so it also serves as a credit update.
    p.remove(PENDING_CREDIT_UPDATE);
    this.lastFwdCntSent = this.fwdCnt;
    const h = scratch.header.set(this.localCid, this.localPort, this.peerCid, this.peerPort, op, len, flags, this.owner.bufAlloc, this.fwdCnt);
    encodeHeader(h, scratch.view, 0);
    chain.write(0, scratch.bytes, 0, VSOCK_HEADER_SIZE);
    if (len > 0) {
      let done = 0;
      while (done < len) {
        const c = this.toGuest.front();
        const off = this.toGuest.frontOffset;
        const n = Math.min(c.byteLength - off, len - done);
        chain.write(VSOCK_HEADER_SIZE + done, c, off, n);
        this.toGuest.consume(n);
        done += n;
      }
      this.txCnt = (this.txCnt + len) >>> 0;
      this.owner.stats.rxBytes += len;
      this.owner.countToGuest(-len);
      this.releaseWriteIfRoom();
      if (!this.toGuest.isEmpty && this.peerCredit() === 0) this.requestCreditOnce();
    }
    if (op === VSOCK_OP_SHUTDOWN && this.closeAfterShutdown) this.close(false);
    return VSOCK_HEADER_SIZE + len;
  }

  /** Guest bytes held on the host side plus host bytes waiting for the guest. */
  get bufferedBytes(): number {
    return this.toHost.length + (this.stagingEnd - this.stagingStart) + this.handed.bytes + this.toGuest.length + (this.socket?.readableLength ?? 0) + (this.socket?.writableLength ?? 0);
  }

  describe(): string {
    return `${this.localCid}:${this.localPort} <-> ${this.peerCid}:${this.peerPort}`;
  }
}
