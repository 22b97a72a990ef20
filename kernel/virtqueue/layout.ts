// The split virtqueue's memory layout (virtio 1.2, section 2.7).
//
//   descriptor table  16 bytes per entry, 16-byte aligned   (2.7.5)
//     le64 addr; le32 len; le16 flags; le16 next;
//   available ring    2-byte aligned                        (2.7.6)
//     le16 flags; le16 idx; le16 ring[size]; le16 used_event;
//   used ring         4-byte aligned                        (2.7.8)
//     le16 flags; le16 idx; struct { le32 id; le32 len; } ring[size]; le16 avail_event;
import { endianness } from 'node:os';

// Typed arrays over ring memory use host byte order; virtio 1.x rings are little-endian.
if (endianness() !== 'LE') throw new Error('the virtqueue implementation assumes a little-endian host');

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

export const DESC_SIZE = 16;
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;
export const MAX_QUEUE_SIZE = 32768;

export const descTableBytes = (size: number): number => DESC_SIZE * size;
export const availRingBytes = (size: number): number => 6 + 2 * size;
export const usedRingBytes = (size: number): number => 6 + 8 * size;

/** Throws unless size is a power of two in [1, 32768]. */
export function checkQueueSize(size: number, what = 'queue'): void {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
    throw new RangeError(`${what}: size ${size} is not a power of two between 1 and ${MAX_QUEUE_SIZE}`);
  }
}

/**
 * The event-suppression rule of 2.7.7.2 / 2.7.10: with VIRTIO_F_EVENT_IDX, notify when
 * the other side's event index lies in the window of entries published since the last
 * notification decision, i.e. in [old, new). All arithmetic is modulo 2^16.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Feature bits of the ring itself (virtio 1.2, 6). */
export const VIRTIO_F_INDIRECT_DESC = 28n;
export const VIRTIO_F_EVENT_IDX = 29n;
export const VIRTIO_F_VERSION_1 = 32n;
export const VIRTIO_F_ACCESS_PLATFORM = 33n;
/** The packed layout (2.8) instead of the split one. */
export const VIRTIO_F_RING_PACKED = 34n;
/** The device uses buffers in the order the driver made them available (2.8.8 for packed rings). */
export const VIRTIO_F_IN_ORDER = 35n;

export const featureBit = (bit: bigint): bigint => 1n << bit;
export const hasFeature = (features: bigint, bit: bigint): boolean => (features & (1n << bit)) !== 0n;
