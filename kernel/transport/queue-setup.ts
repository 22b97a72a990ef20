// Allocates a virtqueue's rings in the transport's DMA memory and enables it. The
// layout (split, virtio 1.2 2.7, or packed, 2.8) follows from the negotiated features.
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, hasFeature } from '../virtqueue/layout.js';
import type { VirtqueueDriver } from '../virtqueue/queue.js';
import { createDriverQueue, ringLayoutOf, ringPartLayout } from '../virtqueue/ring.js';
import type { VirtioTransport } from './virtio-transport.js';

/**
 * Sets up queue `index` of at most `wantSize` entries. `features` are the negotiated
 * features (they decide the layout, EVENT_IDX and IN_ORDER); a boolean means a split
 * ring with (true) or without EVENT_IDX.
 */
export function setupDriverQueue<T>(transport: VirtioTransport, index: number, name: string, wantSize: number, features: bigint | boolean): VirtqueueDriver<T> {
  const max = transport.queueMaxSize(index);
  if (max === 0) throw new Error(`${name}: the device has no queue ${index}`);
  const size = Math.min(wantSize, max);
  const layout = typeof features === 'boolean' ? 'split' : ringLayoutOf(features);
  const eventIdx = typeof features === 'boolean' ? features : hasFeature(features, VIRTIO_F_EVENT_IDX);
  const inOrder = layout === 'packed' && typeof features === 'bigint' && hasFeature(features, VIRTIO_F_IN_ORDER);
  const parts = ringPartLayout(layout, size);
  const dma = transport.dma;
  // The two small parts on cache lines of their own: the device writes one, the driver the other.
  const desc = dma.allocate(parts.descBytes, parts.descAlign);
  const avail = dma.allocate(parts.availBytes, Math.max(parts.availAlign, 64));
  const used = dma.allocate(parts.usedBytes, Math.max(parts.usedAlign, 64));
  const q = createDriverQueue<T>(layout, {
    name,
    index,
    size,
    eventIdx,
    inOrder,
    desc: { bytes: desc, addr: dma.addressOf(desc) },
    avail: { bytes: avail, addr: dma.addressOf(avail) },
    used: { bytes: used, addr: dma.addressOf(used) },
  });
  transport.enableQueue(index, size, q.desc.addr, q.avail.addr, q.used.addr);
  // A packed ring has no used index at a fixed address: the queue says when it moves.
  if (layout === 'packed') transport.watchQueueProgress?.(index, () => q.usedProgress());
  return q;
}
