// Guest-side virtio-mmio platform devices: discovery through sysfs, binding to
// uio_pdrv_genirq, mapping their registers (see claim.ts for the one call boot code makes).
export { PlatformError, type PlatformErrorCode } from './errors.js';
export { UIO_PDRV_GENIRQ, VIRTIO_MMIO_DRIVER, type VirtioMmioPlatformDevice, listVirtioMmioDevices, readVirtioMmioDevice } from './devices.js';
export { type BindOptions, type SysfsAccess, type UioMmioDevice, bindToUioPdrvGenirq, readUioMap0, releaseFromUioPdrvGenirq } from './uio-pdrv-bind.js';
export { mapMmioRegisters } from './map.js';
export { type ClaimOptions, type ClaimedMmioDevice, claimVirtioMmioDevice, probeVirtioDeviceId } from './claim.js';
export { type UioMemoryMap, isVirtioMmioDeviceName, parseUioMap, parseUioMapValue, parseVirtioDeviceIdFile } from './sysfs-parse.js';
