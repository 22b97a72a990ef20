// The ping-pong service: every byte a client sends comes back on the same connection,
// on any listener that gives Duplex sockets (a vsock server in the guest, node:net on
// the host). Backpressure is the stream's: reading pauses while the echo is not sent.
import type { Duplex } from 'node:stream';

/** The guest port the ping-pong service listens on by default. */
export const DEFAULT_PINGPONG_PORT = 5000;

export interface EchoStats {
  connections: number;
  open: number;
  bytesEchoed: number;
}

export class EchoService {
  readonly stats: EchoStats = { connections: 0, open: 0, bytesEchoed: 0 };
  private readonly sockets = new Set<Duplex>();

  /** Echoes one connection until the client ends it. */
  readonly handleConnection = (socket: Duplex): void => {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.stats.connections++;
    this.stats.open++;
    this.sockets.add(socket);
    socket.on('data', (chunk: Buffer) => {
      this.stats.bytesEchoed += chunk.length;
      // The received chunk goes back as it is; reading pauses while the write side is full.
      if (!socket.write(chunk)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    });
    socket.on('end', () => socket.end());
    socket.on('error', () => {
      // a reset peer: 'close' follows
    });
    socket.on('close', () => {
      if (this.sockets.delete(socket)) this.stats.open--;
    });
  };

  private closed = false;

  /** Destroys every open connection; later ones are refused. */
  close(): void {
    this.closed = true;
    for (const s of [...this.sockets]) s.destroy();
  }
}

/** Starts listening on `port`, calling onSocket per connection (see webserver's ListenFunction). */
export type ListenFunction = (port: number, onSocket: (socket: Duplex) => void) => ListenHandle | Promise<ListenHandle>;

export interface ListenHandle {
  close(): void | Promise<void>;
  /** The port actually bound, when it differs from the one asked (port 0). */
  readonly port?: number;
}

export interface RunningPingPong {
  readonly service: EchoService;
  readonly port: number;
  close(): Promise<void>;
}

/** The guest entry point: the boot code passes its listener (as runWebserver). */
export async function runPingPong(opts: { listen: ListenFunction; port?: number; log?: (line: string) => void }): Promise<RunningPingPong> {
  const port = opts.port ?? DEFAULT_PINGPONG_PORT;
  const service = new EchoService();
  const handle = await opts.listen(port, service.handleConnection);
  const bound = handle.port ?? port;
  opts.log?.(`ping-pong: echoing on port ${bound}`);
  return {
    service,
    port: bound,
    async close() {
      // Connections first: a listener's close may wait for its connections to end.
      service.close();
      await handle.close();
    },
  };
}
