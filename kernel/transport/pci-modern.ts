// The virtio modern PCI transport (virtio 1.2, 4.1 "Virtio Over PCI Bus"), driven from
// user space: config space through sysfs, register blocks through mapped BARs, DMA memory
// with physical addresses (no IOMMU: IOVA = physical address), interrupts from an
// InterruptSource (uio INTx, or busy polling). It implements VirtioTransport exactly, so
// drivers run on it unchanged.
//
// Hot paths (notify, interrupt acknowledge) are single loads and stores into the mapped
// BAR from JavaScript: no system call, no N-API call.
import type { DmaArena } from '../memory/dma.js';
import { type InterruptSource, startInterrupts } from '../pci/interrupt-source.js';
import type { PciFunction } from '../pci/pci-function.js';
import { VIRTIO_F_VERSION_1, checkQueueSize, featureBit } from '../virtqueue/layout.js';
import {
  BarViews,
  COMMON_QUEUE_DESC,
  COMMON_QUEUE_DEVICE,
  COMMON_QUEUE_DRIVER,
  COMMON_QUEUE_ENABLE,
  COMMON_QUEUE_NOTIFY_OFF,
  COMMON_QUEUE_SELECT,
  COMMON_QUEUE_SIZE,
  CommonCfg,
  checkRegion,
} from './pci-common-cfg.js';
import { type ConfigReader, readConfigStable } from './config-read.js';
import { VIRTIO_PCI_MODERN_DEVICE_BASE, VIRTIO_PCI_VENDOR, type VirtioPciLayout, parseVirtioCaps } from './pci-virtio-caps.js';
import { UsedProgress } from './used-progress.js';
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
  type VirtioTransport,
} from './virtio-transport.js';

/** ISR status bits (4.1.4.5). */
export const VIRTIO_ISR_QUEUE = 1;
export const VIRTIO_ISR_CONFIG = 2;

/** Reads of device_status after a reset before giving up (4.1.4.3.2: wait for 0). */
const RESET_POLL_LIMIT = 1_000_000;
/** Config reads retried while config_generation keeps changing (4.1.4.3.1). */
const CONFIG_RETRY_LIMIT = 100;

export class VirtioPciError extends Error {
  constructor(
    readonly code: 'ERR_VIRTIO_PCI_DEVICE' | 'ERR_VIRTIO_PCI_FEATURES' | 'ERR_VIRTIO_PCI_QUEUE' | 'ERR_VIRTIO_PCI_CONFIG' | 'ERR_VIRTIO_PCI_CLOSED',
    message: string,
  ) {
    super(message);
    this.name = 'VirtioPciError';
  }
}

export interface PciModernTransportOptions {
  /** DMA memory (physical addresses) for rings and buffers. */
  dma: DmaArena;
  /** Where interrupts come from; null = none (the driver polls by itself). */
  interrupts: InterruptSource | null;
}

/**
 * The virtio device id of a virtio PCI function (4.1.2.1): 0x1040 + id for modern
 * devices; transitional ones (0x1000..0x103f) carry it in the subsystem device id.
 */
export function virtioDeviceIdOf(fn: PciFunction): number {
  const { vendorId, deviceId } = fn.info;
  if (vendorId !== VIRTIO_PCI_VENDOR) throw new VirtioPciError('ERR_VIRTIO_PCI_DEVICE', `${fn.address}: vendor 0x${vendorId.toString(16)} is not virtio (0x1af4)`);
  if (deviceId >= VIRTIO_PCI_MODERN_DEVICE_BASE && deviceId <= 0x107f) return deviceId - VIRTIO_PCI_MODERN_DEVICE_BASE;
  if (deviceId >= 0x1000 && deviceId <= 0x103f) return fn.config.read16(0x2e);
  throw new VirtioPciError('ERR_VIRTIO_PCI_DEVICE', `${fn.address}: device id 0x${deviceId.toString(16)} is not a virtio device id`);
}

export class PciModernTransport implements VirtioTransport {
  readonly kind = 'pci';
  readonly deviceId: number;
  readonly dma: DmaArena;
  readonly layout: VirtioPciLayout;
  private readonly common: CommonCfg;
  private readonly notifyU16: Uint16Array;
  private readonly isrU8: Uint8Array;
  private readonly isrIndex: number;
  private readonly deviceCfg: ConfigReader | null;
  private readonly numQueues: number;
  /** Per queue: index into notifyU16 of its doorbell, -1 until the queue is enabled. */
  private readonly doorbells: Int32Array;
  private readonly maxSizes: Int32Array;
  private handler: () => void = () => {};
  private closed = false;
  /** The used->idx of each enabled queue, summed for usedProgress(). */
  private readonly used: UsedProgress;
  /** ISR bits seen by the last acknowledge (diagnostics). */
  lastIsr = 0;
  /** Interrupts acknowledged as ours. */
  interruptCount = 0;

  private constructor(
    readonly fn: PciFunction,
    /** Where interrupts come from (null: none). */
    readonly interrupts: InterruptSource | null,
    dma: DmaArena,
  ) {
    this.dma = dma;
    this.deviceId = virtioDeviceIdOf(fn);
    const snapshot = fn.configSnapshot();
    this.layout = parseVirtioCaps(snapshot, fn.capabilities());
    const views = new Map<number, BarViews>();
    const viewsOf = (bar: number): BarViews => {
      let v = views.get(bar);
      if (v === undefined) {
        v = new BarViews(fn.bar(bar).buffer);
        views.set(bar, v);
      }
      return v;
    };
    const { common, notify, isr, device } = this.layout;
    this.common = new CommonCfg(viewsOf(common.bar), common);
    const nv = viewsOf(notify.bar);
    checkRegion(notify, nv.buffer.byteLength, 2, 'notification');
    this.notifyU16 = nv.u16;
    const iv = viewsOf(isr.bar);
    checkRegion(isr, iv.buffer.byteLength, 1, 'ISR');
    this.isrU8 = iv.u8;
    this.isrIndex = isr.offset;
    if (device) {
      const dv = viewsOf(device.bar);
      checkRegion(device, dv.buffer.byteLength, 4, 'device configuration');
      const base = device.offset;
      this.deviceCfg = {
        readConfig8: (off) => dv.u8[base + off]!,
        readConfig16: (off) => dv.u16[(base + off) >>> 1]!,
        readConfig32: (off) => dv.u32[(base + off) >>> 2]!,
      };
    } else {
      this.deviceCfg = null;
    }
    this.numQueues = this.common.numQueues;
    this.doorbells = new Int32Array(this.numQueues).fill(-1);
    this.maxSizes = new Int32Array(this.numQueues).fill(-1);
    this.used = new UsedProgress(dma, this.numQueues);
  }

  /**
   * Opens a modern virtio PCI function: maps its register blocks, turns on memory
   * decoding and bus mastering, resets the device and sets ACKNOWLEDGE and DRIVER
   * (3.1.1 steps 1-3), and starts the interrupt source.
   */
  static open(fn: PciFunction, opts: PciModernTransportOptions): PciModernTransport {
    const t = new PciModernTransport(fn, opts.interrupts, opts.dma);
    fn.config.enableMemoryAndBusMastering();
    t.reset();
    startInterrupts(opts.interrupts, t);
    return t;
  }

  get name(): string {
    return `virtio-pci ${this.fn.address} (device ${this.deviceId})`;
  }

  /** The device status byte (diagnostics). */
  status(): number {
    return this.common.status;
  }

  // ---- VirtioTransport

  /**
   * Resets the device (3.1.1 step 1; 4.1.4.3.2: write 0, then wait until it reads back
   * 0), then sets ACKNOWLEDGE and DRIVER (steps 2-3) so features can be read next.
   */
  reset(): void {
    this.checkOpen();
    this.common.status = 0;
    let n = 0;
    while (this.common.status !== 0) {
      if (++n > RESET_POLL_LIMIT) throw new VirtioPciError('ERR_VIRTIO_PCI_DEVICE', `${this.name}: device_status did not return to 0 after reset`);
    }
    this.doorbells.fill(-1);
    this.maxSizes.fill(-1);
    this.common.status = STATUS_ACKNOWLEDGE;
    this.common.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
  }

  deviceFeatures(): bigint {
    this.checkOpen();
    return this.common.deviceFeatures();
  }

  /** 3.1.1 steps 4-6: write the accepted features, set FEATURES_OK, check it stuck. */
  negotiate(driverFeatures: bigint): void {
    this.checkOpen();
    const offered = this.common.deviceFeatures();
    const extra = driverFeatures & ~offered;
    if (extra !== 0n) {
      this.fail();
      throw new VirtioPciError('ERR_VIRTIO_PCI_FEATURES', `${this.name}: driver accepted features 0x${extra.toString(16)} that the device does not offer (0x${offered.toString(16)})`);
    }
    // 4.1.2.3 / 6.1: a driver of a modern PCI device accepts VERSION_1.
    if ((driverFeatures & featureBit(VIRTIO_F_VERSION_1)) === 0n) {
      this.fail();
      throw new VirtioPciError('ERR_VIRTIO_PCI_FEATURES', `${this.name}: VIRTIO_F_VERSION_1 must be accepted on the modern PCI transport`);
    }
    this.common.writeDriverFeatures(driverFeatures);
    this.common.status = this.common.status | STATUS_FEATURES_OK;
    if ((this.common.status & STATUS_FEATURES_OK) === 0) {
      this.fail();
      throw new VirtioPciError('ERR_VIRTIO_PCI_FEATURES', `${this.name}: the device did not accept features 0x${driverFeatures.toString(16)} (FEATURES_OK cleared)`);
    }
  }

  queueMaxSize(index: number): number {
    this.checkOpen();
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) return 0;
    if (this.maxSizes[index]! < 0) {
      this.common.write16(COMMON_QUEUE_SELECT, index);
      this.maxSizes[index] = this.common.read16(COMMON_QUEUE_SIZE);
    }
    return this.maxSizes[index]!;
  }

  /** 4.1.5.1.3: select, size, ring addresses, notify offset, enable. */
  enableQueue(index: number, size: number, descAddr: number, availAddr: number, usedAddr: number): void {
    const max = this.queueMaxSize(index);
    if (max === 0) throw new VirtioPciError('ERR_VIRTIO_PCI_QUEUE', `${this.name}: no queue ${index} (the device has ${this.numQueues})`);
    checkQueueSize(size, `${this.name} queue ${index}`);
    if (size > max) throw new VirtioPciError('ERR_VIRTIO_PCI_QUEUE', `${this.name}: queue ${index} size ${size} exceeds the device's maximum ${max}`);
    const c = this.common;
    c.write16(COMMON_QUEUE_SELECT, index);
    c.write16(COMMON_QUEUE_SIZE, size);
    c.write64(COMMON_QUEUE_DESC, descAddr);
    c.write64(COMMON_QUEUE_DRIVER, availAddr);
    c.write64(COMMON_QUEUE_DEVICE, usedAddr);
    // 4.1.4.4: the doorbell is at cap.offset + queue_notify_off * notify_off_multiplier.
    const { notify } = this.layout;
    const off = notify.offset + c.read16(COMMON_QUEUE_NOTIFY_OFF) * notify.multiplier;
    if (off + 2 > notify.offset + notify.length) {
      this.fail();
      throw new VirtioPciError('ERR_VIRTIO_PCI_QUEUE', `${this.name}: queue ${index} doorbell at 0x${off.toString(16)} lies outside the notification block`);
    }
    c.write16(COMMON_QUEUE_ENABLE, 1);
    if (c.read16(COMMON_QUEUE_ENABLE) !== 1) {
      this.fail();
      throw new VirtioPciError('ERR_VIRTIO_PCI_QUEUE', `${this.name}: queue ${index} did not become enabled`);
    }
    this.doorbells[index] = off >>> 1;
    this.used.watch(index, usedAddr);
  }

  /**
   * The sum of the used->idx of every enabled queue: it changes whenever the device
   * returns buffers, notified or not. A polling interrupt source reads it to tell a
   * busy device from an idle one without touching the device.
   */
  usedProgress(): number {
    return this.used.sum();
  }

  /** A packed queue's progress (no used->idx in memory): usedProgress() includes it. */
  watchQueueProgress(index: number, progress: () => number): void {
    this.used.watchFn(index, progress);
  }

  driverOk(): void {
    this.checkOpen();
    this.common.status = this.common.status | STATUS_DRIVER_OK;
  }

  /** Rings the doorbell: the queue index as le16 at the queue's notify address (4.1.5.2). */
  notify(index: number): void {
    const at = this.doorbells[index];
    if (at === undefined || at < 0) throw new VirtioPciError('ERR_VIRTIO_PCI_QUEUE', `${this.name}: notify of queue ${index}, which is not enabled`);
    this.notifyU16[at] = index;
  }

  /**
   * Device configuration bytes, read with the widest aligned accesses that fit and
   * repeated until config_generation is the same before and after (4.1.4.3.1, 2.5.1).
   */
  readConfig(offset: number, length: number): Uint8Array {
    this.checkOpen();
    const region = this.layout.device;
    const cfg = this.deviceCfg;
    if (region === null || cfg === null) throw new VirtioPciError('ERR_VIRTIO_PCI_CONFIG', `${this.name}: the device has no configuration space`);
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > region.length) {
      throw new VirtioPciError('ERR_VIRTIO_PCI_CONFIG', `${this.name}: config read of ${length} bytes at ${offset} is outside the ${region.length}-byte configuration space`);
    }
    const out = readConfigStable(cfg, () => this.common.configGeneration, offset, length, CONFIG_RETRY_LIMIT);
    if (out !== null) return out;
    throw new VirtioPciError('ERR_VIRTIO_PCI_CONFIG', `${this.name}: config_generation kept changing over ${CONFIG_RETRY_LIMIT} reads`);
  }

  onInterrupt(handler: () => void): void {
    this.handler = handler;
  }

  /** Stops interrupts, resets the device (it stops using DMA memory), turns bus mastering off, unmaps. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.interrupts?.stop();
    try {
      this.common.status = 0;
      for (let n = 0; this.common.status !== 0 && n < RESET_POLL_LIMIT; n++);
      this.fn.config.disableBusMastering();
    } finally {
      this.closed = true;
      this.fn.close();
    }
  }

  // ---- interrupts (called by the InterruptSource)

  /**
   * Reads the ISR status byte (4.1.4.5): reading it clears it and de-asserts INTx.
   * True when the device had something to say (a queue or a configuration change).
   */
  acknowledgeInterrupt(): boolean {
    if (this.closed) return false;
    const isr = this.isrU8[this.isrIndex]!;
    this.lastIsr = isr;
    if (isr !== 0) this.interruptCount++;
    return isr !== 0;
  }

  /** Runs the driver's handler (it checks its queues). */
  dispatchInterrupt(): void {
    if (!this.closed) this.handler();
  }

  /** Sets FAILED (3.1.1 step "if any of these steps go irrecoverably wrong"). */
  fail(): void {
    if (this.closed) return;
    this.common.status = this.common.status | STATUS_FAILED;
  }

  private checkOpen(): void {
    if (this.closed) throw new VirtioPciError('ERR_VIRTIO_PCI_CLOSED', `${this.name}: transport is closed`);
  }
}
