// The in-process transport: driver and device in one Node process, guest memory a
// SharedArrayBuffer. The device runs either in a worker thread (real concurrency,
// Atomics for ordering, Atomics.notify/waitAsync as doorbell and interrupt line) or in
// the same thread (deterministic, for unit tests and level-0 benchmarks).
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import { DmaArena } from '../memory/dma.js';
import {
  CTRL_DOORBELL_MASK,
  CTRL_DOORBELL_SEQ,
  CTRL_IRQ_MASK,
  CTRL_IRQ_SEQ,
  CTRL_STOP,
  CTRL_WORDS,
  type DeviceDescription,
  InProcessDeviceHost,
  describe,
  inProcessGuestMemory,
  inProcessPageAddrs,
} from './inprocess-device-host.js';
import type { VirtioDeviceModel } from './virtio-device.js';
import type { VirtioTransport } from './virtio-transport.js';
import type { WorkerInit } from './inprocess-worker.js';

export interface InProcessMemoryOptions {
  /** Guest memory size in bytes (default 64 MiB). */
  memoryBytes?: number;
  /** Guest-physical address of its first byte (default 0x40000000: never 0, so address/offset mix-ups fail). */
  base?: number;
  /**
   * Lay guest memory out as pages of this size at scrambled, non-adjacent guest
   * addresses (as hugepages are): catches code that assumes a DMA buffer is contiguous
   * in device address space beyond its page. Default: one contiguous region.
   */
  scatterPageSize?: number;
}

export interface WorkerDeviceSpec {
  /** Module URL or absolute path (file:// URL preferred) exporting the factory. */
  module: string | URL;
  /** Export name of the DeviceFactory (default 'createDevice'). */
  exportName?: string;
  /** Options handed to the factory (structured-cloneable). */
  options?: unknown;
}

const DEFAULT_MEMORY = 64 * 1024 * 1024;
const DEFAULT_BASE = 0x40000000;

export class InProcessTransport extends EventEmitter implements VirtioTransport {
  readonly kind: string;
  readonly deviceId: number;
  readonly dma: DmaArena;
  readonly memory: SharedArrayBuffer;
  readonly base: number;
  private readonly ctrl: Int32Array;
  private handler: () => void = () => {};
  private closed = false;
  private irqSeen = 0;
  private pendingSameThread = false;

  private constructor(
    kind: 'worker' | 'same-thread',
    private readonly desc: DeviceDescription,
    memory: SharedArrayBuffer,
    base: number,
    ctrl: SharedArrayBuffer,
    pageSize: number | undefined,
    private readonly toDevice: (m: object) => void,
    private readonly stopDevice: () => Promise<void>,
    readonly sameThreadHost: InProcessDeviceHost | null,
  ) {
    super();
    this.kind = `in-process (${kind})`;
    this.deviceId = desc.deviceId;
    this.memory = memory;
    this.base = base;
    this.ctrl = new Int32Array(ctrl);
    this.dma = new DmaArena(memory, {
      name: 'in-process dma',
      pageSize: pageSize ?? memory.byteLength,
      pageAddrs: inProcessPageAddrs(memory.byteLength, base, pageSize),
    });
  }

  /** Device model in this thread: doorbells and interrupts are deferred with setImmediate. */
  static sameThread(model: VirtioDeviceModel, opts: InProcessMemoryOptions = {}): InProcessTransport {
    const memory = new SharedArrayBuffer(opts.memoryBytes ?? DEFAULT_MEMORY);
    const base = opts.base ?? DEFAULT_BASE;
    const ctrlSab = new SharedArrayBuffer(CTRL_WORDS * 4);
    const ctrl = new Int32Array(ctrlSab);
    let t: InProcessTransport | null = null;
    let irqScheduled = false;
    const host = new InProcessDeviceHost(model, inProcessGuestMemory(memory, base, opts.scatterPageSize), ctrl, () => {
      if (irqScheduled) return;
      irqScheduled = true;
      setImmediate(() => {
        irqScheduled = false;
        t?.deliverInterrupt();
      });
    });
    const toDevice = (m: object): void => {
      const c = m as { type: string; features?: bigint; index?: number; size?: number; desc?: number; avail?: number; used?: number };
      if (c.type === 'features') host.setFeatures(c.features!);
      else if (c.type === 'queue') host.setupQueue(c.index!, c.size!, c.desc!, c.avail!, c.used!);
      else if (c.type === 'reset') host.reset();
    };
    t = new InProcessTransport('same-thread', describe(model), memory, base, ctrlSab, opts.scatterPageSize, toDevice, async () => host.reset(), host);
    return t;
  }

  /** Device model in a worker thread, loaded from `spec.module`. */
  static async worker(spec: WorkerDeviceSpec, opts: InProcessMemoryOptions = {}): Promise<InProcessTransport> {
    const memory = new SharedArrayBuffer(opts.memoryBytes ?? DEFAULT_MEMORY);
    const base = opts.base ?? DEFAULT_BASE;
    const ctrlSab = new SharedArrayBuffer(CTRL_WORDS * 4);
    const init: WorkerInit = {
      memory,
      base,
      ctrl: ctrlSab,
      module: spec.module instanceof URL ? spec.module.href : spec.module,
      exportName: spec.exportName ?? 'createDevice',
      options: spec.options,
      scatterPageSize: opts.scatterPageSize,
    };
    const worker = new Worker(new URL('./inprocess-worker.js', import.meta.url), { workerData: init });
    const desc = await new Promise<DeviceDescription>((resolve, reject) => {
      const onMsg = (m: { type: string; description?: DeviceDescription; message?: string }): void => {
        if (m.type === 'ready') {
          worker.off('message', onMsg);
          worker.off('error', reject);
          resolve(m.description!);
        } else if (m.type === 'error') {
          reject(new Error(`device worker failed to start: ${m.message}`));
        }
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
    });
    let exited = false;
    const exitPromise = new Promise<void>((resolve) => worker.once('exit', () => {
      exited = true;
      resolve();
    }));
    const t = new InProcessTransport(
      'worker',
      desc,
      memory,
      base,
      ctrlSab,
      opts.scatterPageSize,
      (m) => worker.postMessage(m),
      async () => {
        if (exited) return;
        const ctrl = new Int32Array(ctrlSab);
        Atomics.store(ctrl, CTRL_STOP, 1);
        Atomics.add(ctrl, CTRL_DOORBELL_SEQ, 1);
        Atomics.notify(ctrl, CTRL_DOORBELL_SEQ);
        const timer = setTimeout(() => void worker.terminate(), 2000);
        await exitPromise;
        clearTimeout(timer);
      },
      null,
    );
    worker.on('message', (m: { type: string; message?: unknown; stack?: string }) => {
      if (m.type === 'user') t.emit('device-message', m.message);
      else if (m.type === 'error') t.emit('error', Object.assign(new Error(`device worker: ${String(m.message)}`), { stack: m.stack }));
    });
    worker.on('error', (e) => t.emit('error', e));
    t.waitForInterrupts();
    return t;
  }

  /** A message for the device module's env.onMessage handler (worker mode). */
  postToDevice(message: unknown): void {
    this.toDevice({ type: 'user', message });
  }

  // ---- VirtioTransport

  reset(): void {
    this.toDevice({ type: 'reset' });
  }

  deviceFeatures(): bigint {
    return this.desc.features;
  }

  negotiate(driverFeatures: bigint): void {
    if ((driverFeatures & ~this.desc.features) !== 0n) {
      throw new Error(`${this.desc.name}: driver accepted features 0x${(driverFeatures & ~this.desc.features).toString(16)} that the device does not offer`);
    }
    this.toDevice({ type: 'features', features: driverFeatures });
  }

  queueMaxSize(index: number): number {
    return index >= 0 && index < this.desc.numQueues ? this.desc.maxQueueSize : 0;
  }

  enableQueue(index: number, size: number, descAddr: number, availAddr: number, usedAddr: number): void {
    this.toDevice({ type: 'queue', index, size, desc: descAddr, avail: availAddr, used: usedAddr });
  }

  driverOk(): void {}

  notify(index: number): void {
    Atomics.or(this.ctrl, CTRL_DOORBELL_MASK, 1 << index);
    if (this.sameThreadHost) {
      if (this.pendingSameThread) return;
      this.pendingSameThread = true;
      const host = this.sameThreadHost;
      setImmediate(() => {
        this.pendingSameThread = false;
        if (!this.closed) host.serviceDoorbells();
      });
      return;
    }
    Atomics.add(this.ctrl, CTRL_DOORBELL_SEQ, 1);
    Atomics.notify(this.ctrl, CTRL_DOORBELL_SEQ);
  }

  readConfig(offset: number, length: number): Uint8Array {
    return this.desc.config.slice(offset, offset + length);
  }

  onInterrupt(handler: () => void): void {
    this.handler = handler;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.add(this.ctrl, CTRL_IRQ_SEQ, 1);
    Atomics.notify(this.ctrl, CTRL_IRQ_SEQ);
    await this.stopDevice();
  }

  private deliverInterrupt(): void {
    if (this.closed) return;
    Atomics.exchange(this.ctrl, CTRL_IRQ_MASK, 0);
    this.handler();
  }

  private waitForInterrupts(): void {
    const loop = async (): Promise<void> => {
      this.irqSeen = Atomics.load(this.ctrl, CTRL_IRQ_SEQ);
      while (!this.closed) {
        const w = Atomics.waitAsync(this.ctrl, CTRL_IRQ_SEQ, this.irqSeen);
        if (w.async) await w.value;
        this.irqSeen = Atomics.load(this.ctrl, CTRL_IRQ_SEQ);
        if (this.closed) break;
        try {
          this.deliverInterrupt();
        } catch (e) {
          this.emit('error', e);
        }
      }
    };
    void loop();
  }
}
