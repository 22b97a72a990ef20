// A bound vsock port that hands out RawVsockConnections (driver.listenRaw): no
// EventEmitter, no listening/close events; binding happens in the constructor and
// close() only unbinds (accepted connections live on, as with net.Server).
import type { VsockConnection } from './connection.js';
import { type RawConnectionOptions, RawVsockConnection } from './raw-connection.js';
import type { ListenerHost, VsockListener } from './server.js';

export class RawVsockListener implements VsockListener {
  /** The port bound (the one asked, or an ephemeral one for 0). */
  readonly port: number;
  private listening = true;

  /** @internal Made by driver.listenRaw; throws EADDRINUSE when the port is taken. */
  constructor(
    private readonly host: ListenerHost,
    port: number,
    private readonly onConnection: (conn: RawVsockConnection) => void,
    private readonly options: RawConnectionOptions,
  ) {
    this.port = host.bindListener(port, this);
  }

  get acceptsMore(): boolean {
    return this.listening;
  }

  /** @internal */
  onRequest(conn: VsockConnection): void {
    const raw = new RawVsockConnection(conn, this.options);
    conn.accept();
    this.onConnection(raw);
  }

  /** Stops accepting; open connections stay. */
  close(): void {
    if (!this.listening) return;
    this.listening = false;
    this.host.unbindListener(this.port, this);
  }
}
