// One error type for the platform-device layer (virtio-mmio devices found through sysfs,
// bound to uio_pdrv_genirq, their register page mapped), with a distinct code per failure.

export type PlatformErrorCode =
  | 'ERR_PLATFORM_SYSFS' // a sysfs file or directory that cannot be read or listed
  | 'ERR_PLATFORM_SYSFS_FORMAT' // a sysfs file that does not hold what the kernel writes there
  | 'ERR_PLATFORM_NO_DEVICE' // no virtio-mmio device with the wanted virtio device id
  | 'ERR_PLATFORM_NOT_OURS' // a device another driver owns (the kernel's virtio-mmio with another device id...)
  | 'ERR_PLATFORM_BIND' // binding to (or releasing from) uio_pdrv_genirq failed
  | 'ERR_PLATFORM_MAP'; // the register page cannot be mapped, or does not hold the registers

export class PlatformError extends Error {
  constructor(
    readonly code: PlatformErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PlatformError';
  }
}
