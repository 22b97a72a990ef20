// Mapping the register page of a virtio-mmio device bound to uio_pdrv_genirq: mmap of
// /dev/uioN at offset 0 (map0; uio_mmap_physical maps it uncached) with the map's whole
// pages, then a register window at the map's offset inside them. Several devices may
// share the page (QEMU's microvm puts them 0x200 apart): only this device's 0x200 bytes
// are ever accessed. As with PCI BARs (kernel/pci/bar.ts), the mapping is an ArrayBuffer
// from the native addon and register accesses are plain loads and stores.
import { closeSync, openSync } from 'node:fs';
import { mmap, munmap } from '../native/index.js';
import { MappedMmioWindow } from '../transport/mmio-registers.js';
import { PlatformError } from './errors.js';
import type { UioMmioDevice } from './uio-pdrv-bind.js';

/**
 * The registers of `dev` as a window; its close() unmaps the page (MmioTransport.close
 * calls it).
 */
export function mapMmioRegisters(dev: UioMmioDevice): MappedMmioWindow {
  const { uio, map } = dev;
  let fd: number;
  try {
    fd = openSync(uio.devPath, 'r+');
  } catch (e) {
    throw new PlatformError('ERR_PLATFORM_MAP', `${dev.name}: cannot open ${uio.devPath}: ${(e as Error).message}`, { cause: e });
  }
  let buffer: ArrayBuffer;
  try {
    buffer = mmap(fd, map.size, 0, true, true);
  } catch (e) {
    throw new PlatformError('ERR_PLATFORM_MAP', `${dev.name}: mmap of map0 of ${uio.devPath} (${map.size} bytes) failed: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
  if (buffer.byteLength !== map.size) {
    munmap(buffer);
    throw new PlatformError('ERR_PLATFORM_MAP', `${dev.name}: mmap of ${uio.devPath} gave ${buffer.byteLength} bytes, expected ${map.size}`);
  }
  return MappedMmioWindow.over(buffer, map.offset, () => munmap(buffer));
}
