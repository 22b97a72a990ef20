// The real virtio-fs device model behind a wrapper that may change each served reply
// before it goes back: the base of the tests' faulty device and the fuzzer's lying one.
import type { DeviceContext, VirtioDeviceModel } from '../../kernel/transport/virtio-device.js';
import type { DescriptorChain } from '../../kernel/virtqueue/descriptor-chain.js';
import type { VirtqueueDevice } from '../../kernel/virtqueue/queue.js';
import { VirtioFsDevice } from '../../drivers/virtio-fs/device/virtio-fs-device.js';

export abstract class TamperingFsDevice implements VirtioDeviceModel {
  readonly inner: VirtioFsDevice;
  abstract readonly name: string;
  readonly deviceId: number;
  readonly features: bigint;
  readonly numQueues: number;
  readonly maxQueueSize: number;
  protected ctx: DeviceContext | null = null;
  protected readonly queues: (VirtqueueDevice | null)[] = [null, null];

  constructor(root: string, tag: string) {
    this.inner = new VirtioFsDevice({ root, tag });
    this.deviceId = this.inner.deviceId;
    this.features = this.inner.features;
    this.numQueues = this.inner.numQueues;
    this.maxQueueSize = this.inner.maxQueueSize;
  }
  config(): Uint8Array {
    return this.inner.config();
  }
  activate(ctx: DeviceContext): void {
    this.ctx = ctx;
  }
  queueReady(index: number, q: VirtqueueDevice): void {
    this.queues[index] = q;
  }
  queueStopped(index: number): void {
    this.queues[index] = null;
  }
  reset(): void {
    this.queues[0] = this.queues[1] = null;
    this.inner.reset();
  }
  kick(index: number): void {
    const q = this.queues[index];
    if (!q || this.intercept(index, q)) return;
    for (;;) {
      let chain: DescriptorChain | null;
      while ((chain = q.take()) !== null) q.push(chain, this.answer(chain, this.inner.serve(index, chain)));
      if (q.flush()) this.ctx?.interrupt(index);
      if (!q.enableNotifications()) break;
    }
  }

  /** Handles a kick instead of serving it (true), or lets it be served (false, the default). */
  protected intercept(_index: number, _q: VirtqueueDevice): boolean {
    return false;
  }

  /** The written length to report for a reply the real device served (`written` bytes), after changing it or not. */
  protected abstract answer(chain: DescriptorChain, written: number): number;
}
