// A simulated guest: no VM, but the daemon cannot tell. Our vhost-user front end
// (kernel/transport/vhost-user-frontend-transport.ts) connects to the daemon's vhost-user
// socket, hands it a memfd as guest RAM and eventfds as doorbells and interrupts, and our
// TypeScript vsock driver runs on it as it would in a guest. A GuestControls wrapper
// between the two lets a guest misbehave on purpose (bad-input phase and tests).
import { VhostUserFrontendTransport } from '../../kernel/transport/vhost-user-frontend-transport.js';
import type { VirtioTransport } from '../../kernel/transport/virtio-transport.js';
import { VsockDriver, type VsockDriverOptions } from '../../drivers/virtio-vsock/driver/driver.js';
import { VIRTIO_ID_VSOCK } from '../../drivers/virtio-vsock/device/vsock-device.js';
import { VSOCK_TX_QUEUE } from '../../drivers/virtio-vsock/header.js';

export interface SimGuestOptions {
  cid: number;
  /** The daemon's vhost-user socket of this VM. */
  socketPath: string;
  /** Guest RAM (the memfd), default 16 MiB: rings, rx buffers and tx slots. */
  memoryBytes?: number;
  driver?: VsockDriverOptions;
}

/** The vsock config space (virtio 1.2, 5.10.4): le64 guest_cid. */
function vsockConfig(cid: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, cid, true);
  return b;
}

/**
 * The transport as the driver sees it, with switches for misbehaving: interrupts can be
 * swallowed (the driver then never takes its used rx buffers back nor posts new ones:
 * the guest stops consuming), and the tx doorbell can be rung in a loop.
 */
export class GuestControls implements VirtioTransport {
  readonly kind: string;
  readonly deviceId: number;
  readonly dma: VirtioTransport['dma'];
  /** Interrupts are dropped while set (setDeaf). */
  private deaf = false;
  private handler: () => void = () => {};
  private kickStorm: NodeJS.Immediate | null = null;
  /** Doorbells rung by kickInLoop(). */
  stormKicks = 0;
  /** Memory tables sent again by remapMemory(). */
  remaps = 0;
  private features = 0n;

  constructor(readonly inner: VhostUserFrontendTransport) {
    this.kind = inner.kind;
    this.deviceId = inner.deviceId;
    this.dma = inner.dma;
  }

  reset(): void {
    this.inner.reset();
  }
  deviceFeatures(): bigint {
    return this.inner.deviceFeatures();
  }
  negotiate(f: bigint): void {
    this.features = f;
    this.inner.negotiate(f);
  }

  /**
   * Sends the memory table again (SET_FEATURES with the same features, SET_MEM_TABLE with
   * a fresh fd of the same memory): the daemon maps it anew and restarts the running rings
   * over the new mapping, as after a memory hot-plug.
   */
  remapMemory(): void {
    this.inner.negotiate(this.features);
    this.remaps++;
  }
  queueMaxSize(i: number): number {
    return this.inner.queueMaxSize(i);
  }
  enableQueue(i: number, size: number, desc: number, avail: number, used: number): void {
    this.inner.enableQueue(i, size, desc, avail, used);
  }
  driverOk(): void {
    this.inner.driverOk();
  }
  notify(i: number): void {
    this.inner.notify(i);
  }
  readConfig(offset: number, length: number): Uint8Array {
    return this.inner.readConfig(offset, length);
  }
  onInterrupt(handler: () => void): void {
    this.handler = handler;
    this.inner.onInterrupt(() => {
      if (!this.deaf) this.handler();
    });
  }

  /**
   * Deaf: interrupts are dropped, so the driver neither takes its used rx buffers back nor
   * posts new ones (the guest stops consuming). Hearing again delivers one interrupt, as
   * an interrupt masked meanwhile is delivered at unmask.
   */
  setDeaf(on: boolean): void {
    const was = this.deaf;
    this.deaf = on;
    if (was && !on) this.handler();
  }

  /** Rings the tx doorbell `perTurn` times every event-loop turn until stopped. */
  kickInLoop(perTurn: number): void {
    if (this.kickStorm !== null) return;
    const turn = (): void => {
      for (let i = 0; i < perTurn; i++) this.inner.notify(VSOCK_TX_QUEUE);
      this.stormKicks += perTurn;
      this.kickStorm = setImmediate(turn);
    };
    turn();
  }

  stopKicking(): void {
    if (this.kickStorm !== null) clearImmediate(this.kickStorm);
    this.kickStorm = null;
  }

  async close(): Promise<void> {
    this.stopKicking();
    await this.inner.close();
  }
}

export class SimGuest {
  private constructor(
    readonly cid: number,
    readonly controls: GuestControls,
    readonly driver: VsockDriver,
  ) {}

  /** Connects to the daemon and starts the driver (the VM attaches once the daemon has read the set-up). */
  static async attach(opts: SimGuestOptions): Promise<SimGuest> {
    const transport = await VhostUserFrontendTransport.connect(opts.socketPath, {
      deviceId: VIRTIO_ID_VSOCK,
      config: vsockConfig(opts.cid),
      numQueues: 3,
      maxQueueSize: 256,
      memoryBytes: opts.memoryBytes ?? 16 << 20,
    });
    const controls = new GuestControls(transport);
    try {
      const driver = await VsockDriver.start(controls, opts.driver ?? {});
      return new SimGuest(opts.cid, controls, driver);
    } catch (e) {
      await controls.close();
      throw e;
    }
  }

  /** Stops the driver in order (the device is stopped: GET_VRING_BASE), then leaves. */
  async detach(): Promise<void> {
    this.driver.close();
    await this.controls.close();
  }

  /**
   * Leaves at once, as a guest that is killed: the front end's socket just closes (the
   * daemon stops the device itself); then this side's connections are dropped.
   */
  async vanish(): Promise<void> {
    await this.controls.close();
    this.driver.close();
  }
}
