// One error type for the virtio-mmio transport (virtio 1.2, 4.2), with a distinct code
// per failure. Every message names the device ("virtio-mmio@0xfeb00200 (device 19)")
// and the register involved.

export type VirtioMmioErrorCode =
  | 'ERR_VIRTIO_MMIO_DEVICE' // not a usable virtio-mmio version 2 device (magic, version, empty slot, reset)
  | 'ERR_VIRTIO_MMIO_FEATURES' // feature negotiation failed
  | 'ERR_VIRTIO_MMIO_QUEUE' // a queue that does not exist, a bad size or address, or one that did not become ready
  | 'ERR_VIRTIO_MMIO_CONFIG' // a configuration read outside the space, or one that never settled
  | 'ERR_VIRTIO_MMIO_WINDOW' // a register window that is too small, misaligned, or accessed off its registers
  | 'ERR_VIRTIO_MMIO_CLOSED'; // the transport was closed

export class VirtioMmioError extends Error {
  constructor(
    readonly code: VirtioMmioErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'VirtioMmioError';
  }
}
