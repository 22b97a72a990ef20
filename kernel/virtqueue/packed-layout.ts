// The packed virtqueue's memory layout (virtio 1.2, section 2.8).
//
//   descriptor ring            16 bytes per entry, 16-byte aligned        (2.8.13)
//     le64 addr; le32 len; le16 id; le16 flags;
//   driver event suppression   4 bytes, 4-byte aligned (the Driver Area)  (2.8.14)
//   device event suppression   4 bytes, 4-byte aligned (the Device Area)
//     le16 desc { off : 15; wrap : 1 }; le16 flags { event_flags : 2; reserved : 14 };
//
// Both sides keep a one-bit Ring Wrap Counter, initially 1, flipped each time they pass
// the last descriptor of the ring (2.8.1). A descriptor is available when its AVAIL bit
// equals the driver's counter and its USED bit does not; used when both equal the
// device's counter. Positions with their wrap counter are handled here as one number L
// in [0, 2 * size): L = position while the counter is 1, position + size while it is
// 0; it grows by one per descriptor, modulo 2 * size.
import { VIRTQ_DESC_F_WRITE } from './layout.js';

export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Event suppression flags (2.8.14). */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Only with VIRTIO_F_EVENT_IDX: notify when the descriptor at desc.off / desc.wrap is made available / used. */
export const RING_EVENT_FLAGS_DESC = 2;

export const PACKED_DESC_ALIGN = 16;
export const EVENT_SUPPRESS_ALIGN = 4;
export const EVENT_SUPPRESS_BYTES = 4;
/** "Packed virtqueues support up to 2^15 entries each." (2.8) */
export const PACKED_MAX_QUEUE_SIZE = 32768;

export const descRingBytes = (size: number): number => 16 * size;

/** Flags of an available descriptor for Driver Ring Wrap Counter `wrap` (2.8.1): AVAIL = wrap, USED = !wrap. */
export const availFlags = (wrap: number): number => (wrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);

/** Flags of a used descriptor for Device Ring Wrap Counter `wrap`: AVAIL = USED = wrap; WRITE when data was written (2.8.3). */
export const usedFlags = (wrap: number, written: boolean): number => (wrap !== 0 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) | (written ? VIRTQ_DESC_F_WRITE : 0);

/** Flags that neither side takes for available or used in the lap of counter `wrap` (a descriptor written, then withdrawn). */
export const idleFlags = (wrap: number): number => (wrap !== 0 ? 0 : VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);

/** The AVAIL and USED bits of `flags` as 0/1. */
export const availBit = (flags: number): number => (flags >> 7) & 1;
export const usedBit = (flags: number): number => (flags >> 15) & 1;

/** One number for a position and its wrap counter (see the top of this file). */
export const linear = (pos: number, wrap: number, size: number): number => (wrap !== 0 ? pos : pos + size);

/** The le16 desc field of an event suppression structure: offset in bits 0-14, wrap counter in bit 15. */
export const offWrap = (pos: number, wrap: number): number => pos | (wrap << 15);

/** An event suppression desc field as a linear position (see linear()). */
export const offWrapLinear = (ow: number, size: number): number => linear(ow & 0x7fff, ow >>> 15, size);

/**
 * The notification rule of 2.8.10 with RING_EVENT_FLAGS_DESC: notify when the event
 * position lies among the descriptors made available / used since the last decision,
 * i.e. in [old, new), all modulo 2 * size (the packed analogue of vring_need_event).
 */
export function packedNeedEvent(event: number, newL: number, oldL: number, size: number): boolean {
  const m = 2 * size;
  return (newL - event - 1 + 2 * m) % m < (newL - oldL + m) % m;
}

/**
 * The decision itself from an event suppression structure read as one le32 (desc in the
 * low half, flags in the high half): DISABLE never, DESC (with EVENT_IDX) by
 * packedNeedEvent, anything else (ENABLE; DESC without EVENT_IDX; the reserved 3) always.
 */
export function eventWantsNotification(event: number, eventIdx: boolean, newL: number, oldL: number, size: number): boolean {
  const flags = (event >>> 16) & 3;
  if (flags === RING_EVENT_FLAGS_DISABLE) return false;
  if (flags !== RING_EVENT_FLAGS_DESC || !eventIdx) return true;
  return packedNeedEvent(offWrapLinear(event & 0xffff, size), newL, oldL, size);
}

/** A packed ring's position state, as vhost-user carries it (GET_VRING_BASE / SET_VRING_BASE). */
export interface PackedRingState {
  availPos: number;
  availWrap: number;
  usedPos: number;
  usedWrap: number;
}

/** A fresh ring: both positions 0, both wrap counters 1 (2.8.1). */
export const FRESH_PACKED_STATE: Readonly<PackedRingState> = { availPos: 0, availWrap: 1, usedPos: 0, usedWrap: 1 };

/**
 * vhost-user's vring base for a packed ring, as QEMU builds it
 * (virtio_queue_packed_get_last_avail_idx): bits 0-14 the next avail position, bit 15
 * its wrap counter, bits 16-30 the next used position, bit 31 its wrap counter.
 */
export function encodePackedBase(s: PackedRingState): number {
  return (offWrap(s.availPos, s.availWrap) | (offWrap(s.usedPos, s.usedWrap) << 16)) >>> 0;
}

/**
 * The inverse of encodePackedBase. A base whose high half is 0 (a front end that sends
 * only the avail half, as DPDK's vhost library does) starts the used side where the
 * avail side is: every chain taken was used. Throws RangeError on a position outside
 * the ring.
 */
export function decodePackedBase(base: number, size: number): PackedRingState {
  const lo = base & 0xffff;
  const hi = (base >>> 16) & 0xffff;
  const s: PackedRingState = { availPos: lo & 0x7fff, availWrap: lo >>> 15, usedPos: 0, usedWrap: 0 };
  if (hi === 0) {
    s.usedPos = s.availPos;
    s.usedWrap = s.availWrap;
  } else {
    s.usedPos = hi & 0x7fff;
    s.usedWrap = hi >>> 15;
  }
  if (s.availPos >= size || s.usedPos >= size) throw new RangeError(`vring base 0x${(base >>> 0).toString(16)}: position ${Math.max(s.availPos, s.usedPos)} is outside a packed ring of ${size}`);
  return s;
}
