// A ListenFunction over node:net on one address (127.0.0.1 by default), half-open
// capable as the webserver wants; port 0 picks a free port (see the handle's port).
import { createServer } from 'node:net';
import type { Duplex } from 'node:stream';

export interface NetListenHandle {
  /** The port actually bound. */
  readonly port: number;
  close(): Promise<void>;
}

export function listenNet(port: number, onSocket: (socket: Duplex) => void, host = '127.0.0.1'): Promise<NetListenHandle> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr !== null ? addr.port : port,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}
