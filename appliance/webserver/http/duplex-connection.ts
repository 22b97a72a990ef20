// A ByteConnection over a node:stream Duplex (node:net sockets, the kernel's AF_VSOCK
// sockets, VsockSocket): the stream's events become handler calls, a gathered write is
// cork / write... / uncork (Node hands the batch to _writev: one packet).
import type { Duplex } from 'node:stream';
import type { ByteConnection, ByteConnectionHandlers, WriteCallback } from './byte-connection.js';

export class DuplexByteConnection implements ByteConnection {
  constructor(readonly socket: Duplex) {}

  setHandlers(h: ByteConnectionHandlers): void {
    const s = this.socket;
    let error: Error | null = null;
    s.on('data', (chunk: Buffer | string) => h.onData(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk));
    s.on('end', () => h.onEnd());
    s.on('drain', () => h.onDrain());
    // 'close' follows an error; the handler hears of it there.
    s.on('error', (err: Error) => (error = err));
    s.on('close', () => h.onClose(error));
  }

  write(chunk: Uint8Array, cb?: WriteCallback): boolean {
    return this.socket.write(chunk, cb);
  }

  writev(chunks: readonly Uint8Array[], cb?: WriteCallback): boolean {
    const s = this.socket;
    const last = chunks.length - 1;
    if (last < 0) return s.write(Buffer.alloc(0), cb);
    s.cork();
    for (let i = 0; i < last; i++) s.write(chunks[i]!);
    const ok = s.write(chunks[last]!, cb);
    s.uncork();
    return ok;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  isPaused(): boolean {
    return this.socket.isPaused();
  }

  get needDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  get writeEnded(): boolean {
    return this.socket.destroyed || this.socket.writableEnded;
  }
}
