// Finding, binding and mapping the virtio-mmio device the program drives, by virtio
// device id, in one call for the boot code:
//
//   const dev = claimVirtioMmioDevice(19);                       // vsock
//   const irq = new UioIntxInterrupts(dev.uio, null, { pollWindowMs });
//   const t = MmioTransport.open({ window: dev.window, dma, interrupts: irq, name: dev.name });
//
// Devices the kernel's virtio-mmio driver holds show their id in sysfs: those with
// another id are never touched. Devices that are unbound, or already bound to
// uio_pdrv_genirq, show none: they are bound (if need be), mapped, and their DeviceID
// register read; one that turns out to be something else is unmapped and, if it was
// unbound, released again.
import { MMIO_DEVICE_ID, MMIO_MAGIC, MMIO_MAGIC_VALUE, type MmioRegisterWindow } from '../transport/mmio-registers.js';
import { UIO_PDRV_GENIRQ, VIRTIO_MMIO_DRIVER, type VirtioMmioPlatformDevice, listVirtioMmioDevices } from './devices.js';
import { PlatformError } from './errors.js';
import { mapMmioRegisters } from './map.js';
import { type SysfsAccess, type UioMmioDevice, bindToUioPdrvGenirq, releaseFromUioPdrvGenirq } from './uio-pdrv-bind.js';

export interface ClaimOptions extends SysfsAccess {
  /** Which of several devices with this id, in name order (default 0). */
  index?: number;
  /** Maps a bound device's registers (default mapMmioRegisters: mmap of /dev/uioN). */
  mapRegisters?: (dev: UioMmioDevice) => MmioRegisterWindow;
}

/** A device bound to uio_pdrv_genirq with its registers mapped: ready for MmioTransport.open. */
export interface ClaimedMmioDevice extends UioMmioDevice {
  window: MmioRegisterWindow;
}

/** The DeviceID register of a window, or -1 when MagicValue says it is no virtio-mmio device. */
export function probeVirtioDeviceId(window: MmioRegisterWindow): number {
  if (window.read32(MMIO_MAGIC_VALUE) >>> 0 !== MMIO_MAGIC) return -1;
  return window.read32(MMIO_DEVICE_ID) >>> 0;
}

/** May this device be looked at for `wanted`? Never one another driver holds, nor one the kernel drives as another device. */
function candidate(dev: VirtioMmioPlatformDevice, wanted: number): boolean {
  if (dev.driver === VIRTIO_MMIO_DRIVER) return dev.virtioDeviceId === wanted;
  return dev.driver === null || dev.driver === UIO_PDRV_GENIRQ;
}

/** Binds and maps the `index`th virtio-mmio device whose virtio device id is `virtioDeviceId`. */
export function claimVirtioMmioDevice(virtioDeviceId: number, opts: ClaimOptions = {}): ClaimedMmioDevice {
  const index = opts.index ?? 0;
  const map = opts.mapRegisters ?? mapMmioRegisters;
  const devices = listVirtioMmioDevices(opts.sysfsRoot ?? '/sys');
  let seen = 0;
  for (const dev of devices) {
    if (!candidate(dev, virtioDeviceId)) continue;
    const kernelSaysSo = dev.driver === VIRTIO_MMIO_DRIVER;
    // Known from sysfs to be one: count it, and take it from the kernel only if it is the one wanted.
    if (kernelSaysSo && seen++ !== index) continue;
    const bound = bindToUioPdrvGenirq(dev, { ...opts, virtioDeviceId });
    let window: MmioRegisterWindow;
    try {
      window = map(bound);
    } catch (e) {
      if (dev.driver === null) releaseFromUioPdrvGenirq(dev, opts);
      throw e;
    }
    const id = probeVirtioDeviceId(window);
    if (id === virtioDeviceId && (kernelSaysSo || seen++ === index)) return { ...bound, window };
    window.close?.();
    if (dev.driver === null) releaseFromUioPdrvGenirq(dev, opts);
    if (kernelSaysSo) {
      throw new PlatformError('ERR_PLATFORM_MAP', `${bound.name} (${dev.name}): sysfs said virtio device ${virtioDeviceId}, but its registers read ${id < 0 ? 'no virtio-mmio MagicValue' : `DeviceID ${id}`}`);
    }
  }
  throw new PlatformError(
    'ERR_PLATFORM_NO_DEVICE',
    `no virtio-mmio device ${virtioDeviceId} #${index}: ${seen} found among ${devices.length} virtio-mmio devices (${devices.map((d) => `${d.name}: ${d.driver ?? 'unbound'}${d.virtioDeviceId === null ? '' : ` device ${d.virtioDeviceId}`}`).join(', ') || 'none'})`,
  );
}
