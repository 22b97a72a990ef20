// Glue between our vsock driver and the appliance's services: a ListenFunction over
// the driver's servers (Duplex sockets, for any service), a RawListenFunction over
// listenRaw (no node:stream: the webserver's fast path), and a BufferAllocator over its
// DMA memory (so file bytes go to the device without a copy). Used by the guest boot
// code and the in-process tests.
import type { Duplex } from 'node:stream';
import type { VsockDriver } from '../../../drivers/virtio-vsock/index.js';
import type { BufferAllocator } from '../files/body-buffer-pool.js';
import type { ByteConnection } from '../http/byte-connection.js';
import type { ListenHandle, RawListenFunction } from '../run-guest.js';

/** Listens on a vsock port of `driver`; sockets are half-open capable. */
export function vsockListen(driver: VsockDriver): (port: number, onSocket: (socket: Duplex) => void) => Promise<ListenHandle> {
  return (port, onSocket) =>
    new Promise((resolve, reject) => {
      const server = driver.createServer({ allowHalfOpen: true }, onSocket);
      server.once('error', reject);
      server.listen(port, () => {
        server.off('error', reject);
        resolve({ close: () => new Promise<void>((r) => server.close(() => r())) });
      });
    });
}

/** Listens on a vsock port of `driver` with driver.listenRaw: connections as ByteConnections (half-open capable). */
export function vsockListenRaw(driver: VsockDriver): RawListenFunction {
  return (port, onConnection: (conn: ByteConnection) => void) => {
    const listener = driver.listenRaw(port, onConnection);
    return { port: listener.port, close: () => listener.close() };
  };
}

/** Body buffers in the driver's DMA memory. */
export function vsockBufferAllocator(driver: VsockDriver): BufferAllocator {
  return {
    alloc: (size) => driver.allocBuffer(size),
    free: (buf) => driver.freeBuffer(buf),
  };
}
