// Packets from sibling guests waiting for this guest's rx buffers: a byte ring of
// records [44-byte header | len payload bytes], filled straight from the sender's tx
// chain (its buffers are consumed at once) and emptied into rx chains. No allocation
// per packet. A record larger than an rx buffer goes out in pieces: each piece is an
// RW with len set to what fits, and SEQPACKET's EOM/EOR flags only on the last piece
// (how Linux itself sends a message larger than one packet).
//
// The ring's size bounds what a guest can have in flight towards a sibling that does
// not take its rx buffers; the guests' own credit keeps well-behaved traffic far below.
import type { DescriptorChain } from '../../../kernel/virtqueue/descriptor-chain.js';
import { VSOCK_HDR_FLAGS as OFF_FLAGS, VSOCK_HDR_LEN as OFF_LEN, VSOCK_HDR_OP as OFF_OP, VSOCK_HEADER_SIZE, VSOCK_OP_RW } from '../header.js';

export class SiblingQueue {
  private readonly ring: Buffer;
  private head = 0;
  private used = 0;
  /** Payload bytes of the head record already written to the guest. */
  private headSent = 0;
  /** The head record's header, copied out (it may wrap in the ring). */
  private readonly headHeader = Buffer.alloc(VSOCK_HEADER_SIZE);
  private headLoaded = false;
  /** The header of the piece emit() wrote last (for the packet tap). */
  readonly lastHeader = Buffer.alloc(VSOCK_HEADER_SIZE);
  /** Records queued. */
  packets = 0;

  constructor(readonly capacity: number) {
    this.ring = Buffer.alloc(capacity);
  }

  get isEmpty(): boolean {
    return this.used === 0;
  }

  get bytes(): number {
    return this.used;
  }

  /**
   * Queues header + `len` payload bytes read from `chain` at offset 44 (no chain when
   * len is 0). False when the ring has no room (nothing is queued then).
   */
  push(header: Buffer, chain: DescriptorChain | null, len: number): boolean {
    const need = VSOCK_HEADER_SIZE + len;
    if (need > this.capacity - this.used) return false;
    let tail = (this.head + this.used) % this.capacity;
    tail = this.copyIn(tail, header, VSOCK_HEADER_SIZE);
    let from = VSOCK_HEADER_SIZE;
    let left = len;
    while (left > 0) {
      const n = Math.min(left, this.capacity - tail);
      chain!.read(from, this.ring, tail, n);
      from += n;
      left -= n;
      tail = (tail + n) % this.capacity;
    }
    this.used += need;
    this.packets++;
    return true;
  }

  /** Copies src[0, n) to the ring at `at` (wrapping); Buffer.copy, no view objects. */
  private copyIn(at: number, src: Buffer, n: number): number {
    const first = Math.min(n, this.capacity - at);
    src.copy(this.ring, at, 0, first);
    if (first < n) src.copy(this.ring, 0, first, n);
    return (at + n) % this.capacity;
  }

  private loadHead(): void {
    if (this.headLoaded) return;
    const first = Math.min(VSOCK_HEADER_SIZE, this.capacity - this.head);
    this.ring.copy(this.headHeader, 0, this.head, this.head + first);
    if (first < VSOCK_HEADER_SIZE) this.ring.copy(this.headHeader, first, 0, VSOCK_HEADER_SIZE - first);
    this.headLoaded = true;
  }

  /**
   * Writes the head record (or its next piece) into `chain` (at least 44 writable bytes).
   * Returns the bytes written; `payloadOut[0]` gets the payload bytes among them.
   */
  emit(chain: DescriptorChain, payloadOut: Int32Array): number {
    this.loadHead();
    const h = this.headHeader;
    const total = h.readUInt32LE(OFF_LEN);
    const left = total - this.headSent;
    const room = chain.writableLength - VSOCK_HEADER_SIZE;
    const n = Math.min(left, room);
    const last = n === left;
    // The piece's own header: its len, and the record flags only on the last piece of an RW.
    const piece = this.lastHeader;
    h.copy(piece, 0, 0, VSOCK_HEADER_SIZE);
    piece.writeUInt32LE(n, OFF_LEN);
    if (!last && h.readUInt16LE(OFF_OP) === VSOCK_OP_RW) piece.writeUInt32LE(0, OFF_FLAGS);
    chain.write(0, piece, 0, VSOCK_HEADER_SIZE);
    let at = (this.head + VSOCK_HEADER_SIZE + this.headSent) % this.capacity;
    let to = VSOCK_HEADER_SIZE;
    let copy = n;
    while (copy > 0) {
      const k = Math.min(copy, this.capacity - at);
      chain.write(to, this.ring, at, k);
      to += k;
      copy -= k;
      at = (at + k) % this.capacity;
    }
    payloadOut[0] = n;
    if (last) this.shift();
    else this.headSent += n;
    return VSOCK_HEADER_SIZE + n;
  }

  private shift(): void {
    const size = VSOCK_HEADER_SIZE + this.headHeader.readUInt32LE(OFF_LEN);
    this.head = (this.head + size) % this.capacity;
    this.used -= size;
    this.packets--;
    this.headSent = 0;
    this.headLoaded = false;
    if (this.used === 0) this.head = 0;
  }

  clear(): void {
    this.head = 0;
    this.used = 0;
    this.packets = 0;
    this.headSent = 0;
    this.headLoaded = false;
  }
}
