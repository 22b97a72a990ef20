// What a driver sees of its device: the transport interface. A driver written against
// it runs unchanged on the in-process transport (tests, level-1 benchmarks) and on
// virtio modern PCI in the guest. Names follow the virtio 1.2 "basic facilities"
// (section 2) and the device initialization sequence (3.1.1).
import type { DmaArena } from '../memory/dma.js';

export interface VirtioTransport {
  /** 'in-process', 'pci', ... (diagnostics only: drivers must not branch on it). */
  readonly kind: string;
  /** The virtio device id (19 = socket device, 26 = file system device). */
  readonly deviceId: number;
  /** Memory the driver allocates its rings and buffers from. */
  readonly dma: DmaArena;

  /** Writes status 0: the device forgets everything (3.1.1 step 1). */
  reset(): void;
  /** The features the device offers (all 64 bits). */
  deviceFeatures(): bigint;
  /**
   * Writes the driver's accepted features and sets FEATURES_OK; throws when the device
   * does not keep FEATURES_OK set (3.1.1 steps 5-6).
   */
  negotiate(driverFeatures: bigint): void;
  /** Largest size the device allows for queue `index` (0 = no such queue). */
  queueMaxSize(index: number): number;
  /** Tells the device where queue `index` lives and enables it (4.1.5.1.3). */
  enableQueue(index: number, size: number, descAddr: number, availAddr: number, usedAddr: number): void;
  /** Sets DRIVER_OK: the device is live (3.1.1 step 8). */
  driverOk(): void;
  /** Rings queue `index`'s doorbell. */
  notify(index: number): void;
  /**
   * For transports that watch their queues' progress (usedProgress(), read by polling
   * interrupt sources): queue `index` has no used index at a fixed address (a packed
   * ring, virtio 1.2 2.8), `progress` says when the device returns buffers instead.
   */
  watchQueueProgress?(index: number, progress: () => number): void;
  /** Reads `length` bytes of the device configuration space from `offset` (a copy). */
  readConfig(offset: number, length: number): Uint8Array;
  /**
   * Sets the handler that runs (on the driver's thread) when the device signals used
   * buffers or a configuration change. One handler for all queues: the driver checks
   * each of its queues.
   */
  onInterrupt(handler: () => void): void;
  /** Stops delivering interrupts and releases what the transport holds. */
  close(): Promise<void>;
}

/** Device status bits (2.1). */
export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_DEVICE_NEEDS_RESET = 64;
export const STATUS_FAILED = 128;
