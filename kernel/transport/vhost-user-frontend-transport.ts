// A VirtioTransport that plays QEMU's part towards a vhost-user back-end (virtiofsd,
// our own vsock daemon...): guest memory is a memfd this process maps and hands to the
// back-end (SET_MEM_TABLE), doorbells are kick eventfds, interrupts are call eventfds
// watched from the event loop. A driver runs on it unchanged, against a real back-end,
// with no VM. For tests and host-side benchmarks (vhost-user.rst "Front-end").
//
// The configuration space is the caller's (QEMU emulates it for devices such as
// vhost-user-fs, whose tag comes from QEMU's command line, not from the back-end).
// Addresses: guest-physical and front-end user addresses are made equal (the region's
// userspace_addr is its guest address), so ring addresses need no translation.
import { ftruncateSync } from 'node:fs';
import { DmaArena } from '../memory/dma.js';
import * as native from '../native/index.js';
import { VhostUserFrontend } from '../vhost-user/frontend-client.js';
import { ProtocolFeature, VHOST_USER_F_PROTOCOL_FEATURES } from '../vhost-user/protocol.js';
import { FRESH_PACKED_STATE, encodePackedBase } from '../virtqueue/packed-layout.js';
import { ringLayoutOf } from '../virtqueue/ring.js';
import type { VirtioTransport } from './virtio-transport.js';

export interface VhostUserFrontendOptions {
  /** Device id the driver expects (the back-end does not tell). */
  deviceId: number;
  /** The device configuration space the driver reads. */
  config: Uint8Array;
  /** Number of queues and their maximum size. */
  numQueues: number;
  maxQueueSize?: number;
  /** Guest memory bytes (default 64 MiB) and its guest address (default 0x40000000). */
  memoryBytes?: number;
  base?: number;
}

interface QueueFds {
  kick: number;
  call: number;
  watcher: native.FdWatcher;
}

export class VhostUserFrontendTransport implements VirtioTransport {
  readonly kind = 'vhost-user front-end';
  readonly deviceId: number;
  readonly dma: DmaArena;
  private readonly memfd: number;
  private readonly mapping: ArrayBuffer;
  private readonly queues = new Map<number, QueueFds>();
  private handler: () => void = () => {};
  private protocolFeatures = false;
  private negotiated = 0n;
  private closed = false;
  private setupApplied = true;
  private barrierSeq = 0;
  private readonly pendingKicks = new Set<number>();
  private replies: Promise<void> = Promise.resolve();

  private constructor(
    private readonly frontend: VhostUserFrontend,
    private readonly offered: bigint,
    private readonly opts: VhostUserFrontendOptions,
  ) {
    this.deviceId = opts.deviceId;
    const size = opts.memoryBytes ?? 64 << 20;
    const base = opts.base ?? 0x40000000;
    this.memfd = native.memfdCreate('vhost-user-frontend guest memory');
    ftruncateSync(this.memfd, size);
    this.mapping = native.mmap(this.memfd, size);
    this.dma = new DmaArena(this.mapping, { base, name: 'vhost-user front-end memory' });
  }

  /** Connects to the back-end's socket and reads its features. */
  static async connect(socketPath: string, opts: VhostUserFrontendOptions): Promise<VhostUserFrontendTransport> {
    const fe = VhostUserFrontend.connect(socketPath);
    try {
      await fe.setOwner();
      const offered = await fe.getFeatures();
      const t = new VhostUserFrontendTransport(fe, offered, opts);
      if ((offered & (1n << VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
        const pf = await fe.getProtocolFeatures();
        // Only what we use: nothing beyond the basic protocol (REPLY_ACK would make
        // every message wait; MQ, CONFIG... are not needed here).
        await fe.setProtocolFeatures(pf & (1n << ProtocolFeature.MQ));
        t.protocolFeatures = true;
      }
      return t;
    } catch (e) {
      fe.close();
      throw e;
    }
  }

  reset(): void {
    // Stop every running ring (GET_VRING_BASE); its replies are read in the background.
    for (const [index, q] of this.queues) {
      this.frontend.send(11 /* GET_VRING_BASE */, vringState(index, 0));
      this.readOneReply(() => {});
      q.watcher.stop();
      native.close(q.kick);
      native.close(q.call);
    }
    this.queues.clear();
  }

  deviceFeatures(): bigint {
    return this.offered & ~(1n << VHOST_USER_F_PROTOCOL_FEATURES);
  }

  negotiate(driverFeatures: bigint): void {
    if ((driverFeatures & ~this.deviceFeatures()) !== 0n) {
      throw new Error(`vhost-user: driver accepted features 0x${(driverFeatures & ~this.deviceFeatures()).toString(16)} that the back-end does not offer`);
    }
    this.negotiated = driverFeatures;
    const f = driverFeatures | (this.protocolFeatures ? 1n << VHOST_USER_F_PROTOCOL_FEATURES : 0n);
    void this.frontend.setFeatures(f);
    const base = this.dma.addrOfOffset(0);
    void this.frontend.setMemTable([{ guestPhysAddr: base, memorySize: this.dma.size, userspaceAddr: base, mmapOffset: 0 }], [this.memfd]);
  }

  queueMaxSize(index: number): number {
    return index >= 0 && index < this.opts.numQueues ? (this.opts.maxQueueSize ?? 1024) : 0;
  }

  enableQueue(index: number, size: number, descAddr: number, availAddr: number, usedAddr: number): void {
    const kick = native.eventfd(0, true);
    const call = native.eventfd(0, true);
    const fe = this.frontend;
    void fe.setVringNum(index, size);
    void fe.setVringAddr(index, descAddr, usedAddr, availAddr);
    // A fresh ring: split, avail index 0; packed, both positions 0 with wrap counters 1 (virtio 1.2, 2.8.1).
    void fe.setVringBase(index, ringLayoutOf(this.negotiated) === 'packed' ? encodePackedBase(FRESH_PACKED_STATE) : 0);
    // The call fd before the kick fd: SET_VRING_KICK starts the back-end's queue thread,
    // and libvhost-user panics signalling a call fd it does not have yet.
    void fe.setVringCall(index, call);
    void fe.setVringKick(index, kick);
    if (this.protocolFeatures) void fe.setVringEnable(index, true);
    this.barrier();
    const watcher = native.watchFd(call, () => {
      native.eventfdRead(call);
      if (!this.closed) this.handler();
    });
    this.queues.set(index, { kick, call, watcher });
  }

  driverOk(): void {}

  notify(index: number): void {
    if (!this.setupApplied) {
      this.pendingKicks.add(index);
      return;
    }
    const q = this.queues.get(index);
    if (q) native.eventfdWrite(q.kick, 1);
  }

  /**
   * The set-up messages are sent without waiting (this interface is synchronous): a
   * request with a reply (GET_FEATURES) sent after them returns once the back-end has
   * applied them all, and kicks wait until then (a kick racing ahead of SET_VRING_CALL
   * makes the back-end signal a call fd it does not have yet).
   */
  private barrier(): void {
    this.setupApplied = false;
    const seq = ++this.barrierSeq;
    this.frontend.send(1 /* GET_FEATURES */);
    this.readOneReply(() => {
      if (seq !== this.barrierSeq || this.closed) return;
      this.setupApplied = true;
      for (const i of this.pendingKicks) this.notify(i);
      this.pendingKicks.clear();
    });
  }

  /** Replies are read one at a time, in the order their requests were sent. */
  private readOneReply(then: () => void): void {
    this.replies = this.replies.then(() => this.frontend.readReply()).then(then, () => {});
  }

  readConfig(offset: number, length: number): Uint8Array {
    return this.opts.config.slice(offset, offset + length);
  }

  onInterrupt(handler: () => void): void {
    this.handler = handler;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const q of this.queues.values()) {
      q.watcher.stop();
      native.close(q.kick);
      native.close(q.call);
    }
    this.queues.clear();
    this.frontend.close();
    native.close(this.memfd);
    native.munmap(this.mapping);
  }
}

function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return b;
}
