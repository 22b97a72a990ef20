// A hook on every packet the device moves, both directions (what Linux's vsockmon sees
// of a virtio transport): the daemon's pcap capture and its debug log attach here.
//
// The muxer calls tap.packet() synchronously on the hot path, after reading a guest
// packet's header (valid or not: hostile packets are captured too) and after writing a
// packet into a guest rx buffer, before the chain goes back to the guest. An
// implementation must not allocate per packet and must not throw (a throw is counted
// as internalError and the packet is still handled). Set `device.tap = null` (the
// default) and the cost is one null check per packet.
import type { DescriptorChain } from '../../../kernel/virtqueue/device-queue.js';
import { copyBytes } from '../../../kernel/memory/copy.js';

/** A packet taken from the tx queue (guest -> host). */
export const TAP_GUEST_TO_HOST = 0;
/** A packet written into an rx buffer (host -> guest). */
export const TAP_HOST_TO_GUEST = 1;
export type TapDirection = typeof TAP_GUEST_TO_HOST | typeof TAP_HOST_TO_GUEST;

export interface PacketTap {
  /**
   * One packet. `header`: its 44 header bytes, as on the ring (valid during the call
   * only). `payloadBytes`: payload bytes that follow the header in `chain` (for a guest
   * packet, min(len, what the chain holds)); read them with readTappedPayload().
   */
  packet(direction: TapDirection, header: Uint8Array, chain: DescriptorChain, payloadBytes: number): void;
}

/**
 * Copies `length` payload bytes of a tapped packet, starting `from` bytes into its
 * payload, to dst[dstOffset...]: from the device-readable part of a guest packet, from
 * the device-writable part (just written) of a packet to the guest. No allocation.
 * Returns the bytes copied.
 */
export function readTappedPayload(direction: TapDirection, chain: DescriptorChain, from: number, dst: Uint8Array, dstOffset: number, length: number): number {
  const first = direction === TAP_GUEST_TO_HOST ? 0 : chain.readableCount;
  const end = direction === TAP_GUEST_TO_HOST ? chain.readableCount : chain.readableCount + chain.writableCount;
  let skip = from + 44; // the payload follows the 44-byte header
  let done = 0;
  for (let i = first; i < end && done < length; i++) {
    const len = chain.lengths[i]!;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const n = Math.min(len - skip, length - done);
    copyBytes(chain.regions[i]!.bytes, chain.offsets[i]! + skip, dst, dstOffset + done, n);
    done += n;
    skip = 0;
  }
  return done;
}
