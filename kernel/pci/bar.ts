// Mapping a memory BAR into this process: mmap of the sysfs `resourceN` file (pci-sysfs.c
// pci_mmap_resource_uc maps it uncached). The mapping is an ArrayBuffer from the native
// addon; register accesses are then plain loads and stores from JavaScript, with no
// system call and no N-API call.
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { mmap, munmap } from '../native/index.js';
import { PciError } from './errors.js';
import { parseResourceFile } from './sysfs-parse.js';

export interface MappedBar {
  index: number;
  /** Bytes mapped (the BAR size). */
  size: number;
  /** Bus address of the BAR (diagnostics). */
  busAddress: bigint;
  buffer: ArrayBuffer;
}

/** Maps BAR `index` (0-5) of the device at sysfs path `devicePath`. */
export function mapBar(devicePath: string, index: number): MappedBar {
  if (!Number.isInteger(index) || index < 0 || index > 5) throw new PciError('ERR_PCI_BAR', `BAR index ${index} is not 0..5`);
  const resources = parseResourceFile(readFileSync(join(devicePath, 'resource'), 'latin1'));
  const res = resources[index];
  if (res === undefined || res.size === 0) throw new PciError('ERR_PCI_BAR', `${devicePath}: BAR ${index} is not implemented`);
  if (!res.isMemory) throw new PciError('ERR_PCI_BAR', `${devicePath}: BAR ${index} is not a memory BAR (flags 0x${res.flags.toString(16)}); I/O BARs cannot be mapped`);
  const file = join(devicePath, `resource${index}`);
  if (!existsSync(file)) throw new PciError('ERR_PCI_BAR', `${file} does not exist`);
  const size = statSync(file).size;
  if (size !== res.size) throw new PciError('ERR_PCI_BAR', `${file} is ${size} bytes but the resource table says ${res.size}`);
  const fd = openSync(file, 'r+');
  try {
    const buffer = mmap(fd, size, 0, true, true);
    return { index, size, busAddress: res.start, buffer };
  } catch (e) {
    throw new PciError('ERR_PCI_BAR', `mmap of ${file} (${size} bytes) failed: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
}

export function unmapBar(bar: MappedBar): void {
  munmap(bar.buffer);
}
