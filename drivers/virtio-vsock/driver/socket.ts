// A vsock stream socket with the shape of Node's net.Socket: a node:stream Duplex with
// 'connect', 'ready', 'data', 'end', 'finish', 'close', 'error', remoteCid/remotePort/
// localPort, and the methods Node's http.Server calls on a socket (setTimeout,
// setNoDelay, setKeepAlive, destroySoon, ref/unref) in harmless form.
//
// Backpressure runs through both limits: the stream's writableHighWaterMark (write()
// returns false) and the peer's credit (the pending _write completes only when its
// bytes are queued, or, for zero copy, returned by the device).
import { Duplex } from 'node:stream';
import { CONN_CONNECTING, CONN_ESTABLISHED, type ConnectionEvents, type TxMode, type VsockConnection, copyPayload } from './connection.js';
import type { VsockError } from './errors.js';

export interface VsockSocketOptions {
  /** Keep our sending side open after the peer's end (default false, as net.Socket). */
  allowHalfOpen?: boolean;
  readableHighWaterMark?: number;
  writableHighWaterMark?: number;
  /** This socket's transmit path (default: the driver's txMode); e.g. per server via createServer({ txMode }). */
  txMode?: TxMode;
}

export class VsockSocket extends Duplex implements ConnectionEvents {
  /** True until 'connect' (outgoing sockets). */
  connecting: boolean;
  readonly remoteCid: number;
  readonly remotePort: number;
  readonly localPort: number;
  readonly localCid: number;
  /** Payload bytes received and sent (as net.Socket's bytesRead / bytesWritten). */
  bytesRead = 0;
  private idleTimeoutMs = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  /** The connection, null once released. */
  private conn: VsockConnection | null;

  /** @internal Made by the driver (connect) or a server (incoming); `messages`: each readable chunk is one message (SEQPACKET). */
  constructor(conn: VsockConnection, localCid: number, opts: VsockSocketOptions = {}, messages = false) {
    super({
      allowHalfOpen: opts.allowHalfOpen ?? false,
      readableObjectMode: messages,
      readableHighWaterMark: opts.readableHighWaterMark,
      writableHighWaterMark: opts.writableHighWaterMark,
      decodeStrings: true,
    });
    this.conn = conn;
    this.remoteCid = conn.remoteCid;
    this.remotePort = conn.remotePort;
    this.localPort = conn.localPort;
    this.localCid = localCid;
    this.connecting = conn.state === CONN_CONNECTING;
    conn.attach(this, opts.txMode);
  }

  // ---- net.Socket-like surface

  get remoteAddress(): string {
    return `vsock:${this.remoteCid}`;
  }
  get remoteFamily(): string {
    return 'vsock';
  }
  get localAddress(): string {
    return `vsock:${this.localCid}`;
  }
  get bytesWritten(): number {
    return this.conn ? this.conn.credit.txCnt : 0;
  }
  /** 'opening' | 'open' | 'readOnly' | 'writeOnly' | 'closed', as net.Socket. */
  get readyState(): string {
    if (this.connecting) return 'opening';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }
  /** The connection state ('ESTABLISHED', ...), for diagnostics. */
  get vsockState(): string {
    return this.conn ? this.conn.stateName : 'CLOSED';
  }

  /** The idle timeout set by setTimeout (ms, 0 = none), as net.Socket.timeout. */
  get timeout(): number {
    return this.idleTimeoutMs;
  }

  address(): { cid: number; port: number; family: string } {
    return { cid: this.localCid, port: this.localPort, family: 'vsock' };
  }

  /** Emits 'timeout' after `ms` without activity (0 disables), as net.Socket.setTimeout. */
  setTimeout(ms: number, callback?: () => void): this {
    this.idleTimeoutMs = ms;
    if (callback) {
      if (ms === 0) this.off('timeout', callback);
      else this.once('timeout', callback);
    }
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    if (ms > 0 && !this.destroyed) {
      this.idleTimer = setTimeout(() => this.emit('timeout'), ms);
      this.idleTimer.unref();
    }
    return this;
  }

  private touch(): void {
    if (this.idleTimer) this.idleTimer.refresh();
  }

  /** No Nagle in vsock: nothing to do. */
  setNoDelay(_noDelay?: boolean): this {
    return this;
  }
  /** No keep-alive probes in vsock: nothing to do. */
  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
  /** Ends our side, then destroys once the write side finished (net.Socket.destroySoon). */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }
  /** Closes with RST instead of the orderly SHUTDOWN (net.Socket.resetAndDestroy). */
  resetAndDestroy(): this {
    const conn = this.conn;
    this.conn = null;
    conn?.release(true);
    return this.destroy();
  }

  // ---- Duplex implementation

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.touch();
    const conn = this.conn;
    if (!conn) return callback(new Error('socket released'));
    conn.write(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    this.touch();
    const conn = this.conn;
    if (!conn) return callback(new Error('socket released'));
    const list = new Array<Uint8Array>(chunks.length);
    for (let i = 0; i < chunks.length; i++) list[i] = chunks[i]!.chunk;
    conn.write(list, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    const conn = this.conn;
    if (!conn) return callback();
    conn.shutdownSend(callback);
  }

  override _read(_size: number): void {
    this.conn?.onConsumed();
  }

  /** Every chunk taken out of the readable buffer advances fwd_cnt (credit for the peer). */
  override read(size?: number): any {
    const chunk: unknown = super.read(size);
    if (chunk !== null) {
      this.noteConsumed(chunk as Buffer);
      if (this.conn !== null) this.conn.onConsumed();
    }
    return chunk;
  }

  /** A chunk left the readable buffer (before the connection recounts what is unconsumed). */
  protected noteConsumed(_chunk: Buffer): void {}

  /** Resets the idle timer (activity). */
  protected noteActivity(): void {
    this.touch();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    const conn = this.conn;
    this.conn = null;
    conn?.release(false);
    callback(err);
  }

  // ---- ConnectionEvents (called by the connection)

  /** @internal */
  onEstablished(): void {
    this.connecting = false;
    this.emit('connect');
    this.emit('ready');
  }

  /** @internal Copies the payload out of the rx buffer (which is reposted right after). */
  onData(bytes: Uint8Array, offset: number, length: number): void {
    this.touch();
    this.bytesRead += length;
    this.push(copyPayload(bytes, offset, length));
  }

  /** @internal */
  onPeerEnd(): void {
    this.push(null);
  }

  /** @internal */
  onError(err: VsockError): void {
    this.conn = null;
    this.destroy(err);
  }

  /** @internal */
  onDriverClosed(): void {
    this.conn = null;
    this.destroy();
  }

  /** @internal */
  unconsumedBytes(): number {
    return this.readableLength;
  }

  /** @internal True when the connection is established (for the server's bookkeeping). */
  get isEstablished(): boolean {
    return this.conn !== null && this.conn.state === CONN_ESTABLISHED;
  }
}
