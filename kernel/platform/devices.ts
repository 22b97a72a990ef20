// Discovery of virtio-mmio platform devices through sysfs. Each is a directory
// <sysfs>/bus/platform/devices/<name> (a symlink into /sys/devices), named
// `virtio-mmio.N` when it came from the kernel command line (virtio_mmio.device=...) and
// `LNRO0005:NN` when ACPI described it (QEMU's microvm). Its `driver` symlink names the
// bound driver; when that is the kernel's own virtio-mmio driver, the virtio device it
// registered is a child directory virtioN whose `device` file holds the virtio device id.
// Unbound devices (and ours, bound to uio_pdrv_genirq) show no id in sysfs: only their
// DeviceID register tells.
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { PlatformError } from './errors.js';
import { compareVirtioMmioNames, isVirtioMmioDeviceName, parseVirtioDeviceIdFile } from './sysfs-parse.js';

/** The kernel's virtio-mmio platform driver (drivers/virtio/virtio_mmio.c). */
export const VIRTIO_MMIO_DRIVER = 'virtio-mmio';
/** The generic uio platform driver (drivers/uio/uio_pdrv_genirq.c). */
export const UIO_PDRV_GENIRQ = 'uio_pdrv_genirq';

export const platformDevicesDir = (sysfsRoot: string): string => join(sysfsRoot, 'bus', 'platform', 'devices');
export const platformDriverDir = (sysfsRoot: string, driver: string): string => join(sysfsRoot, 'bus', 'platform', 'drivers', driver);

/** What sysfs says about one virtio-mmio platform device. */
export interface VirtioMmioPlatformDevice {
  /** "virtio-mmio.0", "LNRO0005:00" */
  name: string;
  /** Its sysfs directory. */
  path: string;
  /** The bound driver ("virtio-mmio", "uio_pdrv_genirq"), or null. */
  driver: string | null;
  /** The virtio device id when the kernel's virtio-mmio driver is bound (19 = vsock), else null (not known from sysfs). */
  virtioDeviceId: number | null;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch (e) {
    throw new PlatformError('ERR_PLATFORM_SYSFS', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

function listDir(path: string, what: string): string[] {
  try {
    return readdirSync(path);
  } catch (e) {
    throw new PlatformError('ERR_PLATFORM_SYSFS', `cannot list ${path} (${what}): ${(e as Error).message}`, { cause: e });
  }
}

/** The name of the driver bound to the device at `path`, or null. */
export function boundDriver(path: string): string | null {
  const link = join(path, 'driver');
  return existsSync(link) ? basename(readlinkSync(link)) : null;
}

/** Reads one virtio-mmio platform device from its sysfs directory. */
export function readVirtioMmioDevice(path: string): VirtioMmioPlatformDevice {
  const name = basename(path);
  const driver = boundDriver(path);
  let virtioDeviceId: number | null = null;
  if (driver === VIRTIO_MMIO_DRIVER) {
    const children = listDir(path, 'its virtio device').filter((n) => /^virtio\d+$/.test(n));
    if (children.length > 1) throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${path} holds ${children.length} virtio devices (${children.join(', ')}), expected one`);
    if (children.length === 1) {
      const file = join(path, children[0]!, 'device');
      virtioDeviceId = parseVirtioDeviceIdFile(readText(file), file);
    }
  }
  return { name, path, driver, virtioDeviceId };
}

/** Every virtio-mmio platform device under `sysfsRoot` (default /sys), in name order. */
export function listVirtioMmioDevices(sysfsRoot = '/sys'): VirtioMmioPlatformDevice[] {
  const dir = platformDevicesDir(sysfsRoot);
  return listDir(dir, 'is sysfs mounted?')
    .filter(isVirtioMmioDeviceName)
    .sort(compareVirtioMmioNames)
    .map((n) => readVirtioMmioDevice(join(dir, n)));
}
