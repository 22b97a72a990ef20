// The transmit path: builds packets [header | payload] on the tx queue (virtio 1.2,
// 5.10.6.2 "Device Operation: Sending packets") in one of three ways:
//
//  two-copy     user bytes -> a fresh packet Buffer (header + payload) -> DMA slot.
//               Toro's driver before 2023; kept so the benchmark shows the cost.
//  single-copy  user bytes -> DMA slot from a preallocated pool, header written in
//               place in front: one descriptor per packet. Writes of one connection
//               made before the batch is flushed fill the same packet (up to 64 KiB):
//               a burst of small writes costs one packet, not one per write.
//  zero-copy    the user's buffer is DMA memory: a header slot descriptor, then
//               descriptors pointing at the user's bytes (split where the arena is not
//               contiguous). The owner is told when the device returns the chain: only
//               then may the buffer be reused (the double-buffering problem, solved by
//               completion instead of by a second buffer).
//
// Nothing is published here: adds are batched and the driver publishes and notifies
// once per batch (flush).
import { BufferPool, type DmaArena } from '../../../kernel/memory/dma.js';
import { copyBytes } from '../../../kernel/memory/copy.js';
import type { VirtqueueDriver } from '../../../kernel/virtqueue/driver-queue.js';
import { VSOCK_HEADER_SIZE, VSOCK_OP_RST, VSOCK_OP_RW, VSOCK_SEQ_EOM, VSOCK_SEQ_EOR, VSOCK_TYPE_SEQPACKET, VSOCK_TYPE_STREAM, VsockHeader, encodeHeader } from '../header.js';
import { VSOCK_MAX_PKT_PAYLOAD, type CreditState } from './credit.js';
import type { VsockDriverStats } from './stats.js';
import type { WriteCursor } from './write-cursor.js';

/** What a packet needs from its connection. */
export interface PacketEnds {
  readonly localPort: number;
  readonly remoteCid: number;
  readonly remotePort: number;
  /** VSOCK_TYPE_STREAM or VSOCK_TYPE_SEQPACKET (a message per write: packets are never merged, EOM|EOR on its last). */
  readonly type: number;
  readonly credit: CreditState;
  /** Data slot of this connection's open (not yet committed) single-copy packet, -1 if none. */
  txOpenSlot: number;
  /** Payload bytes in that packet so far. */
  txOpenLen: number;
}

/** Told when a zero-copy packet's descriptors came back from the device. */
export interface ZeroCopyOwner {
  onZeroCopyComplete(): void;
}

/** Header slots: 44 bytes rounded to a cache line. */
const HEADER_SLOT_BYTES = 64;
/** Most user-buffer descriptors in one zero-copy packet. */
const MAX_ZC_SEGMENTS = 16;

export interface TxPathOptions {
  /** Preallocated data slots (header + up to 64 KiB payload each). */
  dataSlots: number;
  /** Header-only slots (control packets and zero-copy headers). */
  headerSlots: number;
}

export class TxPath {
  /** Our CID (re-read after TRANSPORT_RESET). */
  localCid = 0;
  /** Zero-copy packets the device has not returned yet (their owners wait for them). */
  zeroCopyOutstanding = 0;
  private readonly dataPool: BufferPool;
  private readonly headerPool: BufferPool;
  /** Byte offset of each slot in the arena (for the arena-wide DataView). */
  private readonly dataOffsets: Float64Array;
  private readonly headerOffsets: Float64Array;
  private readonly zcOwner: (ZeroCopyOwner | null)[];
  private readonly arenaView: DataView;
  private readonly arenaBytes: Uint8Array;
  private readonly hdr = new VsockHeader();
  /** Connections with an open single-copy packet; each holds one descriptor in reserve. */
  private readonly open: PacketEnds[] = [];

  constructor(
    private readonly queue: VirtqueueDriver<number>,
    private readonly arena: DmaArena,
    opts: TxPathOptions,
    private readonly stats: VsockDriverStats,
  ) {
    this.dataPool = new BufferPool(arena, alignUp(VSOCK_HEADER_SIZE + VSOCK_MAX_PKT_PAYLOAD, 64), opts.dataSlots);
    this.headerPool = new BufferPool(arena, HEADER_SLOT_BYTES, opts.headerSlots);
    this.dataOffsets = Float64Array.from(this.dataPool.views, (v) => v.byteOffset);
    this.headerOffsets = Float64Array.from(this.headerPool.views, (v) => v.byteOffset);
    this.zcOwner = new Array<ZeroCopyOwner | null>(opts.headerSlots).fill(null);
    this.arenaView = new DataView(arena.buffer as ArrayBuffer);
    this.arenaBytes = arena.bytes;
  }

  /** Descriptors free beyond those reserved for open packets. */
  private freeDescriptors(): number {
    return this.queue.numFree - this.open.length;
  }

  /** True when a header-only packet can be queued now. */
  canSendControl(): boolean {
    return this.headerPool.available > 0 && this.freeDescriptors() > 0;
  }

  /** True when a data packet can probably be queued now (a slot and descriptors). */
  canSendData(): boolean {
    return this.freeDescriptors() >= 2 && this.dataPool.available > 0 && this.headerPool.available > 0;
  }

  /** Queues a header-only packet of a connection. Returns false when out of slots. */
  sendControl(ends: PacketEnds, op: number, flags: number): boolean {
    if (ends.txOpenSlot >= 0) this.commitOpen(ends); // data before what follows it
    if (!this.canSendControl()) return false;
    const c = ends.credit;
    this.hdr.set(this.localCid, ends.localPort, ends.remoteCid, ends.remotePort, op, 0, flags, c.bufAlloc, c.fwdCnt);
    this.hdr.type = ends.type;
    c.onHeaderSent();
    this.queueHeaderOnly();
    return true;
  }

  /** Queues an RST for a packet that matches no connection (no credit state), of that packet's type. */
  sendRstTo(localPort: number, remoteCid: number, remotePort: number, type: number = VSOCK_TYPE_STREAM): boolean {
    if (!this.canSendControl()) return false;
    this.hdr.set(this.localCid, localPort, remoteCid, remotePort, VSOCK_OP_RST, 0, 0, 0, 0);
    this.hdr.type = type;
    this.queueHeaderOnly();
    this.stats.rstSent++;
    return true;
  }

  private queueHeaderOnly(): void {
    const slot = this.headerPool.alloc();
    encodeHeader(this.hdr, this.arenaView, this.headerOffsets[slot]!);
    const q = this.queue;
    q.chainBegin();
    q.chainAdd(this.headerPool.addrs[slot]!, VSOCK_HEADER_SIZE, false);
    q.chainCommit(this.dataPool.count + slot);
    this.stats.txControlPackets++;
  }

  /**
   * Sends up to `maxLen` bytes copied from the cursor: once, into a DMA slot, appended
   * to the connection's open packet when it has room; or twice (`viaPacketObject`), as
   * a packet of its own. Returns the payload bytes taken, 0 when out of slots.
   */
  sendCopy(ends: PacketEnds, cur: WriteCursor, maxLen: number, viaPacketObject: boolean): number {
    if (viaPacketObject) return this.sendViaPacketObject(ends, cur, maxLen);
    const c = ends.credit;
    const stats = this.stats;
    if (ends.type === VSOCK_TYPE_SEQPACKET) return this.sendMessagePiece(ends, cur, maxLen);
    if (ends.txOpenSlot >= 0) {
      const room = VSOCK_MAX_PKT_PAYLOAD - ends.txOpenLen;
      if (room > 0) {
        const n = Math.min(maxLen, cur.remaining, room);
        gather(cur, this.arenaBytes, this.dataOffsets[ends.txOpenSlot]! + VSOCK_HEADER_SIZE + ends.txOpenLen, n, stats);
        ends.txOpenLen += n;
        c.onSent(n);
        stats.txBytes += n;
        return n;
      }
      this.commitOpen(ends);
    }
    if (this.freeDescriptors() <= 0) return 0;
    const slot = this.dataPool.alloc();
    if (slot < 0) return 0;
    const n = Math.min(maxLen, cur.remaining, VSOCK_MAX_PKT_PAYLOAD);
    gather(cur, this.arenaBytes, this.dataOffsets[slot]! + VSOCK_HEADER_SIZE, n, stats);
    ends.txOpenSlot = slot;
    ends.txOpenLen = n;
    this.open.push(ends);
    c.onSent(n);
    stats.txBytes += n;
    return n;
  }

  /** SEQPACKET: one packet of its own per call (never merged), EOM|EOR when it ends the write. */
  private sendMessagePiece(ends: PacketEnds, cur: WriteCursor, maxLen: number): number {
    if (this.freeDescriptors() <= 0) return 0;
    const slot = this.dataPool.alloc();
    if (slot < 0) return 0;
    const n = Math.min(maxLen, cur.remaining, VSOCK_MAX_PKT_PAYLOAD);
    gather(cur, this.arenaBytes, this.dataOffsets[slot]! + VSOCK_HEADER_SIZE, n, this.stats);
    ends.credit.onSent(n);
    this.stats.txBytes += n;
    this.commitDataSlot(ends, slot, n, messageFlags(ends, cur));
    return n;
  }

  /** Puts a connection's open packet on the ring (header written now, with the latest fwd_cnt). */
  private commitOpen(ends: PacketEnds): void {
    const slot = ends.txOpenSlot;
    const len = ends.txOpenLen;
    ends.txOpenSlot = -1;
    ends.txOpenLen = 0;
    const i = this.open.indexOf(ends);
    if (i >= 0) {
      // Swap-remove: order between connections does not matter.
      this.open[i] = this.open[this.open.length - 1]!;
      this.open.pop();
    }
    this.commitDataSlot(ends, slot, len, 0);
  }

  /** Commits every open packet (before the batch is published). */
  flushOpen(): void {
    const open = this.open;
    for (let i = 0; i < open.length; i++) {
      const ends = open[i]!;
      const slot = ends.txOpenSlot;
      const len = ends.txOpenLen;
      ends.txOpenSlot = -1;
      ends.txOpenLen = 0;
      this.commitDataSlot(ends, slot, len, 0);
    }
    open.length = 0;
  }

  private commitDataSlot(ends: PacketEnds, slot: number, len: number, flags: number): void {
    const c = ends.credit;
    this.hdr.set(this.localCid, ends.localPort, ends.remoteCid, ends.remotePort, VSOCK_OP_RW, len, flags, c.bufAlloc, c.fwdCnt);
    this.hdr.type = ends.type;
    c.onHeaderSent();
    encodeHeader(this.hdr, this.arenaView, this.dataOffsets[slot]!);
    const q = this.queue;
    q.chainBegin();
    q.chainAdd(this.dataPool.addrs[slot]!, VSOCK_HEADER_SIZE + len, false);
    q.chainCommit(slot);
    this.stats.txPackets++;
  }

  /** Two copies: the bytes into a packet object of their own (a network stack's packet type), that into a DMA slot. */
  private sendViaPacketObject(ends: PacketEnds, cur: WriteCursor, maxLen: number): number {
    if (this.freeDescriptors() <= 0) return 0;
    const slot = this.dataPool.alloc();
    if (slot < 0) return 0;
    const len = Math.min(maxLen, cur.remaining, VSOCK_MAX_PKT_PAYLOAD);
    const c = ends.credit;
    const flags = ends.type === VSOCK_TYPE_SEQPACKET && len === cur.remaining ? MESSAGE_END : 0;
    this.hdr.set(this.localCid, ends.localPort, ends.remoteCid, ends.remotePort, VSOCK_OP_RW, len, flags, c.bufAlloc, c.fwdCnt);
    this.hdr.type = ends.type;
    c.onHeaderSent();
    const stats = this.stats;
    // Copy 1: into the packet object.
    const packet = Buffer.allocUnsafe(VSOCK_HEADER_SIZE + len);
    encodeHeader(this.hdr, new DataView(packet.buffer, packet.byteOffset, packet.byteLength), 0);
    gather(cur, packet, VSOCK_HEADER_SIZE, len, stats);
    // Copy 2: the packet into the DMA slot.
    copyBytes(packet, 0, this.arenaBytes, this.dataOffsets[slot]!, VSOCK_HEADER_SIZE + len);
    stats.txCopies++;
    stats.txCopiedBytes += len;
    stats.txPacketObjects++;
    const q = this.queue;
    q.chainBegin();
    q.chainAdd(this.dataPool.addrs[slot]!, VSOCK_HEADER_SIZE + len, false);
    q.chainCommit(slot);
    c.onSent(len);
    stats.txPackets++;
    stats.txBytes += len;
    return len;
  }

  /**
   * Queues one RW packet of up to `maxLen` bytes whose payload descriptors point at
   * the cursor's DMA chunks (stops at the first chunk that is not DMA memory). The
   * owner's onZeroCopyComplete runs when the device returns the chain. Returns the
   * payload bytes sent, 0 when out of slots or descriptors.
   */
  sendZeroCopy(ends: PacketEnds, cur: WriteCursor, maxLen: number, owner: ZeroCopyOwner): number {
    const q = this.queue;
    if (ends.txOpenSlot >= 0) this.commitOpen(ends); // keep the byte order
    if (this.freeDescriptors() < 2) return 0;
    const slot = this.headerPool.alloc();
    if (slot < 0) return 0;
    const limit = Math.min(maxLen, cur.remaining, VSOCK_MAX_PKT_PAYLOAD);
    const maxSegs = Math.min(MAX_ZC_SEGMENTS, this.freeDescriptors() - 1);
    q.chainBegin();
    q.chainAdd(this.headerPool.addrs[slot]!, VSOCK_HEADER_SIZE, false);
    let len = 0;
    let segs = 0;
    const pageSize = this.arena.pageSize;
    while (len < limit && segs < maxSegs && cur.index < cur.count && cur.currentIsDma()) {
      // A chunk may span pages that are not contiguous in device address space (the
      // arena's contiguousLength rule): one descriptor per contiguous run.
      const arenaOff = cur.current().byteOffset + cur.offset;
      const run = Math.min(cur.currentLeft(), pageSize - (arenaOff % pageSize));
      const n = Math.min(run, limit - len);
      q.chainAdd(cur.currentAddr(), n, false);
      cur.advance(n);
      len += n;
      segs++;
    }
    const c = ends.credit;
    this.hdr.set(this.localCid, ends.localPort, ends.remoteCid, ends.remotePort, VSOCK_OP_RW, len, messageFlags(ends, cur), c.bufAlloc, c.fwdCnt);
    this.hdr.type = ends.type;
    c.onHeaderSent();
    encodeHeader(this.hdr, this.arenaView, this.headerOffsets[slot]!);
    this.zcOwner[slot] = owner;
    this.zeroCopyOutstanding++;
    q.chainCommit(this.dataPool.count + slot);
    c.onSent(len);
    const stats = this.stats;
    stats.txPackets++;
    stats.txBytes += len;
    stats.txZeroCopyPackets++;
    stats.txZeroCopyBytes += len;
    return len;
  }

  /**
   * After a device reset the device no longer touches any buffer (virtio 1.2, 2.1.2):
   * every zero-copy packet still out counts as returned, so its writer gets its buffer
   * back (with the error the connection already carries).
   */
  releaseAllZeroCopy(): void {
    for (let slot = 0; slot < this.zcOwner.length; slot++) {
      const owner = this.zcOwner[slot];
      if (!owner) continue;
      this.zcOwner[slot] = null;
      this.zeroCopyOutstanding--;
      owner.onZeroCopyComplete();
    }
  }

  /** A used tx chain came back: free its slot, complete a zero-copy packet. */
  onUsed(token: number): void {
    const dataCount = this.dataPool.count;
    if (token < dataCount) {
      this.dataPool.free(token);
      return;
    }
    const slot = token - dataCount;
    this.headerPool.free(slot);
    const owner = this.zcOwner[slot];
    if (owner) {
      this.zcOwner[slot] = null;
      this.zeroCopyOutstanding--;
      owner.onZeroCopyComplete();
    }
  }
}

/** Copies `len` bytes from the cursor to dst[dstOff...], advancing it; counts one copy per chunk piece. */
function gather(cur: WriteCursor, dst: Uint8Array, dstOff: number, len: number, stats: VsockDriverStats): void {
  let done = 0;
  while (done < len) {
    const n = Math.min(cur.currentLeft(), len - done);
    copyBytes(cur.current(), cur.offset, dst, dstOff + done, n);
    cur.advance(n);
    done += n;
  }
  stats.txCopies++;
  stats.txCopiedBytes += len;
}

const MESSAGE_END = VSOCK_SEQ_EOM | VSOCK_SEQ_EOR;

/** RW flags of the packet just filled from `cur`: EOM|EOR when it ends a SEQPACKET write (one write, one message and record). */
function messageFlags(ends: PacketEnds, cur: WriteCursor): number {
  return ends.type === VSOCK_TYPE_SEQPACKET && cur.remaining === 0 ? MESSAGE_END : 0;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
