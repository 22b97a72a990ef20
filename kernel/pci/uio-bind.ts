// Binding a PCI function to uio_pci_generic (drivers/uio/uio_pci_generic.c), which
// exposes it as /dev/uioN: interrupts (INTx only) as a readable fd, config space and
// BARs stay reachable through sysfs. Writing "vvvv dddd" to the driver's new_id adds
// the id to its table and binds every unbound function that matches.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type UioDevice, UioLookupError, findUioDevice } from '../uio/uio-device.js';
import { PciError } from './errors.js';
import { type PciDeviceInfo, hex4, readPciDevice } from './devices.js';

export type { UioDevice } from '../uio/uio-device.js';

export const UIO_PCI_GENERIC = 'uio_pci_generic';
export const UIO_PCI_GENERIC_DIR = '/sys/bus/pci/drivers/uio_pci_generic';

function sysfsWrite(path: string, text: string): void {
  writeFileSync(path, text);
}

/**
 * Binds `dev` to uio_pci_generic (unbinding it from another driver first) and returns
 * its uio device. Idempotent: a device already bound is left as it is.
 */
export function bindToUioPciGeneric(dev: PciDeviceInfo, driverDir = UIO_PCI_GENERIC_DIR): UioDevice {
  if (!existsSync(driverDir)) {
    throw new PciError('ERR_PCI_BIND', `${driverDir} does not exist: load the uio and uio_pci_generic modules first`);
  }
  let current = readPciDevice(dev.path);
  if (current.driver !== null && current.driver !== UIO_PCI_GENERIC) {
    sysfsWrite(join(dev.path, 'driver', 'unbind'), dev.address);
    current = readPciDevice(dev.path);
  }
  if (current.driver === null) {
    try {
      sysfsWrite(join(driverDir, 'new_id'), `${hex4(dev.vendorId)} ${hex4(dev.deviceId)}`);
    } catch (e) {
      // EEXIST: the id is in the table already (an earlier bind, or a device that was
      // unbound since): bind this one function explicitly.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new PciError('ERR_PCI_BIND', `writing the id of ${dev.address} to ${driverDir}/new_id failed: ${(e as Error).message}`, { cause: e });
      }
    }
    current = readPciDevice(dev.path);
    if (current.driver === null) {
      try {
        sysfsWrite(join(driverDir, 'bind'), dev.address);
      } catch (e) {
        throw new PciError('ERR_PCI_BIND', `binding ${dev.address} to ${UIO_PCI_GENERIC} failed: ${(e as Error).message} (does it support INTx masking?)`, { cause: e });
      }
      current = readPciDevice(dev.path);
    }
  }
  if (current.driver !== UIO_PCI_GENERIC) {
    throw new PciError('ERR_PCI_BIND', `${dev.address} is bound to ${current.driver ?? 'no driver'}, not ${UIO_PCI_GENERIC}`);
  }
  return findUio(dev.path);
}

/** The uio device of a function bound to a uio driver: the single entry of <device>/uio/. */
export function findUio(devicePath: string): UioDevice {
  try {
    return findUioDevice(devicePath);
  } catch (e) {
    if (!(e instanceof UioLookupError)) throw e;
    throw new PciError(e.code === 'ERR_UIO_NAME' ? 'ERR_PCI_SYSFS_FORMAT' : 'ERR_PCI_BIND', e.message, { cause: e.cause });
  }
}
