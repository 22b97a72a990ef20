// The virtio-mmio transport, version 2 (virtio 1.2, 4.2 "Virtio Over MMIO"), driver side:
// every register access goes through an MmioRegisterWindow (in the guest, the page
// mapped from /dev/uioN of a device bound to uio_pdrv_genirq; in tests, a register-level
// device model). DMA memory with device-visible addresses; interrupts from an
// InterruptSource. It implements VirtioTransport exactly, so drivers run on it unchanged.
//
// Hot paths (notify, interrupt acknowledge) are single 32-bit loads and stores into the
// window from JavaScript: no system call, no N-API call.
//
// Every wait on the device is bounded: a device that never finishes its reset, never
// keeps FEATURES_OK or QueueReady, or whose ConfigGeneration never settles gets an
// error naming it and the register, never a hang.
import type { DmaArena } from '../memory/dma.js';
import { type InterruptSource, startInterrupts } from '../pci/interrupt-source.js';
import { VIRTIO_F_VERSION_1, checkQueueSize, featureBit } from '../virtqueue/layout.js';
import { readConfigStable } from './config-read.js';
import { VirtioMmioError } from './mmio-errors.js';
import {
  MMIO_CONFIG,
  MMIO_CONFIG_BYTES,
  MMIO_CONFIG_GENERATION,
  MMIO_DEVICE_FEATURES,
  MMIO_DEVICE_FEATURES_SEL,
  MMIO_DEVICE_ID,
  MMIO_DRIVER_FEATURES,
  MMIO_DRIVER_FEATURES_SEL,
  MMIO_INTERRUPT_ACK,
  MMIO_INTERRUPT_STATUS,
  MMIO_MAGIC,
  MMIO_MAGIC_VALUE,
  MMIO_QUEUE_DESC_HIGH,
  MMIO_QUEUE_DESC_LOW,
  MMIO_QUEUE_DEVICE_HIGH,
  MMIO_QUEUE_DEVICE_LOW,
  MMIO_QUEUE_DRIVER_HIGH,
  MMIO_QUEUE_DRIVER_LOW,
  MMIO_QUEUE_NOTIFY,
  MMIO_QUEUE_NUM,
  MMIO_QUEUE_NUM_MAX,
  MMIO_QUEUE_READY,
  MMIO_QUEUE_SEL,
  MMIO_STATUS,
  MMIO_VERSION,
  MMIO_VERSION_LEGACY,
  MMIO_VERSION_MODERN,
  type MmioRegisterWindow,
  joinFeatures,
  registerName,
  splitAddress,
  splitFeatures,
} from './mmio-registers.js';
import { UsedProgress } from './used-progress.js';
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
  type VirtioTransport,
} from './virtio-transport.js';

export { VirtioMmioError } from './mmio-errors.js';

/** Reads of Status after writing 0 before giving up (4.2.2.2: wait for Status to read 0 before reinitializing). */
const RESET_POLL_LIMIT = 1_000_000;
/** Config reads retried while ConfigGeneration keeps changing (4.2.2.2, 2.5.1). */
const CONFIG_RETRY_LIMIT = 100;
/**
 * Queues this transport addresses. The spec sets no limit; QEMU (VIRTIO_QUEUE_MAX)
 * ignores a QueueSel of 1024 or more, so a higher index would reach the queue selected
 * before. No device we drive has more than a handful.
 */
export const MMIO_MAX_QUEUES = 1024;

const hex = (n: number): string => '0x' + (n >>> 0).toString(16);

export interface MmioTransportOptions {
  /** The device's registers. The transport closes it (window.close) on close(). */
  window: MmioRegisterWindow;
  /** DMA memory (device-visible addresses) for rings and buffers. */
  dma: DmaArena;
  /** Where interrupts come from; null = none (the driver polls by itself). */
  interrupts: InterruptSource | null;
  /** The device in messages, by its register address: "virtio-mmio@0xfeb00200". */
  name: string;
}

export class MmioTransport implements VirtioTransport {
  readonly kind = 'mmio';
  readonly deviceId: number;
  readonly dma: DmaArena;
  /** Where interrupts come from (null: none). */
  readonly interrupts: InterruptSource | null;
  private readonly w: MmioRegisterWindow;
  private readonly where: string;
  /** Per queue: 1 once enabled (notify refuses others). */
  private readonly enabled = new Uint8Array(MMIO_MAX_QUEUES);
  /** Per queue: QueueNumMax as read, -1 until read. */
  private readonly maxSizes = new Int32Array(MMIO_MAX_QUEUES).fill(-1);
  private readonly used: UsedProgress;
  private handler: () => void = () => {};
  private closed = false;
  /** InterruptStatus seen by the last acknowledge (diagnostics: bit 0 used buffers, bit 1 config change). */
  lastInterruptStatus = 0;
  /** Interrupts acknowledged as ours. */
  interruptCount = 0;

  private constructor(opts: MmioTransportOptions, deviceId: number) {
    this.w = opts.window;
    this.where = opts.name;
    this.dma = opts.dma;
    this.interrupts = opts.interrupts;
    this.deviceId = deviceId;
    this.used = new UsedProgress(opts.dma, MMIO_MAX_QUEUES);
  }

  /**
   * Opens a virtio-mmio device: checks MagicValue, Version and DeviceID (4.2.2.2, 4.2.3.1.1;
   * with DeviceID 0 no other register is touched),
   * resets it and sets ACKNOWLEDGE and DRIVER (3.1.1 steps 1-3), and starts the
   * interrupt source. When it throws, the window and the interrupt source are still the
   * caller's to close.
   */
  static open(opts: MmioTransportOptions): MmioTransport {
    const w = opts.window;
    const magic = w.read32(MMIO_MAGIC_VALUE) >>> 0;
    if (magic !== MMIO_MAGIC) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_DEVICE', `${opts.name}: ${registerName(MMIO_MAGIC_VALUE)} reads ${hex(magic)}, expected ${hex(MMIO_MAGIC)} ("virt"): not a virtio-mmio device`);
    }
    const version = w.read32(MMIO_VERSION) >>> 0;
    if (version === MMIO_VERSION_LEGACY) {
      throw new VirtioMmioError(
        'ERR_VIRTIO_MMIO_DEVICE',
        `${opts.name}: ${registerName(MMIO_VERSION)} reads 1: a legacy virtio-mmio device (4.2.4), and this driver speaks only version 2; start QEMU with -global virtio-mmio.force-legacy=false`,
      );
    }
    if (version !== MMIO_VERSION_MODERN) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_DEVICE', `${opts.name}: ${registerName(MMIO_VERSION)} reads ${version}, expected ${MMIO_VERSION_MODERN}`);
    }
    const deviceId = w.read32(MMIO_DEVICE_ID) >>> 0;
    if (deviceId === 0) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_DEVICE', `${opts.name}: ${registerName(MMIO_DEVICE_ID)} reads 0: empty virtio-mmio slot (no device behind this transport)`);
    }
    const t = new MmioTransport(opts, deviceId);
    t.reset();
    startInterrupts(opts.interrupts, t);
    return t;
  }

  /** "virtio-mmio@0xfeb00200 (device 19)" */
  get name(): string {
    return `${this.where} (device ${this.deviceId})`;
  }

  /** The device status (diagnostics). */
  status(): number {
    return this.w.read32(MMIO_STATUS);
  }

  // ---- VirtioTransport

  /**
   * Resets the device (3.1.1 step 1: write 0 to Status, then wait until it reads back
   * 0), then sets ACKNOWLEDGE and DRIVER (steps 2-3) so features can be read next.
   */
  reset(): void {
    this.checkOpen();
    this.writeZeroAndWait();
    this.enabled.fill(0);
    this.maxSizes.fill(-1);
    this.used.clear();
    this.w.write32(MMIO_STATUS, STATUS_ACKNOWLEDGE);
    this.w.write32(MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  }

  /** All 64 feature bits, 32 at a time through DeviceFeaturesSel (4.2.2). */
  deviceFeatures(): bigint {
    this.checkOpen();
    this.w.write32(MMIO_DEVICE_FEATURES_SEL, 0);
    const low = this.w.read32(MMIO_DEVICE_FEATURES);
    this.w.write32(MMIO_DEVICE_FEATURES_SEL, 1);
    const high = this.w.read32(MMIO_DEVICE_FEATURES);
    return joinFeatures(low, high);
  }

  /** 3.1.1 steps 4-6: write the accepted features through DriverFeaturesSel, set FEATURES_OK, check it stuck. */
  negotiate(driverFeatures: bigint): void {
    this.checkOpen();
    const offered = this.deviceFeatures();
    const extra = driverFeatures & ~offered;
    if (extra !== 0n || driverFeatures < 0n) {
      this.fail();
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_FEATURES', `${this.name}: driver accepted features 0x${extra.toString(16)} that ${registerName(MMIO_DEVICE_FEATURES)} does not offer (0x${offered.toString(16)})`);
    }
    // 6.1: a driver accepts VERSION_1 when offered; without it the device would expect
    // the legacy interface, which version 2 of this transport does not have (4.2.4).
    if ((driverFeatures & featureBit(VIRTIO_F_VERSION_1)) === 0n) {
      this.fail();
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_FEATURES', `${this.name}: VIRTIO_F_VERSION_1 must be accepted (${registerName(MMIO_DRIVER_FEATURES)}) on virtio-mmio version 2`);
    }
    const [low, high] = splitFeatures(driverFeatures);
    this.w.write32(MMIO_DRIVER_FEATURES_SEL, 0);
    this.w.write32(MMIO_DRIVER_FEATURES, low);
    this.w.write32(MMIO_DRIVER_FEATURES_SEL, 1);
    this.w.write32(MMIO_DRIVER_FEATURES, high);
    this.w.write32(MMIO_STATUS, this.w.read32(MMIO_STATUS) | STATUS_FEATURES_OK);
    const status = this.w.read32(MMIO_STATUS);
    if ((status & STATUS_FEATURES_OK) === 0) {
      this.fail();
      throw new VirtioMmioError(
        'ERR_VIRTIO_MMIO_FEATURES',
        `${this.name}: the device did not accept features 0x${driverFeatures.toString(16)}: FEATURES_OK is clear in ${registerName(MMIO_STATUS)} (reads ${hex(status)})`,
      );
    }
  }

  /** QueueNumMax of queue `index` (4.2.3.2 step 3): 0 = no such queue. */
  queueMaxSize(index: number): number {
    this.checkOpen();
    if (!Number.isInteger(index) || index < 0 || index >= MMIO_MAX_QUEUES) return 0;
    if (this.maxSizes[index]! < 0) {
      this.w.write32(MMIO_QUEUE_SEL, index);
      this.maxSizes[index] = Math.min(this.w.read32(MMIO_QUEUE_NUM_MAX) >>> 0, 0x7fffffff);
    }
    return this.maxSizes[index]!;
  }

  /**
   * 4.2.3.2 "Virtqueue Configuration": select the queue, check it is not in use
   * (QueueReady 0) and exists (QueueNumMax), write its size and the three ring addresses
   * (low half, then high half), set QueueReady and check it reads back 1.
   */
  enableQueue(index: number, size: number, descAddr: number, availAddr: number, usedAddr: number): void {
    const max = this.queueMaxSize(index);
    if (max === 0) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', `${this.name}: no queue ${index}: ${registerName(MMIO_QUEUE_NUM_MAX)} reads 0`);
    }
    try {
      checkQueueSize(size, `${this.name}: queue ${index} ${registerName(MMIO_QUEUE_NUM)}`);
    } catch (e) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', (e as Error).message);
    }
    if (size > max) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', `${this.name}: queue ${index} size ${size} exceeds ${registerName(MMIO_QUEUE_NUM_MAX)} ${max}`);
    }
    const rings: ReadonlyArray<readonly [addr: number, low: number, high: number, what: string]> = [
      [descAddr, MMIO_QUEUE_DESC_LOW, MMIO_QUEUE_DESC_HIGH, 'descriptor table'],
      [availAddr, MMIO_QUEUE_DRIVER_LOW, MMIO_QUEUE_DRIVER_HIGH, 'driver area'],
      [usedAddr, MMIO_QUEUE_DEVICE_LOW, MMIO_QUEUE_DEVICE_HIGH, 'device area'],
    ];
    for (const [addr, reg, , what] of rings) {
      if (!Number.isSafeInteger(addr) || addr < 0) {
        throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', `${this.name}: queue ${index} ${what} address ${addr} (${registerName(reg)}) is not a whole number in 0..2^53`);
      }
    }
    const w = this.w;
    w.write32(MMIO_QUEUE_SEL, index);
    const inUse = w.read32(MMIO_QUEUE_READY);
    if (inUse !== 0) {
      this.fail();
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', `${this.name}: queue ${index} is already in use: ${registerName(MMIO_QUEUE_READY)} reads ${inUse} before setup`);
    }
    w.write32(MMIO_QUEUE_NUM, size);
    for (const [addr, low, high] of rings) {
      const [lo, hi] = splitAddress(addr);
      w.write32(low, lo);
      w.write32(high, hi);
    }
    w.write32(MMIO_QUEUE_READY, 1);
    const ready = w.read32(MMIO_QUEUE_READY);
    if (ready !== 1) {
      this.fail();
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', `${this.name}: queue ${index} did not become ready: ${registerName(MMIO_QUEUE_READY)} reads ${ready} after writing 1 (${registerName(MMIO_QUEUE_NUM)} ${size})`);
    }
    this.enabled[index] = 1;
    this.used.watch(index, usedAddr);
  }

  /**
   * The sum of the used->idx of every enabled queue: it changes whenever the device
   * returns buffers, notified or not (a polling interrupt source watches it).
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
    this.w.write32(MMIO_STATUS, this.w.read32(MMIO_STATUS) | STATUS_DRIVER_OK);
  }

  /** Available buffer notification: the queue index written to QueueNotify (4.2.3.3). */
  notify(index: number): void {
    if (this.enabled[index] !== 1) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_QUEUE', `${this.name}: ${registerName(MMIO_QUEUE_NOTIFY)} of queue ${index}, which is not enabled`);
    }
    this.w.write32(MMIO_QUEUE_NOTIFY, index);
  }

  /**
   * Device configuration bytes (Config, 0x100), each access of the field's width and
   * repeated until ConfigGeneration reads the same before and after (4.2.2.2, 2.5.1).
   */
  readConfig(offset: number, length: number): Uint8Array {
    this.checkOpen();
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > MMIO_CONFIG_BYTES) {
      throw new VirtioMmioError('ERR_VIRTIO_MMIO_CONFIG', `${this.name}: config read of ${length} bytes at ${offset} is outside the ${MMIO_CONFIG_BYTES}-byte configuration space (${registerName(MMIO_CONFIG)})`);
    }
    const out = readConfigStable(this.w, () => this.w.read32(MMIO_CONFIG_GENERATION), offset, length, CONFIG_RETRY_LIMIT);
    if (out !== null) return out;
    throw new VirtioMmioError('ERR_VIRTIO_MMIO_CONFIG', `${this.name}: ${registerName(MMIO_CONFIG_GENERATION)} changed during each of ${CONFIG_RETRY_LIMIT} config reads`);
  }

  onInterrupt(handler: () => void): void {
    this.handler = handler;
  }

  /** Stops interrupts, resets the device (it stops using DMA memory), releases the window. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.interrupts?.stop();
    try {
      this.w.write32(MMIO_STATUS, 0);
      for (let n = 0; this.w.read32(MMIO_STATUS) !== 0 && n < RESET_POLL_LIMIT; n++);
    } finally {
      this.closed = true;
      this.w.close?.();
    }
  }

  // ---- interrupts (called by the InterruptSource)

  /**
   * Reads InterruptStatus and writes the bits seen to InterruptACK, which lowers the
   * interrupt line (4.2.3.4). True when the device had something to say: bit 0 used
   * buffers, bit 1 a configuration change.
   */
  acknowledgeInterrupt(): boolean {
    if (this.closed) return false;
    const status = this.w.read32(MMIO_INTERRUPT_STATUS);
    this.lastInterruptStatus = status;
    if (status === 0) return false;
    this.w.write32(MMIO_INTERRUPT_ACK, status);
    this.interruptCount++;
    return true;
  }

  /** Runs the driver's handler (it checks its queues). */
  dispatchInterrupt(): void {
    if (!this.closed) this.handler();
  }

  /** Sets FAILED (3.1.1: "if any of these steps go irrecoverably wrong"). */
  fail(): void {
    if (this.closed) return;
    this.w.write32(MMIO_STATUS, this.w.read32(MMIO_STATUS) | STATUS_FAILED);
  }

  /** Writes 0 to Status and waits, a bounded number of reads, until it reads 0. */
  private writeZeroAndWait(): void {
    this.w.write32(MMIO_STATUS, 0);
    let status = 0;
    for (let n = 0; n < RESET_POLL_LIMIT; n++) {
      status = this.w.read32(MMIO_STATUS);
      if (status === 0) return;
    }
    throw new VirtioMmioError('ERR_VIRTIO_MMIO_DEVICE', `${this.name}: ${registerName(MMIO_STATUS)} still reads ${hex(status)} after writing 0 (reset) and ${RESET_POLL_LIMIT} reads`);
  }

  private checkOpen(): void {
    if (this.closed) throw new VirtioMmioError('ERR_VIRTIO_MMIO_CLOSED', `${this.name}: transport is closed`);
  }
}
