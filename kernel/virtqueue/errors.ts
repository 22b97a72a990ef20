// One error type for the virtqueue, with a distinct code per failure.

export type VirtqueueErrorCode =
  | 'ERR_VIRTQ_SETUP' // ring addresses, alignment or size unusable
  | 'ERR_VIRTQ_AVAIL_INDEX' // avail.idx moved by more than the queue size
  | 'ERR_VIRTQ_DESC_INDEX' // a head or next index outside the table
  | 'ERR_VIRTQ_DESC_ADDRESS' // a buffer outside guest memory
  | 'ERR_VIRTQ_CHAIN_TOO_LONG' // a loop, or more descriptors than the queue size
  | 'ERR_VIRTQ_CHAIN_LENGTH' // a chain whose lengths add up to more than a used length can say (2^32 - 1)
  | 'ERR_VIRTQ_WRAP' // packed: a descriptor whose AVAIL/USED bits do not match the wrap counter where they must
  | 'ERR_VIRTQ_NESTED_INDIRECT' // an indirect descriptor inside an indirect table
  | 'ERR_VIRTQ_INDIRECT_LENGTH' // an indirect table of zero length or not a multiple of 16
  | 'ERR_VIRTQ_INDIRECT_NEXT' // INDIRECT and NEXT set on the same descriptor (packed: an indirect descriptor not alone)
  | 'ERR_VIRTQ_INDIRECT_NOT_NEGOTIATED' // INDIRECT used without VIRTIO_F_INDIRECT_DESC
  | 'ERR_VIRTQ_READABLE_AFTER_WRITABLE' // device-readable descriptor after a writable one
  | 'ERR_VIRTQ_USED_ID' // the device returned an id that is not an outstanding chain made available
  | 'ERR_VIRTQ_USED_LEN' // the device claims to have written more than the chain holds
  | 'ERR_VIRTQ_USED_INDEX' // used.idx moved by more than the queue size
  | 'ERR_VIRTQ_IN_ORDER' // VIRTIO_F_IN_ORDER negotiated, and a chain pushed before one taken earlier
  | 'ERR_VIRTQ_FULL' // not enough free descriptors for the chain
  | 'ERR_VIRTQ_BROKEN'; // the queue was marked broken earlier

export class VirtqueueError extends Error {
  constructor(
    readonly code: VirtqueueErrorCode,
    /** Which queue ("vsock tx", "queue 1"). */
    readonly queue: string,
    message: string,
    /** The descriptor (or ring entry) at fault, when there is one. */
    readonly descriptor = -1,
  ) {
    super(`${queue}: ${message}`);
    this.name = 'VirtqueueError';
  }
}
