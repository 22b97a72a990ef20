// Credit-based flow control of one connection (virtio 1.2, 5.10.6.3 "Flow Control").
//
// Each side advertises buf_alloc (its receive buffer) and fwd_cnt (bytes it has
// handed to its application, a free-running u32) in every header. A sender keeps
// tx_cnt (bytes sent, u32) and may have at most the peer's buf_alloc unacknowledged:
//   credit = min(peer_buf_alloc, buf_alloc) - (tx_cnt - peer_fwd_cnt)
// (the cap by our own buf_alloc bounds what a peer advertising a huge buffer can make
// us keep in flight: Linux virtio_transport_common.c, see DESIGN.md "credit lessons").
// The receiver tells the sender about consumed bytes with CREDIT_UPDATE when the
// sender's view of our free space falls under a threshold. All counters wrap at 2^32.

/** Largest payload of one packet (Linux VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const VSOCK_MAX_PKT_PAYLOAD = 64 * 1024;
/** Send CREDIT_UPDATE when the peer's view of our free space falls under this. */
export const CREDIT_UPDATE_THRESHOLD_BYTES = 64 * 1024;

export class CreditState {
  // Our receive side.
  /** Our receive buffer size, advertised as buf_alloc. */
  bufAlloc: number;
  /** Bytes received on this connection (u32). */
  rxCnt = 0;
  /** Bytes handed to the application (u32), advertised as fwd_cnt. */
  fwdCnt = 0;
  /** fwd_cnt as last sent to the peer in any header. */
  lastSentFwdCnt = 0;

  // Our transmit side.
  /** Bytes sent (u32). */
  txCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;

  constructor(bufAlloc: number) {
    this.bufAlloc = bufAlloc;
  }

  /** Takes the peer's buf_alloc and fwd_cnt from a received header. */
  onPeerHeader(bufAlloc: number, fwdCnt: number): void {
    this.peerBufAlloc = bufAlloc >>> 0;
    this.peerFwdCnt = fwdCnt >>> 0;
  }

  /** Bytes we may send now (never negative, even if the peer shrank its buffer). */
  sendCredit(): number {
    const window = Math.min(this.peerBufAlloc, this.bufAlloc);
    const inFlight = (this.txCnt - this.peerFwdCnt) >>> 0;
    return inFlight >= window ? 0 : window - inFlight;
  }

  /** Records `n` payload bytes sent. */
  onSent(n: number): void {
    this.txCnt = (this.txCnt + n) >>> 0;
  }

  /**
   * Records `n` payload bytes received. Returns false when they exceed the space we
   * advertised (the peer ignored our credit): the caller treats that as a protocol error.
   */
  onReceived(n: number): boolean {
    const unconsumed = (this.rxCnt - this.fwdCnt) >>> 0;
    if (unconsumed + n > this.bufAlloc) return false;
    this.rxCnt = (this.rxCnt + n) >>> 0;
    return true;
  }

  /** The application now holds `unconsumed` bytes not yet read: fwd_cnt = rx_cnt - unconsumed. */
  setUnconsumed(unconsumed: number): void {
    this.fwdCnt = (this.rxCnt - unconsumed) >>> 0;
  }

  /** Called when a header carrying fwdCnt goes out. */
  onHeaderSent(): void {
    this.lastSentFwdCnt = this.fwdCnt;
  }

  /** The free space the peer believes we have (from the last fwd_cnt we sent). */
  peerViewOfFreeSpace(): number {
    const used = (this.rxCnt - this.lastSentFwdCnt) >>> 0;
    return used >= this.bufAlloc ? 0 : this.bufAlloc - used;
  }

  /**
   * True when a CREDIT_UPDATE is worth sending: the peer's view of our free space is
   * under the threshold, and the space really free is at least the threshold (so one
   * update reopens the window by a useful amount instead of a trickle of small ones).
   */
  needsCreditUpdate(): boolean {
    if (this.fwdCnt === this.lastSentFwdCnt) return false;
    const threshold = Math.min(CREDIT_UPDATE_THRESHOLD_BYTES, this.bufAlloc >>> 1);
    if (this.peerViewOfFreeSpace() >= threshold) return false;
    const unconsumed = (this.rxCnt - this.fwdCnt) >>> 0;
    return this.bufAlloc - unconsumed >= threshold;
  }
}
