// A virtio-mmio version 2 device at the register level, for tests: an MmioRegisterWindow
// that answers like QEMU's hw/virtio/virtio-mmio.c (features through selectors,
// QueueNumMax per queue, QueueReady, Status with reset, InterruptStatus/ACK,
// ConfigGeneration, Config bytes by width), in front of one of the project's device
// models (VirtioDeviceModel) over SharedArrayBuffer guest memory. The queues, kicks and
// interrupts of the device model go through InProcessDeviceHost, as with the in-process
// transport.
//
// QueueNotify defers the kick (setImmediate), as a vhost-user back end's eventfd would;
// a device interrupt sets InterruptStatus bit 0 and raises the level line, which a
// ModelIrq (below) delivers the way uio_pdrv_genirq does: masked while pending,
// re-enabled by the source after the acknowledge.
//
// Hostile options make it misbehave in the ways a transport must survive.
import { DmaArena } from '../../kernel/memory/dma.js';
import type { InterruptSource } from '../../kernel/pci/interrupt-source.js';
import {
  CTRL_DOORBELL_MASK,
  CTRL_WORDS,
  InProcessDeviceHost,
  inProcessGuestMemory,
  inProcessPageAddrs,
} from '../../kernel/transport/inprocess-device-host.js';
import * as reg from '../../kernel/transport/mmio-registers.js';
import type { VirtioDeviceModel } from '../../kernel/transport/virtio-device.js';
import { STATUS_FEATURES_OK } from '../../kernel/transport/virtio-transport.js';

/** QEMU's VendorID for its virtio-mmio devices ("QEMU"). */
export const QEMU_VENDOR_ID = 0x554d4551;
/** QEMU's VIRTIO_QUEUE_MAX: QueueSel values from here on are ignored. */
const QUEUE_SEL_LIMIT = 1024;

export interface MmioDeviceModelOptions {
  /** Guest memory bytes (default 16 MiB). */
  memoryBytes?: number;
  /** Guest address of its first byte (default 0x1_4000_0000: above 4 GiB, so the High halves matter). */
  base?: number;
  /** Scatter guest memory in pages of this size (see InProcessMemoryOptions). */
  scatterPageSize?: number;
  // ---- hostility
  /** MagicValue (default 0x74726976). */
  magic?: number;
  /** Version (default 2). */
  version?: number;
  /** DeviceID instead of the model's; 0 makes an empty slot (every other register reads 0, writes are ignored). */
  deviceId?: number;
  /** QueueNumMax of each queue (default the model's maxQueueSize for its queues, 0 beyond). */
  queueNumMax?: (index: number) => number;
  /** A QueueNum the device refuses: QueueReady stays 0. */
  rejectQueueNum?: (num: number) => boolean;
  /** false: FEATURES_OK never sticks. */
  featuresOkSticks?: boolean;
  /** false: QueueReady never reads 1. */
  queueReadySticks?: boolean;
  /** false: after a write of 0, Status keeps its old value. */
  resetCompletes?: boolean;
  /** true: ConfigGeneration changes on every read. */
  configGenerationChurns?: boolean;
}

interface QueueRegs {
  num: number;
  ready: number;
  desc: [number, number];
  driver: [number, number];
  device: [number, number];
}

const freshQueue = (): QueueRegs => ({ num: 0, ready: 0, desc: [0, 0], driver: [0, 0], device: [0, 0] });

export class MmioDeviceModel implements reg.MmioRegisterWindow {
  readonly dma: DmaArena;
  readonly host: InProcessDeviceHost;
  /** Every register access that a real device would log as a guest error (bad offset, a write to a read-only register...). */
  readonly guestErrors: string[] = [];
  /** Counts of register reads and writes by offset (QueueNotify writes are the doorbells). */
  readonly reads = new Map<number, number>();
  readonly writes = new Map<number, number>();
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(CTRL_WORDS * 4));
  private readonly deviceId: number;
  private readonly queues: QueueRegs[];
  private hostFeaturesSel = 0;
  private guestFeaturesSel = 0;
  private readonly guestFeatures = [0, 0];
  private queueSel = 0;
  private status = 0;
  private isr = 0;
  private generation = 0;
  private kickScheduled: NodeJS.Immediate | null = null;
  private lineListener: (() => void) | null = null;
  closed = false;

  constructor(
    readonly model: VirtioDeviceModel,
    private readonly opts: MmioDeviceModelOptions = {},
  ) {
    const memory = new SharedArrayBuffer(opts.memoryBytes ?? 16 << 20);
    const base = opts.base ?? 0x1_4000_0000;
    this.dma = new DmaArena(memory, {
      name: 'mmio model dma',
      pageSize: opts.scatterPageSize ?? memory.byteLength,
      pageAddrs: inProcessPageAddrs(memory.byteLength, base, opts.scatterPageSize),
    });
    this.host = new InProcessDeviceHost(model, inProcessGuestMemory(memory, base, opts.scatterPageSize), this.ctrl, () => this.raise(reg.MMIO_INT_VRING));
    this.deviceId = opts.deviceId ?? model.deviceId;
    this.queues = Array.from({ length: model.numQueues }, freshQueue);
  }

  /** The interrupt line: high while InterruptStatus is not 0. */
  get irqLevel(): boolean {
    return this.isr !== 0;
  }

  /** Called whenever the line goes from low to high. */
  onLineRaised(listener: (() => void) | null): void {
    this.lineListener = listener;
  }

  /** The device status byte as the device holds it. */
  get deviceStatus(): number {
    return this.status;
  }

  // ---- MmioRegisterWindow

  read32(offset: number): number {
    this.reads.set(offset, (this.reads.get(offset) ?? 0) + 1);
    if (offset === reg.MMIO_MAGIC_VALUE) return this.opts.magic ?? reg.MMIO_MAGIC;
    if (offset === reg.MMIO_VERSION) return this.opts.version ?? reg.MMIO_VERSION_MODERN;
    if (offset === reg.MMIO_VENDOR_ID) return QEMU_VENDOR_ID;
    // No backend: read-as-zero except the three above (as QEMU).
    if (this.deviceId === 0) return 0;
    switch (offset) {
      case reg.MMIO_DEVICE_ID:
        return this.deviceId;
      case reg.MMIO_DEVICE_FEATURES:
        return this.hostFeaturesSel === 0 ? Number(this.model.features & 0xffffffffn) : this.hostFeaturesSel === 1 ? Number(this.model.features >> 32n) : 0;
      case reg.MMIO_QUEUE_NUM_MAX:
        return this.queueNumMax(this.queueSel);
      case reg.MMIO_QUEUE_READY:
        return this.queues[this.queueSel]?.ready ?? 0;
      case reg.MMIO_INTERRUPT_STATUS:
        return this.isr;
      case reg.MMIO_STATUS:
        return this.status;
      case reg.MMIO_CONFIG_GENERATION:
        if (this.opts.configGenerationChurns) this.generation = (this.generation + 1) >>> 0;
        return this.generation;
      default:
        this.guestErrors.push(`read of ${reg.registerName(offset)}`);
        return 0;
    }
  }

  write32(offset: number, value: number): void {
    this.writes.set(offset, (this.writes.get(offset) ?? 0) + 1);
    if (this.deviceId === 0) return;
    value >>>= 0;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case reg.MMIO_DEVICE_FEATURES_SEL:
        this.hostFeaturesSel = value;
        return;
      case reg.MMIO_DRIVER_FEATURES:
        if (this.guestFeaturesSel < 2) this.guestFeatures[this.guestFeaturesSel] = value;
        return;
      case reg.MMIO_DRIVER_FEATURES_SEL:
        this.guestFeaturesSel = value;
        return;
      case reg.MMIO_QUEUE_SEL:
        if (value < QUEUE_SEL_LIMIT) this.queueSel = value;
        return;
      case reg.MMIO_QUEUE_NUM:
        if (q) q.num = value;
        return;
      case reg.MMIO_QUEUE_READY:
        if (q) this.setQueueReady(this.queueSel, q, value);
        return;
      case reg.MMIO_QUEUE_NOTIFY:
        this.notify(value);
        return;
      case reg.MMIO_INTERRUPT_ACK:
        this.isr &= ~value;
        return;
      case reg.MMIO_STATUS:
        this.setStatus(value & 0xff);
        return;
      case reg.MMIO_QUEUE_DESC_LOW:
      case reg.MMIO_QUEUE_DESC_HIGH:
        if (q) q.desc[offset === reg.MMIO_QUEUE_DESC_LOW ? 0 : 1] = value;
        return;
      case reg.MMIO_QUEUE_DRIVER_LOW:
      case reg.MMIO_QUEUE_DRIVER_HIGH:
        if (q) q.driver[offset === reg.MMIO_QUEUE_DRIVER_LOW ? 0 : 1] = value;
        return;
      case reg.MMIO_QUEUE_DEVICE_LOW:
      case reg.MMIO_QUEUE_DEVICE_HIGH:
        if (q) q.device[offset === reg.MMIO_QUEUE_DEVICE_LOW ? 0 : 1] = value;
        return;
      default:
        this.guestErrors.push(`write of 0x${value.toString(16)} to ${reg.registerName(offset)}`);
    }
  }

  readConfig8(offset: number): number {
    return this.readConfig(offset, 1);
  }
  readConfig16(offset: number): number {
    return this.readConfig(offset, 2);
  }
  readConfig32(offset: number): number {
    return this.readConfig(offset, 4);
  }

  /** The transport is done with the device: it stops (queues dropped, no more kicks). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.kickScheduled) clearImmediate(this.kickScheduled);
    this.kickScheduled = null;
    this.host.reset();
  }

  // ---- device behaviour

  private queueNumMax(index: number): number {
    if (this.opts.queueNumMax) return this.opts.queueNumMax(index);
    return index < this.model.numQueues ? this.model.maxQueueSize : 0;
  }

  /** virtio_mmio_write QUEUE_READY: a ready queue gets its rings and starts. */
  private setQueueReady(index: number, q: QueueRegs, value: number): void {
    if (value === 0) {
      q.ready = 0;
      return;
    }
    if (this.opts.queueReadySticks === false || this.opts.rejectQueueNum?.(q.num)) return;
    if (q.num === 0 || q.num > this.queueNumMax(index)) return;
    try {
      this.host.setupQueue(index, q.num, reg.joinAddress(...q.desc), reg.joinAddress(...q.driver), reg.joinAddress(...q.device));
    } catch (e) {
      this.guestErrors.push(`queue ${index}: ${(e as Error).message}`);
      return;
    }
    q.ready = 1;
  }

  /** virtio_mmio_write STATUS: FEATURES_OK validates the features, 0 resets. */
  private setStatus(value: number): void {
    if (value === 0) {
      if (this.opts.resetCompletes === false) return;
      this.reset();
      return;
    }
    if ((value & STATUS_FEATURES_OK) !== 0 && (this.status & STATUS_FEATURES_OK) === 0) {
      const features = reg.joinFeatures(this.guestFeatures[0]!, this.guestFeatures[1]!);
      if (this.opts.featuresOkSticks === false || (features & ~this.model.features) !== 0n) value &= ~STATUS_FEATURES_OK;
      else this.host.setFeatures(features);
    }
    this.status = value;
  }

  private reset(): void {
    this.status = 0;
    this.isr = 0;
    this.hostFeaturesSel = 0;
    this.guestFeaturesSel = 0;
    this.guestFeatures.fill(0);
    this.queueSel = 0;
    for (let i = 0; i < this.queues.length; i++) this.queues[i] = freshQueue();
    if (this.kickScheduled) clearImmediate(this.kickScheduled);
    this.kickScheduled = null;
    Atomics.store(this.ctrl, CTRL_DOORBELL_MASK, 0);
    this.host.reset();
  }

  private notify(index: number): void {
    if (index >= this.queues.length || this.queues[index]!.ready !== 1) {
      this.guestErrors.push(`QueueNotify of queue ${index}, which is not ready`);
      return;
    }
    Atomics.or(this.ctrl, CTRL_DOORBELL_MASK, 1 << index);
    if (this.kickScheduled !== null) return;
    this.kickScheduled = setImmediate(() => {
      this.kickScheduled = null;
      if (!this.closed) this.host.serviceDoorbells();
    });
  }

  private raise(bits: number): void {
    if (this.closed) return;
    const was = this.isr;
    this.isr |= bits;
    if (was === 0) this.lineListener?.();
  }

  private readConfig(offset: number, width: number): number {
    if (offset % width !== 0 || offset < 0 || offset + width > reg.MMIO_CONFIG_BYTES) {
      this.guestErrors.push(`${width * 8}-bit config read at ${offset}`);
      return 0;
    }
    if (this.deviceId === 0) return 0;
    const cfg = this.model.config();
    // virtio_config_modern_read*: beyond the device's config, all ones.
    if (offset + width > cfg.length) return width === 4 ? 0xffffffff : (1 << (width * 8)) - 1;
    let v = 0;
    for (let i = width - 1; i >= 0; i--) v = v * 256 + cfg[offset + i]!;
    return v;
  }
}

/**
 * The device's level interrupt delivered as uio_pdrv_genirq delivers it: when the line
 * rises the "kernel" masks it and, on a later turn of the event loop, the source runs
 * acknowledge (InterruptStatus -> InterruptACK), re-enables the line (if it is still
 * high, that is a new event), then dispatch.
 */
export class ModelIrq implements InterruptSource {
  readonly description = 'mmio model level IRQ';
  private masked = false;
  private pending: NodeJS.Immediate | null = null;
  private running = false;
  private acknowledge: () => boolean = () => false;
  private dispatch: () => void = () => {};
  /** Events delivered, and those whose acknowledge said "not ours". */
  events = 0;
  spurious = 0;

  constructor(private readonly device: MmioDeviceModel) {}

  start(acknowledge: () => boolean, dispatch: () => void): void {
    this.acknowledge = acknowledge;
    this.dispatch = dispatch;
    this.running = true;
    this.device.onLineRaised(() => this.fire());
    if (this.device.irqLevel) this.fire();
  }

  stop(): void {
    this.running = false;
    this.device.onLineRaised(null);
    if (this.pending) clearImmediate(this.pending);
    this.pending = null;
  }

  private fire(): void {
    if (!this.running || this.masked) return;
    this.masked = true; // disable_irq in the handler
    this.pending = setImmediate(() => {
      this.pending = null;
      if (!this.running) return;
      this.events++;
      const ours = this.acknowledge();
      this.masked = false; // irqcontrol: enable_irq
      if (this.device.irqLevel) this.fire();
      if (ours) this.dispatch();
      else this.spurious++;
    });
  }
}
