// The connection muxer: routes guest packets to connections, answers what has no
// connection, opens connections for host listeners and host connects, and fills guest
// rx buffers from the connections that have work, round-robin.
//
// Connections are keyed by (local cid, local port, peer cid, peer port). The device
// only accepts packets from src_cid = the guest's CID; to dst_cid = 2 the key reduces
// to the port pair, kept in a two-level map (local port, then peer port): no key
// object per packet. Packets to another guest's CID go to that guest when the
// SiblingRouter allows it (sibling-router.ts), with one SiblingLink per connection
// (sibling-links.ts) and the receiver's SiblingQueue (sibling-queue.ts) between them.
import type { DescriptorChain, VirtqueueDevice } from '../../../kernel/virtqueue/device-queue.js';
import {
  VSOCK_CID_HOST,
  VSOCK_HDR_BUF_ALLOC,
  VSOCK_HDR_FWD_CNT,
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_INVALID,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SEQ_EOM,
  VSOCK_SEQ_EOR,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_SEQPACKET,
  VSOCK_TYPE_STREAM,
  VsockHeader,
  decodeHeader,
  encodeHeader,
  opName,
} from '../header.js';
import {
  CONN_BUF_ALLOC_BYTES,
  CONNECT_TIMEOUT_MS_DEFAULT,
  EPHEMERAL_PORT_COUNT,
  EPHEMERAL_PORT_FIRST,
  HOST_READ_PROMISE_BYTES,
  HOST_TO_GUEST_VM_LIMIT_BYTES,
  MAX_CONNECTIONS,
  TURN_SHARE_ALONE,
  type TurnShare,
  SIBLING_PENDING_REQUESTS_MAX,
  SIBLING_QUEUE_BYTES,
  STRAY_RST_QUEUE_ENTRIES,
} from './constants.js';
import {
  CONN_CLOSED,
  CONN_LOCAL_INIT,
  CONN_PEER_INIT,
  type ConnectionOwner,
  type HeaderScratch,
  VsockConnection,
} from './connection.js';
import { ConnectionFifo } from './conn-fifo.js';
import { VsockError } from './errors.js';
import type { VsockHostSocket } from './host-socket.js';
import type { VsockHost, VsockIncomingRequest, VsockListenHandle } from './host-api.js';
import { type PacketTap, TAP_GUEST_TO_HOST, TAP_HOST_TO_GUEST } from './packet-tap.js';
import { LINK_ESTABLISHED, LINK_REQUESTED, type LinkSide, SiblingLink, SiblingLinkTable } from './sibling-links.js';
import { SiblingQueue } from './sibling-queue.js';
import { ChunkSlab } from './chunk-slab.js';
import { threadHostBlocks } from './host-block-pool.js';
import type { HeldTxChains } from './held-chains.js';
import type { SiblingRouter } from './sibling-router.js';
import { countDrop, type DropReason, type VsockDeviceStats, type VsockLog } from './stats.js';

const MAX_PORT = 0xffffffff;
/** Words per queued stray RST: src cid, src port, dst port, type, buf_alloc, fwd_cnt. */
const STRAY_WORDS = 6;

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > MAX_PORT) {
    throw new VsockError('ERR_VSOCK_BAD_PORT', `${what}: port ${String(port)} is not an integer in 0..${MAX_PORT}`);
  }
}

export interface MuxerOptions {
  guestCid: number;
  stats: VsockDeviceStats;
  log: VsockLog | undefined;
  /** Asks the device to fill rx buffers soon (host-side work appeared). */
  wake: () => void;
  /** Asks the device to fill rx buffers now, unless it is busy already (then soon). */
  wakeNow?: () => void;
  /** Guest REQUESTs beyond this many open connections get RST (default MAX_CONNECTIONS). */
  maxConnections?: number;
  /** Host-to-guest bytes queued over all connections before host writers wait (default HOST_TO_GUEST_VM_LIMIT_BYTES). */
  hostToGuestLimit?: number;
  /** Routes packets to other guests' CIDs (the caller joins this muxer to it); none: only the host is reachable. */
  router?: SiblingRouter<VsockMuxer>;
  /** The receive window each connection advertises (default CONN_BUF_ALLOC_BYTES). */
  bufAlloc?: number;
}

/** Gracefully closed connections remembered for late packets (see recentlyClosed). */
const RECENTLY_CLOSED_ENTRIES = 256;

export class VsockMuxer implements ConnectionOwner, VsockHost {
  guestCid: number;
  readonly stats: VsockDeviceStats;
  readonly log: VsockLog | undefined;
  readonly bufAlloc: number;
  private readonly wake: () => void;
  private readonly wakeNow: () => void;
  private readonly maxConnections: number;

  private readonly conns = new Map<number, Map<number, VsockConnection>>();
  /**
   * Connections closed gracefully a moment ago, (localPort, peerPort) as one number,
   * oldest first: a Linux guest still sends a credit update or a second SHUTDOWN after
   * our final SHUTDOWN, which is routine, not hostile input.
   */
  private readonly recentlyClosed = new Set<number>();
  private readonly recentlyClosedOrder = new Float64Array(RECENTLY_CLOSED_ENTRIES);
  private recentlyClosedNext = 0;
  private connectionCount = 0;
  private readonly listeners = new Map<number, (s: VsockHostSocket) => void>();
  private anyListener: ((req: VsockIncomingRequest) => void) | null = null;
  private nextEphemeral = 0;

  /**
   * Connections with work for the guest. Those whose next packet opens the connection
   * or carries credit wait in `urgent` and go first: a new connection's RESPONSE or a
   * blocked sender's CREDIT_UPDATE should not queue behind every busy connection's data.
   */
  private readonly urgent = new ConnectionFifo();
  private readonly normal = new ConnectionFifo();

  /**
   * Host-to-guest bytes queued over every connection, and the connections whose host
   * writer waits for that total to drop below hostToGuestLimit, oldest first.
   */
  private toGuestQueued = 0;
  private readonly hostToGuestLimit: number;
  private readonly roomWaiters = new ConnectionFifo();
  private releasingWaiters = false;
  /** Room promised to host writers let go (HOST_READ_PROMISE_BYTES each) until they have read (clearPromises). */
  private roomPromised = 0;
  private promisesClearScheduled = false;
  private promiseChecks = 0;

  /** RSTs with no connection behind them: ring of (src cid, src port, dst port, type, buf_alloc, fwd_cnt). */
  private readonly strayRst = new Uint32Array(STRAY_WORDS * STRAY_RST_QUEUE_ENTRIES);
  private strayHead = 0;
  private strayCount = 0;

  private readonly rxHeader = new VsockHeader();
  private readonly txHeaderBytes = Buffer.alloc(VSOCK_HEADER_SIZE);
  private readonly txHeaderView = new DataView(this.txHeaderBytes.buffer, this.txHeaderBytes.byteOffset, VSOCK_HEADER_SIZE);
  private readonly scratch: HeaderScratch;
  /** Sees every packet moved, both ways (packet-tap.ts); null: none. */
  tap: PacketTap | null = null;

  /** VIRTIO_VSOCK_F_SEQPACKET negotiated by the guest's driver (the device sets it). */
  seqpacket = false;
  /** The guest's driver runs its queues (the device sets it): siblings may reach it. */
  reachable = false;
  private readonly router: SiblingRouter<VsockMuxer> | null;
  /** Packets from siblings waiting for rx buffers (allocated on first use). */
  private siblingQueue: SiblingQueue | null = null;
  /** Chunks for guest payloads bound for host readers (one slab per device, chunk-slab.ts). */
  readonly chunks = new ChunkSlab();
  /** Blocks for host bytes waiting for the guest's rx buffers (host-block-pool.ts; one pool per thread). */
  readonly hostBlocks = threadHostBlocks();
  /** Tx chains held for readers of views (the device sets it; held-chains.ts). */
  heldChains: HeldTxChains | null = null;
  readonly siblingLinks = new SiblingLinkTable<VsockMuxer>();
  /** fillRx alternates between the sibling queue and the connections. */
  private siblingTurn = false;
  private readonly pieceLen = new Int32Array(1);

  constructor(opts: MuxerOptions) {
    this.guestCid = opts.guestCid;
    this.stats = opts.stats;
    this.log = opts.log;
    this.wake = opts.wake;
    this.wakeNow = opts.wakeNow ?? opts.wake;
    this.bufAlloc = opts.bufAlloc ?? CONN_BUF_ALLOC_BYTES;
    this.maxConnections = opts.maxConnections ?? MAX_CONNECTIONS;
    this.hostToGuestLimit = opts.hostToGuestLimit ?? HOST_TO_GUEST_VM_LIMIT_BYTES;
    this.router = opts.router ?? null;
    const bytes = Buffer.alloc(VSOCK_HEADER_SIZE);
    this.scratch = { header: new VsockHeader(), bytes, view: new DataView(bytes.buffer, bytes.byteOffset, VSOCK_HEADER_SIZE) };
  }

  // ---- Host API (VsockHost) ---------------------------------------------------------

  listen(port: number, onConnection: (s: VsockHostSocket) => void): VsockListenHandle {
    checkPort(port, 'vsock listen');
    if (this.listeners.has(port)) throw new VsockError('EADDRINUSE', `vsock listen: host port ${port} already has a listener`);
    this.listeners.set(port, onConnection);
    let open = true;
    return {
      close: () => {
        if (open && this.listeners.get(port) === onConnection) this.listeners.delete(port);
        open = false;
      },
    };
  }

  listenAny(onRequest: (req: VsockIncomingRequest) => void): VsockListenHandle {
    this.anyListener = onRequest;
    return {
      close: () => {
        if (this.anyListener === onRequest) this.anyListener = null;
      },
    };
  }

  connect(port: number, opts?: { timeoutMs?: number }): Promise<VsockHostSocket> {
    try {
      checkPort(port, 'vsock connect');
    } catch (e) {
      return Promise.reject(e);
    }
    const localPort = this.allocateLocalPort(port);
    if (localPort < 0) return Promise.reject(new VsockError('EADDRNOTAVAIL', `vsock connect to guest port ${port}: no free local port`));
    const conn = new VsockConnection(this, VSOCK_CID_HOST, localPort, this.guestCid, port, CONN_LOCAL_INIT);
    this.insert(conn);
    return conn.startConnect(opts?.timeoutMs ?? CONNECT_TIMEOUT_MS_DEFAULT);
  }

  private allocateLocalPort(peerPort: number): number {
    for (let i = 0; i < 1024; i++) {
      const port = EPHEMERAL_PORT_FIRST + ((this.nextEphemeral++ % EPHEMERAL_PORT_COUNT) >>> 0);
      if (!this.listeners.has(port) && this.lookup(port, peerPort) === undefined) return port;
    }
    return -1;
  }

  // ---- Connection table ---------------------------------------------------------------

  private lookup(localPort: number, peerPort: number): VsockConnection | undefined {
    return this.conns.get(localPort)?.get(peerPort);
  }

  private insert(conn: VsockConnection): void {
    let m = this.conns.get(conn.localPort);
    if (m === undefined) this.conns.set(conn.localPort, (m = new Map()));
    m.set(conn.peerPort, conn);
    this.connectionCount++;
  }

  get connections(): number {
    return this.connectionCount;
  }

  /** Connections with sibling guests (any state). */
  get siblingConnections(): number {
    return this.siblingLinks.size;
  }

  /** Bytes from siblings waiting for this guest's rx buffers. */
  get siblingQueuedBytes(): number {
    return this.siblingQueue?.bytes ?? 0;
  }

  /** Bytes buffered on the host side over all connections (both directions). */
  get hostBufferedBytes(): number {
    let n = 0;
    for (const m of this.conns.values()) for (const c of m.values()) n += c.bufferedBytes;
    return n;
  }

  // ConnectionOwner
  schedule(conn: VsockConnection): void {
    if (conn.state === CONN_CLOSED) return;
    if (conn.hasUrgentWork()) {
      if (conn.inUrgentList) return;
      conn.inUrgentList = true;
      this.urgent.push(conn);
    } else {
      if (conn.inUrgentList || conn.inNormalList) return;
      conn.inNormalList = true;
      this.normal.push(conn);
    }
    this.wake();
  }

  /**
   * As schedule(), and the rx buffers are filled before this returns when the device is
   * idle: a few bytes into a quiet connection (a request, a ping) reach the guest without
   * waiting for the rest of the event loop's turn, which a flooding VM can fill.
   */
  scheduleNow(conn: VsockConnection): void {
    this.schedule(conn);
    this.wakeNow();
  }

  countToGuest(delta: number): void {
    this.toGuestQueued += delta;
    if (delta < 0 && !this.roomWaiters.isEmpty) this.releaseRoomWaiters();
  }

  hasHostToGuestRoom(): boolean {
    return this.toGuestQueued + this.roomPromised < this.hostToGuestLimit;
  }

  promiseHostToGuestRoom(): void {
    this.roomPromised += HOST_READ_PROMISE_BYTES;
    if (this.promisesClearScheduled) return;
    this.promisesClearScheduled = true;
    this.promiseChecks = 0;
    setImmediate(this.clearPromises);
  }

  /**
   * At the second check phase (setImmediate) after the first promise, a poll phase has
   * passed since every promise: the writers let go have read (or had nothing to read).
   * The first may come before it, when the promise was made in a poll phase.
   */
  private readonly clearPromises = (): void => {
    if (++this.promiseChecks < 2) {
      setImmediate(this.clearPromises);
      return;
    }
    this.promisesClearScheduled = false;
    this.roomPromised = 0;
    if (!this.roomWaiters.isEmpty) this.releaseRoomWaiters();
  };

  waitForHostToGuestRoom(conn: VsockConnection): void {
    if (conn.inRoomWaitList) return;
    conn.inRoomWaitList = true;
    this.roomWaiters.push(conn);
  }

  /** Host-to-guest bytes queued over all connections (the per-VM bound's count). */
  get hostToGuestQueued(): number {
    return this.toGuestQueued;
  }

  /** Lets held host writers go, oldest first, while the VM's queue has room (a write may fill it again). */
  private releaseRoomWaiters(): void {
    if (this.releasingWaiters) return;
    this.releasingWaiters = true;
    try {
      while (this.hasHostToGuestRoom()) {
        const c = this.roomWaiters.shift();
        if (c === undefined) break;
        c.inRoomWaitList = false;
        // Going, it promises the room of its next read (it comes in the next poll phase):
        // else every waiter would go at once.
        c.releaseWriteIfRoom();
      }
    } finally {
      this.releasingWaiters = false;
    }
  }

  forget(conn: VsockConnection, sendRst: boolean): void {
    const m = this.conns.get(conn.localPort);
    if (m !== undefined && m.get(conn.peerPort) === conn) {
      m.delete(conn.peerPort);
      if (m.size === 0) this.conns.delete(conn.localPort);
      this.connectionCount--;
    }
    // The RST carries our window with every guest byte counted as consumed (they are
    // dropped with the connection): see queueRst.
    if (sendRst) this.queueRst(conn.localCid, conn.localPort, conn.peerPort, VSOCK_TYPE_STREAM, this.bufAlloc, conn.guestBytesReceived);
    else this.rememberClosed(conn.localPort * 0x100000000 + conn.peerPort);
  }

  private rememberClosed(key: number): void {
    if (this.recentlyClosed.has(key)) return;
    const slot = this.recentlyClosedNext % RECENTLY_CLOSED_ENTRIES;
    if (this.recentlyClosedNext >= RECENTLY_CLOSED_ENTRIES) this.recentlyClosed.delete(this.recentlyClosedOrder[slot]!);
    this.recentlyClosedOrder[slot] = key;
    this.recentlyClosedNext++;
    this.recentlyClosed.add(key);
  }

  /**
   * Queues an RST to this guest from srcCid:srcPort (the host, or a sibling) to its dstPort.
   * For a connection that existed, bufAlloc/fwdCnt should give the guest room to send
   * (fwd_cnt = every byte it sent): Linux takes the credit of every packet, the RST's
   * too, before it closes the socket (virtio_transport_recv_pkt ->
   * virtio_transport_space_update), and a socket reset while it still holds unread
   * bytes stays TCP_ESTABLISHED (virtio_transport_do_close), where poll() reports
   * EPOLLOUT only with credit. With buf_alloc 0 a program that waits to be able to write
   * before it reads (socat) never wakes to see the reset, and never closes the socket.
   */
  queueRst(srcCid: number, srcPort: number, dstPort: number, type: number, bufAlloc = 0, fwdCnt = 0): void {
    if (this.strayCount === STRAY_RST_QUEUE_ENTRIES) {
      countDrop(this.stats, this.log, 'strayRstOverflow', `RST ${srcCid}:${srcPort} -> ${this.guestCid}:${dstPort}`);
      return;
    }
    const i = STRAY_WORDS * ((this.strayHead + this.strayCount) % STRAY_RST_QUEUE_ENTRIES);
    this.strayRst[i] = srcCid;
    this.strayRst[i + 1] = srcPort;
    this.strayRst[i + 2] = dstPort;
    this.strayRst[i + 3] = type;
    this.strayRst[i + 4] = bufAlloc;
    this.strayRst[i + 5] = fwdCnt;
    this.strayCount++;
    this.wake();
  }

  /**
   * Closes every connection without telling the guest (transport reset, device reset):
   * host sockets get ECONNRESET, pending connects ECONNREFUSED... as reset() says.
   */
  resetAll(why: string): void {
    const all: VsockConnection[] = [];
    for (const m of this.conns.values()) for (const c of m.values()) all.push(c);
    for (const c of all) c.reset(why);
    this.resetSiblings();
    this.strayCount = 0;
    this.urgent.clear();
    this.normal.clear();
    this.roomWaiters.clear();
    this.roomPromised = 0;
  }

  /**
   * Resets the connections whose host readers still hold views of guest tx buffers: the
   * tx ring stopped and its held chains went back to the guest, which may reuse them.
   */
  resetViewHolders(why: string): void {
    const holders: VsockConnection[] = [];
    for (const m of this.conns.values()) for (const c of m.values()) if (c.holdsGuestBuffers) holders.push(c);
    for (const c of holders) c.reset(why);
  }

  // ---- Guest -> host ------------------------------------------------------------------

  /**
   * Handles one tx chain (5.10.6.2: header, then len payload bytes, in any descriptor
   * layout). Never throws for guest input; the caller returns the chain to the guest.
   */
  onTxChain(chain: DescriptorChain): void {
    this.stats.txPackets++;
    if (chain.readableLength < VSOCK_HEADER_SIZE) {
      countDrop(this.stats, this.log, 'shortChain', `tx chain of ${chain.readableLength} readable bytes`);
      return;
    }
    chain.read(0, this.txHeaderBytes, 0, VSOCK_HEADER_SIZE);
    const h = decodeHeader(this.txHeaderView, 0, this.rxHeader);
    if (this.tap !== null) this.tap.packet(TAP_GUEST_TO_HOST, this.txHeaderBytes, chain, Math.min(h.len, chain.readableLength - VSOCK_HEADER_SIZE));
    if (h.srcCid < 0 || h.dstCid < 0) {
      countDrop(this.stats, this.log, 'reservedCidBits', `packet with reserved CID bits set (${opName(h.op)})`);
      return;
    }
    if (h.srcCid !== this.guestCid) {
      // Not from this guest: cannot be answered (there is nobody to address).
      countDrop(this.stats, this.log, 'wrongSrcCid', `${h} (guest CID is ${this.guestCid})`);
      return;
    }
    if (h.type === VSOCK_TYPE_SEQPACKET) {
      if (!this.seqpacket) return this.refuse(h, 'seqpacketNotNegotiated', `${h} (VIRTIO_VSOCK_F_SEQPACKET not negotiated)`);
    } else if (h.type !== VSOCK_TYPE_STREAM) return this.refuse(h, 'badType', `type ${h.type} (STREAM and SEQPACKET are offered)`);
    if (h.op === VSOCK_OP_INVALID || h.op > VSOCK_OP_CREDIT_REQUEST) return this.refuse(h, 'badOp', `unknown op ${h.op}`);
    if (h.op !== VSOCK_OP_RW && h.len !== 0) return this.refuse(h, 'badHeader', `${opName(h.op)} with len ${h.len}`);
    if (h.op === VSOCK_OP_SHUTDOWN && (h.flags & ~(VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)) !== 0) {
      return this.refuse(h, 'badHeader', `SHUTDOWN with unknown flags 0x${h.flags.toString(16)}`);
    }
    if (h.len > chain.readableLength - VSOCK_HEADER_SIZE) {
      return this.refuse(h, 'lengthMismatch', `len ${h.len} but the chain holds ${chain.readableLength - VSOCK_HEADER_SIZE} payload bytes`);
    }
    if (h.op === VSOCK_OP_RW && h.flags !== 0) {
      // 5.10.6.3: EOM and EOR mark SEQPACKET messages; a stream packet has no flags.
      if (h.type === VSOCK_TYPE_STREAM) return this.refuse(h, 'badFlags', `${h}: RW on a stream with flags`);
      if ((h.flags & ~(VSOCK_SEQ_EOM | VSOCK_SEQ_EOR)) !== 0) return this.refuse(h, 'badFlags', `${h}: unknown RW flags`);
    }
    if (h.len > this.bufAlloc) return this.refuse(h, 'creditViolation', `len ${h.len} exceeds buf_alloc ${this.bufAlloc}`);
    if (h.dstCid !== VSOCK_CID_HOST) return this.toSibling(h, chain);
    if (h.type === VSOCK_TYPE_SEQPACKET) {
      // The host ends are byte streams (Unix SOCK_STREAM, TCP): they would merge messages.
      return this.refuse(h, 'seqpacketToHost', `${h} (the host ends carry streams only)`);
    }

    const conn = this.lookup(h.dstPort, h.srcPort);
    if (conn !== undefined) {
      conn.onGuestPacket(h, chain);
      return;
    }
    if (h.op === VSOCK_OP_RST) {
      // Counted, not logged: a Linux guest answers our closing SHUTDOWN(RCV|SEND) with an
      // RST after we forgot the connection, so this is routine.
      this.stats.rstReceived++;
      this.stats.dropped.rstUnknownIgnored++;
      return;
    }
    if (h.op !== VSOCK_OP_REQUEST && this.recentlyClosed.has(h.dstPort * 0x100000000 + h.srcPort)) {
      this.stats.dropped.lateAfterClose++;
      this.queueRst(h.dstCid, h.dstPort, h.srcPort, VSOCK_TYPE_STREAM);
      return;
    }
    if (h.op !== VSOCK_OP_REQUEST) return this.refuse(h, 'unknownConnection', `${h}`);
    this.onGuestRequest(h);
  }

  /** Answers a bad or unwanted packet with RST (never an RST), resetting its connection. */
  private refuse(h: VsockHeader, reason: DropReason, detail: string): void {
    countDrop(this.stats, this.log, reason, detail);
    if (h.op === VSOCK_OP_RST) {
      const link = h.dstCid === VSOCK_CID_HOST ? undefined : this.siblingLinks.get(h.dstCid, h.srcPort, h.dstPort);
      if (link !== undefined) this.resetLink(link, false);
      return;
    }
    if (h.dstCid === VSOCK_CID_HOST && h.type === VSOCK_TYPE_STREAM) {
      const conn = this.lookup(h.dstPort, h.srcPort);
      if (conn !== undefined) return conn.reset(reason);
    } else if (h.dstCid !== VSOCK_CID_HOST) {
      const link = this.siblingLinks.get(h.dstCid, h.srcPort, h.dstPort);
      if (link !== undefined) return this.resetLink(link, true);
    }
    this.queueRst(h.dstCid, h.dstPort, h.srcPort, h.type === VSOCK_TYPE_SEQPACKET ? VSOCK_TYPE_SEQPACKET : VSOCK_TYPE_STREAM);
  }

  // ---- Guest -> sibling guest ---------------------------------------------------------

  /**
   * A packet to another guest's CID: forwarded into that guest's SiblingQueue when the
   * router lets this guest reach it and the packet fits the connection (sibling-links.ts).
   */
  private toSibling(h: VsockHeader, chain: DescriptorChain): void {
    if (h.dstCid === this.guestCid) return this.refuse(h, 'ownCid', `${h} (the guest's own CID)`);
    const peer = this.router === null ? null : this.router.route(this.guestCid, h.dstCid);
    if (peer === null) return this.refuse(h, 'unknownDstCid', `${h} (not the host, nor a running guest of a shared group)`);
    let link = this.siblingLinks.get(h.dstCid, h.srcPort, h.dstPort);
    if (link === undefined) {
      if (h.op === VSOCK_OP_RST) {
        this.stats.rstReceived++;
        this.stats.dropped.rstUnknownIgnored++;
        return;
      }
      if (h.op !== VSOCK_OP_REQUEST) {
        if (this.siblingLinks.closedRecently(h.dstCid, h.srcPort, h.dstPort)) {
          // It crossed the RST that ended the connection (Linux answers such a packet with RST too).
          this.stats.dropped.lateAfterClose++;
          this.queueRst(h.dstCid, h.dstPort, h.srcPort, h.type === VSOCK_TYPE_SEQPACKET ? VSOCK_TYPE_SEQPACKET : VSOCK_TYPE_STREAM);
          return;
        }
        return this.refuse(h, 'unknownConnection', `${h}`);
      }
      if (h.type === VSOCK_TYPE_SEQPACKET && !peer.seqpacket) return this.refuse(h, 'seqpacketNotNegotiated', `${h} (CID ${peer.guestCid} did not negotiate VIRTIO_VSOCK_F_SEQPACKET)`);
      if (this.connectionCount + this.siblingLinks.size >= this.maxConnections) return this.refuse(h, 'tooManyConnections', `${h}: ${this.maxConnections} connections open`);
      if (this.siblingLinks.pendingRequests >= SIBLING_PENDING_REQUESTS_MAX) {
        return this.refuse(h, 'siblingPendingLimit', `${h}: ${SIBLING_PENDING_REQUESTS_MAX} REQUESTs to siblings unanswered`);
      }
      link = new SiblingLink(h.type, this, this.guestCid, h.srcPort, peer, peer.guestCid, h.dstPort);
      this.siblingLinks.add(peer.guestCid, h.srcPort, h.dstPort, link);
      peer.siblingLinks.add(this.guestCid, h.dstPort, h.srcPort, link);
      this.siblingLinks.pendingRequests++;
    } else {
      if (h.type !== link.type) return this.refuse(h, 'badType', `${h} on a connection of type ${link.type}`);
      const problem = this.siblingOpProblem(link, h);
      if (problem !== null) return this.refuse(h, 'protocolViolation', `${h}: ${problem}`);
    }
    const from = link.side(this.guestCid);
    const to = link.other(this.guestCid);
    link.noteCredit(from, h.bufAlloc, h.fwdCnt);
    if (h.op === VSOCK_OP_RW) {
      if (!link.fits(from, to, h.len)) return this.refuse(h, 'creditViolation', `${h}: beyond CID ${to.cid}'s window (buf_alloc ${to.bufAlloc}, fwd_cnt ${to.fwdCnt}, tx_cnt ${from.txCnt})`);
      from.txCnt = (from.txCnt + h.len) >>> 0;
    }
    if (h.op === VSOCK_OP_RESPONSE) {
      link.state = LINK_ESTABLISHED;
      to.muxer.siblingLinks.pendingRequests--;
    }
    // An update the peer does not need yet waits; a newer packet replaces it (sibling-links.ts).
    if (h.op === VSOCK_OP_CREDIT_UPDATE && link.updateCanWait(from, to, h.bufAlloc)) {
      link.hold(from, this.txHeaderBytes);
      this.stats.siblingCreditUpdatesHeld++;
      return;
    }
    if (h.op === VSOCK_OP_CREDIT_REQUEST) {
      if (to.holding) this.passHeldUpdate(link, to);
      to.updateOwed = true;
    }
    if (!peer.acceptFromSibling(this.txHeaderBytes, chain, h.len)) {
      return this.refuse(h, 'siblingQueueFull', `${h}: CID ${peer.guestCid} has ${peer.siblingQueuedBytes} bytes waiting for its rx buffers`);
    }
    link.told(from, h.bufAlloc, h.fwdCnt);
    this.stats.siblingPackets++;
    this.stats.siblingBytes += h.len;
    // This guest's sends took its view of the peer's window below half: the held update goes.
    if (h.op === VSOCK_OP_RW && link.heldUpdateDue(to, from)) this.passHeldUpdate(link, to);
    if (h.op === VSOCK_OP_RST) {
      this.stats.rstReceived++;
      this.dropLink(link);
    }
  }

  /**
   * Passes the update `side` (the peer's side of `link`) held back to this guest. If this
   * guest's queue of sibling packets is full, it stays held: the next send tries again.
   */
  private passHeldUpdate(link: SiblingLink<VsockMuxer>, side: LinkSide<VsockMuxer>): void {
    const held = side.heldUpdate!;
    if (!this.acceptFromSibling(held, null, 0)) return;
    link.told(side, held.readUInt32LE(VSOCK_HDR_BUF_ALLOC), held.readUInt32LE(VSOCK_HDR_FWD_CNT));
  }

  /** Why op `h.op` may not go on `link` now (null: it may). */
  private siblingOpProblem(link: SiblingLink<VsockMuxer>, h: VsockHeader): string | null {
    if (h.op === VSOCK_OP_REQUEST) return 'REQUEST on an open connection';
    if (link.state === LINK_REQUESTED) {
      if (h.op === VSOCK_OP_RST) return null;
      if (link.a.cid === this.guestCid) return 'before the RESPONSE';
      if (h.op !== VSOCK_OP_RESPONSE) return 'before its RESPONSE';
    } else if (h.op === VSOCK_OP_RESPONSE) return 'RESPONSE on an open connection';
    return null;
  }

  /** Queues a sibling's packet (header + len bytes of `chain`) for this guest. False: no room. */
  acceptFromSibling(header: Buffer, chain: DescriptorChain | null, len: number): boolean {
    this.siblingQueue ??= new SiblingQueue(SIBLING_QUEUE_BYTES);
    if (!this.siblingQueue.push(header, chain, len)) return false;
    this.wake();
    return true;
  }

  /** Forgets `link` on both sides. */
  private dropLink(link: SiblingLink<VsockMuxer>): void {
    const { a, b } = link;
    a.muxer.siblingLinks.remove(b.cid, a.port, b.port);
    b.muxer.siblingLinks.remove(a.cid, b.port, a.port);
    a.muxer.siblingLinks.rememberClosed(b.cid, a.port, b.port);
    b.muxer.siblingLinks.rememberClosed(a.cid, b.port, a.port);
    if (link.state === LINK_REQUESTED) a.muxer.siblingLinks.pendingRequests--;
  }

  /** Forgets `link` and sends RST to the other guest, and with both to this one too. */
  private resetLink(link: SiblingLink<VsockMuxer>, both: boolean): void {
    this.dropLink(link);
    const me = link.side(this.guestCid);
    const peer = link.other(this.guestCid);
    peer.muxer.queueRst(me.cid, me.port, peer.port, link.type, me.bufAlloc, peer.txCnt);
    if (both) this.queueRst(peer.cid, peer.port, me.port, link.type, peer.bufAlloc, me.txCnt);
  }

  /** This guest is gone or reset: its siblings get RST for every connection with it. */
  resetSiblings(): void {
    for (const link of this.siblingLinks.drain()) {
      const peer = link.other(this.guestCid);
      const me = link.side(this.guestCid);
      peer.muxer.siblingLinks.remove(me.cid, peer.port, me.port);
      if (link.state === LINK_REQUESTED && peer === link.a) peer.muxer.siblingLinks.pendingRequests--;
      peer.muxer.queueRst(me.cid, me.port, peer.port, link.type, me.bufAlloc, peer.txCnt);
    }
    this.siblingQueue?.clear();
  }

  private onGuestRequest(h: VsockHeader): void {
    const listener = this.listeners.get(h.dstPort);
    const any = this.anyListener;
    if (listener === undefined && any === null) return this.refuse(h, 'refused', `REQUEST to host port ${h.dstPort}: nobody listens`);
    if (this.connectionCount >= this.maxConnections) {
      return this.refuse(h, 'tooManyConnections', `REQUEST to host port ${h.dstPort}: ${this.maxConnections} connections open`);
    }
    const conn = new VsockConnection(this, VSOCK_CID_HOST, h.dstPort, this.guestCid, h.srcPort, CONN_PEER_INIT);
    this.insert(conn);
    conn.setPeerCredit(h.bufAlloc, h.fwdCnt);
    if (listener !== undefined) {
      const s = conn.accept();
      try {
        listener(s);
      } catch (e) {
        countDrop(this.stats, this.log, 'internalError', `listener of port ${h.dstPort} threw: ${(e as Error).message}`);
      }
      return;
    }
    let decided = false;
    const req: VsockIncomingRequest = {
      port: h.dstPort,
      peerCid: this.guestCid,
      peerPort: h.srcPort,
      accept: () => {
        if (decided) throw new Error('vsock incoming request: already accepted or refused');
        decided = true;
        return conn.state === CONN_PEER_INIT ? conn.accept() : null;
      },
      refuse: () => {
        if (decided) return;
        decided = true;
        if (conn.state === CONN_PEER_INIT) {
          this.stats.dropped.refused++;
          conn.close(true);
        }
      },
    };
    try {
      any!(req);
    } catch (e) {
      countDrop(this.stats, this.log, 'internalError', `listenAny handler threw: ${(e as Error).message}`);
      req.refuse();
    }
  }

  // ---- Host -> guest ------------------------------------------------------------------

  /** True when some packet waits for a guest rx buffer. */
  hasRxWork(): boolean {
    if (this.strayCount > 0) return true;
    if (this.siblingQueue !== null && !this.siblingQueue.isEmpty) return true;
    const hasWork = (c: VsockConnection): boolean => c.hasRxWork();
    return this.urgent.some(hasWork) || this.normal.some(hasWork);
  }

  /**
   * Fills guest rx buffers with pending packets: RSTs first, then one packet per
   * connection in turn, up to this turn's share (rxPackets, rxBytes of `share`).
   * Returns the number of chains pushed (the caller flushes). Sets starved when work
   * remains but the guest gave no more buffers, turnSpent when the share ran out first.
   */
  fillRx(rxq: VirtqueueDevice, share: Readonly<TurnShare> = TURN_SHARE_ALONE): number {
    let pushed = 0;
    let bytes = 0;
    this.starved = false;
    this.turnSpent = false;
    for (;;) {
      if (pushed >= share.rxPackets || bytes >= share.rxBytes) {
        this.turnSpent = this.strayCount > 0 || this.hasRxWork();
        break;
      }
      let conn: VsockConnection | null = null;
      let fifo: ConnectionFifo | null = null;
      let sibling = false;
      if (this.strayCount === 0) {
        const siblingWork = this.siblingQueue !== null && !this.siblingQueue.isEmpty;
        if (siblingWork && this.siblingTurn) sibling = true;
        else {
          conn = this.firstWithWork(this.urgent);
          fifo = this.urgent;
          if (conn === null) {
            conn = this.firstWithWork(this.normal);
            fifo = this.normal;
          }
          if (conn === null) {
            if (!siblingWork) break;
            sibling = true;
          }
        }
      }
      const chain = rxq.take();
      if (chain === null) {
        if (rxq.enableNotifications()) continue;
        this.starved = true;
        break;
      }
      if (chain.writableLength < VSOCK_HEADER_SIZE) {
        countDrop(this.stats, this.log, 'rxBufferTooShort', `rx chain of ${chain.writableLength} writable bytes`);
        rxq.push(chain, 0);
        pushed++;
        continue;
      }
      if (sibling) {
        const n = this.siblingQueue!.emit(chain, this.pieceLen);
        this.siblingTurn = false;
        bytes += n;
        this.stats.rxPackets++;
        if (this.tap !== null) this.tap.packet(TAP_HOST_TO_GUEST, this.siblingQueue!.lastHeader, chain, this.pieceLen[0]!);
        rxq.push(chain, n);
        pushed++;
        continue;
      }
      if (conn === null) {
        const n = this.emitStrayRst(chain);
        if (this.tap !== null) this.tap.packet(TAP_HOST_TO_GUEST, this.scratch.bytes, chain, 0);
        rxq.push(chain, n);
        pushed++;
        continue;
      }
      this.unlist(fifo!);
      const n = conn.emitPacket(chain, this.scratch);
      bytes += n;
      if (n > 0) {
        this.stats.rxPackets++;
        if (this.tap !== null) this.tap.packet(TAP_HOST_TO_GUEST, this.scratch.bytes, chain, n - VSOCK_HEADER_SIZE);
      }
      rxq.push(chain, n);
      pushed++;
      this.siblingTurn = true;
      if (conn.hasRxWork()) this.schedule(conn); // to the back: round-robin
    }
    return pushed;
  }

  private unlist(fifo: ConnectionFifo): void {
    const c = fifo.shift()!;
    if (fifo === this.urgent) c.inUrgentList = false;
    else c.inNormalList = false;
  }

  /** The first connection of `fifo` that has work now; drops those without. */
  private firstWithWork(fifo: ConnectionFifo): VsockConnection | null {
    for (let c = fifo.peek(); c !== undefined; c = fifo.peek()) {
      if (c.hasRxWork()) return c;
      this.unlist(fifo);
    }
    return null;
  }

  /** Set by fillRx() when packets wait for rx buffers the guest has not given. */
  starved = false;
  /** Set by fillRx() when it stopped at this turn's share with packets left. */
  turnSpent = false;

  private emitStrayRst(chain: DescriptorChain): number {
    const i = STRAY_WORDS * this.strayHead;
    this.strayHead = (this.strayHead + 1) % STRAY_RST_QUEUE_ENTRIES;
    this.strayCount--;
    const h = this.scratch.header.set(this.strayRst[i]!, this.strayRst[i + 1]!, this.guestCid, this.strayRst[i + 2]!, VSOCK_OP_RST, 0, 0, this.strayRst[i + 4]!, this.strayRst[i + 5]!);
    h.type = this.strayRst[i + 3]!;
    encodeHeader(h, this.scratch.view, 0);
    chain.write(0, this.scratch.bytes, 0, VSOCK_HEADER_SIZE);
    this.stats.rstSent++;
    this.stats.rxPackets++;
    return VSOCK_HEADER_SIZE;
  }
}
