// The boot sequence of an appliance running as the only program in the guest (the
// image's /init started `node /app/main.js`, and powers off when it exits):
//   1. panic handlers: an uncaught error or rejection prints "PANIC: ..." and exits
//      non-zero (after resetting the devices, so none keeps writing into memory);
//   2. DMA memory: hugepages with physical addresses;
//   (with tsvirtio.snapshot=1 on the kernel command line: the snapshot point, resume.ts;
//   the VM is saved there and restored, and its devices are then hotplugged on PCI)
//   3. devices on request: find by virtio device id on whichever bus the machine has
//      (virtio-mmio platform devices on microvm: bind to uio_pdrv_genirq, open the
//      virtio-mmio transport; PCI on q35: bind to uio_pci_generic, open the modern PCI
//      transport), with uio interrupts (or busy polling);
//   4. the appliance's main; its return value is the exit status;
//   (node's code is locked in RAM at the start, or once a server listens: BootOptions.lockCode)
//   5. close the transports (device reset, bus mastering off), release DMA memory, exit.
import { existsSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { claimVirtioMmioDevice, isVirtioMmioDeviceName } from '../platform/index.js';
import { findPciDevices, hex4, pciIdString } from '../pci/devices.js';
import { PciError } from '../pci/errors.js';
import type { InterruptSource } from '../pci/interrupt-source.js';
import { PciFunction } from '../pci/pci-function.js';
import { UIO_PCI_GENERIC_DIR, bindToUioPciGeneric } from '../pci/uio-bind.js';
import { MmioTransport } from '../transport/mmio.js';
import { PciModernTransport } from '../transport/pci-modern.js';
import { VIRTIO_PCI_MODERN_DEVICE_BASE, VIRTIO_PCI_VENDOR } from '../transport/pci-virtio-caps.js';
import { lockCodeInMemory } from './code-lock.js';
import { type HugepageDma, allocateHugepageDma } from './hugepage-dma.js';
import { BusyPoll, UioIntxInterrupts } from './interrupts.js';
import { RESUME_ENTROPY_BYTES, formatResumeLine, parseResumeLine, snapshotRequested } from './resume-line.js';
import { waitForResume } from './resume.js';

/** Exit status after a panic (EX_SOFTWARE). */
export const PANIC_STATUS = 70;

export type InterruptMode = 'uio' | 'poll' | 'none';

export interface OpenDeviceOptions {
  /** Which of several matching functions (default 0). */
  index?: number;
  /** Interrupt delivery (default 'uio'). */
  interrupts?: InterruptMode;
  /** With 'uio': poll this long after the device last returned buffers before re-arming INTx (default 0: never poll). */
  pollWindowMs?: number;
}

/** A device's transport in the guest: virtio-mmio (microvm) or modern PCI (q35). */
export type GuestTransport = MmioTransport | PciModernTransport;

/** Which bus the guest's virtio devices sit on: virtio-mmio platform devices when there are any, else PCI. */
export function virtioBus(sysfsRoot = '/sys'): 'mmio' | 'pci' {
  const dir = `${sysfsRoot}/bus/platform/devices`;
  return existsSync(dir) && readdirSync(dir).some(isVirtioMmioDeviceName) ? 'mmio' : 'pci';
}

/** The console marker of a boot stage: `tsvirtio-stage: <name> <seconds since the kernel started>`. */
export const STAGE_MARKER = 'tsvirtio-stage:';

/**
 * Seconds since the guest kernel started, from CLOCK_MONOTONIC (process.hrtime), which
 * Linux starts at 0 during boot; finer than /proc/uptime's hundredths.
 */
export function secondsSinceKernelStart(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

/** Set once fd 1 refused a write (EAGAIN): lines then go through process.stdout, in order. */
let consoleViaStream = false;

/**
 * Writes a line to the console (fd 1, the serial console in the guest) at once.
 * Not process.stdout: its first use builds a tty stream (loading node:tty and node:net),
 * which took about a tenth of the appliance's boot in a cold guest under TCG. A console
 * write is synchronous either way, so lines keep their order with process.stdout's.
 */
export function consoleLine(line: string): void {
  if (consoleViaStream) {
    process.stdout.write(`${line}\n`);
    return;
  }
  const bytes = Buffer.from(`${line}\n`);
  let off = 0;
  while (off < bytes.length) {
    try {
      off += writeSync(1, bytes, off);
    } catch (e) {
      // A non-blocking pipe that is full: from now on node's stream, which queues (in order).
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      consoleViaStream = true;
      process.stdout.write(bytes.subarray(off));
      return;
    }
  }
}

/** Prints a boot stage marker (the host's boot timeline reads these; see appliance/run/boot-stages.ts). */
export function markStage(name: string, atSeconds = secondsSinceKernelStart()): void {
  consoleLine(`${STAGE_MARKER} ${name} ${atSeconds.toFixed(3)}`);
}

export interface BootContext {
  /** DMA memory shared by every device opened here. */
  readonly dma: HugepageDma;
  /** Arguments after the program name (from the kernel command line). */
  readonly args: readonly string[];
  /**
   * Binds the `index`th virtio device with this virtio device id to uio and opens its
   * transport (virtio-mmio on microvm, modern PCI on q35). Drivers take either as a
   * VirtioTransport.
   */
  openVirtioDevice(virtioDeviceId: number, opts?: OpenDeviceOptions): GuestTransport;
  /** A line on the serial console, prefixed with the appliance name. */
  log(message: string): void;
  /** Marks a boot stage on the console (e.g. 'devices-ready', 'listening'). */
  stage(name: string): void;
}

export interface BootOptions {
  /** 2 MiB DMA pages to allocate (default 4; the image reserves hugepages=N). */
  dmaPages?: number;
  /**
   * When node's code is locked in RAM (code-lock.ts): 'start' (default) before anything
   * else; 'after-listening' for a program that marks the 'listening' stage (a server):
   * LOCK_AFTER_LISTENING_MS after that mark, so its first requests are served first, or
   * LOCK_FALLBACK_MS after the start if the mark never comes.
   */
  lockCode?: 'start' | 'after-listening';
}

/**
 * How long the code lock waits after 'listening'. Locking walks every resident page of
 * node's ~86 MB of mappings in the kernel: 100-250 ms in a cold guest under TCG, which
 * was on the way from launch to the appliance's first response.
 */
export const LOCK_AFTER_LISTENING_MS = 500;
/** ... and at the latest this long after the program started (a slow, loaded guest may take several seconds to listen). */
export const LOCK_FALLBACK_MS = 30_000;

/**
 * How long a restored guest waits for a hotplugged device to show up on PCI. Under TCG
 * it took 0.2 s; a loaded host can take many times that.
 */
export const HOTPLUG_WAIT_MS = 30_000;

/** How long a hotplugged function may stay without a driver before it is bound by hand (bindVirtioPciOnArrival). */
const AUTO_BIND_WAIT_MS = 1000;

/**
 * The virtio PCI functions with this device id, once there are more than `index` and the
 * `index`th has its driver (the kernel binds it as it enumerates it; polled every 2 ms, up
 * to HOTPLUG_WAIT_MS; one still unbound after AUTO_BIND_WAIT_MS is returned as it is).
 */
function waitForPciDevice(pciId: number, index: number): ReturnType<typeof findPciDevices> {
  const t0 = performance.now();
  let seenAt: number | null = null;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const found = findPciDevices(VIRTIO_PCI_VENDOR, pciId);
    const dev = found[index];
    const now = performance.now();
    if (dev !== undefined) seenAt ??= now;
    if ((dev !== undefined && (dev.driver !== null || now - seenAt! > AUTO_BIND_WAIT_MS)) || now - t0 > HOTPLUG_WAIT_MS) return found;
    Atomics.wait(nap, 0, 0, 2);
  }
}

/**
 * Runs, before the VM is saved, the JavaScript a restored guest runs first (parsing the
 * resume line, looking for PCI devices), so that its regular expressions, inline caches
 * and compiled code are in the saved heap. A restored QEMU translates every guest
 * instruction afresh; V8 compiling them too had doubled the resume step (60-80 ms more).
 */
function warmResumePath(): void {
  parseResumeLine(formatResumeLine(Date.now(), Buffer.alloc(RESUME_ENTROPY_BYTES)).trimEnd());
  findPciDevices(VIRTIO_PCI_VENDOR, VIRTIO_PCI_MODERN_DEVICE_BASE);
}

/**
 * Before the VM is saved: every virtio PCI function that shows up later is bound to
 * uio_pci_generic by the kernel as it enumerates it (new_id "1af4 ffffffff": any device
 * of the vendor; our kernel has no virtio-pci driver to take one), rather than by a
 * sysfs write of ours once the hotplugged device is there (40-60 ms, the first time, in
 * a restored guest).
 */
function bindVirtioPciOnArrival(): void {
  try {
    writeFileSync(`${UIO_PCI_GENERIC_DIR}/new_id`, `${hex4(VIRTIO_PCI_VENDOR)} ffffffff`);
  } catch (e) {
    // EEXIST: already registered (a second boot() in one guest). Anything else: the
    // devices are bound one by one when opened, as on a cold boot.
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') consoleLine(`boot: uio_pci_generic new_id failed (${(e as Error).message}): devices are bound when opened`);
  }
}

function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}${'code' in e && e.code ? ` [${String(e.code)}]` : ''}: ${e.message}\n${e.stack?.split('\n').slice(1).join('\n') ?? ''}`;
  return String(e);
}

/**
 * Runs `main` as the appliance and exits with its status (0 when it returns nothing).
 * Never returns normally: the process exits.
 */
export function boot(name: string, main: (ctx: BootContext) => Promise<number | void> | number | void, opts: BootOptions = {}): void {
  const transports: GuestTransport[] = [];
  /** PCI addresses and platform device names of the open devices: one transport per device. */
  const opened = new Set<string>();
  let dma: HugepageDma | null = null;
  const log = (m: string): void => consoleLine(`${name}: ${m}`);
  let exiting = false;
  /** The pending code lock (BootOptions.lockCode), null once done or when locked at the start. */
  let lockTimer: NodeJS.Timeout | null = null;
  const lockCode = (): void => {
    lockTimer = null;
    const t0 = performance.now();
    try {
      const r = lockCodeInMemory(); // see code-lock.ts: out of memory must reach the OOM killer, not thrash
      log(`code locked in RAM: ${r.mappings} read-only file mappings, ${(r.bytes / 1048576).toFixed(1)} MiB, in ${(performance.now() - t0).toFixed(0)} ms`);
    } catch (e) {
      log(`locking node's code in RAM failed (${(e as Error).message}): under memory pressure the guest may thrash instead of reaching the OOM killer`);
    }
  };

  const shutdown = async (): Promise<void> => {
    for (const t of transports.splice(0).reverse()) {
      try {
        await t.close();
      } catch (e) {
        log(`closing ${t.name} failed: ${(e as Error).message}`);
      }
    }
    dma?.release();
    dma = null;
  };

  const panic = (what: string, e: unknown): void => {
    consoleLine(`PANIC: ${name}: ${what}: ${describeError(e)}`);
    if (exiting) process.exit(PANIC_STATUS);
    exiting = true;
    // Stop every device synchronously (status 0 = reset) before memory goes away.
    for (const t of transports) {
      try {
        t.fail();
      } catch {
        /* keep going */
      }
    }
    shutdown().finally(() => process.exit(PANIC_STATUS));
  };
  process.on('uncaughtException', (e) => panic('uncaught exception', e));
  process.on('unhandledRejection', (e) => panic('unhandled rejection', e));

  const start = async (): Promise<number> => {
    const mainLoaded = performance.now();
    const now = secondsSinceKernelStart();
    const nodeStarted = now - process.uptime();
    markStage('node-start', nodeStarted);
    markStage('program-loaded', now);
    log(`node started ${nodeStarted.toFixed(2)} s after the kernel (node ${process.version}), program loaded ${mainLoaded.toFixed(0)} ms after node started, args ${JSON.stringify(process.argv.slice(2))}`);
    if (opts.lockCode !== 'after-listening') lockCode();
    else lockTimer = setTimeout(lockCode, LOCK_FALLBACK_MS).unref();
    const dmaStart = performance.now();
    dma = allocateHugepageDma({ pages: opts.dmaPages ?? 4, name: `${name} dma` });
    markStage('dma-ready');
    log(`dma: ${dma.physAddrs.length} hugepages of 2 MiB at physical ${dma.physAddrs.map((a) => '0x' + a.toString(16)).join(', ')} in ${(performance.now() - dmaStart).toFixed(0)} ms (${performance.now().toFixed(0)} ms after node started)`);
    const dmaRef = dma;
    // A VM snapshot (resume.ts): the state is saved here, before any device is open; the
    // devices come afterwards, hotplugged on PCI.
    const restorable = snapshotRequested(readFileSync('/proc/cmdline', 'utf8'));
    if (restorable) {
      warmResumePath();
      bindVirtioPciOnArrival();
      markStage('snapshot-ready');
      waitForResume({ log });
      markStage('resumed');
    }
    let hotplugSeen = false;
    const ctx: BootContext = {
      dma: dmaRef,
      args: process.argv.slice(2),
      log,
      stage: (n) => {
        markStage(n);
        if (n === 'listening' && lockTimer !== null) {
          clearTimeout(lockTimer);
          lockTimer = setTimeout(lockCode, LOCK_AFTER_LISTENING_MS).unref();
        }
      },
      openVirtioDevice(virtioDeviceId, o = {}) {
        const mode = o.interrupts ?? 'uio';
        if (!restorable && virtioBus() === 'mmio') {
          const dev = claimVirtioMmioDevice(virtioDeviceId, { index: o.index ?? 0 });
          if (opened.has(dev.device.name)) {
            dev.window.close?.();
            throw new PciError('ERR_PCI_BIND', `${dev.name} is already open: one transport per device`);
          }
          const interrupts: InterruptSource | null = mode === 'uio' ? new UioIntxInterrupts(dev.uio, null, { pollWindowMs: o.pollWindowMs }) : mode === 'poll' ? new BusyPoll() : null;
          const t = MmioTransport.open({ window: dev.window, dma: dmaRef.arena, interrupts, name: dev.name });
          transports.push(t);
          opened.add(dev.device.name);
          log(`${dev.device.name} ${dev.name} -> ${dev.uio.devPath}, virtio device ${t.deviceId}, interrupts: ${interrupts?.description ?? 'none'} (${performance.now().toFixed(0)} ms after node started)`);
          return t;
        }
        const pciId = VIRTIO_PCI_MODERN_DEVICE_BASE + virtioDeviceId;
        const found = restorable ? waitForPciDevice(pciId, o.index ?? 0) : findPciDevices(VIRTIO_PCI_VENDOR, pciId);
        const info = found[o.index ?? 0];
        if (restorable && info !== undefined && !hotplugSeen) {
          hotplugSeen = true;
          markStage('hotplugged');
        }
        if (info === undefined) {
          const waited = restorable ? ` after waiting ${HOTPLUG_WAIT_MS / 1000} s for the host to hotplug it` : '';
          throw new PciError('ERR_PCI_NO_DEVICE', `no virtio device ${virtioDeviceId} (PCI ${pciIdString(VIRTIO_PCI_VENDOR, pciId)}) #${o.index ?? 0}: ${found.length} found${waited}`);
        }
        if (opened.has(info.address)) {
          throw new PciError('ERR_PCI_BIND', `${info.address} is already open: one transport per device`);
        }
        const uio = bindToUioPciGeneric(info);
        const fn = new PciFunction(info, uio);
        const interrupts: InterruptSource | null = mode === 'uio' ? new UioIntxInterrupts(uio, fn.config, { pollWindowMs: o.pollWindowMs }) : mode === 'poll' ? new BusyPoll() : null;
        const t = PciModernTransport.open(fn, { dma: dmaRef.arena, interrupts });
        transports.push(t);
        opened.add(info.address);
        log(`${info.address} ${pciIdString(info.vendorId, info.deviceId)} -> ${uio.devPath}, virtio device ${t.deviceId}, interrupts: ${interrupts?.description ?? 'none'} (${performance.now().toFixed(0)} ms after node started)`);
        return t;
      },
    };
    const status = await main(ctx);
    return typeof status === 'number' ? status : 0;
  };

  start().then(
    async (status) => {
      if (exiting) return;
      exiting = true;
      await shutdown();
      log(`exit ${status}`);
      process.exit(status);
    },
    (e) => panic('main failed', e),
  );
}
