// One error type for the PCI layer (sysfs discovery, config space, BARs, uio binding),
// with a distinct code per failure.

export type PciErrorCode =
  | 'ERR_PCI_SYSFS_FORMAT' // a sysfs file did not hold what the kernel documents
  | 'ERR_PCI_NO_DEVICE' // no device with the wanted vendor/device id
  | 'ERR_PCI_CONFIG' // config space too short, unreadable or unwritable
  | 'ERR_PCI_CAPABILITY' // a malformed capability list
  | 'ERR_PCI_BAR' // a BAR that is missing, not memory, or cannot be mapped
  | 'ERR_PCI_BIND'; // binding to uio_pci_generic failed

export class PciError extends Error {
  constructor(
    readonly code: PciErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PciError';
  }
}
