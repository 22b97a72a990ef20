// The runtime behind tsvirtio/guest, over our drivers: the vsock driver's servers and
// sockets, the virtio-fs drivers of the shared folders, DMA buffers, and an exit that
// resets the devices before the process ends. The launcher (launcher.ts) builds it in
// the guest; tests build it over in-process devices.
import type { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import type { VsockDriver } from '../../drivers/virtio-vsock/index.js';
import type { GuestRuntime } from './runtime-api.js';

export interface RuntimeParts {
  vsock: VsockDriver;
  /** One driver per shared folder, in the order of the --share flags. */
  shares: readonly VirtioFsDriver[];
  /** Ends the process with `status` (the launcher resets the devices first). */
  exit(status: number): never;
}

export function createGuestRuntime(parts: RuntimeParts): GuestRuntime {
  const { vsock } = parts;
  return {
    get cid() {
      return vsock.localCid;
    },
    txMode: vsock.txMode,
    shares: parts.shares,
    createServer: (onConnection) => vsock.createServer(onConnection),
    connect: (options, onConnect) => vsock.connect(options, onConnect),
    allocBuffer: (size) => vsock.allocBuffer(size),
    freeBuffer: (buffer) => vsock.freeBuffer(buffer),
    exit: (status) => parts.exit(status),
  };
}
