// A scripted virtio-vsock device for driver unit tests (same thread): it decodes every
// packet the driver transmits into `sent`, and injects packets and events the test
// writes by hand. No connection logic of its own: the test plays the host.
// (Owned by the vsock driver tests; the real emulator is drivers/virtio-vsock/device.)
import type { DeviceContext, VirtioDeviceModel } from '../../kernel/transport/virtio-device.js';
import type { DescriptorChain, VirtqueueDevice } from '../../kernel/virtqueue/device-queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, featureBit } from '../../kernel/virtqueue/layout.js';
import { VIRTIO_VSOCK_F_STREAM, VSOCK_CID_HOST, VSOCK_HEADER_SIZE, VsockHeader, decodeHeader, encodeHeader } from '../../drivers/virtio-vsock/header.js';

export interface SentPacket {
  hdr: VsockHeader;
  payload: Buffer;
  /** Descriptors in the chain (zero copy: header + payload pieces). */
  segments: number;
}

export interface InjectFields {
  op: number;
  srcPort: number;
  dstPort: number;
  srcCid?: number;
  dstCid?: number;
  flags?: number;
  bufAlloc?: number;
  fwdCnt?: number;
  type?: number;
}

export class ScriptedVsockPeer implements VirtioDeviceModel {
  readonly name = 'scripted-vsock';
  readonly deviceId = 19;
  readonly features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_VSOCK_F_STREAM);
  readonly numQueues = 3;
  readonly maxQueueSize = 256;
  readonly sent: SentPacket[] = [];
  /** Called for every transmitted packet (after it is added to `sent`). */
  onPacket: (p: SentPacket) => void = () => {};
  /** When true, tx chains are held (not returned) until releaseTx(). */
  holdTx = false;
  private held: DescriptorChain[] = [];
  private ctx: DeviceContext | null = null;
  private queues: (VirtqueueDevice | null)[] = [null, null, null];
  private pendingRx: Buffer[] = [];
  private pendingEvents: number[] = [];
  private readonly scratch = Buffer.alloc(VSOCK_HEADER_SIZE + 256 * 1024);

  constructor(readonly guestCid = 3) {}

  config(): Uint8Array {
    const c = new Uint8Array(8);
    new DataView(c.buffer).setUint32(0, this.guestCid, true);
    return c;
  }
  activate(ctx: DeviceContext): void {
    this.ctx = ctx;
  }
  queueReady(index: number, queue: VirtqueueDevice): void {
    this.queues[index] = queue;
  }
  queueStopped(index: number): void {
    this.queues[index] = null;
  }
  reset(): void {
    this.queues = [null, null, null];
    this.held = [];
  }

  /** Rx buffers the driver has posted and the peer has not filled. */
  get rxAvailable(): boolean {
    return this.queues[0]?.hasAvailable() ?? false;
  }

  kick(index: number): void {
    if (index === 1) this.drainTx();
    else if (index === 0) this.deliverRx();
    else if (index === 2) this.deliverEvents();
  }

  /** Queues a packet for the guest (delivered as soon as an rx buffer is free). */
  inject(f: InjectFields, payload: Uint8Array = new Uint8Array(0)): void {
    const h = new VsockHeader().set(f.srcCid ?? VSOCK_CID_HOST, f.srcPort, f.dstCid ?? this.guestCid, f.dstPort, f.op, payload.byteLength, f.flags ?? 0, f.bufAlloc ?? 256 * 1024, f.fwdCnt ?? 0);
    if (f.type !== undefined) h.type = f.type;
    const pkt = Buffer.alloc(VSOCK_HEADER_SIZE + payload.byteLength);
    encodeHeader(h, new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength), 0);
    pkt.set(payload, VSOCK_HEADER_SIZE);
    this.pendingRx.push(pkt);
    this.deliverRx();
  }

  /** Queues an event (VSOCK_EVENT_TRANSPORT_RESET = 0). */
  injectEvent(id: number): void {
    this.pendingEvents.push(id);
    this.deliverEvents();
  }

  /** Returns every held tx chain to the driver. */
  releaseTx(): void {
    const q = this.queues[1];
    if (!q) return;
    for (const c of this.held) q.push(c, 0);
    this.held = [];
    if (q.flush()) this.ctx!.interrupt(1);
  }

  get heldTx(): number {
    return this.held.length;
  }

  private drainTx(): void {
    const q = this.queues[1];
    if (!q) return;
    for (;;) {
      let chain: DescriptorChain | null;
      while ((chain = q.take()) !== null) {
        const n = Math.min(chain.readableLength, this.scratch.length);
        chain.read(0, this.scratch, 0, n);
        const hdr = decodeHeader(new DataView(this.scratch.buffer, this.scratch.byteOffset, n), 0, new VsockHeader());
        const payload = Buffer.from(this.scratch.subarray(VSOCK_HEADER_SIZE, VSOCK_HEADER_SIZE + hdr.len));
        const p: SentPacket = { hdr, payload, segments: chain.segmentCount };
        this.sent.push(p);
        if (this.holdTx) this.held.push(chain);
        else q.push(chain, 0);
        this.onPacket(p);
      }
      if (q.flush()) this.ctx!.interrupt(1);
      if (!q.enableNotifications()) break;
    }
  }

  private deliverRx(): void {
    const q = this.queues[0];
    if (!q) return;
    let n = 0;
    while (this.pendingRx.length > 0) {
      const chain = q.take();
      if (!chain) break;
      const pkt = this.pendingRx.shift()!;
      const w = chain.write(0, pkt, 0, pkt.length);
      q.push(chain, w);
      n++;
    }
    if (n > 0 && q.flush()) this.ctx!.interrupt(0);
  }

  private deliverEvents(): void {
    const q = this.queues[2];
    if (!q) return;
    let n = 0;
    while (this.pendingEvents.length > 0) {
      const chain = q.take();
      if (!chain) break;
      const b = Buffer.alloc(4);
      b.writeUInt32LE(this.pendingEvents.shift()!, 0);
      q.push(chain, chain.write(0, b, 0, 4));
      n++;
    }
    if (n > 0 && q.flush()) this.ctx!.interrupt(2);
  }
}
