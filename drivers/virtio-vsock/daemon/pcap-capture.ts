// Packet capture to a pcap file of link type 271 (LINKTYPE_VSOCK), the format of Linux's
// vsockmon device, readable by tshark and Wireshark. Each record is what vsockmon
// delivers for a virtio transport (net/vmw_vsock/virtio_transport_common.c,
// virtio_transport_build_skb):
//
//   struct af_vsockmon_hdr (include/uapi/linux/vsockmon.h), 32 bytes, little-endian:
//     0 le64 src_cid   8 le64 dst_cid   16 le32 src_port   20 le32 dst_port
//    24 le16 op       26 le16 transport 28 le16 len (of the transport header: 44)
//    30 u8 reserved[2]
//   then the 44-byte virtio-vsock header, then the payload (cut at the payload cap).
//
// op is AF_VSOCK_OP_CONNECT for REQUEST/RESPONSE, DISCONNECT for RST/SHUTDOWN, PAYLOAD
// for RW, CONTROL for CREDIT_UPDATE/CREDIT_REQUEST, UNKNOWN otherwise; transport is
// AF_VSOCK_TRANSPORT_VIRTIO. CIDs are copied from the packet header, as vsockmon does.
//
// Every record is written with one write(2) before the packet goes back to the guest,
// so what was captured is in the kernel when the device moves on: a crash of the
// daemon (even kill -9) loses nothing captured (not an fsync: a machine crash can).
// One record buffer, filled in place: what is still allocated per packet is Node's own
// (measured with a fixed 16 MiB young generation, Node 20: about 50 bytes inside
// fs.writeSync, 32 for performance.now()'s result, and for a data packet about 100 per
// payload segment, the view Buffer.copy makes of a source at an offset). A write error (a full
// disk, EIO) stops the capture: the file is cut back to its last whole record (so it
// stays readable), the error is reported once through onError, the device goes on.
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { copyBytes } from '../../../kernel/memory/copy.js';
import type { DescriptorChain } from '../../../kernel/virtqueue/device-queue.js';
import {
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
} from '../header.js';
import { type PacketTap, type TapDirection, readTappedPayload } from '../device/packet-tap.js';

export const LINKTYPE_VSOCK = 271;
export const VSOCKMON_HEADER_SIZE = 32;
export const AF_VSOCK_OP_UNKNOWN = 0;
export const AF_VSOCK_OP_CONNECT = 1;
export const AF_VSOCK_OP_DISCONNECT = 2;
export const AF_VSOCK_OP_CONTROL = 3;
export const AF_VSOCK_OP_PAYLOAD = 4;
export const AF_VSOCK_TRANSPORT_VIRTIO = 2;

const PCAP_GLOBAL_HEADER_SIZE = 24;
const PCAP_RECORD_HEADER_SIZE = 16;
/** Headers of one captured packet: vsockmon + virtio-vsock. */
export const CAPTURE_HEADERS_SIZE = VSOCKMON_HEADER_SIZE + VSOCK_HEADER_SIZE;
/** Largest record tshark reads without complaint (wiretap's WTAP_MAX_PACKET_SIZE_STANDARD). */
export const PCAP_MAX_RECORD_BYTES = 262_144;
/** Largest payload cap: a record (headers + payload) stays within PCAP_MAX_RECORD_BYTES. */
export const PCAP_MAX_PAYLOAD_BYTES = PCAP_MAX_RECORD_BYTES - CAPTURE_HEADERS_SIZE;

/** vsockmon's op for a virtio-vsock op (virtio_transport_build_skb). */
export function vsockmonOp(op: number): number {
  switch (op) {
    case VSOCK_OP_REQUEST:
    case VSOCK_OP_RESPONSE:
      return AF_VSOCK_OP_CONNECT;
    case VSOCK_OP_RST:
    case VSOCK_OP_SHUTDOWN:
      return AF_VSOCK_OP_DISCONNECT;
    case VSOCK_OP_RW:
      return AF_VSOCK_OP_PAYLOAD;
    case VSOCK_OP_CREDIT_UPDATE:
    case VSOCK_OP_CREDIT_REQUEST:
      return AF_VSOCK_OP_CONTROL;
    default:
      return AF_VSOCK_OP_UNKNOWN;
  }
}

export class PcapError extends Error {
  constructor(
    readonly code: 'ERR_VSOCK_PCAP_OPEN' | 'ERR_VSOCK_PCAP_WRITE',
    /** The capture file. */
    readonly path: string,
    message: string,
    /** The system's code (ENOENT, ENOSPC...), when there is one. */
    readonly sysCode: string | undefined,
  ) {
    super(message);
    this.name = 'PcapError';
  }
}

/** The file operations a capture uses (tests inject failures). */
export interface PcapFileOps {
  open(path: string): number;
  write(fd: number, buf: Uint8Array, offset: number, length: number): number;
  truncate(fd: number, length: number): void;
  close(fd: number): void;
}

export const nodeFileOps: PcapFileOps = {
  open: (path) => openSync(path, 'w', 0o640),
  write: (fd, buf, offset, length) => writeSync(fd, buf, offset, length),
  truncate: (fd, length) => ftruncateSync(fd, length),
  close: (fd) => closeSync(fd),
};

export interface PcapCaptureOptions {
  /** Payload bytes kept per packet (headers are always kept); default and maximum PCAP_MAX_PAYLOAD_BYTES. */
  payloadCap?: number;
  /** Called once when a write fails and the capture stops. */
  onError?: (err: PcapError) => void;
  fileOps?: PcapFileOps;
}

function explain(code: string | undefined, path: string): string {
  switch (code) {
    case 'ENOENT':
      return `the folder ${dirname(path)} does not exist`;
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'it is a folder';
    case 'ENOSPC':
      return 'no space left on the device';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EROFS':
      return 'read-only file system';
    default:
      return code ?? 'unknown error';
  }
}

export class PcapCapture implements PacketTap {
  readonly path: string;
  readonly payloadCap: number;
  /** Records written. */
  records = 0;
  /** Bytes in the file (whole records only). */
  bytesWritten = 0;
  /** Why the capture stopped, or null while it runs. */
  failure: PcapError | null = null;
  #fd: number;
  readonly #ops: PcapFileOps;
  readonly #onError: ((err: PcapError) => void) | undefined;
  readonly #record: Buffer;
  readonly #view: DataView;

  /**
   * Opens (truncates) `path` and writes the pcap file header. Throws a PcapError naming
   * the path and the reason when the file cannot be created or written.
   */
  constructor(path: string, opts: PcapCaptureOptions = {}) {
    this.path = path;
    const cap = opts.payloadCap ?? PCAP_MAX_PAYLOAD_BYTES;
    if (!Number.isInteger(cap) || cap < 0 || cap > PCAP_MAX_PAYLOAD_BYTES) throw new RangeError(`pcap payload cap ${cap}: expected 0..${PCAP_MAX_PAYLOAD_BYTES}`);
    this.payloadCap = cap;
    this.#ops = opts.fileOps ?? nodeFileOps;
    this.#onError = opts.onError;
    this.#record = Buffer.alloc(PCAP_RECORD_HEADER_SIZE + CAPTURE_HEADERS_SIZE + cap);
    this.#view = new DataView(this.#record.buffer, this.#record.byteOffset, this.#record.byteLength);
    try {
      this.#fd = this.#ops.open(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new PcapError('ERR_VSOCK_PCAP_OPEN', path, `capture file ${path}: cannot create it: ${explain(code, path)}`, code);
    }
    const head = Buffer.alloc(PCAP_GLOBAL_HEADER_SIZE);
    head.writeUInt32LE(0xa1b2c3d4, 0); // microsecond timestamps, written little-endian
    head.writeUInt16LE(2, 4);
    head.writeUInt16LE(4, 6);
    head.writeInt32LE(0, 8); // thiszone
    head.writeUInt32LE(0, 12); // sigfigs
    head.writeUInt32LE(CAPTURE_HEADERS_SIZE + cap, 16); // snaplen
    head.writeUInt32LE(LINKTYPE_VSOCK, 20);
    const err = this.#writeAll(head, head.length);
    if (err !== null) {
      this.#closeQuietly();
      throw new PcapError('ERR_VSOCK_PCAP_OPEN', path, `capture file ${path}: cannot write its header: ${explain(err.code, path)}`, err.code);
    }
    this.bytesWritten = head.length;
  }

  /** True while records are written (not closed, no write error). */
  get active(): boolean {
    return this.#fd >= 0;
  }

  packet(direction: TapDirection, header: Uint8Array, chain: DescriptorChain, payloadBytes: number): void {
    if (this.#fd < 0) return;
    const rec = this.#record;
    const v = this.#view;
    const kept = payloadBytes < this.payloadCap ? payloadBytes : this.payloadCap;
    const t = performance.timeOrigin + performance.now();
    const sec = Math.floor(t / 1000);
    v.setUint32(0, sec, true);
    v.setUint32(4, Math.floor((t - sec * 1000) * 1000), true);
    v.setUint32(8, CAPTURE_HEADERS_SIZE + kept, true);
    v.setUint32(12, CAPTURE_HEADERS_SIZE + payloadBytes, true);
    const m = PCAP_RECORD_HEADER_SIZE;
    // The virtio header (a whole 44-byte buffer: Buffer.copy makes no view for it), then
    // the vsockmon addresses from it: src_cid, dst_cid, src_port, dst_port have the same
    // layout in both (copyWithin allocates nothing; Buffer.copy of a part would).
    copyBytes(header, 0, rec, m + VSOCKMON_HEADER_SIZE, VSOCK_HEADER_SIZE);
    rec.copyWithin(m, m + VSOCKMON_HEADER_SIZE, m + VSOCKMON_HEADER_SIZE + 24);
    v.setUint16(m + 24, vsockmonOp(header[30]! | (header[31]! << 8)), true);
    v.setUint16(m + 26, AF_VSOCK_TRANSPORT_VIRTIO, true);
    v.setUint16(m + 28, VSOCK_HEADER_SIZE, true);
    v.setUint16(m + 30, 0, true);
    if (kept > 0) readTappedPayload(direction, chain, 0, rec, m + CAPTURE_HEADERS_SIZE, kept);
    const n = PCAP_RECORD_HEADER_SIZE + CAPTURE_HEADERS_SIZE + kept;
    const err = this.#writeAll(rec, n);
    if (err === null) {
      this.records++;
      this.bytesWritten += n;
    } else this.#fail(err);
  }

  /** Writes buf[0, n) whole: null, or the error (the file may hold part of it). */
  #writeAll(buf: Uint8Array, n: number): NodeJS.ErrnoException | null {
    let done = 0;
    try {
      while (done < n) done += this.#ops.write(this.#fd, buf, done, n - done);
    } catch (e) {
      return e as NodeJS.ErrnoException;
    }
    return null;
  }

  /** A write failed: cut the file back to its last whole record, stop, report once. */
  #fail(e: NodeJS.ErrnoException): void {
    const fd = this.#fd;
    const err = new PcapError(
      'ERR_VSOCK_PCAP_WRITE',
      this.path,
      `capture file ${this.path}: write failed after ${this.records} packets (${this.bytesWritten} bytes): ${explain(e.code, this.path)}; capture stopped, the file keeps every whole record`,
      e.code,
    );
    this.failure = err;
    try {
      this.#ops.truncate(fd, this.bytesWritten); // part of the failed record may be in the file
    } catch {
      // the file keeps a cut record at its end; the message above still holds
    }
    this.#closeQuietly();
    this.#onError?.(err);
  }

  #closeQuietly(): void {
    const fd = this.#fd;
    this.#fd = -1;
    try {
      this.#ops.close(fd);
    } catch {
      // nothing more to do
    }
  }

  /** Stops capturing and closes the file. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    this.#ops.close(fd);
  }
}
