// A minimal device model for virtqueue and transport tests: queue 0 takes chains of
// [readable request | writable response] and copies the request into the response,
// returning its length. Loadable in a worker (createDevice) or used directly.
import type { DeviceContext, VirtioDeviceModel } from '../../kernel/transport/virtio-device.js';
import type { VirtqueueDevice } from '../../kernel/virtqueue/queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureBit } from '../../kernel/virtqueue/layout.js';

export class EchoDevice implements VirtioDeviceModel {
  readonly name = 'echo';
  readonly deviceId = 0xfff0;
  // Both ring layouts; it answers every chain as it takes it, so in order too.
  readonly features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_RING_PACKED) | featureBit(VIRTIO_F_IN_ORDER);
  readonly numQueues = 1;
  readonly maxQueueSize: number;
  private ctx: DeviceContext | null = null;
  private queue: VirtqueueDevice | null = null;
  private scratch = Buffer.alloc(1 << 20);
  echoed = 0;

  constructor(maxQueueSize = 256) {
    this.maxQueueSize = maxQueueSize;
  }

  config(): Uint8Array {
    return new Uint8Array(8);
  }
  activate(ctx: DeviceContext): void {
    this.ctx = ctx;
  }
  queueReady(_index: number, queue: VirtqueueDevice): void {
    this.queue = queue;
  }
  queueStopped(): void {
    this.queue = null;
  }
  reset(): void {
    this.queue = null;
  }
  kick(): void {
    const q = this.queue;
    if (!q) return;
    for (;;) {
      let chain;
      while ((chain = q.take()) !== null) {
        const n = Math.min(chain.readableLength, chain.writableLength, this.scratch.length);
        chain.read(0, this.scratch, 0, n);
        chain.write(0, this.scratch, 0, n);
        q.push(chain, n);
        this.echoed++;
      }
      if (q.flush()) this.ctx!.interrupt(0);
      if (!q.enableNotifications()) break;
    }
  }
}

export function createDevice(options: { maxQueueSize?: number } | undefined): VirtioDeviceModel {
  return new EchoDevice(options?.maxQueueSize);
}
