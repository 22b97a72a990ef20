// Worker-thread entry of the in-process transport: imports the device module named in
// workerData, runs its model on the shared guest memory, waits for doorbells with
// Atomics.waitAsync (so the worker's event loop stays free for host-side sockets).
import { parentPort, workerData } from 'node:worker_threads';
import type { GuestMemory } from '../memory/guest-memory.js';
import { CTRL_DOORBELL_SEQ, CTRL_IRQ_SEQ, CTRL_STOP, InProcessDeviceHost, describe, inProcessGuestMemory } from './inprocess-device-host.js';
import type { VirtioDeviceModel } from './virtio-device.js';

export interface WorkerInit {
  memory: SharedArrayBuffer;
  base: number;
  ctrl: SharedArrayBuffer;
  module: string;
  exportName: string;
  options: unknown;
  scatterPageSize?: number | undefined;
}

/** What a device module's factory receives besides its options. */
export interface DeviceWorkerEnv {
  /** Sends a message to the driver side (InProcessTransport 'device-message'). */
  post(message: unknown): void;
  /** Receives messages sent with InProcessTransport.postToDevice(). */
  onMessage(handler: (message: unknown) => void): void;
  memory: GuestMemory;
}

export type DeviceFactory = (options: unknown, env: DeviceWorkerEnv) => VirtioDeviceModel | Promise<VirtioDeviceModel>;

type Control =
  | { type: 'features'; features: bigint }
  | { type: 'queue'; index: number; size: number; desc: number; avail: number; used: number }
  | { type: 'reset' }
  | { type: 'user'; message: unknown };

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  const port = parentPort!;
  const ctrl = new Int32Array(init.ctrl);
  const memory = inProcessGuestMemory(init.memory, init.base, init.scatterPageSize);
  let userHandler: (m: unknown) => void = () => {};
  const env: DeviceWorkerEnv = {
    post: (message) => port.postMessage({ type: 'user', message }),
    onMessage: (h) => {
      userHandler = h;
    },
    memory,
  };
  const mod = (await import(init.module)) as Record<string, unknown>;
  const factory = mod[init.exportName] as DeviceFactory | undefined;
  if (typeof factory !== 'function') throw new Error(`device module ${init.module} has no export ${init.exportName}`);
  const model = await factory(init.options, env);
  const host = new InProcessDeviceHost(model, memory, ctrl, () => {
    Atomics.add(ctrl, CTRL_IRQ_SEQ, 1);
    Atomics.notify(ctrl, CTRL_IRQ_SEQ);
  });
  port.on('message', (m: Control) => {
    try {
      switch (m.type) {
        case 'features':
          host.setFeatures(m.features);
          break;
        case 'queue':
          host.setupQueue(m.index, m.size, m.desc, m.avail, m.used);
          break;
        case 'reset':
          host.reset();
          break;
        case 'user':
          userHandler(m.message);
          break;
      }
    } catch (e) {
      port.postMessage({ type: 'error', message: (e as Error).message, stack: (e as Error).stack });
    }
  });
  port.postMessage({ type: 'ready', description: describe(model) });

  // Doorbell loop.
  let seen = Atomics.load(ctrl, CTRL_DOORBELL_SEQ);
  while (Atomics.load(ctrl, CTRL_STOP) === 0) {
    const w = Atomics.waitAsync(ctrl, CTRL_DOORBELL_SEQ, seen);
    if (w.async) await w.value;
    seen = Atomics.load(ctrl, CTRL_DOORBELL_SEQ);
    if (Atomics.load(ctrl, CTRL_STOP) !== 0) break;
    host.serviceDoorbells();
  }
  host.reset();
  port.postMessage({ type: 'stopped' });
  port.close();
}

main().catch((e: unknown) => {
  parentPort?.postMessage({ type: 'error', message: (e as Error).message, stack: (e as Error).stack, fatal: true });
});
