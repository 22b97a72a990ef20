// The virtio socket device's packet header (virtio 1.2, 5.10.6), shared by the driver
// and the device emulator. 44 bytes, little-endian:
//
//   off size field          off size field
//    0   8   src_cid        28   2   type
//    8   8   dst_cid        30   2   op
//   16   4   src_port       32   4   flags
//   20   4   dst_port       36   4   buf_alloc
//   24   4   len            40   4   fwd_cnt
//
// Decoding and encoding work on a reusable VsockHeader object: no allocation per packet.

export const VSOCK_HEADER_SIZE = 44;
/** Byte offsets of the header's fields (virtio 1.2 5.10.6: le64 src_cid, le64 dst_cid, le32 src_port, le32 dst_port, le32 len, le16 type, le16 op, le32 flags, le32 buf_alloc, le32 fwd_cnt). */
export const VSOCK_HDR_SRC_CID = 0;
export const VSOCK_HDR_DST_CID = 8;
export const VSOCK_HDR_SRC_PORT = 16;
export const VSOCK_HDR_DST_PORT = 20;
export const VSOCK_HDR_LEN = 24;
export const VSOCK_HDR_TYPE = 28;
export const VSOCK_HDR_OP = 30;
export const VSOCK_HDR_FLAGS = 32;
export const VSOCK_HDR_BUF_ALLOC = 36;
export const VSOCK_HDR_FWD_CNT = 40;

/** Well-known CIDs (5.10.4). */
export const VSOCK_CID_HYPERVISOR = 0;
export const VSOCK_CID_LOCAL = 1;
export const VSOCK_CID_HOST = 2;

export const VSOCK_TYPE_STREAM = 1;
export const VSOCK_TYPE_SEQPACKET = 2;

export const VSOCK_OP_INVALID = 0;
export const VSOCK_OP_REQUEST = 1;
export const VSOCK_OP_RESPONSE = 2;
export const VSOCK_OP_RST = 3;
export const VSOCK_OP_SHUTDOWN = 4;
export const VSOCK_OP_RW = 5;
export const VSOCK_OP_CREDIT_UPDATE = 6;
export const VSOCK_OP_CREDIT_REQUEST = 7;

/** SHUTDOWN flags: the sender will receive / send no more. */
export const VSOCK_SHUTDOWN_RCV = 1;
export const VSOCK_SHUTDOWN_SEND = 2;

/** RW flags of a SEQPACKET connection (5.10.6.3): end of message, end of record. */
export const VSOCK_SEQ_EOM = 1;
export const VSOCK_SEQ_EOR = 2;

/** Event queue: the only event id (5.10.6.7). */
export const VSOCK_EVENT_TRANSPORT_RESET = 0;
export const VSOCK_EVENT_SIZE = 4;

/** Device feature bits (5.10.3). */
export const VIRTIO_VSOCK_F_STREAM = 0n;
export const VIRTIO_VSOCK_F_SEQPACKET = 1n;

/** Queue indexes (5.10.2). */
export const VSOCK_RX_QUEUE = 0;
export const VSOCK_TX_QUEUE = 1;
export const VSOCK_EVENT_QUEUE = 2;

const OP_NAMES = ['INVALID', 'REQUEST', 'RESPONSE', 'RST', 'SHUTDOWN', 'RW', 'CREDIT_UPDATE', 'CREDIT_REQUEST'];

export function opName(op: number): string {
  return OP_NAMES[op] ?? `op ${op}`;
}

export class VsockHeader {
  srcCid = 0;
  dstCid = 0;
  srcPort = 0;
  dstPort = 0;
  len = 0;
  type = VSOCK_TYPE_STREAM;
  op = VSOCK_OP_INVALID;
  flags = 0;
  bufAlloc = 0;
  fwdCnt = 0;

  /** Sets every field at once (for building outgoing packets). */
  set(srcCid: number, srcPort: number, dstCid: number, dstPort: number, op: number, len: number, flags: number, bufAlloc: number, fwdCnt: number): this {
    this.srcCid = srcCid;
    this.srcPort = srcPort;
    this.dstCid = dstCid;
    this.dstPort = dstPort;
    this.type = VSOCK_TYPE_STREAM;
    this.op = op;
    this.len = len;
    this.flags = flags;
    this.bufAlloc = bufAlloc;
    this.fwdCnt = fwdCnt;
    return this;
  }

  toString(): string {
    return `${opName(this.op)} ${this.srcCid}:${this.srcPort} -> ${this.dstCid}:${this.dstPort} len=${this.len} flags=${this.flags} buf_alloc=${this.bufAlloc} fwd_cnt=${this.fwdCnt}`;
  }
}

/** Reads a 64-bit CID as a number; returns -1 when it does not fit in 32 bits (reserved bits set). */
function readCid(v: DataView, off: number): number {
  const lo = v.getUint32(off, true);
  const hi = v.getUint32(off + 4, true);
  return hi === 0 ? lo : -1;
}

/** Decodes the header at bytes[offset...] into `out`. The caller guarantees 44 bytes. */
export function decodeHeader(v: DataView, offset: number, out: VsockHeader): VsockHeader {
  out.srcCid = readCid(v, offset + VSOCK_HDR_SRC_CID);
  out.dstCid = readCid(v, offset + VSOCK_HDR_DST_CID);
  out.srcPort = v.getUint32(offset + VSOCK_HDR_SRC_PORT, true);
  out.dstPort = v.getUint32(offset + VSOCK_HDR_DST_PORT, true);
  out.len = v.getUint32(offset + VSOCK_HDR_LEN, true);
  out.type = v.getUint16(offset + VSOCK_HDR_TYPE, true);
  out.op = v.getUint16(offset + VSOCK_HDR_OP, true);
  out.flags = v.getUint32(offset + VSOCK_HDR_FLAGS, true);
  out.bufAlloc = v.getUint32(offset + VSOCK_HDR_BUF_ALLOC, true);
  out.fwdCnt = v.getUint32(offset + VSOCK_HDR_FWD_CNT, true);
  return out;
}

/** Encodes `h` at offset (44 bytes). */
export function encodeHeader(h: VsockHeader, v: DataView, offset: number): void {
  v.setUint32(offset + VSOCK_HDR_SRC_CID, h.srcCid, true);
  v.setUint32(offset + VSOCK_HDR_SRC_CID + 4, 0, true);
  v.setUint32(offset + VSOCK_HDR_DST_CID, h.dstCid, true);
  v.setUint32(offset + VSOCK_HDR_DST_CID + 4, 0, true);
  v.setUint32(offset + VSOCK_HDR_SRC_PORT, h.srcPort, true);
  v.setUint32(offset + VSOCK_HDR_DST_PORT, h.dstPort, true);
  v.setUint32(offset + VSOCK_HDR_LEN, h.len, true);
  v.setUint16(offset + VSOCK_HDR_TYPE, h.type, true);
  v.setUint16(offset + VSOCK_HDR_OP, h.op, true);
  v.setUint32(offset + VSOCK_HDR_FLAGS, h.flags, true);
  v.setUint32(offset + VSOCK_HDR_BUF_ALLOC, h.bufAlloc, true);
  v.setUint32(offset + VSOCK_HDR_FWD_CNT, h.fwdCnt, true);
}

/**
 * Checks a received header for what the specification forbids, independent of any
 * connection state. Returns a reason, or null when the header is well-formed.
 */
export function headerProblem(h: VsockHeader): string | null {
  if (h.srcCid < 0) return 'src_cid has reserved upper 32 bits set';
  if (h.dstCid < 0) return 'dst_cid has reserved upper 32 bits set';
  if (h.type !== VSOCK_TYPE_STREAM && h.type !== VSOCK_TYPE_SEQPACKET) return `unknown type ${h.type}`;
  if (h.op === VSOCK_OP_INVALID || h.op > VSOCK_OP_CREDIT_REQUEST) return `unknown op ${h.op}`;
  if (h.op !== VSOCK_OP_RW && h.len !== 0) return `${opName(h.op)} with len ${h.len} (only RW carries data)`;
  if (h.op === VSOCK_OP_SHUTDOWN && (h.flags & ~(VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)) !== 0) return `SHUTDOWN with unknown flags 0x${h.flags.toString(16)}`;
  return null;
}
