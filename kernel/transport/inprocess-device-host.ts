// The device side of the in-process transport: holds a device model, builds its
// device-half queues over the shared guest memory, and turns doorbells into kicks.
// Used directly (same thread) or from inprocess-worker.ts (worker thread).
import { GuestMemory, makeRegion } from '../memory/guest-memory.js';
import type { VirtqueueError } from '../virtqueue/errors.js';
import type { VirtqueueDevice } from '../virtqueue/queue.js';
import { deviceQueueFor } from '../virtqueue/ring.js';
import type { VirtioDeviceModel } from './virtio-device.js';

/** Control block (Int32Array over a SharedArrayBuffer) shared by the two sides. */
export const CTRL_DOORBELL_SEQ = 0; // driver -> device: bumped on every notify
export const CTRL_DOORBELL_MASK = 1; // bit q set: queue q was kicked
export const CTRL_IRQ_SEQ = 2; // device -> driver: bumped on every interrupt
export const CTRL_IRQ_MASK = 3; // bit q set: queue q has used buffers
export const CTRL_STOP = 4;
export const CTRL_WORDS = 8;

export interface DeviceDescription {
  name: string;
  deviceId: number;
  features: bigint;
  numQueues: number;
  maxQueueSize: number;
  config: Uint8Array;
}

export function describe(model: VirtioDeviceModel): DeviceDescription {
  return {
    name: model.name,
    deviceId: model.deviceId,
    features: model.features,
    numQueues: model.numQueues,
    maxQueueSize: model.maxQueueSize,
    config: model.config(),
  };
}

export class InProcessDeviceHost {
  private features = 0n;
  private readonly queues: (VirtqueueDevice | null)[];
  readonly errors: VirtqueueError[] = [];

  constructor(
    readonly model: VirtioDeviceModel,
    readonly memory: GuestMemory,
    private readonly ctrl: Int32Array,
    private readonly raise: () => void,
  ) {
    this.queues = new Array<VirtqueueDevice | null>(model.numQueues).fill(null);
  }

  setFeatures(features: bigint): void {
    this.features = features;
    this.model.activate(
      {
        memory: this.memory,
        interrupt: (index: number) => {
          Atomics.or(this.ctrl, CTRL_IRQ_MASK, 1 << index);
          this.raise();
        },
      },
      features,
    );
  }

  setupQueue(index: number, size: number, desc: number, avail: number, used: number): void {
    if (index < 0 || index >= this.queues.length) throw new RangeError(`${this.model.name}: no queue ${index}`);
    // Split or packed, as the driver accepted (virtio 1.2, 2.7 / 2.8).
    const q = deviceQueueFor(this.features, {
      name: `${this.model.name} queue ${index}`,
      index,
      size,
      memory: this.memory,
      descAddr: desc,
      availAddr: avail,
      usedAddr: used,
      onError: (err) => {
        if (this.errors.length < 1000) this.errors.push(err);
      },
    });
    this.queues[index] = q;
    this.model.queueReady(index, q);
    // A doorbell may have rung before this message was processed: kick once.
    this.model.kick(index);
  }

  /** Runs pending kicks (reads and clears the doorbell mask). */
  serviceDoorbells(): void {
    const mask = Atomics.exchange(this.ctrl, CTRL_DOORBELL_MASK, 0);
    for (let q = 0; mask >>> q !== 0 && q < 32; q++) {
      if ((mask & (1 << q)) !== 0 && this.queues[q]) this.model.kick(q);
    }
  }

  reset(): void {
    for (let i = 0; i < this.queues.length; i++) {
      if (this.queues[i]) this.model.queueStopped(i);
      this.queues[i] = null;
    }
    this.model.reset();
  }
}

/** The per-page guest addresses of in-process memory (see scatterPageSize). */
export function inProcessPageAddrs(memoryBytes: number, base: number, pageSize: number | undefined): number[] {
  if (pageSize === undefined) return [base];
  const pages = Math.ceil(memoryBytes / pageSize);
  // Reverse order with a one-page hole between neighbours.
  return Array.from({ length: pages }, (_, i) => base + (pages - 1 - i) * 2 * pageSize);
}

/** Guest memory over the SharedArrayBuffer with the layout of inProcessPageAddrs. */
export function inProcessGuestMemory(sab: SharedArrayBuffer, base: number, pageSize: number | undefined): GuestMemory {
  if (pageSize === undefined) return GuestMemory.fromSharedArrayBuffer(sab, base, 'in-process guest memory');
  const addrs = inProcessPageAddrs(sab.byteLength, base, pageSize);
  return new GuestMemory(addrs.map((addr, i) => makeRegion(`page ${i}`, addr, sab, i * pageSize, Math.min(pageSize, sab.byteLength - i * pageSize))));
}
