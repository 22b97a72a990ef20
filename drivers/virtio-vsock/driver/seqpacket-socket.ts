// A vsock SEQPACKET socket (virtio 1.2, 5.10.6, VIRTIO_VSOCK_F_SEQPACKET): a VsockSocket
// whose unit is the message. One write() is one message, sent in packets that are never
// merged with another write's and whose last carries EOM|EOR (tx-path.ts); writes queued
// together (Node's writev) still go one message each. On the readable side every 'data'
// chunk (or read()) is one whole message: the raw connection gathers the bytes up to the
// packet with EOM. A message larger than the peer's buf_alloc fails its write with
// EMSGSIZE (the peer could never hold it whole), as Linux does.
import type { VsockConnection } from './connection.js';
import { RawVsockConnection } from './raw-connection.js';
import { VsockSocket, type VsockSocketOptions } from './socket.js';
import { VSOCK_TYPE_SEQPACKET } from '../header.js';

/** A socket's type: a byte stream (VsockSocket) or messages (VsockSeqpacketSocket). */
export type SocketType = 'stream' | 'seqpacket';

export class VsockSeqpacketSocket extends VsockSocket {
  /** Bytes of whole messages waiting in the readable buffer (objectMode counts messages, not bytes). */
  private queuedBytes = 0;

  /** Node batches separate write()s into one _writev: each stays its own message. */
  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    const last = chunks.length - 1;
    for (let i = 0; i < last; i++) this.raw.write(chunks[i]!.chunk);
    this._write(chunks[last]!.chunk, chunks[last]!.encoding, callback);
  }

  /** @internal A whole message. */
  override onData(msg: Buffer): void {
    // A flowing stream with nothing buffered hands the message to 'data' at once, without
    // read(): only a message that stays in the buffer is counted as unread.
    const buffered = this.readableLength;
    super.onData(msg);
    if (this.readableLength > buffered) this.queuedBytes += msg.length;
  }

  protected override noteConsumed(chunk: Buffer): void {
    this.queuedBytes -= chunk.length;
  }

  /** @internal */
  override unreadBytes(): number {
    return this.queuedBytes;
  }
}

/** The Duplex for a connection: VsockSeqpacketSocket for SEQPACKET, else VsockSocket; both over a RawVsockConnection. */
export function socketFor(conn: VsockConnection, localCid: number, opts: VsockSocketOptions): VsockSocket {
  // The Duplex has its own writableHighWaterMark and gives one write at a time: no second one here.
  const raw = new RawVsockConnection(conn, { txMode: opts.txMode, writableHighWaterMark: Infinity });
  return conn.type === VSOCK_TYPE_SEQPACKET ? new VsockSeqpacketSocket(raw, localCid, opts) : new VsockSocket(raw, localCid, opts);
}
