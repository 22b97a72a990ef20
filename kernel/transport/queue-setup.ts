// Allocates a split virtqueue's rings in the transport's DMA memory and enables it.
import { VirtqueueDriver } from '../virtqueue/driver-queue.js';
import { AVAIL_ALIGN, DESC_ALIGN, USED_ALIGN, availRingBytes, descTableBytes, usedRingBytes } from '../virtqueue/layout.js';
import type { VirtioTransport } from './virtio-transport.js';

export function setupDriverQueue<T>(transport: VirtioTransport, index: number, name: string, wantSize: number, eventIdx: boolean): VirtqueueDriver<T> {
  const max = transport.queueMaxSize(index);
  if (max === 0) throw new Error(`${name}: the device has no queue ${index}`);
  const size = Math.min(wantSize, max);
  const dma = transport.dma;
  const desc = dma.allocate(descTableBytes(size), DESC_ALIGN);
  const avail = dma.allocate(availRingBytes(size), Math.max(AVAIL_ALIGN, 64));
  const used = dma.allocate(usedRingBytes(size), Math.max(USED_ALIGN, 64));
  const q = new VirtqueueDriver<T>({
    name,
    index,
    size,
    eventIdx,
    desc: { bytes: desc, addr: dma.addressOf(desc) },
    avail: { bytes: avail, addr: dma.addressOf(avail) },
    used: { bytes: used, addr: dma.addressOf(used) },
  });
  transport.enableQueue(index, size, q.desc.addr, q.avail.addr, q.used.addr);
  return q;
}
