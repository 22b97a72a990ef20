// Which layout a virtqueue uses, and building either half of it. The layout follows
// from the negotiated features alone (virtio 1.2, 6: VIRTIO_F_RING_PACKED); a driver
// accepts the packed layout when the device offers it unless told otherwise.
import { SplitVirtqueueDevice } from './device-queue.js';
import { SplitVirtqueueDriver } from './driver-queue.js';
import { VirtqueueError } from './errors.js';
import {
  AVAIL_ALIGN,
  DESC_ALIGN,
  USED_ALIGN,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_PACKED,
  availRingBytes,
  descTableBytes,
  featureBit,
  hasFeature,
  usedRingBytes,
} from './layout.js';
import { PackedVirtqueueDevice } from './packed-device-queue.js';
import { PackedVirtqueueDriver } from './packed-driver-queue.js';
import { EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_BYTES, PACKED_DESC_ALIGN, descRingBytes } from './packed-layout.js';
import type { DeviceQueueOptions, DriverQueueOptions, RingLayout, VirtqueueDevice, VirtqueueDriver } from './queue.js';

/** What a driver asks for: the packed layout when offered ('auto'), or one layout for sure. */
export type RingChoice = 'auto' | 'split' | 'packed';

export const RING_CHOICES: readonly RingChoice[] = ['auto', 'split', 'packed'];

/** Parses a ring choice (command lines, environment); throws RangeError naming `what`. */
export function parseRingChoice(value: string, what = 'ring'): RingChoice {
  if ((RING_CHOICES as readonly string[]).includes(value)) return value as RingChoice;
  throw new RangeError(`${what}: expected one of ${RING_CHOICES.join(', ')}, got ${JSON.stringify(value)}`);
}

/** The layout of every queue of a device with these negotiated features. */
export function ringLayoutOf(features: bigint): RingLayout {
  return hasFeature(features, VIRTIO_F_RING_PACKED) ? 'packed' : 'split';
}

export interface RingFeatureOptions {
  /** Accept VIRTIO_F_EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
  /** The layout (default 'auto': packed when offered). 'packed' throws when the device does not offer it. */
  ring?: RingChoice;
  /** Accept VIRTIO_F_IN_ORDER when offered with the packed layout (default true). */
  inOrder?: boolean;
}

/**
 * The ring feature bits a driver accepts from the device's offer: EVENT_IDX, the
 * packed layout and, with it, IN_ORDER, each as `opts` allows. (Our driver half
 * handles IN_ORDER on packed rings only, so it is never accepted with split ones.)
 */
export function acceptRingFeatures(offered: bigint, opts: RingFeatureOptions = {}, device = 'device'): bigint {
  let f = 0n;
  if (opts.eventIdx !== false && hasFeature(offered, VIRTIO_F_EVENT_IDX)) f |= featureBit(VIRTIO_F_EVENT_IDX);
  const ring = opts.ring ?? 'auto';
  const packedOffered = hasFeature(offered, VIRTIO_F_RING_PACKED);
  if (ring === 'packed' && !packedOffered) {
    throw new VirtqueueError('ERR_VIRTQ_SETUP', device, 'the packed ring layout was asked for (ring: packed), but the device does not offer VIRTIO_F_RING_PACKED');
  }
  if (ring !== 'split' && packedOffered) {
    f |= featureBit(VIRTIO_F_RING_PACKED);
    if (opts.inOrder !== false && hasFeature(offered, VIRTIO_F_IN_ORDER)) f |= featureBit(VIRTIO_F_IN_ORDER);
  }
  return f;
}

/** Sizes and alignments of the three ring parts (2.7.5-2.7.8 split; 2.8.10.1 packed). */
export interface RingPartLayout {
  descBytes: number;
  descAlign: number;
  availBytes: number;
  availAlign: number;
  usedBytes: number;
  usedAlign: number;
}

export function ringPartLayout(layout: RingLayout, size: number): RingPartLayout {
  return layout === 'packed'
    ? { descBytes: descRingBytes(size), descAlign: PACKED_DESC_ALIGN, availBytes: EVENT_SUPPRESS_BYTES, availAlign: EVENT_SUPPRESS_ALIGN, usedBytes: EVENT_SUPPRESS_BYTES, usedAlign: EVENT_SUPPRESS_ALIGN }
    : { descBytes: descTableBytes(size), descAlign: DESC_ALIGN, availBytes: availRingBytes(size), availAlign: AVAIL_ALIGN, usedBytes: usedRingBytes(size), usedAlign: USED_ALIGN };
}

/** The driver half of `layout`. */
export function createDriverQueue<T>(layout: RingLayout, opts: DriverQueueOptions): VirtqueueDriver<T> {
  return layout === 'packed' ? new PackedVirtqueueDriver<T>(opts) : new SplitVirtqueueDriver<T>(opts);
}

/** The device half of `layout`. */
export function createDeviceQueue(layout: RingLayout, opts: DeviceQueueOptions): VirtqueueDevice {
  return layout === 'packed' ? new PackedVirtqueueDevice(opts) : new SplitVirtqueueDevice(opts);
}

/** The device half for a device whose driver accepted `features`: layout, EVENT_IDX, INDIRECT_DESC and IN_ORDER from them. */
export function deviceQueueFor(features: bigint, opts: Omit<DeviceQueueOptions, 'eventIdx' | 'indirect' | 'inOrder'>): VirtqueueDevice {
  const layout = ringLayoutOf(features);
  return createDeviceQueue(layout, {
    ...opts,
    eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
    indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
    inOrder: layout === 'packed' && hasFeature(features, VIRTIO_F_IN_ORDER),
  });
}
