// A vsock SEQPACKET socket (virtio 1.2, 5.10.6, VIRTIO_VSOCK_F_SEQPACKET): a VsockSocket
// whose unit is the message. One write() is one message, sent in packets that are never
// merged with another write's and whose last carries EOM|EOR (tx-path.ts); writes queued
// together (Node's writev) still go one message each. On the readable side every 'data'
// chunk (or read()) is one whole message: bytes are gathered until the packet with EOM.
// A message larger than the peer's buf_alloc fails its write with EMSGSIZE (the peer
// could never hold it whole), as Linux does.
import { type VsockConnection, copyPayload } from './connection.js';
import { VsockSocket, type VsockSocketOptions } from './socket.js';

/** A socket's type: a byte stream (VsockSocket) or messages (VsockSeqpacketSocket). */
export type SocketType = 'stream' | 'seqpacket';

export class VsockSeqpacketSocket extends VsockSocket {
  /** The message being received, in pieces, and its bytes. */
  private parts: Buffer[] = [];
  private partBytes = 0;
  /** Bytes of whole messages waiting in the readable buffer. */
  private queuedBytes = 0;

  /** @internal Made by the driver (connect with type 'seqpacket') or a SEQPACKET server. */
  constructor(conn: VsockConnection, localCid: number, opts: VsockSocketOptions = {}) {
    super(conn, localCid, opts, true);
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    let i = 0;
    const next = (err?: Error | null): void => {
      if (err || i === chunks.length) return callback(err);
      const c = chunks[i++]!;
      this._write(c.chunk, c.encoding, next);
    };
    next();
  }

  /** @internal A piece of the current message. */
  override onData(bytes: Uint8Array, offset: number, length: number): void {
    this.noteActivity();
    this.bytesRead += length;
    this.parts.push(copyPayload(bytes, offset, length));
    this.partBytes += length;
  }

  /** @internal EOM: the pieces are one message. */
  onMessageEnd(): void {
    const msg = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partBytes);
    this.parts = [];
    this.partBytes = 0;
    // A flowing stream with nothing buffered hands the message to 'data' at once, without
    // read(): only a message that stays in the buffer is counted as unconsumed.
    const buffered = this.readableLength;
    this.push(msg);
    if (this.readableLength > buffered) this.queuedBytes += msg.length;
  }

  protected override noteConsumed(chunk: Buffer): void {
    this.queuedBytes -= chunk.length;
  }

  /** @internal */
  override unconsumedBytes(): number {
    return this.partBytes + this.queuedBytes;
  }
}
