// A raw virtio-vsock test driver: writes packets and descriptor shapes directly on a
// VirtqueueDriver (no connection logic of its own), collects what the device writes
// into rx and event buffers. For device-level tests of drivers/virtio-vsock/device.
// Works with the device in the same thread or in a worker (InProcessTransport).
import { InProcessTransport, type WorkerDeviceSpec } from '../../kernel/transport/inprocess.js';
import { setupDriverQueue } from '../../kernel/transport/queue-setup.js';
import type { VirtioDeviceModel } from '../../kernel/transport/virtio-device.js';
import type { VirtqueueDriver } from '../../kernel/virtqueue/driver-queue.js';
import { DESC_SIZE, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureBit } from '../../kernel/virtqueue/layout.js';
import {
  VIRTIO_VSOCK_F_SEQPACKET,
  VIRTIO_VSOCK_F_STREAM,
  VSOCK_CID_HOST,
  VSOCK_EVENT_QUEUE,
  VSOCK_HEADER_SIZE,
  VSOCK_OP_RW,
  VSOCK_RX_QUEUE,
  VSOCK_TX_QUEUE,
  VSOCK_TYPE_STREAM,
  VsockHeader,
  decodeHeader,
  encodeHeader,
} from '../../drivers/virtio-vsock/header.js';

export interface RawPacket {
  header: VsockHeader;
  payload: Buffer;
  /** The used length the device reported. */
  usedLength: number;
}

/** Header fields for send(); defaults: src = guest CID, dst = host, STREAM, len = payload length. */
export interface PacketFields {
  srcCid?: number;
  dstCid?: number;
  srcPort: number;
  dstPort: number;
  op: number;
  type?: number;
  len?: number;
  flags?: number;
  bufAlloc?: number;
  fwdCnt?: number;
}

/**
 * How a packet's bytes (header then payload, as one byte string) are cut into
 * device-readable descriptors: a list of segment lengths (the last segment takes the
 * rest), optionally behind one indirect descriptor.
 */
export interface TxShape {
  cuts?: number[];
  indirect?: boolean;
}

export const SHAPES: Record<string, TxShape> = {
  'header and data in one descriptor': {},
  'header and data in separate descriptors': { cuts: [VSOCK_HEADER_SIZE] },
  'header split across two descriptors': { cuts: [10] },
  'header split oddly, data split over three': { cuts: [7, 30, 9, 5, 100] },
  'data split over several descriptors': { cuts: [VSOCK_HEADER_SIZE, 1, 2, 3, 50] },
  'indirect table, header and data separate': { cuts: [VSOCK_HEADER_SIZE], indirect: true },
  'indirect table, everything split': { cuts: [3, 41, 17, 1], indirect: true },
  'indirect table, one descriptor': { indirect: true },
};

export interface RawDriverOptions {
  /** Writable bytes per rx buffer (default 44 + 4096). */
  rxBufferBytes?: number;
  /** Split each rx buffer into a 44-byte header descriptor and a data descriptor. */
  rxSplit?: boolean;
  /** Number of rx buffers kept posted (default 64). */
  rxBuffers?: number;
  /** Set up the event queue (default true). */
  eventQueue?: boolean;
  /** Guest memory bytes (default 16 MiB). */
  memoryBytes?: number;
  queueSize?: number;
  /** Accept the packed ring layout (VIRTIO_F_RING_PACKED, virtio 1.2 2.8) instead of split rings. */
  packed?: boolean;
  /** Negotiate VIRTIO_VSOCK_F_SEQPACKET. */
  seqpacket?: boolean;
}

interface RxSlot {
  buf: Uint8Array;
}

export class VsockRawDriver {
  readonly guestCid: number;
  readonly packets: RawPacket[] = [];
  readonly events: number[] = [];
  private waiters: Array<() => void> = [];
  private readonly rxBytes: number;
  private readonly rxSplit: boolean;
  private rxPosted = 0;
  private readonly rxWanted: number;
  private rxPaused = false;
  private closed = false;
  txInFlight = 0;
  /** Interrupts received (for batching checks). */
  interrupts = 0;
  /** Packets for these connections (key guestPort:hostPort) go to a handler, not to `packets`. */
  private readonly routes = new Map<string, (p: RawPacket) => void>();

  private constructor(
    readonly transport: InProcessTransport,
    readonly rx: VirtqueueDriver<RxSlot>,
    readonly tx: VirtqueueDriver<Uint8Array[]>,
    readonly ev: VirtqueueDriver<Uint8Array> | null,
    opts: RawDriverOptions,
  ) {
    const cfg = transport.readConfig(0, 8);
    this.guestCid = new DataView(cfg.buffer, cfg.byteOffset, 8).getUint32(0, true);
    this.rxBytes = opts.rxBufferBytes ?? VSOCK_HEADER_SIZE + 4096;
    this.rxSplit = opts.rxSplit ?? false;
    this.rxWanted = opts.rxBuffers ?? 64;
  }

  static sameThread(device: VirtioDeviceModel, opts: RawDriverOptions = {}): VsockRawDriver {
    const t = InProcessTransport.sameThread(device, { memoryBytes: opts.memoryBytes ?? 16 << 20 });
    return VsockRawDriver.setup(t, opts);
  }

  static async worker(spec: WorkerDeviceSpec, opts: RawDriverOptions = {}): Promise<VsockRawDriver> {
    const t = await InProcessTransport.worker(spec, { memoryBytes: opts.memoryBytes ?? 16 << 20 });
    return VsockRawDriver.setup(t, opts);
  }

  private static setup(t: InProcessTransport, opts: RawDriverOptions): VsockRawDriver {
    const size = opts.queueSize ?? 128;
    const features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_VSOCK_F_STREAM) | (opts.packed ? featureBit(VIRTIO_F_RING_PACKED) : 0n) | (opts.seqpacket ? featureBit(VIRTIO_VSOCK_F_SEQPACKET) : 0n);
    t.negotiate(features);
    const rx = setupDriverQueue<RxSlot>(t, VSOCK_RX_QUEUE, 'raw rx', size, features);
    const tx = setupDriverQueue<Uint8Array[]>(t, VSOCK_TX_QUEUE, 'raw tx', size, features);
    const ev = opts.eventQueue === false ? null : setupDriverQueue<Uint8Array>(t, VSOCK_EVENT_QUEUE, 'raw event', 8, features);
    t.driverOk();
    const d = new VsockRawDriver(t, rx, tx, ev, opts);
    t.onInterrupt(() => d.onInterrupt());
    d.refillRx();
    if (ev) {
      for (let i = 0; i < 4; i++) {
        const b = t.dma.allocate(8);
        ev.add(b, [], [[t.dma.addressOf(b), 8]]);
      }
      if (ev.publish()) t.notify(VSOCK_EVENT_QUEUE);
    }
    return d;
  }

  // ---- rx -------------------------------------------------------------------------------

  /** Stops (true) or resumes posting rx buffers: lets tests starve the device. */
  pauseRx(paused: boolean): void {
    this.rxPaused = paused;
    if (!paused) this.refillRx();
  }

  private refillRx(): void {
    if (this.rxPaused || this.closed) return;
    const dma = this.transport.dma;
    let added = 0;
    while (this.rxPosted < this.rxWanted && this.rx.numFree >= 2) {
      const buf = dma.allocate(this.rxBytes);
      const addr = dma.addressOf(buf);
      if (this.rxSplit && this.rxBytes > VSOCK_HEADER_SIZE) {
        this.rx.add({ buf }, [], [
          [addr, VSOCK_HEADER_SIZE],
          [addr + VSOCK_HEADER_SIZE, this.rxBytes - VSOCK_HEADER_SIZE],
        ]);
      } else {
        this.rx.add({ buf }, [], [[addr, this.rxBytes]]);
      }
      this.rxPosted++;
      added++;
    }
    if (added > 0 && this.rx.publish()) this.transport.notify(VSOCK_RX_QUEUE);
  }

  /** Posts one rx chain of the given writable segment lengths (for odd-buffer tests). */
  postRxRaw(lengths: number[]): void {
    const dma = this.transport.dma;
    const total = lengths.reduce((a, b) => a + b, 0);
    const buf = dma.allocate(Math.max(total, 1));
    let off = 0;
    const segs: Array<[number, number]> = [];
    for (const l of lengths) {
      segs.push([dma.addressOf(buf) + off, l]);
      off += l;
    }
    this.rx.add({ buf }, [], segs);
    this.rxPosted++;
    if (this.rx.publish()) this.transport.notify(VSOCK_RX_QUEUE);
  }

  private onInterrupt(): void {
    if (this.closed) return;
    this.interrupts++;
    let got = false;
    do {
      this.rx.drainUsed((slot, len) => {
        this.rxPosted--;
        if (len >= VSOCK_HEADER_SIZE) {
          const v = new DataView(slot.buf.buffer, slot.buf.byteOffset, slot.buf.byteLength);
          const header = decodeHeader(v, 0, new VsockHeader());
          const payload = Buffer.from(slot.buf.subarray(VSOCK_HEADER_SIZE, len));
          const route = this.routes.get(`${header.dstPort}:${header.srcPort}`);
          if (route) route({ header, payload, usedLength: len });
          else this.packets.push({ header, payload, usedLength: len });
        } else {
          this.packets.push({ header: new VsockHeader(), payload: Buffer.alloc(0), usedLength: len });
        }
        this.transport.dma.free(slot.buf);
        got = true;
      });
      this.tx.drainUsed((bufs) => {
        for (const b of bufs) this.transport.dma.free(b);
        this.txInFlight--;
        got = true;
      });
      this.ev?.drainUsed((b, len) => {
        if (len >= 4) this.events.push(new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true));
        this.ev!.add(b, [], [[this.transport.dma.addressOf(b), 8]]);
        if (this.ev!.publish()) this.transport.notify(VSOCK_EVENT_QUEUE);
        got = true;
      });
    } while (this.rx.enableInterrupts() || this.tx.enableInterrupts() || (this.ev !== null && this.ev.enableInterrupts()));
    this.refillRx();
    if (got) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }

  /** Sends the packets of connection guestPort <-> hostPort to handler (null: stop). */
  route(guestPort: number, hostPort: number, handler: ((p: RawPacket) => void) | null): void {
    if (handler) this.routes.set(`${guestPort}:${hostPort}`, handler);
    else this.routes.delete(`${guestPort}:${hostPort}`);
  }

  /** Resolves after the next interrupt that brought something. */
  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Waits until pred() is true (re-checked after every interrupt). */
  async until(pred: () => boolean): Promise<void> {
    while (!pred()) await this.changed();
  }

  /** Removes and returns the first received packet matching pred (waits for it). */
  async next(pred: (p: RawPacket) => boolean = () => true): Promise<RawPacket> {
    for (;;) {
      const i = this.packets.findIndex(pred);
      if (i >= 0) return this.packets.splice(i, 1)[0]!;
      await this.changed();
    }
  }

  /** Next packet on the connection (guestPort <-> hostPort), from the device. */
  nextOn(guestPort: number, hostPort: number): Promise<RawPacket> {
    return this.next((p) => p.header.dstPort === guestPort && p.header.srcPort === hostPort);
  }

  /**
   * Makes sure the device has handled everything sent so far and answered: sends a
   * CREDIT_REQUEST on a probe connection that does not exist and waits for its RST
   * (the device processes tx chains in order and answers in order).
   */
  async sync(probePort = 0x7ffffff0): Promise<void> {
    this.send({ srcPort: probePort, dstPort: probePort, op: 7 });
    await this.next((p) => p.header.op === 3 && p.header.dstPort === probePort && p.header.srcPort === probePort);
  }

  // ---- tx -------------------------------------------------------------------------------

  /** Encodes a header (and payload) into one byte string. */
  packetBytes(f: PacketFields, payload: Uint8Array = new Uint8Array(0)): Buffer {
    const h = new VsockHeader();
    h.srcCid = f.srcCid ?? this.guestCid;
    h.dstCid = f.dstCid ?? VSOCK_CID_HOST;
    h.srcPort = f.srcPort;
    h.dstPort = f.dstPort;
    h.op = f.op;
    h.type = f.type ?? VSOCK_TYPE_STREAM;
    h.len = f.len ?? (f.op === VSOCK_OP_RW ? payload.byteLength : 0);
    h.flags = f.flags ?? 0;
    h.bufAlloc = f.bufAlloc ?? 256 * 1024;
    h.fwdCnt = f.fwdCnt ?? 0;
    const b = Buffer.alloc(VSOCK_HEADER_SIZE + payload.byteLength);
    encodeHeader(h, new DataView(b.buffer, b.byteOffset, b.byteLength), 0);
    b.set(payload, VSOCK_HEADER_SIZE);
    return b;
  }

  /** Sends a packet in the given descriptor shape. */
  send(f: PacketFields, payload?: Uint8Array, shape: TxShape = {}): void {
    this.sendBytes(this.packetBytes(f, payload), shape);
  }

  /** Sends arbitrary bytes as one tx chain, cut as `shape` says. */
  sendBytes(bytes: Uint8Array, shape: TxShape = {}, publish = true): void {
    const dma = this.transport.dma;
    const lengths: number[] = [];
    let left = bytes.byteLength;
    for (const c of shape.cuts ?? []) {
      if (left <= 0) break;
      const n = Math.min(c, left);
      lengths.push(n);
      left -= n;
    }
    if (left > 0 || lengths.length === 0) lengths.push(left);
    const bufs: Uint8Array[] = [];
    const segs: Array<[number, number]> = [];
    let off = 0;
    for (const l of lengths) {
      const b = dma.allocate(Math.max(l, 1));
      b.set(bytes.subarray(off, off + l));
      off += l;
      bufs.push(b);
      segs.push([dma.addressOf(b), l]);
    }
    if (shape.indirect) {
      const table = dma.allocate(DESC_SIZE * segs.length, 16);
      const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
      // In the queue's layout: split entries link with NEXT (2.7.5.3), packed ones follow one another (2.8.7).
      segs.forEach(([a, l], i) => this.tx.writeIndirectEntry(v, i, segs.length, a, l, false));
      bufs.push(table);
      this.tx.chainBegin();
      this.tx.chainAddIndirect(dma.addressOf(table), segs.length);
      this.tx.chainCommit(bufs);
    } else {
      this.tx.add(bufs, segs);
    }
    this.txInFlight++;
    if (publish && this.tx.publish()) this.transport.notify(VSOCK_TX_QUEUE);
  }

  /** Publishes tx chains added with publish = false. */
  flushTx(): void {
    if (this.tx.publish()) this.transport.notify(VSOCK_TX_QUEUE);
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
    await this.transport.close();
  }
}

/**
 * A guest-side stream on the raw driver, with credit accounting per 5.10.6.3 (for
 * tests that move many bytes): never sends past the device's window, returns credit
 * as it consumes.
 */
export class RawStream {
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  txCnt = 0;
  /** Bytes received (and consumed: the test reads them at once). */
  rxCnt = 0;
  lastFwdCntSent = 0;
  readonly received: Buffer[] = [];
  peerShutdown = 0;
  reset = false;
  responded = false;
  /** The largest number of bytes in flight towards us we ever saw (credit check). */
  maxInFlightSeen = 0;
  /** Packets after which the device exceeded our window (must stay 0). */
  windowViolations = 0;
  readonly log: string[] = [];
  /** Consumed bytes after which a CREDIT_UPDATE goes (1: after every packet, as a Linux reader that keeps up does). */
  creditUpdateEvery: number;
  /** CREDIT_UPDATEs sent and received. */
  creditUpdatesSent = 0;
  creditUpdatesReceived = 0;
  /** Times write() found no credit and waited for an update. */
  creditWaits = 0;
  private consumedUnannounced = 0;

  constructor(
    readonly drv: VsockRawDriver,
    readonly guestPort: number,
    public hostPort: number,
    readonly bufAlloc = 64 * 1024,
    /** The peer: the host (default) or a sibling guest's CID; and the socket type. */
    readonly peer: { cid?: number; type?: number } = {},
  ) {
    this.creditUpdateEvery = bufAlloc / 2;
    if (hostPort >= 0) drv.route(guestPort, hostPort, (p) => this.onPacket(p));
  }

  /** Guest-initiated connect: REQUEST, wait for RESPONSE (throws on RST). */
  async connect(): Promise<void> {
    this.send(1);
    await this.drv.until(() => this.responded || this.reset);
    if (this.reset) throw Object.assign(new Error(`connect to host port ${this.hostPort} refused`), { code: 'ECONNREFUSED' });
  }

  /** Host-initiated: wait for a REQUEST to guestPort and answer RESPONSE. */
  async accept(): Promise<void> {
    const req = await this.drv.next((p) => p.header.op === 1 && p.header.dstPort === this.guestPort);
    this.hostPort = req.header.srcPort;
    this.peerBufAlloc = req.header.bufAlloc;
    this.peerFwdCnt = req.header.fwdCnt;
    this.drv.route(this.guestPort, this.hostPort, (p) => this.onPacket(p));
    this.responded = true;
    this.send(2);
  }

  /** CREDIT_REQUEST: asks the peer for its credit figures. */
  requestCredit(): void {
    this.send(7);
  }

  private send(op: number, payload?: Uint8Array, flags = 0): void {
    if (op === 6) this.creditUpdatesSent++;
    this.lastFwdCntSent = this.rxCnt;
    this.consumedUnannounced = 0;
    this.drv.send({ srcPort: this.guestPort, dstPort: this.hostPort, dstCid: this.peer.cid ?? VSOCK_CID_HOST, type: this.peer.type ?? VSOCK_TYPE_STREAM, op, flags, bufAlloc: this.bufAlloc, fwdCnt: this.rxCnt >>> 0 }, payload);
  }

  private onPacket(p: RawPacket): void {
    const h = p.header;
    this.log.push(h.toString());
    this.peerBufAlloc = h.bufAlloc;
    this.peerFwdCnt = h.fwdCnt;
    switch (h.op) {
      case 2:
        this.responded = true;
        break;
      case 3:
        this.reset = true;
        break;
      case 4:
        this.peerShutdown |= h.flags;
        break;
      case 5: {
        this.rxCnt += p.payload.length;
        const inFlight = this.rxCnt - this.lastFwdCntSent;
        this.maxInFlightSeen = Math.max(this.maxInFlightSeen, inFlight);
        if (inFlight > this.bufAlloc) this.windowViolations++;
        this.received.push(p.payload);
        this.consumedUnannounced += p.payload.length;
        if (this.consumedUnannounced >= this.creditUpdateEvery) this.send(6);
        break;
      }
      case 6:
        this.creditUpdatesReceived++;
        break;
      case 7:
        this.send(6);
        break;
    }
  }

  private credit(): number {
    return this.peerBufAlloc - (this.txCnt - this.peerFwdCnt);
  }

  /** Sends data in packets of at most chunk bytes, waiting for credit. */
  async write(data: Uint8Array, chunk = 16 * 1024): Promise<void> {
    let off = 0;
    while (off < data.length) {
      if (this.reset) throw new Error('connection reset');
      const n = Math.min(chunk, data.length - off, this.credit());
      if (n <= 0 || this.drv.tx.numFree < 4) {
        if (n <= 0) this.creditWaits++;
        const before = this.peerFwdCnt;
        const free = this.drv.tx.numFree;
        await this.drv.until(() => this.reset || this.peerFwdCnt !== before || this.drv.tx.numFree > free);
        continue;
      }
      this.send(5, data.subarray(off, off + n));
      this.txCnt += n;
      off += n;
    }
  }

  end(): void {
    this.send(4, undefined, 2);
  }

  async readAll(): Promise<Buffer> {
    await this.drv.until(() => (this.peerShutdown & 2) !== 0 || this.reset);
    return Buffer.concat(this.received);
  }
}
