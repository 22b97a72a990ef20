// TCP forward: listens on a host address and port, and joins every accepted TCP
// connection to a new vsock connection to a guest port (half-close both ways; a
// refused guest connect resets the TCP connection). While no VM is attached
// (`attached()` false) a client is reset at once instead of waiting for the connect
// timeout.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { VsockHost } from '../device/host-api.js';
import { type HostEndStats, type HostLog, makeHostEndStats, refusalOf } from './host-stats.js';
import { listenOn } from './socket-path.js';
import { spliceStreams } from './splice.js';

export interface TcpForwardOptions {
  host: VsockHost;
  listenHost: string;
  /** 0 picks a free port (see address()). */
  listenPort: number;
  guestPort: number;
  connectTimeoutMs?: number;
  /** Whether a VM is attached (default: always); when not, clients are reset at once. */
  attached?: () => boolean;
  log?: HostLog;
}

/** HOST:PORT, with IPv6 hosts in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export class TcpForward {
  readonly stats: HostEndStats = makeHostEndStats();
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: TcpForwardOptions) {}

  async listen(): Promise<AddressInfo> {
    // pauseOnConnect: bytes the client sends before the guest answers stay in the socket.
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.onClient(s));
    const where = formatHostPort(this.opts.listenHost, this.opts.listenPort);
    await listenOn(server, 'tcp forward', where, (done) => server.listen(this.opts.listenPort, this.opts.listenHost, done));
    this.server = server;
    return server.address() as AddressInfo;
  }

  /** The guest port every connection goes to. */
  get guestPort(): number {
    return this.opts.guestPort;
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
    this.stats.accepted++;
    const name = `tcp forward ${formatHostPort(this.opts.listenHost, this.opts.listenPort)} -> guest port ${this.opts.guestPort}`;
    if (this.opts.attached !== undefined && !this.opts.attached()) {
      // A client retrying in a loop must not flood the log: the first 10, then every 1000th.
      const n = ++this.stats.refused.notAttached;
      if (n <= 10 || n % 1000 === 0) this.opts.log?.(`${name}: VM not attached: client reset (#${n})`, 'info');
      s.resetAndDestroy();
      return;
    }
    this.opts.host.connect(this.opts.guestPort, { timeoutMs: this.opts.connectTimeoutMs }).then(
      (vs) => {
        if (s.destroyed) {
          vs.destroy();
          return;
        }
        this.stats.connected++;
        spliceStreams(s, vs);
      },
      (e: NodeJS.ErrnoException) => {
        this.stats.refused[refusalOf(e)]++;
        this.opts.log?.(`${name}: ${e.code ?? e.message}: client reset`, 'info');
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
