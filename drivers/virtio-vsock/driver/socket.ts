// A vsock stream socket with the shape of Node's net.Socket: a node:stream Duplex with
// 'connect', 'ready', 'data', 'end', 'finish', 'close', 'error', remoteCid/remotePort/
// localPort, and the methods Node's http.Server calls on a socket (setTimeout,
// setNoDelay, setKeepAlive, destroySoon, ref/unref) in harmless form.
//
// A thin adapter over the connection's RawVsockConnection, which does all the work:
// _write/_writev -> raw.write/writev, _final -> raw.end, _destroy -> raw.destroy,
// _read -> raw.resume; raw onData -> push (pausing the raw connection when the
// readable buffer is full), onEnd -> push(null), onClose(err) -> destroy(err).
//
// Backpressure runs through both limits: the stream's writableHighWaterMark (write()
// returns false) and the peer's credit (the pending _write completes only when its
// bytes are queued, or, for zero copy, returned by the device). Bytes in the readable
// buffer count as unconsumed, so the peer stops at our buf_alloc (virtio 1.2, 5.10.6.3).
import { Duplex } from 'node:stream';
import type { TxMode } from './connection.js';
import type { RawConnectionHandlers, RawVsockConnection } from './raw-connection.js';

export interface VsockSocketOptions {
  /** Keep our sending side open after the peer's end (default false, as net.Socket). */
  allowHalfOpen?: boolean;
  readableHighWaterMark?: number;
  writableHighWaterMark?: number;
  /** This socket's transmit path (default: the driver's txMode); e.g. per server via createServer({ txMode }). */
  txMode?: TxMode;
}

export class VsockSocket extends Duplex implements RawConnectionHandlers {
  /** True until 'connect' (outgoing sockets). */
  connecting: boolean;
  readonly remoteCid: number;
  readonly remotePort: number;
  readonly localPort: number;
  readonly localCid: number;
  private idleTimeoutMs = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  protected readonly raw: RawVsockConnection;
  /** The peer's end was pushed, and our SHUTDOWN went out: the raw connection closes on its own and 'end'/'finish' lead to autoDestroy. */
  private readEnded = false;
  private writeFinished = false;

  /** @internal Made by the driver (connect) or a server (incoming); a SEQPACKET connection makes each readable chunk one message. */
  constructor(raw: RawVsockConnection, localCid: number, opts: VsockSocketOptions = {}) {
    super({
      allowHalfOpen: opts.allowHalfOpen ?? false,
      readableObjectMode: raw.messages,
      readableHighWaterMark: opts.readableHighWaterMark,
      writableHighWaterMark: opts.writableHighWaterMark,
      decodeStrings: true,
    });
    this.raw = raw;
    this.remoteCid = raw.remoteCid;
    this.remotePort = raw.remotePort;
    this.localPort = raw.localPort;
    this.localCid = localCid;
    this.connecting = raw.connecting;
    raw.setHandlers(this);
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
  /** Payload bytes received and sent (as net.Socket's bytesRead / bytesWritten). */
  get bytesRead(): number {
    return this.raw.bytesRead;
  }
  get bytesWritten(): number {
    return this.raw.bytesWritten;
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
    return this.raw.vsockState;
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

  /** Activity: restarts the idle timer. */
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
    this.raw.reset();
    return this.destroy();
  }

  // ---- Duplex implementation

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.touch();
    this.raw.write(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    this.touch();
    const list = new Array<Uint8Array>(chunks.length);
    for (let i = 0; i < chunks.length; i++) list[i] = chunks[i]!.chunk;
    this.raw.writev(list, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.raw.end((err) => {
      this.writeFinished = true;
      callback(err);
    });
  }

  override _read(_size: number): void {
    this.raw.resume();
    this.raw.consumed();
  }

  /** Every chunk taken out of the readable buffer advances fwd_cnt (credit for the peer). */
  override read(size?: number): any {
    const chunk: unknown = super.read(size);
    if (chunk !== null) {
      this.noteConsumed(chunk as Buffer);
      this.raw.consumed();
    }
    return chunk;
  }

  /** A chunk left the readable buffer (before the connection recounts what is unconsumed). */
  protected noteConsumed(_chunk: Buffer): void {}

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    this.raw.destroy();
    callback(err);
  }

  // ---- RawConnectionHandlers (called by the raw connection)

  /** @internal */
  onConnect(): void {
    this.connecting = false;
    this.emit('connect');
    this.emit('ready');
  }

  /** @internal A chunk (SEQPACKET: a message) of our own. */
  onData(chunk: Buffer): void {
    this.touch();
    if (!this.push(chunk)) this.raw.pause();
  }

  /** @internal */
  onEnd(): void {
    this.readEnded = true;
    this.push(null);
  }

  /** @internal The stream's writable side has its own drain. */
  onDrain(): void {}

  /** @internal An orderly close needs nothing here: 'end' and 'finish' are under way and autoDestroy follows. */
  onClose(err: Error | null): void {
    if (this.destroyed) return;
    if (err !== null) this.destroy(err);
    else if (!this.readEnded || !this.writeFinished) this.destroy(); // the driver closed, or reset()
  }

  /** @internal Bytes in the readable buffer (the raw connection adds what it holds). */
  unreadBytes(): number {
    return this.readableLength;
  }
}
