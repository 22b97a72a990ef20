// The virtio-vsock driver (virtio 1.2, 5.10): device initialization, the three queues,
// the interrupt handler, packet demultiplexing, and the socket API on top.
//
//   rx queue (0)    kept full of pool buffers, one writable descriptor each, big enough
//                   for a header and the largest packet (44 + 64 KiB): every packet the
//                   device can send fits one buffer, so none is ever split or refused.
//                   Linux uses 4 KiB + header because it allocates pages per buffer; our
//                   pool is preallocated, and each packet costs fixed work (header, lookup,
//                   a copy out, a stream push), so fewer, bigger packets cost less.
//   tx queue (1)    packets built by TxPath (two-copy, single-copy or zero-copy).
//   event queue (2) 4-byte events; TRANSPORT_RESET resets every connection (5.10.6.6).
//
// A line here never knows which transport or memory it runs on: only VirtioTransport
// and its DmaArena.
import { BufferPool } from '../../../kernel/memory/dma.js';
import { setupDriverQueue } from '../../../kernel/transport/queue-setup.js';
import type { VirtioTransport } from '../../../kernel/transport/virtio-transport.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, featureBit, hasFeature } from '../../../kernel/virtqueue/layout.js';
import type { RingLayout, VirtqueueDriver } from '../../../kernel/virtqueue/queue.js';
import { type RingChoice, acceptRingFeatures } from '../../../kernel/virtqueue/ring.js';
import {
  VIRTIO_VSOCK_F_SEQPACKET,
  VIRTIO_VSOCK_F_STREAM,
  VSOCK_EVENT_QUEUE,
  VSOCK_EVENT_SIZE,
  VSOCK_EVENT_TRANSPORT_RESET,
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_RX_QUEUE,
  VSOCK_TX_QUEUE,
  VSOCK_TYPE_SEQPACKET,
  VSOCK_TYPE_STREAM,
  VsockHeader,
  decodeHeader,
  headerProblem,
} from '../header.js';
import { CONN_CONNECTING, CONN_ESTABLISHED, type ConnectionHost, type TxMode, VsockConnection } from './connection.js';
import { ConnectionTable } from './connection-table.js';
import { VSOCK_MAX_PKT_PAYLOAD } from './credit.js';
import { VsockError } from './errors.js';
import { EPHEMERAL_PORT_MAX, EPHEMERAL_PORT_MIN, PortAllocator } from './port-allocator.js';
import type { RawConnectionOptions, RawVsockConnection } from './raw-connection.js';
import { RawVsockListener } from './raw-listener.js';
import { VsockServer, type ListenerHost, type VsockListener } from './server.js';
import { type SocketType, socketFor } from './seqpacket-socket.js';
import type { VsockSocket, VsockSocketOptions } from './socket.js';
import { type VsockDriverStats, newStats } from './stats.js';
import { TxPath } from './tx-path.js';

export interface VsockDriverOptions {
  /** Transmit path: 'auto' (default) sends DMA buffers by descriptor and copies others once. */
  txMode?: TxMode;
  /**
   * With 'auto': DMA chunks smaller than this are copied too (default 0: none). A
   * zero-copy write is tracked until the device returns it; under TCG that cost more
   * than copying a few KiB (`npm run bench -- appliance`, the 1.7 KB page: 1527 req/s
   * single-copy vs 517 zero-copy in one run). Linux's MSG_ZEROCOPY documentation puts
   * the break-even near 10 KB.
   */
  autoZeroCopyMinBytes?: number;
  /** Receive buffers kept in the rx queue (default 64). */
  rxBuffers?: number;
  /** Payload bytes per receive buffer, header excluded (default 64 KiB: the largest packet). */
  rxBufferPayload?: number;
  /** Preallocated tx data slots of 44 + 64 KiB (default 64). */
  txSlots?: number;
  /** Requested ring size for each queue (default 256; the device may allow less). */
  queueSize?: number;
  /** Receive buffer per connection, advertised as buf_alloc (default 256 KiB, as Linux). */
  bufAlloc?: number;
  /** Connect timeout (default 2000 ms, Linux's VSOCK_DEFAULT_CONNECT_TIMEOUT). */
  connectTimeoutMs?: number;
  /** How long a closing connection waits for the peer's RST (default 8000 ms). */
  closeTimeoutMs?: number;
  /** Ephemeral port range for outgoing connections (default [49152, 65535]). */
  ephemeralPorts?: [number, number];
  /** Defaults for sockets (high-water marks, allowHalfOpen). */
  socket?: VsockSocketOptions;
  /** Negotiate VIRTIO_F_EVENT_IDX when offered (default true; false uses the flags of 2.7.7 / 2.7.10, 2.8.10). */
  eventIdx?: boolean;
  /** Ring layout: 'auto' (default) packed when the device offers it, else split; 'split' or 'packed' to force one ('packed' fails when not offered). */
  ring?: RingChoice;
}

export interface ConnectOptions extends VsockSocketOptions {
  cid: number;
  port: number;
  timeoutMs?: number;
  /** 'seqpacket': a message-oriented socket (VsockSeqpacketSocket); needs VIRTIO_VSOCK_F_SEQPACKET. Default 'stream'. */
  type?: SocketType;
}

const EVENT_BUFFERS = 8;
const EVENT_SLOT_BYTES = 64;

export class VsockDriver implements ConnectionHost, ListenerHost {
  readonly stats: VsockDriverStats = newStats();
  readonly txMode: TxMode;
  readonly autoZeroCopyMinBytes: number;
  readonly closeTimeoutMs: number;
  readonly tx: TxPath;
  zeroCopyAwaiting = 0;
  /** Our CID, from the device configuration (le64 guest_cid at offset 0, 5.10.4). */
  localCid: number;
  readonly eventIdx: boolean;
  /** VIRTIO_VSOCK_F_SEQPACKET was negotiated: SEQPACKET sockets work. */
  readonly seqpacket: boolean;
  /** The transport's DMA memory (rings, pools, and user buffers from allocBuffer). */
  readonly dma: VirtioTransport['dma'];

  private readonly rxq: VirtqueueDriver<number>;
  private readonly txq: VirtqueueDriver<number>;
  private readonly evq: VirtqueueDriver<number>;
  private readonly rxPool: BufferPool;
  private readonly rxOffsets: Float64Array;
  private readonly evPool: BufferPool;
  private readonly arenaView: DataView;
  private readonly arenaBytes: Uint8Array;
  private readonly hdr = new VsockHeader();
  private readonly conns = new ConnectionTable<VsockConnection>();
  private readonly listeners = new Map<number, VsockListener>();
  private readonly ports: PortAllocator;
  private readonly bufAlloc: number;
  private readonly connectTimeoutMs: number;
  private readonly socketDefaults: VsockSocketOptions;
  private txWaiters: VsockConnection[] = [];
  private spareWaiters: VsockConnection[] = [];
  // RSTs for packets that matched no connection, waiting for a tx slot.
  private readonly rstBacklog: number[] = [];
  private flushScheduled = false;
  private closed = false;
  private readonly flushTask = (): void => {
    this.flushScheduled = false;
    this.flush();
  };
  private readonly onRxUsed = (slot: number, written: number): void => this.receive(slot, written);
  private readonly onTxUsed = (token: number): void => this.tx.onUsed(token);
  private readonly onEventUsed = (slot: number, written: number): void => this.event(slot, written);

  private constructor(
    readonly transport: VirtioTransport,
    features: bigint,
    opts: VsockDriverOptions,
  ) {
    const dma = transport.dma;
    this.dma = dma;
    this.txMode = opts.txMode ?? 'auto';
    this.autoZeroCopyMinBytes = opts.autoZeroCopyMinBytes ?? 0;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 8000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 2000;
    this.bufAlloc = opts.bufAlloc ?? 256 * 1024;
    this.socketDefaults = opts.socket ?? {};
    const [pmin, pmax] = opts.ephemeralPorts ?? [EPHEMERAL_PORT_MIN, EPHEMERAL_PORT_MAX];
    this.ports = new PortAllocator(pmin, pmax);
    this.eventIdx = hasFeature(features, VIRTIO_F_EVENT_IDX);
    this.seqpacket = hasFeature(features, VIRTIO_VSOCK_F_SEQPACKET);
    this.localCid = readGuestCid(transport);
    const qsize = opts.queueSize ?? 256;
    this.rxq = setupDriverQueue<number>(transport, VSOCK_RX_QUEUE, 'vsock rx', qsize, features);
    this.txq = setupDriverQueue<number>(transport, VSOCK_TX_QUEUE, 'vsock tx', qsize, features);
    this.evq = setupDriverQueue<number>(transport, VSOCK_EVENT_QUEUE, 'vsock event', EVENT_BUFFERS, features);
    const rxPayload = opts.rxBufferPayload ?? VSOCK_MAX_PKT_PAYLOAD;
    const rxBuffers = Math.min(opts.rxBuffers ?? 64, this.rxq.size);
    // Slots rounded to a cache line so every buffer starts aligned.
    this.rxPool = new BufferPool(dma, Math.ceil((VSOCK_HEADER_SIZE + rxPayload) / 64) * 64, rxBuffers);
    this.rxOffsets = Float64Array.from(this.rxPool.views, (v) => v.byteOffset);
    this.evPool = new BufferPool(dma, EVENT_SLOT_BYTES, Math.min(EVENT_BUFFERS, this.evq.size));
    this.tx = new TxPath(this.txq, dma, { dataSlots: opts.txSlots ?? 64, headerSlots: this.txq.size }, this.stats);
    this.tx.localCid = this.localCid;
    this.arenaView = new DataView(dma.buffer as ArrayBuffer);
    this.arenaBytes = dma.bytes;
  }

  /**
   * Initializes the device (virtio 1.2, 3.1.1): reset, negotiate VERSION_1, EVENT_IDX
   * and RING_PACKED when offered and STREAM, set up rx/tx/event queues (split or
   * packed: the rest of the driver does not know which), fill rx and event queues,
   * DRIVER_OK.
   */
  static async start(transport: VirtioTransport, opts: VsockDriverOptions = {}): Promise<VsockDriver> {
    const zcMin = opts.autoZeroCopyMinBytes ?? 0;
    if (!Number.isInteger(zcMin) || zcMin < 0) throw new RangeError(`autoZeroCopyMinBytes ${zcMin}: expected a whole number of bytes >= 0`);
    transport.reset();
    const offered = transport.deviceFeatures();
    if (!hasFeature(offered, VIRTIO_F_VERSION_1)) throw new VsockError('ERR_VSOCK_NO_DEVICE', 'the device does not offer VIRTIO_F_VERSION_1');
    // EVENT_IDX and the packed layout when offered (unless opts say otherwise).
    let features = featureBit(VIRTIO_F_VERSION_1) | acceptRingFeatures(offered, { eventIdx: opts.eventIdx, ring: opts.ring }, 'vsock device');
    // STREAM is implied when no socket-type bit is offered (5.10.3, legacy devices).
    if (hasFeature(offered, VIRTIO_VSOCK_F_STREAM)) features |= featureBit(VIRTIO_VSOCK_F_STREAM);
    if (hasFeature(offered, VIRTIO_VSOCK_F_SEQPACKET)) features |= featureBit(VIRTIO_VSOCK_F_SEQPACKET);
    transport.negotiate(features);
    const driver = new VsockDriver(transport, features, opts);
    driver.fillRx();
    driver.fillEvents();
    transport.onInterrupt(() => driver.onInterrupt());
    transport.driverOk();
    driver.kickIfNeeded(driver.rxq, VSOCK_RX_QUEUE);
    driver.kickIfNeeded(driver.evq, VSOCK_EVENT_QUEUE);
    return driver;
  }

  /** The ring layout negotiated (virtio 1.2, 2.7 split / 2.8 packed): diagnostics only. */
  get ringLayout(): RingLayout {
    return this.rxq.layout;
  }

  // ---- Public API

  /** A server (net.Server-like); call listen(port) on it. */
  createServer(onConnection?: (socket: VsockSocket) => void): VsockServer;
  createServer(options: VsockSocketOptions & { type?: SocketType }, onConnection?: (socket: VsockSocket) => void): VsockServer;
  createServer(a?: (VsockSocketOptions & { type?: SocketType }) | ((socket: VsockSocket) => void), b?: (socket: VsockSocket) => void): VsockServer {
    const { type, ...options } = typeof a === 'object' ? a : {};
    const cb = typeof a === 'function' ? a : b;
    // A SEQPACKET server hands out VsockSeqpacketSocket (one 'data' chunk per message).
    if (type === 'seqpacket' && !this.seqpacket) throw new VsockError('ESOCKTNOSUPPORT', 'vsock createServer: the device did not offer VIRTIO_VSOCK_F_SEQPACKET', 'listen');
    return new VsockServer(this, { ...this.socketDefaults, ...options }, cb, type === 'seqpacket' ? VSOCK_TYPE_SEQPACKET : VSOCK_TYPE_STREAM);
  }

  /**
   * Listens on `port` (0: an ephemeral one, see the listener's port) without node:stream:
   * each accepted connection is handed to onConnection as a RawVsockConnection (set its
   * handlers at once). Throws EADDRINUSE when the port is taken.
   */
  listenRaw(port: number, onConnection: (conn: RawVsockConnection) => void, options: RawConnectionOptions = {}): RawVsockListener {
    const d = this.socketDefaults;
    return new RawVsockListener(this, port, onConnection, { txMode: d.txMode, writableHighWaterMark: d.writableHighWaterMark, ...options });
  }

  /** Connects to { cid, port }; 'connect' (and cb) on success, 'error' with ECONNREFUSED or ETIMEDOUT otherwise. */
  connect(options: ConnectOptions, onConnect?: () => void): VsockSocket {
    const { cid, port } = options;
    if (!Number.isInteger(cid) || cid < 0 || cid > 0xffffffff || !Number.isInteger(port) || port < 0 || port > 0xffffffff) {
      throw new RangeError(`vsock connect: bad address ${String(cid)}:${String(port)}`);
    }
    const seqpacket = options.type === 'seqpacket';
    if (seqpacket && !this.seqpacket) throw new VsockError('ESOCKTNOSUPPORT', 'vsock connect: the device did not offer VIRTIO_VSOCK_F_SEQPACKET', 'connect');
    const localPort = this.ports.allocate((p) => this.listeners.has(p) || this.conns.hasLocalPort(p));
    const conn = new VsockConnection(this, localPort, cid, port, this.bufAlloc, CONN_CONNECTING, seqpacket ? VSOCK_TYPE_SEQPACKET : VSOCK_TYPE_STREAM);
    const opts = { ...this.socketDefaults, ...options };
    const socket = socketFor(conn, this.localCid, opts);
    if (onConnect) socket.once('connect', onConnect);
    if (this.closed) {
      process.nextTick(() => socket.destroy(new VsockError('ERR_VSOCK_DRIVER_CLOSED', 'the vsock driver is closed', 'connect')));
      return socket;
    }
    this.addConnection(conn);
    conn.startConnect(options.timeoutMs ?? this.connectTimeoutMs);
    return socket;
  }

  /**
   * A buffer in DMA memory: written to a socket, it goes out by descriptor, without a
   * copy; its write callback fires when the device has returned it. Free with freeBuffer.
   */
  allocBuffer(size: number): Buffer {
    const u8 = this.dma.allocate(size, 64);
    return Buffer.from(u8.buffer as ArrayBuffer, u8.byteOffset, u8.byteLength);
  }

  freeBuffer(buf: Uint8Array): void {
    this.dma.free(buf);
  }

  /** Connections now open (any state but CLOSED). */
  get connectionCount(): number {
    return this.conns.size;
  }

  /**
   * Stops the driver: every socket is destroyed (without an error), every server
   * stops listening, the device is reset. The transport stays open (its owner closes it).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.transport.onInterrupt(() => {});
    for (const conn of this.conns.all()) conn.abandon();
    for (const server of [...this.listeners.values()]) server.close();
    this.transport.reset();
    this.tx.releaseAllZeroCopy();
  }

  // ---- ConnectionHost / ListenerHost

  scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flushTask);
  }

  waitForTx(conn: VsockConnection): void {
    if (conn.waitingForTx) return;
    conn.waitingForTx = true;
    this.txWaiters.push(conn);
    this.scheduleFlush(); // arms tx interrupts
  }

  removeConnection(conn: VsockConnection): void {
    if (this.conns.delete(conn.localPort, conn.remoteCid, conn.remotePort, conn)) this.stats.connections = this.conns.size;
  }

  bindListener(port: number, server: VsockListener): number {
    if (this.closed) throw new VsockError('ERR_VSOCK_DRIVER_CLOSED', 'the vsock driver is closed', 'listen');
    if (port === 0) port = this.ports.allocate((p) => this.listeners.has(p) || this.conns.hasLocalPort(p));
    if (!Number.isInteger(port) || port < 0 || port > 0xfffffffe) throw new RangeError(`vsock listen: bad port ${port}`);
    if (this.listeners.has(port) || this.conns.hasLocalPort(port)) throw new VsockError('EADDRINUSE', `listen EADDRINUSE: port ${port} is already in use`, 'listen');
    this.listeners.set(port, server);
    return port;
  }

  unbindListener(port: number, server: VsockListener): void {
    if (this.listeners.get(port) === server) this.listeners.delete(port);
  }

  private addConnection(conn: VsockConnection): void {
    this.conns.add(conn.localPort, conn.remoteCid, conn.remotePort, conn);
    const n = this.conns.size;
    this.stats.connections = n;
    if (n > this.stats.maxConnections) this.stats.maxConnections = n;
  }

  // ---- Queues

  private fillRx(): void {
    const q = this.rxq;
    const pool = this.rxPool;
    while (q.numFree > 0) {
      const slot = pool.alloc();
      if (slot < 0) break;
      this.postRx(slot);
    }
  }

  private postRx(slot: number): void {
    const q = this.rxq;
    q.chainBegin();
    q.chainAdd(this.rxPool.addrs[slot]!, this.rxPool.slotSize, true);
    q.chainCommit(slot);
  }

  private fillEvents(): void {
    const q = this.evq;
    for (;;) {
      if (q.numFree === 0) break;
      const slot = this.evPool.alloc();
      if (slot < 0) break;
      this.postEvent(slot);
    }
  }

  private postEvent(slot: number): void {
    const q = this.evq;
    q.chainBegin();
    q.chainAdd(this.evPool.addrs[slot]!, VSOCK_EVENT_SIZE, true);
    q.chainCommit(slot);
  }

  private kickIfNeeded(q: VirtqueueDriver<number>, index: number): void {
    if (q.publish()) {
      this.transport.notify(index);
      this.stats.kicks++;
    }
  }

  /** Publishes what was added to the tx queue; one notification per batch. */
  flush(): void {
    if (this.closed) return;
    try {
      this.flushTx();
    } catch (e) {
      this.failBroken(e as Error);
    }
  }

  private flushTx(): void {
    this.reapTx();
    this.tx.flushOpen();
    this.kickIfNeeded(this.txq, VSOCK_TX_QUEUE);
    this.armTxInterrupts();
  }

  /**
   * The interrupt handler: the event and rx queues are drained with the disable /
   * drain / enable / re-check pattern (Linux virtqueue_enable_cb) so no used buffer is
   * left behind without an interrupt to come; tx is reaped first (it frees slots for
   * the answers rx produces). One kick per queue at the end.
   */
  private onInterrupt(): void {
    if (this.closed) return;
    try {
      this.serviceInterrupt();
    } catch (e) {
      this.failBroken(e as Error);
    }
  }

  /**
   * A queue is broken (the device returned an impossible used entry: the kernel's
   * VirtqueueError) or the handler failed: every connection fails, the driver stops.
   * The device would need a reset to be trusted again (virtio 1.2, 2.1.2).
   */
  private failBroken(cause: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.brokenBy = cause;
    this.transport.onInterrupt(() => {});
    const err = (): VsockError => Object.assign(new VsockError('ERR_VSOCK_DEVICE_BROKEN', `vsock device failed: ${cause.message}`, 'read'), { cause });
    for (const conn of this.conns.all()) conn.close(err());
    for (const server of [...this.listeners.values()]) server.close();
  }

  /** Why the driver stopped on its own (a broken queue), or null. */
  brokenBy: Error | null = null;

  private serviceInterrupt(): void {
    this.stats.interrupts++;
    this.reapTx();
    drainQueue(this.evq, this.onEventUsed);
    drainQueue(this.rxq, this.onRxUsed);
    if (this.closed) return;
    this.kickIfNeeded(this.rxq, VSOCK_RX_QUEUE);
    this.kickIfNeeded(this.evq, VSOCK_EVENT_QUEUE);
    this.flush();
  }

  /** Collects transmitted chains (frees slots, completes zero-copy writes). */
  private reapTx(): void {
    if (!this.txq.hasUsed()) return;
    this.txq.drainUsed(this.onTxUsed);
    this.serviceTxWaiters();
  }

  /**
   * Tx interrupts only when someone waits for a tx completion and nothing else will
   * come first: a zero-copy write that is all on the ring (one still waiting for credit
   * cannot complete before the peer's CREDIT_UPDATE, and that rx interrupt reaps tx
   * too), a connection out of slots, an RST backlog. Otherwise used tx chains are
   * reaped when the next batch is flushed or an rx interrupt comes: a stream costs the
   * device no interrupt per packet. When needed, they are delayed to 3/4 of the
   * outstanding chains (virtqueue_enable_cb_delayed): fewer, bigger batches.
   */
  private armTxInterrupts(): void {
    const q = this.txq;
    for (;;) {
      const needed = this.zeroCopyAwaiting > 0 || this.txWaiters.length > 0 || this.rstBacklog.length > 0;
      if (!needed) {
        q.disableInterrupts();
        return;
      }
      if (!q.enableInterruptsDelayed()) return;
      q.disableInterrupts();
      q.drainUsed(this.onTxUsed);
      this.serviceTxWaiters();
    }
  }

  /** Lets connections blocked on tx slots continue, oldest first. */
  private serviceTxWaiters(): void {
    while (this.rstBacklog.length > 0 && this.tx.canSendControl()) {
      const [a, b, c, type] = this.rstBacklog.splice(0, 4) as [number, number, number, number];
      this.tx.sendRstTo(a, b, c, type);
      this.scheduleFlush();
    }
    if (this.txWaiters.length === 0) return;
    const waiters = this.txWaiters;
    this.txWaiters = this.spareWaiters;
    this.spareWaiters = waiters;
    for (let i = 0; i < waiters.length; i++) {
      const conn = waiters[i]!;
      if (!this.tx.canSendData()) {
        // Out of space again: keep the rest, in order, ahead of new waiters.
        for (let j = i; j < waiters.length; j++) {
          waiters[j]!.waitingForTx = false;
          this.waitForTx(waiters[j]!);
        }
        break;
      }
      conn.onTxSpace();
    }
    waiters.length = 0;
  }

  private event(slot: number, written: number): void {
    if (written >= VSOCK_EVENT_SIZE) {
      const id = this.arenaView.getUint32(this.evPool.views[slot]!.byteOffset, true);
      if (id === VSOCK_EVENT_TRANSPORT_RESET) this.transportReset();
    }
    this.postEvent(slot);
  }

  /**
   * TRANSPORT_RESET (5.10.6.6): the device lost every connection (e.g. migration). Reset
   * all of them (sockets see ECONNRESET), keep listeners, re-read our CID.
   */
  private transportReset(): void {
    this.stats.transportResets++;
    for (const conn of this.conns.all()) conn.close(new VsockError('ECONNRESET', `connection ${conn.describe()} reset by TRANSPORT_RESET`, 'read'));
    this.localCid = readGuestCid(this.transport);
    this.tx.localCid = this.localCid;
  }

  /** One received packet in rx buffer `slot`; the buffer is reposted when done. */
  private receive(slot: number, written: number): void {
    const stats = this.stats;
    stats.rxPackets++;
    const off = this.rxOffsets[slot]!;
    const h = this.hdr;
    if (written < VSOCK_HEADER_SIZE) {
      stats.rxDropped++;
    } else {
      decodeHeader(this.arenaView, off, h);
      if (headerProblem(h) !== null || h.len > written - VSOCK_HEADER_SIZE || h.dstCid !== this.localCid) stats.rxDropped++;
      else this.dispatch(h, off + VSOCK_HEADER_SIZE);
    }
    if (!this.closed) this.postRx(slot);
  }

  private dispatch(h: VsockHeader, payloadOff: number): void {
    const conn = this.conns.get(h.dstPort, h.srcCid, h.srcPort);
    if (conn === undefined) {
      if (h.op === VSOCK_OP_REQUEST) this.accept(h);
      else if (h.op !== VSOCK_OP_RST) this.rstUnknown(h); // never answer an RST with an RST
      else this.stats.rxDropped++;
      return;
    }
    if (h.type !== conn.type) {
      // Not this connection's type (Linux answers such a packet with RST, keeping the socket).
      this.stats.rxDropped++;
      if (h.op !== VSOCK_OP_RST) this.rstUnknown(h);
      return;
    }
    // An RST's credit is not taken: it could restart a write that the reset must fail.
    if (h.op !== VSOCK_OP_RST) conn.takeCredit(h.bufAlloc, h.fwdCnt);
    switch (h.op) {
      case VSOCK_OP_RW:
        conn.onData(this.arenaBytes, payloadOff, h.len, h.flags);
        break;
      case VSOCK_OP_CREDIT_UPDATE:
        this.stats.creditUpdatesReceived++;
        break;
      case VSOCK_OP_CREDIT_REQUEST:
        conn.onCreditRequest();
        break;
      case VSOCK_OP_RESPONSE:
        conn.onResponse();
        break;
      case VSOCK_OP_SHUTDOWN:
        conn.onShutdown(h.flags);
        break;
      case VSOCK_OP_RST:
        conn.onRst();
        break;
      case VSOCK_OP_REQUEST:
        // A REQUEST on a live connection: the peer lost it; reset ours (Linux does).
        if (conn.state === CONN_ESTABLISHED) {
          conn.close(new VsockError('ECONNRESET', `connection ${conn.describe()} reset (peer sent a new REQUEST)`, 'read'));
          this.rstUnknown(h);
        }
        break;
    }
  }

  private accept(h: VsockHeader): void {
    const server = this.listeners.get(h.dstPort);
    // A listener takes its own type only (a SEQPACKET one exists only when negotiated).
    if (!server || !server.acceptsMore || (server.type ?? VSOCK_TYPE_STREAM) !== h.type) {
      this.rstUnknown(h);
      return;
    }
    const conn = new VsockConnection(this, h.dstPort, h.srcCid, h.srcPort, this.bufAlloc, CONN_ESTABLISHED, h.type);
    conn.credit.onPeerHeader(h.bufAlloc, h.fwdCnt);
    this.addConnection(conn);
    server.onRequest(conn);
  }

  private rstUnknown(h: VsockHeader): void {
    const type = h.type === VSOCK_TYPE_SEQPACKET ? VSOCK_TYPE_SEQPACKET : VSOCK_TYPE_STREAM;
    if (this.tx.sendRstTo(h.dstPort, h.srcCid, h.srcPort, type)) this.scheduleFlush();
    else if (this.rstBacklog.length < 4 * 1024) {
      this.rstBacklog.push(h.dstPort, h.srcCid, h.srcPort, type);
      this.scheduleFlush(); // arms tx interrupts
    }
  }
}

/** Disable, drain, re-enable, re-check: no used buffer is missed (Linux virtqueue_enable_cb). */
function drainQueue(q: VirtqueueDriver<number>, onUsed: (token: number, len: number) => void): void {
  for (;;) {
    q.disableInterrupts();
    q.drainUsed(onUsed);
    if (!q.enableInterrupts()) return;
  }
}

function readGuestCid(transport: VirtioTransport): number {
  const cfg = transport.readConfig(0, 8);
  const v = new DataView(cfg.buffer, cfg.byteOffset, 8);
  const hi = v.getUint32(4, true);
  if (hi !== 0) throw new VsockError('ERR_VSOCK_NO_DEVICE', `guest_cid 0x${hi.toString(16)}${v.getUint32(0, true).toString(16).padStart(8, '0')} has reserved upper bits set`);
  return v.getUint32(0, true);
}
