// What a device emulator implements, and what it sees of its transport. The same
// device model runs behind the in-process transport (worker thread or same thread)
// and behind the vhost-user backend server (QEMU).
import type { GuestMemory } from '../memory/guest-memory.js';
import type { VirtqueueDevice } from '../virtqueue/queue.js';

export interface DeviceContext {
  /** Guest memory as the device may address it (descriptors carry these addresses). */
  readonly memory: GuestMemory;
  /** Signals "used buffers in queue `index`" to the driver (after flush() said so). */
  interrupt(index: number): void;
}

export interface VirtioDeviceModel {
  readonly name: string;
  readonly deviceId: number;
  /** Features offered, device-specific and ring ones (VERSION_1, EVENT_IDX, INDIRECT_DESC, RING_PACKED). */
  readonly features: bigint;
  readonly numQueues: number;
  readonly maxQueueSize: number;
  /** The device configuration space (read by the driver through the transport). */
  config(): Uint8Array;
  /** The driver accepted `features` (a subset of `features`); memory is mapped. */
  activate(ctx: DeviceContext, features: bigint): void;
  /** Queue `index` is set up and enabled (split or packed: the model need not know which). */
  queueReady(index: number, queue: VirtqueueDevice): void;
  /** Queue `index` was stopped (vhost-user GET_VRING_BASE, reset): drop its ring state. */
  queueStopped(index: number): void;
  /** The driver rang queue `index`'s doorbell. */
  kick(index: number): void;
  /** Device reset: forget every queue and connection. */
  reset(): void;
}
