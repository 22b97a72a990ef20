// PCI discovery through sysfs: every device is a directory /sys/bus/pci/devices/<address>
// (a symlink into /sys/devices) with `vendor`, `device`, `class`, `config`, `resource`,
// `resourceN` files and a `driver` symlink when a driver is bound.
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { PciError } from './errors.js';
import { parseHexId, parsePciAddress } from './sysfs-parse.js';

export const SYSFS_PCI_DEVICES = '/sys/bus/pci/devices';

/** What sysfs says about one PCI function. */
export interface PciDeviceInfo {
  /** "0000:00:03.0" */
  address: string;
  /** The device's sysfs directory. */
  path: string;
  vendorId: number;
  deviceId: number;
  /** 24-bit class code: base class, subclass, programming interface. */
  classCode: number;
  /** Name of the bound driver ("uio_pci_generic"), or null. */
  driver: string | null;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch (e) {
    throw new PciError('ERR_PCI_SYSFS_FORMAT', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Reads one device's identity from its sysfs directory. */
export function readPciDevice(path: string): PciDeviceInfo {
  const address = basename(path);
  parsePciAddress(address);
  const driverLink = join(path, 'driver');
  return {
    address,
    path,
    vendorId: parseHexId(readText(join(path, 'vendor')), 4, `${path}/vendor`),
    deviceId: parseHexId(readText(join(path, 'device')), 4, `${path}/device`),
    classCode: parseHexId(readText(join(path, 'class')), 6, `${path}/class`),
    driver: existsSync(driverLink) ? basename(readlinkSync(driverLink)) : null,
  };
}

/** Every PCI function under `root` (default /sys/bus/pci/devices), sorted by address. */
export function listPciDevices(root = SYSFS_PCI_DEVICES): PciDeviceInfo[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch (e) {
    throw new PciError('ERR_PCI_NO_DEVICE', `cannot list ${root} (is sysfs mounted?): ${(e as Error).message}`, { cause: e });
  }
  return names.sort().map((n) => readPciDevice(join(root, n)));
}

/** The functions with this vendor and device id. */
export function findPciDevices(vendorId: number, deviceId: number, root = SYSFS_PCI_DEVICES): PciDeviceInfo[] {
  return listPciDevices(root).filter((d) => d.vendorId === vendorId && d.deviceId === deviceId);
}

export const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

/** "1af4:1044" */
export function pciIdString(vendorId: number, deviceId: number): string {
  return `${hex4(vendorId)}:${hex4(deviceId)}`;
}
