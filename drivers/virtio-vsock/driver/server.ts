// A listening vsock port with the shape of Node's net.Server: listen(port, cb),
// close(cb), address(), getConnections(cb), and the 'listening', 'connection', 'close'
// and 'error' events. 'close' comes once the server stopped listening and every
// connection it accepted has closed, as net.Server does it.
import { EventEmitter } from 'node:events';
import type { VsockConnection } from './connection.js';
import { VsockError } from './errors.js';
import { VSOCK_TYPE_STREAM } from '../header.js';
import { socketFor } from './seqpacket-socket.js';
import type { VsockSocket, VsockSocketOptions } from './socket.js';

/** What the driver needs from a bound port: a VsockServer (sockets) or a RawVsockListener. */
export interface VsockListener {
  /** False: answer REQUESTs with RST. */
  readonly acceptsMore: boolean;
  /** The connection type it accepts (default VSOCK_TYPE_STREAM); REQUESTs of another get RST. */
  readonly type?: number;
  /** A REQUEST was accepted: wrap `conn` in its RawVsockConnection (and a VsockSocket), send RESPONSE (conn.accept()), hand it out. */
  onRequest(conn: VsockConnection): void;
  /** Stops listening (unbinds the port). */
  close(): void;
}

/** What a listener needs from its driver. */
export interface ListenerHost {
  readonly localCid: number;
  /** Binds `port` (0: an ephemeral one) to the listener; returns the port or throws EADDRINUSE. */
  bindListener(port: number, listener: VsockListener): number;
  unbindListener(port: number, listener: VsockListener): void;
}

export class VsockServer extends EventEmitter implements VsockListener {
  listening = false;
  /** Refuse (RST) connections beyond this many open ones, as net.Server.maxConnections. */
  maxConnections = Infinity;
  private port = -1;
  private readonly sockets = new Set<VsockSocket>();
  private closeCallbacks: Array<(err?: Error) => void> = [];

  /** @internal */
  constructor(
    private readonly host: ListenerHost,
    /** Options for accepted sockets. */
    readonly socketOptions: VsockSocketOptions = {},
    onConnection?: (socket: VsockSocket) => void,
    /** VSOCK_TYPE_STREAM (VsockSocket) or VSOCK_TYPE_SEQPACKET (VsockSeqpacketSocket). */
    readonly type: number = VSOCK_TYPE_STREAM,
  ) {
    super();
    if (onConnection) this.on('connection', onConnection);
  }

  /** listen(port, cb) or listen({ port }, cb); port 0 or absent picks an ephemeral port. */
  listen(port?: number | { port?: number } | (() => void), callback?: () => void): this {
    if (typeof port === 'function') {
      callback = port;
      port = 0;
    }
    const wanted = typeof port === 'object' && port !== null ? (port.port ?? 0) : (port ?? 0);
    if (callback) this.once('listening', callback);
    if (this.listening) {
      process.nextTick(() => this.emit('error', new VsockError('EADDRINUSE', `server is already listening on port ${this.port}`, 'listen')));
      return this;
    }
    try {
      this.port = this.host.bindListener(wanted, this);
    } catch (e) {
      process.nextTick(() => this.emit('error', e));
      return this;
    }
    this.listening = true;
    process.nextTick(() => this.emit('listening'));
    return this;
  }

  address(): { cid: number; port: number; family: string } | null {
    return this.listening ? { cid: this.host.localCid, port: this.port, family: 'vsock' } : null;
  }

  /** Stops accepting; 'close' follows when the accepted connections are gone. */
  close(callback?: (err?: Error) => void): this {
    if (!this.listening) {
      if (callback) process.nextTick(() => callback(new VsockError('ERR_VSOCK_NOT_LISTENING', 'server is not running', 'close')));
      return this;
    }
    this.listening = false;
    this.host.unbindListener(this.port, this);
    if (callback) this.closeCallbacks.push(callback);
    this.maybeEmitClose();
    return this;
  }

  getConnections(callback: (err: Error | null, count: number) => void): this {
    process.nextTick(() => callback(null, this.sockets.size));
    return this;
  }

  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }

  /** @internal True when another connection may be accepted. */
  get acceptsMore(): boolean {
    return this.listening && this.sockets.size < this.maxConnections;
  }

  /** @internal An accepted connection: a socket for it, RESPONSE, then 'connection'. */
  onRequest(conn: VsockConnection): void {
    const socket = socketFor(conn, this.host.localCid, this.socketOptions);
    conn.accept();
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (!this.listening) this.maybeEmitClose();
    });
    this.emit('connection', socket);
  }

  private maybeEmitClose(): void {
    if (this.listening || this.sockets.size > 0) return;
    const cbs = this.closeCallbacks;
    this.closeCallbacks = [];
    process.nextTick(() => {
      for (const cb of cbs) cb();
      this.emit('close');
    });
  }
}
