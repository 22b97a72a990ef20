// Interrupts in the guest, two ways:
//
// UioIntxInterrupts: a uio device's interrupt line, PCI INTx through uio_pci_generic or a
// virtio-mmio device's level IRQ through uio_pdrv_genirq. The PCI case: the kernel's handler
// (uio_pci_generic.c irqhandler -> pci_check_and_mask_intx) masks INTx by setting the
// command register's Interrupt Disable bit and makes /dev/uioN readable; Node's event
// loop watches that fd (addon watchFd = uv_poll). Per interrupt:
//   1. read the 4-byte event count from the uio fd (clears readability);
//   2. read the virtio ISR through the BAR (virtio 1.2, 4.1.4.5: acknowledges and
//      de-asserts the line);
//   3. unmask INTx: uio_pci_generic has no irqcontrol (a write of 1 to the fd gives
//      ENOSYS), so clear Interrupt Disable (command bit 10) in config space, as DPDK
//      does; with a uio driver that has irqcontrol, the 4-byte write of 1 is used;
//   4. run the driver's handler.
// Acknowledging before unmasking means an interrupt raised meanwhile is not lost: the
// line is asserted again and the kernel signals the fd again.
//
// The platform case (virtio-mmio, 4.2.3.4): uio_pdrv_genirq's handler masks the level
// IRQ (disable_irq) and has irqcontrol, so step 2 reads InterruptStatus and writes it to
// InterruptACK (which lowers the line) and step 3 is the 4-byte write of 1 (enable_irq).
// Such a source is built without a fallback (null): there is no config space to fall
// back to, and a uio driver without irqcontrol is then an error.
//
// With a poll window (pollWindowMs > 0), an interrupt starts a polling phase instead of
// step 3: INTx stays masked (the kernel masked it) and a setImmediate loop runs the
// handler on every turn of the event loop while the device keeps returning buffers
// (the transport's used->idx progress). Once it has been quiet for the window, the
// source acknowledges, unmasks and looks once more before it sleeps on the fd again.
// Under load (a request every few milliseconds) the uio read, the config-space write
// and the kernel's interrupt path are gone from the per-request cost; an idle guest
// still sleeps. Under TCG the config-space write alone costs ~100 µs.
// An event whose acknowledge finds nothing pending starts no polling phase: it is only
// unmasked again. On microvm that is every phase's end: the virtio-mmio IRQs are
// edge-triggered ISA lines (no ACPI: the MP table's defaults), so an edge the device
// raised while uio_pdrv_genirq had the line disabled is latched by the kernel
// (IRQS_PENDING) and replayed by enable_irq, after the source has already acknowledged
// it; polling for it would be a wasted window.
//
// BusyPoll: no interrupts at all; a setImmediate loop runs the handler on every turn of
// the event loop (the driver checks its used rings). For latency measurements: it costs
// a whole CPU.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PciConfigSpace } from '../pci/config-space.js';
import type { InterruptSource } from '../pci/interrupt-source.js';
import type { UioDevice } from '../uio/uio-device.js';
import { type FdWatcher, READABLE, watchFd } from '../native/index.js';

export interface UioIntxOptions {
  /** Keep polling this long after the device last returned buffers (0: interrupts only). */
  pollWindowMs?: number;
}

/** Re-enables the line when the uio driver has no irqcontrol (its write of 1 fails with ENOSYS or EIO). */
export interface UnmaskFallback {
  /** The line's name in descriptions ("INTx"). */
  readonly lineName: string;
  /** Called once by start(), before the first unmask. */
  prepare(): void;
  unmask(): void;
}

/**
 * uio_pci_generic's fallback: clear Interrupt Disable (command bit 10) in config space,
 * as DPDK does. The command register is read once, at start.
 */
export function pciCommandUnmask(config: PciConfigSpace): UnmaskFallback {
  let commandUnmasked = 0;
  return {
    lineName: 'INTx',
    prepare: () => {
      commandUnmasked = config.read16(PCI_COMMAND) & ~PCI_COMMAND_INTX_DISABLE;
    },
    unmask: () => config.write16(PCI_COMMAND, commandUnmasked),
  };
}

export class UioIrqControlError extends Error {
  readonly code = 'ERR_UIO_NO_IRQCONTROL';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UioIrqControlError';
  }
}

export class UioIntxInterrupts implements InterruptSource {
  readonly description: string;
  private fd: number;
  private readonly pollWindowMs: number;
  private pollImmediate: NodeJS.Immediate | null = null;
  private lastProgress = 0;
  private lastActivityMs = 0;
  private acknowledgeFn: () => boolean = () => false;
  private dispatchFn: () => void = () => {};
  private progressFn: () => number = () => 0;
  /** Polling phases begun, and handler runs while polling. */
  pollPhases = 0;
  pollTurns = 0;
  private watcher: FdWatcher | null = null;
  private readonly countBuf = Buffer.alloc(4);
  private readonly onBuf = Buffer.alloc(4);
  private useIrqControl = true;
  private readonly fallback: UnmaskFallback | null;
  /** The kernel's interrupt count at the last event. */
  lastCount = 0;
  /** Events seen on the fd. */
  events = 0;
  /** Events whose ISR was 0 (shared line: another device's interrupt). */
  spurious = 0;

  /**
   * `fallback`: how to unmask when the uio driver has no irqcontrol: a PCI config space
   * (the command register, uio_pci_generic), another UnmaskFallback, or null for none
   * (uio_pdrv_genirq, which has irqcontrol).
   */
  constructor(
    readonly uio: UioDevice,
    fallback: PciConfigSpace | UnmaskFallback | null,
    opts: UioIntxOptions = {},
  ) {
    const w = opts.pollWindowMs ?? 0;
    if (!(w >= 0 && w <= 10_000)) throw new RangeError(`poll window ${w} ms: expected 0..10000`);
    this.pollWindowMs = w;
    this.fallback = fallback instanceof PciConfigSpace ? pciCommandUnmask(fallback) : fallback;
    const line = this.fallback?.lineName ?? 'IRQ';
    this.description = w > 0 ? `${uio.name} ${line}, polling ${w} ms after each` : `${uio.name} ${line}`;
    this.fd = openSync(uio.devPath, 'r+');
    this.onBuf.writeInt32LE(1, 0);
  }

  start(acknowledge: () => boolean, dispatch: () => void, progress?: () => number): void {
    if (this.fd < 0 || this.watcher) throw new Error(`${this.description}: already started or stopped`);
    this.acknowledgeFn = acknowledge;
    this.dispatchFn = dispatch;
    if (progress !== undefined) this.progressFn = progress;
    this.fallback?.prepare();
    this.unmask();
    this.watcher = watchFd(
      this.fd,
      (err) => {
        if (err) throw err;
        this.onReadable(acknowledge, dispatch);
      },
      READABLE,
    );
  }

  private onReadable(acknowledge: () => boolean, dispatch: () => void): void {
    let n: number;
    try {
      n = readSync(this.fd, this.countBuf, 0, 4, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return;
      throw e;
    }
    if (n !== 4) return;
    this.lastCount = this.countBuf.readUInt32LE(0);
    this.events++;
    const ours = acknowledge();
    if (this.pollWindowMs > 0) {
      if (!ours) {
        // Nothing pending (a shared line's other device, or a replayed edge): no polling phase.
        this.spurious++;
        if (this.pollImmediate === null) this.unmask();
        return;
      }
      // Polling from here: INTx stays masked until the device has been quiet a while.
      dispatch();
      if (this.pollImmediate === null) this.beginPolling();
      return;
    }
    this.unmask();
    if (ours) dispatch();
    else this.spurious++;
  }

  private beginPolling(): void {
    this.pollPhases++;
    this.lastProgress = this.progressFn();
    this.lastActivityMs = performance.now();
    this.pollImmediate = setImmediate(this.pollTurn);
  }

  private readonly pollTurn = (): void => {
    this.pollImmediate = null;
    if (this.fd < 0) return;
    this.pollTurns++;
    this.dispatchFn();
    const p = this.progressFn();
    const now = performance.now();
    if (p !== this.lastProgress) {
      this.lastProgress = p;
      this.lastActivityMs = now;
    } else if (now - this.lastActivityMs >= this.pollWindowMs) {
      // Quiet: back to interrupts. Acknowledge what was raised while masked, unmask,
      // then look once more: buffers returned before the unmask raised no interrupt
      // we will see, those after it will.
      this.acknowledgeFn();
      this.unmask();
      this.dispatchFn();
      const after = this.progressFn();
      if (after === this.lastProgress) return;
      this.lastProgress = after;
      this.lastActivityMs = now;
    }
    if (this.fd >= 0) this.pollImmediate = setImmediate(this.pollTurn);
  };

  /** Re-enables the line (step 3 above). */
  private unmask(): void {
    if (this.useIrqControl) {
      try {
        writeSync(this.fd, this.onBuf, 0, 4);
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOSYS' && code !== 'EIO') throw e;
        if (this.fallback === null) {
          throw new UioIrqControlError(`${this.description}: re-enabling the interrupt by writing 1 to ${this.uio.devPath} failed (${code}): the uio driver has no irqcontrol and there is no fallback`, { cause: e });
        }
        this.useIrqControl = false; // uio_pci_generic: no irqcontrol
      }
    }
    this.fallback!.unmask();
  }

  /** True when re-enabling goes through the fallback (the command register with uio_pci_generic). */
  get unmasksThroughConfigSpace(): boolean {
    return !this.useIrqControl;
  }

  stop(): void {
    if (this.pollImmediate !== null) clearImmediate(this.pollImmediate);
    this.pollImmediate = null;
    this.watcher?.stop();
    this.watcher = null;
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

export class BusyPoll implements InterruptSource {
  readonly description = 'busy poll';
  private running = false;
  private immediate: NodeJS.Immediate | null = null;
  /** Handler runs so far. */
  turns = 0;

  start(_acknowledge: () => boolean, dispatch: () => void): void {
    this.running = true;
    const turn = (): void => {
      if (!this.running) return;
      this.turns++;
      dispatch();
      if (this.running) this.immediate = setImmediate(turn);
    };
    this.immediate = setImmediate(turn);
  }

  stop(): void {
    this.running = false;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = null;
  }
}
