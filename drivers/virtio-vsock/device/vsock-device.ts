// The virtio socket device (virtio 1.2, 5.10), device side: queue processing and
// notifications. Packets and connections are the muxer's job (muxer.ts,
// connection.ts); host programs use `device.host` (host-api.ts).
//
// Queues (5.10.2): 0 rx (device -> guest), 1 tx (guest -> device), 2 event. The event
// queue is optional here: QEMU's vhost-user-vsock keeps it and hands a back end rings
// 0 and 1 only, so transportReset() then resets the connections without an event.
import type { DeviceContext, VirtioDeviceModel } from '../../../kernel/transport/virtio-device.js';
import type { VirtqueueDevice } from '../../../kernel/virtqueue/device-queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureBit } from '../../../kernel/virtqueue/layout.js';
import {
  VIRTIO_VSOCK_F_SEQPACKET,
  VIRTIO_VSOCK_F_STREAM,
  VSOCK_EVENT_QUEUE,
  VSOCK_EVENT_SIZE,
  VSOCK_EVENT_TRANSPORT_RESET,
  VSOCK_RX_QUEUE,
  VSOCK_TX_QUEUE,
} from '../header.js';
import { TURN_SHARE_ALONE, type TurnShare, VSOCK_MAX_QUEUE_SIZE } from './constants.js';
import type { VsockHost } from './host-api.js';
import { HeldTxChains } from './held-chains.js';
import { VsockMuxer } from './muxer.js';
import type { PacketTap } from './packet-tap.js';
import type { SiblingRouter } from './sibling-router.js';
import { countDrop, makeStats, type VsockDeviceStats, type VsockLog } from './stats.js';

function checkBufAlloc(v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 4096 || v > 64 * 1024 * 1024) throw new RangeError(`vsock device: bufAlloc ${String(v)} is not an integer in 4096..67108864 bytes`);
  return v;
}

/** virtio device id of the socket device (5.10.1). */
export const VIRTIO_ID_VSOCK = 19;

export interface VsockDeviceOptions {
  /** The guest's CID (3 .. 0xfffffffe; 0, 1, 2 and 0xffffffff are reserved, 5.10.4). */
  guestCid: number;
  /** Where dropped packets and other anomalies are reported (rate-limited). */
  log?: VsockLog;
  /** Largest queue size offered (default 256). */
  maxQueueSize?: number;
  /** Open connections allowed before guest REQUESTs get RST (default 4096). */
  maxConnections?: number;
  /** Called when `attached` changes (the driver started or stopped the rx and tx queues). */
  onAttachedChange?: (attached: boolean) => void;
  /** Offer the packed ring layout, VIRTIO_F_RING_PACKED (default true; false: split rings only). */
  packed?: boolean;
  /** Host-to-guest bytes queued over all connections before host writers wait (default HOST_TO_GUEST_VM_LIMIT_BYTES). */
  hostToGuestLimit?: number;
  /** Offer VIRTIO_VSOCK_F_SEQPACKET (default true). */
  seqpacket?: boolean;
  /**
   * Sibling routing: this guest joins `router` with `groups` and reaches the guests that
   * share a group with it (sibling-router.ts). No router, or no groups: only the host.
   */
  router?: SiblingRouter<VsockMuxer>;
  groups?: readonly string[];
  /**
   * The receive window each connection advertises to the guest (buf_alloc, 5.10.6.3):
   * what the host side may hold per connection. Default CONN_BUF_ALLOC_BYTES (256 KiB);
   * 4 KiB .. 64 MiB.
   */
  bufAlloc?: number;
  /**
   * Work per event-loop turn before the device yields (constants.ts): TURN_SHARE_ALONE by
   * default; TURN_SHARE_SHARED when other VMs' devices run on the same loop.
   */
  turnShare?: Readonly<TurnShare>;
}

export class VsockDevice implements VirtioDeviceModel {
  readonly name = 'virtio-vsock';
  readonly deviceId = VIRTIO_ID_VSOCK;
  readonly features: bigint;
  readonly numQueues = 3;
  readonly maxQueueSize: number;
  /** Work per event-loop turn (VsockDeviceOptions.turnShare). */
  readonly turnShare: Readonly<TurnShare>;
  readonly stats: VsockDeviceStats = makeStats();
  /** Host-side API: listen, connect, listenAny. */
  readonly host: VsockHost;

  private readonly muxer: VsockMuxer;
  private readonly log: VsockLog | undefined;
  private ctx: DeviceContext | null = null;
  private readonly queues: (VirtqueueDevice | null)[] = [null, null, null];
  private rxScheduled = false;
  private txScheduled = false;
  private transportResetPending = false;
  private wasAttached = false;
  private readonly onAttachedChange: ((attached: boolean) => void) | undefined;
  private readonly leaveRouter: (() => void) | null;
  /** Tx chains whose payload host readers use as views (held-chains.ts). */
  private readonly held = new HeldTxChains(() => this.scheduleTxFlush());
  private txFlushScheduled = false;
  /** Inside run(): a fill asked for now is scheduled instead (no re-entry). */
  private running = false;

  constructor(opts: VsockDeviceOptions) {
    const cid = opts.guestCid;
    if (!Number.isInteger(cid) || cid < 3 || cid > 0xfffffffe) {
      throw new RangeError(`vsock device: guest CID ${String(cid)} is reserved or out of range (3..4294967294)`);
    }
    this.log = opts.log;
    this.maxQueueSize = opts.maxQueueSize ?? VSOCK_MAX_QUEUE_SIZE;
    this.turnShare = opts.turnShare ?? TURN_SHARE_ALONE;
    this.muxer = new VsockMuxer({
      guestCid: cid,
      stats: this.stats,
      log: opts.log,
      wake: () => this.scheduleRx(),
      wakeNow: () => {
        if (this.running) this.scheduleRx();
        else this.run(VSOCK_RX_QUEUE);
      },
      maxConnections: opts.maxConnections,
      hostToGuestLimit: opts.hostToGuestLimit,
      router: opts.router,
      bufAlloc: checkBufAlloc(opts.bufAlloc),
    });
    this.muxer.heldChains = this.held;
    this.leaveRouter = opts.router !== undefined ? opts.router.join(this.muxer, opts.groups ?? []) : null;
    this.host = this.muxer;
    this.onAttachedChange = opts.onAttachedChange;
    // Either ring layout (virtio 1.2, 2.7 / 2.8): the queues are the same to this model.
    this.features =
      featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_VSOCK_F_STREAM) |
      (opts.seqpacket === false ? 0n : featureBit(VIRTIO_VSOCK_F_SEQPACKET)) |
      (opts.packed === false ? 0n : featureBit(VIRTIO_F_RING_PACKED));
  }

  /**
   * True while a driver has the rx and tx queues running (vhost-user: a front end is
   * connected and the guest's driver started the device). Host connects made meanwhile
   * could not be answered: the host ends refuse them at once.
   */
  get attached(): boolean {
    return this.queues[VSOCK_RX_QUEUE] !== null && this.queues[VSOCK_TX_QUEUE] !== null;
  }

  /** Sees every packet the device moves (packet-tap.ts): pcap capture, debug log. */
  get tap(): PacketTap | null {
    return this.muxer.tap;
  }

  set tap(t: PacketTap | null) {
    this.muxer.tap = t;
  }

  get guestCid(): number {
    return this.muxer.guestCid;
  }

  /** Open connections (any state). */
  get connections(): number {
    return this.muxer.connections;
  }

  /** Bytes held on the host side over all connections, both directions. */
  get hostBufferedBytes(): number {
    return this.muxer.hostBufferedBytes;
  }

  /** Host-to-guest bytes queued in the connections, waiting for the guest (bounded per VM: hostToGuestLimit). */
  get hostToGuestQueuedBytes(): number {
    return this.muxer.hostToGuestQueued;
  }

  /** Guest tx chains held now for host readers of views (returned when they are done). */
  get heldTxChains(): number {
    return this.held.count;
  }

  /** Configuration space (5.10.4): le64 guest_cid. */
  config(): Uint8Array {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint32(0, this.muxer.guestCid, true);
    v.setUint32(4, 0, true);
    return b;
  }

  activate(ctx: DeviceContext, features: bigint): void {
    this.ctx = ctx;
    this.muxer.seqpacket = (features & featureBit(VIRTIO_VSOCK_F_SEQPACKET)) !== 0n;
  }

  /** VIRTIO_VSOCK_F_SEQPACKET was negotiated. */
  get seqpacket(): boolean {
    return this.muxer.seqpacket;
  }

  /** Connections with sibling guests, and the bytes from siblings waiting for rx buffers. */
  get siblingConnections(): number {
    return this.muxer.siblingConnections;
  }

  get siblingQueuedBytes(): number {
    return this.muxer.siblingQueuedBytes;
  }

  /** Leaves the sibling router (the daemon drops this VM); siblings' connections to it get RST. */
  dispose(): void {
    this.muxer.resetSiblings();
    this.leaveRouter?.();
  }

  queueReady(index: number, queue: VirtqueueDevice): void {
    if (index < 0 || index >= this.numQueues) return;
    const previous = queue.onError;
    queue.onError = (err) => {
      previous(err);
      countDrop(this.stats, this.log, 'queueError', `${err.code}: ${err.message}`);
    };
    this.queues[index] = queue;
    if (index === VSOCK_TX_QUEUE) this.held.attach(queue);
    this.noteAttached();
  }

  queueStopped(index: number): void {
    if (index < 0 || index >= this.numQueues) return;
    if (index === VSOCK_TX_QUEUE) {
      // Held chains go back to the guest with the stopping ring, so it finds them when the
      // ring runs again; the readers still using their bytes lose the connection.
      if (this.held.stopHolding(this.queues[index]) > 0) this.muxer.resetViewHolders('the tx ring stopped while the host read guest memory');
    }
    this.queues[index] = null;
    this.noteAttached();
  }

  private noteAttached(): void {
    const now = this.attached;
    if (now === this.wasAttached) return;
    this.wasAttached = now;
    this.muxer.reachable = now;
    // A guest that stops its queues is gone for its siblings: their connections get RST.
    if (!now) this.muxer.resetSiblings();
    this.onAttachedChange?.(now);
  }

  /** The driver's notification (counted per queue). */
  kick(index: number): void {
    if (index === VSOCK_TX_QUEUE) this.stats.kicks.tx++;
    else if (index === VSOCK_RX_QUEUE) this.stats.kicks.rx++;
    else if (index === VSOCK_EVENT_QUEUE) this.stats.kicks.event++;
    this.run(index);
  }

  /** Processes queue `index` (a kick, or work the device scheduled itself). */
  private run(index: number): void {
    const outer = this.running;
    this.running = true;
    try {
      if (index === VSOCK_TX_QUEUE) this.processTx();
      else if (index === VSOCK_RX_QUEUE) this.processRx();
      else if (index === VSOCK_EVENT_QUEUE) this.deliverTransportReset();
    } catch (e) {
      // A bug, not guest input: keep the device alive.
      countDrop(this.stats, this.log, 'internalError', `kick(${index}): ${(e as Error).stack ?? String(e)}`);
    } finally {
      this.running = outer;
    }
  }

  /**
   * Tells the guest that all connections are gone (5.10.6.6, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET):
   * host sockets get ECONNRESET, then the event goes to the event queue (or, when the
   * guest has no event buffer yet, as soon as it gives one). Returns true when the
   * event was delivered now.
   */
  transportReset(): boolean {
    this.muxer.resetAll('transport reset');
    this.transportResetPending = true;
    return this.deliverTransportReset();
  }

  reset(): void {
    this.held.stopHolding(null); // the rings are gone: nothing to return
    this.muxer.resetAll('device reset');
    this.queues.fill(null);
    this.transportResetPending = false;
    this.noteAttached();
  }

  private interrupt(index: number): void {
    if (this.ctx === null) return;
    if (index === VSOCK_TX_QUEUE) this.stats.interrupts.tx++;
    else if (index === VSOCK_RX_QUEUE) this.stats.interrupts.rx++;
    else this.stats.interrupts.event++;
    this.ctx.interrupt(index);
  }

  // ---- Queue processing ---------------------------------------------------------------

  private processTx(): void {
    const q = this.queues[VSOCK_TX_QUEUE];
    if (!q) return;
    let handled = 0;
    let bytes = 0;
    let pushed = 0;
    q.disableNotifications();
    for (;;) {
      let chain;
      while ((chain = q.take()) !== null) {
        bytes += chain.readableLength;
        try {
          this.muxer.onTxChain(chain);
        } catch (e) {
          countDrop(this.stats, this.log, 'internalError', `tx packet: ${(e as Error).stack ?? String(e)}`);
        }
        // A chain held for a reader of views goes back when the reader is done (held-chains.ts).
        if (!this.held.takeHeld(chain)) {
          q.push(chain, 0); // tx buffers are device-readable only (5.10.6.2)
          pushed++;
        } else this.stats.txChainsHeld++;
        if (++handled >= this.turnShare.txChains || bytes >= this.turnShare.txBytes) break;
      }
      // This VM's share of the turn is used: the rest waits for the next one (constants.ts).
      if (handled >= this.turnShare.txChains || bytes >= this.turnShare.txBytes) {
        this.scheduleTx();
        break;
      }
      // Re-enable, then look again: a chain added in between would otherwise wait for a
      // kick that the driver did not send.
      if (!q.enableNotifications()) break;
    }
    if (pushed > 0 && q.flush()) this.interrupt(VSOCK_TX_QUEUE);
    // Answers (RESPONSE, RST, CREDIT_UPDATE) go out in the same batch.
    this.processRx();
  }

  private processRx(): void {
    const q = this.queues[VSOCK_RX_QUEUE];
    if (!q) return;
    const pushed = this.muxer.fillRx(q, this.turnShare);
    if (pushed > 0 && q.flush()) this.interrupt(VSOCK_RX_QUEUE);
    // Packets left after this turn's share (constants.ts): the next turn writes them.
    if (this.muxer.turnSpent) this.scheduleRx();
  }

  private deliverTransportReset(): boolean {
    if (!this.transportResetPending) return false;
    const q = this.queues[VSOCK_EVENT_QUEUE];
    if (!q) {
      // No event queue (vhost-user: QEMU owns it): the reset stays local.
      this.transportResetPending = false;
      this.stats.eventsDropped++;
      return false;
    }
    let refused = 0;
    for (;;) {
      const chain = q.take();
      if (chain === null) {
        if (q.enableNotifications()) continue;
        if (refused > 0 && q.flush()) this.interrupt(VSOCK_EVENT_QUEUE);
        return false; // delivered on the next event-queue kick
      }
      if (chain.writableLength < VSOCK_EVENT_SIZE) {
        countDrop(this.stats, this.log, 'rxBufferTooShort', `event chain of ${chain.writableLength} writable bytes`);
        q.push(chain, 0);
        refused++;
        continue;
      }
      const ev = new Uint8Array(VSOCK_EVENT_SIZE);
      new DataView(ev.buffer).setUint32(0, VSOCK_EVENT_TRANSPORT_RESET, true);
      chain.write(0, ev, 0, VSOCK_EVENT_SIZE);
      q.push(chain, VSOCK_EVENT_SIZE);
      this.transportResetPending = false;
      this.stats.eventsSent++;
      if (q.flush()) this.interrupt(VSOCK_EVENT_QUEUE);
      return true;
    }
  }

  /** Publishes tx chains that readers of views finished, once per batch of releases. */
  private scheduleTxFlush(): void {
    if (this.txFlushScheduled) return;
    this.txFlushScheduled = true;
    queueMicrotask(() => {
      this.txFlushScheduled = false;
      const q = this.queues[VSOCK_TX_QUEUE];
      if (q && q.flush()) this.interrupt(VSOCK_TX_QUEUE);
    });
  }

  private scheduleRx(): void {
    if (this.rxScheduled) return;
    this.rxScheduled = true;
    setImmediate(() => {
      this.rxScheduled = false;
      this.run(VSOCK_RX_QUEUE);
    });
  }

  private scheduleTx(): void {
    if (this.txScheduled) return;
    this.txScheduled = true;
    setImmediate(() => {
      this.txScheduled = false;
      this.run(VSOCK_TX_QUEUE);
    });
  }
}
