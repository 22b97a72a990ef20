// Binding a virtio-mmio platform device to uio_pdrv_genirq (drivers/uio/uio_pdrv_genirq.c;
// our guest kernel is patched so it binds a device without platform data), which exposes
// it as /dev/uioN: map0 is the page holding the device's 0x200-byte register window, and
// the device's level IRQ becomes readable events on the fd (see kernel/guest/interrupts.ts).
// The steps are the kernel's generic ones for any platform device (Documentation/ABI/
// testing/sysfs-bus-platform): unbind from the current driver, write the driver's name to
// driver_override, write the device's name to the driver's bind file.
//
// A device bound to the kernel's own virtio-mmio driver is taken from it only when it is
// the virtio device the caller asked for: anything else (a disk, say) the kernel drives
// stays untouched.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MMIO_WINDOW_BYTES } from '../transport/mmio-registers.js';
import { type UioDevice, UioLookupError, findUioDevice } from '../uio/uio-device.js';
import { UIO_PDRV_GENIRQ, VIRTIO_MMIO_DRIVER, type VirtioMmioPlatformDevice, platformDriverDir, readVirtioMmioDevice } from './devices.js';
import { PlatformError } from './errors.js';
import { type UioMemoryMap, parseUioMap } from './sysfs-parse.js';

export interface SysfsAccess {
  /** Where sysfs is mounted (default /sys). */
  sysfsRoot?: string;
  /** Where the uio device nodes are (default /dev). */
  devDir?: string;
  /** Writes a sysfs file (default fs.writeFileSync); a test passes one that also plays the kernel. */
  write?: (path: string, text: string) => void;
}

export interface BindOptions extends SysfsAccess {
  /**
   * The virtio device id the caller drives. A device bound to the kernel's virtio-mmio
   * driver is unbound from it only when sysfs says it is this device; without it, such
   * a device is refused.
   */
  virtioDeviceId?: number;
}

/** A virtio-mmio device bound to uio_pdrv_genirq, with the map that holds its registers. */
export interface UioMmioDevice {
  device: VirtioMmioPlatformDevice;
  uio: UioDevice;
  /** map0: the page(s) to mmap from /dev/uioN, and the registers' offset in them. */
  map: UioMemoryMap;
  /** The device by its register address, for messages: "virtio-mmio@0xfeb00200". */
  name: string;
}

const defaultWrite = (path: string, text: string): void => writeFileSync(path, text);

function write(opts: SysfsAccess, path: string, text: string, what: string): void {
  try {
    (opts.write ?? defaultWrite)(path, text);
  } catch (e) {
    throw new PlatformError('ERR_PLATFORM_BIND', `${what}: writing ${JSON.stringify(text)} to ${path} failed: ${(e as Error).message}`, { cause: e });
  }
}

/** Refuses, with the reason, a device the caller may not take; null when it may. */
function whyNotOurs(dev: VirtioMmioPlatformDevice, wanted: number | undefined): string | null {
  if (dev.driver === null || dev.driver === UIO_PDRV_GENIRQ) return null;
  if (dev.driver !== VIRTIO_MMIO_DRIVER) return `${dev.name} is bound to ${dev.driver}, not ours to take`;
  if (dev.virtioDeviceId === null) return `${dev.name} is bound to the kernel's ${VIRTIO_MMIO_DRIVER} driver and sysfs shows no virtio device id: left alone`;
  if (wanted === undefined || dev.virtioDeviceId !== wanted) {
    return `${dev.name} is virtio device ${dev.virtioDeviceId}, driven by the kernel's ${VIRTIO_MMIO_DRIVER} driver${wanted === undefined ? '' : ` (wanted device ${wanted})`}: left alone`;
  }
  return null;
}

/**
 * Binds `dev` to uio_pdrv_genirq (unbinding it from the kernel's virtio-mmio driver
 * first when allowed, see BindOptions) and returns its uio device and register map.
 * Idempotent: a device already bound to uio_pdrv_genirq is only looked up.
 */
export function bindToUioPdrvGenirq(dev: VirtioMmioPlatformDevice, opts: BindOptions = {}): UioMmioDevice {
  const sysfsRoot = opts.sysfsRoot ?? '/sys';
  const refusal = whyNotOurs(dev, opts.virtioDeviceId);
  if (refusal !== null) throw new PlatformError('ERR_PLATFORM_NOT_OURS', refusal);
  let current = dev;
  if (current.driver !== UIO_PDRV_GENIRQ) {
    const driverDir = platformDriverDir(sysfsRoot, UIO_PDRV_GENIRQ);
    if (!existsSync(driverDir)) throw new PlatformError('ERR_PLATFORM_BIND', `${driverDir} does not exist: load the uio and uio_pdrv_genirq modules first`);
    if (current.driver !== null) {
      write(opts, join(current.path, 'driver', 'unbind'), current.name, `unbinding ${current.name} from ${current.driver}`);
      current = readVirtioMmioDevice(current.path);
      if (current.driver !== null) throw new PlatformError('ERR_PLATFORM_BIND', `${current.name} is still bound to ${current.driver} after unbind`);
    }
    write(opts, join(current.path, 'driver_override'), UIO_PDRV_GENIRQ, `binding ${current.name}`);
    write(opts, join(driverDir, 'bind'), current.name, `binding ${current.name} to ${UIO_PDRV_GENIRQ}`);
    current = readVirtioMmioDevice(current.path);
    if (current.driver !== UIO_PDRV_GENIRQ) {
      throw new PlatformError('ERR_PLATFORM_BIND', `${current.name} is bound to ${current.driver ?? 'no driver'} after binding it to ${UIO_PDRV_GENIRQ}`);
    }
  }
  let uio: UioDevice;
  try {
    uio = findUioDevice(current.path, opts.devDir ?? '/dev');
  } catch (e) {
    if (!(e instanceof UioLookupError)) throw e;
    throw new PlatformError(e.code === 'ERR_UIO_NAME' ? 'ERR_PLATFORM_SYSFS_FORMAT' : 'ERR_PLATFORM_BIND', `${current.name}: ${e.message}`, { cause: e });
  }
  const map = readUioMap0(current.path, uio);
  return { device: current, uio, map, name: `virtio-mmio@0x${map.blockAddr.toString(16)}` };
}

/** The register map (map0) of a device bound to uio_pdrv_genirq, from <device>/uio/uioN/maps/map0. */
export function readUioMap0(devicePath: string, uio: UioDevice): UioMemoryMap {
  const dir = join(devicePath, 'uio', uio.name, 'maps', 'map0');
  const read = (file: string): string => {
    const path = join(dir, file);
    try {
      return readFileSync(path, 'latin1');
    } catch (e) {
      throw new PlatformError('ERR_PLATFORM_SYSFS', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
    }
  };
  return parseUioMap({ addr: read('addr'), size: read('size'), offset: read('offset') }, dir, MMIO_WINDOW_BYTES);
}

/**
 * Gives a device back: unbinds it from uio_pdrv_genirq and clears its driver_override
 * (a write of a newline), leaving it unbound as it was before bindToUioPdrvGenirq.
 */
export function releaseFromUioPdrvGenirq(dev: VirtioMmioPlatformDevice, opts: SysfsAccess = {}): void {
  const current = readVirtioMmioDevice(dev.path);
  if (current.driver === UIO_PDRV_GENIRQ) {
    write(opts, join(platformDriverDir(opts.sysfsRoot ?? '/sys', UIO_PDRV_GENIRQ), 'unbind'), current.name, `releasing ${current.name}`);
  }
  write(opts, join(current.path, 'driver_override'), '\n', `releasing ${current.name}`);
}
