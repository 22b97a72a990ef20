// vhost-user message codec: header and payload layouts of QEMU's
// docs/interop/vhost-user.rst ("Message Specification"), decoding with validation and
// encoding (replies for the back-end, requests for the front-end client in tests).
//
// Decoding is two steps, so a framing layer never reads a payload it will refuse:
//   1. checkHeader(): version, flags, known request, payload size plausible for it;
//   2. decodePayload(): the payload fields and the fds that came with the message.
// Each failure is a VhostUserError saying what was wrong and in which request.
// Numbers are host byte order on the wire ("All numbers are in the machine native byte
// order"); this code assumes a little-endian host, as the virtqueue does.
import { VhostUserError } from './errors.js';
import {
  CONFIG_HEADER_SIZE,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  KNOWN_FLAGS,
  MAX_CONFIG_SIZE,
  MAX_MEM_REGIONS,
  MEM_REGION_SIZE,
  MEM_TABLE_HEADER_SIZE,
  Request,
  SINGLE_MEM_REGION_SIZE,
  U64_SIZE,
  VERSION,
  VERSION_MASK,
  VRING_ADDR_SIZE,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
  VRING_STATE_SIZE,
  isKnownRequest,
  requestName,
} from './protocol.js';

export interface MessageHeader {
  request: number;
  flags: number;
  /** Payload bytes that follow the header. */
  size: number;
}

/** One memory region as the front-end describes it ("Memory regions description"). */
export interface MemoryRegionDescription {
  guestPhysAddr: number;
  memorySize: number;
  /** The region's address in the front-end's (QEMU's) virtual address space. */
  userspaceAddr: number;
  /** Where the region starts in the fd. */
  mmapOffset: number;
}

export type Payload =
  | { type: 'empty' }
  | { type: 'u64'; value: bigint }
  | { type: 'vring-state'; index: number; num: number }
  | { type: 'vring-addr'; index: number; flags: number; desc: number; used: number; avail: number; log: number }
  /**
   * SET_VRING_KICK/CALL/ERR: ring index, and whether the "no fd" bit is set (then fd is
   * -1). The fd also stays in the message's `fds` until a handler claims it.
   */
  | { type: 'vring-file'; index: number; noFd: boolean; fd: number }
  | { type: 'mem-table'; regions: MemoryRegionDescription[] }
  | { type: 'mem-region'; region: MemoryRegionDescription }
  | { type: 'config'; offset: number; size: number; flags: number; data: Uint8Array }
  /** A known request whose payload this back-end never interprets (it refuses the request). */
  | { type: 'raw'; bytes: Uint8Array };

export interface VhostUserMessage {
  request: number;
  flags: number;
  needReply: boolean;
  payload: Payload;
  /**
   * Fds that came with the message (for 'vring-file' the one eventfd, also named in the
   * payload; for 'mem-table' and 'mem-region' the regions' fds in order). Whoever handles
   * the message owns them: it takes out those it keeps and closes the rest.
   */
  fds: number[];
}

/** Largest payload read for any request (the biggest legitimate one is ~270 bytes). */
export const MAX_PAYLOAD_SIZE = 4096;

type SizeRule = { exact: number } | { min: number; max: number; step?: number; base?: number };

// The payload's kind is told by which of these objects a request maps to (u64 and vring
// state are both 8 bytes).
const empty: SizeRule = { exact: 0 };
const u64: SizeRule = { exact: U64_SIZE };
const state: SizeRule = { exact: VRING_STATE_SIZE };

/** Payload sizes of the requests this back-end interprets. */
const SIZE_RULES = new Map<number, SizeRule>([
  [Request.GET_FEATURES, empty],
  [Request.SET_FEATURES, u64],
  [Request.SET_OWNER, empty],
  [Request.RESET_OWNER, empty],
  // min: the bare header, so that an empty table gets its own diagnosis in decodePayload.
  [Request.SET_MEM_TABLE, { min: MEM_TABLE_HEADER_SIZE, max: MEM_TABLE_HEADER_SIZE + MAX_MEM_REGIONS * MEM_REGION_SIZE, step: MEM_REGION_SIZE, base: MEM_TABLE_HEADER_SIZE }],
  [Request.SET_VRING_NUM, state],
  [Request.SET_VRING_ADDR, { exact: VRING_ADDR_SIZE }],
  [Request.SET_VRING_BASE, state],
  [Request.GET_VRING_BASE, state],
  [Request.SET_VRING_KICK, u64],
  [Request.SET_VRING_CALL, u64],
  [Request.SET_VRING_ERR, u64],
  [Request.GET_PROTOCOL_FEATURES, empty],
  [Request.SET_PROTOCOL_FEATURES, u64],
  [Request.GET_QUEUE_NUM, empty],
  [Request.SET_VRING_ENABLE, state],
  [Request.GET_CONFIG, { min: CONFIG_HEADER_SIZE, max: CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE }],
  [Request.SET_CONFIG, { min: CONFIG_HEADER_SIZE, max: CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE }],
  [Request.RESET_DEVICE, empty],
  [Request.GET_MAX_MEM_SLOTS, empty],
  [Request.ADD_MEM_REG, { exact: SINGLE_MEM_REGION_SIZE }],
  [Request.REM_MEM_REG, { exact: SINGLE_MEM_REGION_SIZE }],
]);

const perr = (code: 'ERR_VHOST_USER_SIZE' | 'ERR_VHOST_USER_FDS' | 'ERR_VHOST_USER_PAYLOAD', request: number, what: string): VhostUserError =>
  new VhostUserError(code, `${requestName(request)}: ${what}`, request);

export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.length < HEADER_SIZE) throw new VhostUserError('ERR_VHOST_USER_TRUNCATED', `header of ${bytes.length} bytes, expected ${HEADER_SIZE}`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

/**
 * Checks a request header before its payload is read: version 1, no unknown flag bits,
 * no REPLY bit (a front-end request is never a reply), a known request, and a payload
 * size that request can have.
 */
export function checkHeader(h: MessageHeader): void {
  const { request, flags, size } = h;
  if ((flags & VERSION_MASK) !== VERSION) {
    throw new VhostUserError('ERR_VHOST_USER_VERSION', `${requestName(request)}: flags 0x${flags.toString(16)} carry version ${flags & VERSION_MASK}, expected ${VERSION}`, request);
  }
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    throw new VhostUserError('ERR_VHOST_USER_FLAGS', `${requestName(request)}: unknown flag bits 0x${(flags & ~KNOWN_FLAGS).toString(16)} in flags 0x${flags.toString(16)}`, request);
  }
  if ((flags & FLAG_REPLY) !== 0) {
    throw new VhostUserError('ERR_VHOST_USER_FLAGS', `${requestName(request)}: the REPLY flag is set on a request`, request);
  }
  if (!isKnownRequest(request)) {
    throw new VhostUserError('ERR_VHOST_USER_UNKNOWN_REQUEST', `unknown request ${request} (flags 0x${flags.toString(16)}, size ${size})`, request);
  }
  const rule = SIZE_RULES.get(request);
  if (rule === undefined) {
    if (size > MAX_PAYLOAD_SIZE) throw perr('ERR_VHOST_USER_SIZE', request, `payload of ${size} bytes exceeds ${MAX_PAYLOAD_SIZE}`);
    return;
  }
  if ('exact' in rule) {
    if (size !== rule.exact) throw perr('ERR_VHOST_USER_SIZE', request, `payload of ${size} bytes, expected ${rule.exact}`);
    return;
  }
  if (size < rule.min || size > rule.max || (rule.step !== undefined && (size - (rule.base ?? 0)) % rule.step !== 0)) {
    const shape = rule.step !== undefined ? ` (${rule.base} + a multiple of ${rule.step})` : '';
    throw perr('ERR_VHOST_USER_SIZE', request, `payload of ${size} bytes, expected ${rule.min}..${rule.max}${shape}`);
  }
}

/** A u64 field as a safe integer; values above 2^53 - 1 are refused, naming the field. */
function safe(v: DataView, off: number, request: number, field: string): number {
  const x = v.getBigUint64(off, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw perr('ERR_VHOST_USER_PAYLOAD', request, `${field} 0x${x.toString(16)} is beyond 2^53`);
  return Number(x);
}

function decodeRegion(v: DataView, off: number, request: number, name: string): MemoryRegionDescription {
  return {
    guestPhysAddr: safe(v, off, request, `${name} guest_phys_addr`),
    memorySize: safe(v, off + 8, request, `${name} memory_size`),
    userspaceAddr: safe(v, off + 16, request, `${name} userspace_addr`),
    mmapOffset: safe(v, off + 24, request, `${name} mmap_offset`),
  };
}

function expectFds(request: number, fds: readonly number[], n: number, why: string): void {
  if (fds.length !== n) throw perr('ERR_VHOST_USER_FDS', request, `came with ${fds.length} fds, expected ${n} (${why})`);
}

/**
 * Decodes a payload that passed checkHeader(), with the fds received with the message.
 * Does not close fds on failure: the caller owns them either way.
 */
export function decodePayload(h: MessageHeader, body: Uint8Array, fds: number[]): VhostUserMessage {
  const { request, flags } = h;
  if (body.length !== h.size) throw perr('ERR_VHOST_USER_SIZE', request, `payload of ${body.length} bytes, header says ${h.size}`);
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const msg = (payload: Payload, rest: number[] = fds): VhostUserMessage => ({ request, flags, needReply: (flags & FLAG_NEED_REPLY) !== 0, payload, fds: rest });
  const rule = SIZE_RULES.get(request);
  if (rule === undefined) return msg({ type: 'raw', bytes: body });

  switch (request) {
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR: {
      const value = v.getBigUint64(0, true);
      const index = Number(value & BigInt(VRING_INDEX_MASK));
      const noFd = (value & BigInt(VRING_NOFD_MASK)) !== 0n;
      const other = value & ~BigInt(VRING_INDEX_MASK | VRING_NOFD_MASK);
      if (other !== 0n) throw perr('ERR_VHOST_USER_PAYLOAD', request, `u64 0x${value.toString(16)} has bits set besides the ring index (0-7) and the no-fd flag (8)`);
      if (noFd) {
        expectFds(request, fds, 0, `ring ${index} has the no-fd flag set`);
        return msg({ type: 'vring-file', index, noFd, fd: -1 }, []);
      }
      // vhost-user.rst SET_VRING_KICK: "It is passed in the ancillary data" unless bit 8.
      if (fds.length === 0) throw perr('ERR_VHOST_USER_FDS', request, `ring ${index}: no fd came with the message and the no-fd flag (0x100) is not set`);
      expectFds(request, fds, 1, `one eventfd for ring ${index}`);
      return msg({ type: 'vring-file', index, noFd, fd: fds[0]! });
    }
    case Request.SET_MEM_TABLE: {
      const n = v.getUint32(0, true);
      if (n === 0) {
        throw new VhostUserError(
          'ERR_VHOST_USER_MEMORY_NOT_SHARED',
          `${requestName(request)}: a memory table with no regions: the front-end has no shareable guest RAM ` +
            '(start QEMU with -object memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem)',
          request,
        );
      }
      if (n > MAX_MEM_REGIONS) throw perr('ERR_VHOST_USER_PAYLOAD', request, `${n} regions, at most ${MAX_MEM_REGIONS}`);
      if (h.size !== MEM_TABLE_HEADER_SIZE + n * MEM_REGION_SIZE) {
        throw perr('ERR_VHOST_USER_SIZE', request, `payload of ${h.size} bytes for ${n} regions, expected ${MEM_TABLE_HEADER_SIZE + n * MEM_REGION_SIZE}`);
      }
      if (fds.length === 0) {
        throw new VhostUserError(
          'ERR_VHOST_USER_MEMORY_NOT_SHARED',
          `${requestName(request)}: ${n} regions but no fds: guest RAM is not shared with the back-end ` +
            '(start QEMU with -object memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem)',
          request,
        );
      }
      expectFds(request, fds, n, 'one per region');
      const regions: MemoryRegionDescription[] = [];
      for (let i = 0; i < n; i++) regions.push(decodeRegion(v, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE, request, `region ${i}`));
      return msg({ type: 'mem-table', regions });
    }
    case Request.ADD_MEM_REG:
    case Request.REM_MEM_REG: {
      if (request === Request.ADD_MEM_REG) expectFds(request, fds, 1, 'the region fd');
      return msg({ type: 'mem-region', region: decodeRegion(v, 8, request, 'region') });
    }
    case Request.GET_CONFIG:
    case Request.SET_CONFIG: {
      expectFds(request, fds, 0, 'none for this request');
      const offset = v.getUint32(0, true);
      const size = v.getUint32(4, true);
      const cflags = v.getUint32(8, true);
      if (size > MAX_CONFIG_SIZE) throw perr('ERR_VHOST_USER_PAYLOAD', request, `config size ${size} exceeds ${MAX_CONFIG_SIZE}`);
      if (h.size !== CONFIG_HEADER_SIZE + size) {
        throw perr('ERR_VHOST_USER_SIZE', request, `payload of ${h.size} bytes for a config access of ${size} bytes, expected ${CONFIG_HEADER_SIZE + size}`);
      }
      return msg({ type: 'config', offset, size, flags: cflags, data: body.subarray(CONFIG_HEADER_SIZE) });
    }
    default:
      break;
  }
  expectFds(request, fds, 0, 'none for this request');
  if (rule === empty) return msg({ type: 'empty' });
  if (rule === u64) return msg({ type: 'u64', value: v.getBigUint64(0, true) });
  if (rule === state) return msg({ type: 'vring-state', index: v.getUint32(0, true), num: v.getUint32(4, true) });
  if (request === Request.SET_VRING_ADDR) {
    return msg({
      type: 'vring-addr',
      index: v.getUint32(0, true),
      flags: v.getUint32(4, true),
      desc: safe(v, 8, request, 'descriptor'),
      used: safe(v, 16, request, 'used'),
      avail: safe(v, 24, request, 'available'),
      log: safe(v, 32, request, 'log'),
    });
  }
  return msg({ type: 'raw', bytes: body });
}

// ---- encoding ---------------------------------------------------------------------------

/** A whole message: header + payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE + payload.length);
  buf.writeUInt32LE(request, 0);
  buf.writeUInt32LE(flags >>> 0, 4);
  buf.writeUInt32LE(payload.length, 8);
  buf.set(payload, HEADER_SIZE);
  return buf;
}

/** A back-end reply to `request`: version 1 with the REPLY flag. */
export function encodeReply(request: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  return encodeMessage(request, VERSION | FLAG_REPLY, payload);
}

export function encodeU64(value: bigint | number): Buffer {
  const b = Buffer.alloc(U64_SIZE);
  b.writeBigUInt64LE(BigInt(value));
  return b;
}

export function encodeVringState(index: number, num: number): Buffer {
  const b = Buffer.alloc(VRING_STATE_SIZE);
  b.writeUInt32LE(index >>> 0, 0);
  b.writeUInt32LE(num >>> 0, 4);
  return b;
}

export function encodeVringAddr(a: { index: number; flags?: number; desc: number | bigint; used: number | bigint; avail: number | bigint; log?: number | bigint }): Buffer {
  const b = Buffer.alloc(VRING_ADDR_SIZE);
  b.writeUInt32LE(a.index >>> 0, 0);
  b.writeUInt32LE((a.flags ?? 0) >>> 0, 4);
  b.writeBigUInt64LE(BigInt(a.desc), 8);
  b.writeBigUInt64LE(BigInt(a.used), 16);
  b.writeBigUInt64LE(BigInt(a.avail), 24);
  b.writeBigUInt64LE(BigInt(a.log ?? 0), 32);
  return b;
}

/** The SET_VRING_KICK/CALL/ERR u64: ring index, plus bit 8 when no fd is passed. */
export function encodeVringFile(index: number, noFd = false): Buffer {
  return encodeU64(BigInt(index & VRING_INDEX_MASK) | (noFd ? BigInt(VRING_NOFD_MASK) : 0n));
}

function writeRegion(b: Buffer, off: number, r: MemoryRegionDescription): void {
  b.writeBigUInt64LE(BigInt(r.guestPhysAddr), off);
  b.writeBigUInt64LE(BigInt(r.memorySize), off + 8);
  b.writeBigUInt64LE(BigInt(r.userspaceAddr), off + 16);
  b.writeBigUInt64LE(BigInt(r.mmapOffset), off + 24);
}

export function encodeMemTable(regions: readonly MemoryRegionDescription[]): Buffer {
  const b = Buffer.alloc(MEM_TABLE_HEADER_SIZE + regions.length * MEM_REGION_SIZE);
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => writeRegion(b, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE, r));
  return b;
}

export function encodeSingleMemRegion(r: MemoryRegionDescription): Buffer {
  const b = Buffer.alloc(SINGLE_MEM_REGION_SIZE);
  writeRegion(b, 8, r);
  return b;
}

export function encodeConfig(offset: number, flags: number, data: Uint8Array): Buffer {
  const b = Buffer.alloc(CONFIG_HEADER_SIZE + data.length);
  b.writeUInt32LE(offset >>> 0, 0);
  b.writeUInt32LE(data.length, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.set(data, CONFIG_HEADER_SIZE);
  return b;
}
