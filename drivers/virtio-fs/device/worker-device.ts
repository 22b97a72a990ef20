// Worker-thread entry for the in-process transport (kernel/transport/inprocess-worker.ts
// DeviceFactory): InProcessTransport.worker({ module: <this file>, options: { root, tag } }).
// Answers { type: 'stats' } messages with { type: 'stats', stats } for tests.
import type { DeviceWorkerEnv } from '../../../kernel/transport/inprocess-worker.js';
import type { VirtioDeviceModel } from '../../../kernel/transport/virtio-device.js';
import { VirtioFsDevice, type VirtioFsDeviceOptions } from './virtio-fs-device.js';

export function createDevice(options: VirtioFsDeviceOptions, env: DeviceWorkerEnv): VirtioDeviceModel {
  const device = new VirtioFsDevice(options);
  env.onMessage((m) => {
    if ((m as { type?: unknown }).type === 'stats') env.post({ type: 'stats', stats: device.stats });
  });
  return device;
}
