// TCP forward: listens on a host address and port, and joins every accepted TCP
// connection to a new vsock connection to a guest port (half-close both ways; a
// refused guest connect resets the TCP connection).
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { VsockHost } from '../device/host-api.js';
import { spliceStreams } from './splice.js';

export interface TcpForwardOptions {
  host: VsockHost;
  listenHost: string;
  /** 0 picks a free port (see address()). */
  listenPort: number;
  guestPort: number;
  connectTimeoutMs?: number;
  log?: (message: string) => void;
}

export class TcpForward {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: TcpForwardOptions) {}

  async listen(): Promise<AddressInfo> {
    // pauseOnConnect: bytes the client sends before the guest answers stay in the socket.
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.onClient(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.listenPort, this.opts.listenHost, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    return server.address() as AddressInfo;
  }

  address(): AddressInfo | null {
    return (this.server?.address() as AddressInfo | null) ?? null;
  }

  private onClient(s: Socket): void {
    // Without TCP_NODELAY, Nagle plus the client's delayed ACK holds the tail of each
    // keep-alive response for ~40 ms: the guest writes responses whole, so send at once.
    s.setNoDelay(true);
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
    s.on('error', () => {});
    this.opts.host.connect(this.opts.guestPort, { timeoutMs: this.opts.connectTimeoutMs }).then(
      (vs) => {
        if (s.destroyed) {
          vs.destroy();
          return;
        }
        spliceStreams(s, vs);
      },
      (e: NodeJS.ErrnoException) => {
        this.opts.log?.(`tcp forward ${this.opts.listenHost}:${this.opts.listenPort} -> guest port ${this.opts.guestPort}: ${e.code ?? e.message}`);
        s.resetAndDestroy();
      },
    );
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
