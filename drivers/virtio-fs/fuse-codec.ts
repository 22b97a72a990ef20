// The FUSE messages of virtio-fs (virtio 1.2, 5.11.6; layouts from Linux
// include/uapi/linux/fuse.h), for both halves: the driver encodes requests and decodes
// replies, the device decodes requests and encodes replies.
//
// Encoders write into caller-provided memory (a DataView and an offset) and return the
// bytes written. Decoders read `len` bytes at `off` and never look past them: a
// structure that does not fit, a length field that disagrees with the bytes there, or a
// field out of range throws FuseCodecError, and nothing else.
import {
  FUSE_ATTR_SIZE,
  FUSE_BATCH_FORGET_IN_SIZE,
  FUSE_COMPAT_22_INIT_OUT_SIZE,
  FUSE_DIRENTPLUS_HEADER_SIZE,
  FUSE_DIRENT_ALIGN,
  FUSE_DIRENT_HEADER_SIZE,
  FUSE_ENTRY_OUT_SIZE,
  FUSE_FORGET_IN_SIZE,
  FUSE_FORGET_ONE_SIZE,
  FUSE_GETATTR_IN_SIZE,
  FUSE_INIT_IN_SIZE,
  FUSE_INIT_OUT_SIZE,
  FUSE_IN_HEADER_SIZE,
  FUSE_MAX_ERRNO,
  FUSE_NAME_MAX,
  FUSE_OPEN_IN_SIZE,
  FUSE_OPEN_OUT_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_READ_IN_SIZE,
  FUSE_RELEASE_IN_SIZE,
  FUSE_STATFS_OUT_SIZE,
  opcodeName,
} from './fuse-protocol.js';

export type FuseCodecErrorCode =
  | 'ERR_FUSE_SHORT' // fewer bytes than the structure needs
  | 'ERR_FUSE_LENGTH' // a length field disagrees with the bytes present
  | 'ERR_FUSE_UNIQUE' // a reply for a request we did not send
  | 'ERR_FUSE_ERRNO_RANGE' // out_header.error is positive or <= -512
  | 'ERR_FUSE_FIELD' // a field holds an impossible value (name, id beyond 2^53...)
  | 'ERR_FUSE_VERSION'; // INIT: a protocol version we cannot speak

export class FuseCodecError extends Error {
  constructor(
    readonly code: FuseCodecErrorCode,
    message: string,
    /** The request's opcode and unique when known (-1 otherwise). */
    readonly opcode = -1,
    readonly unique = -1,
  ) {
    super(opcode >= 0 ? `FUSE ${opcodeName(opcode)} (unique ${unique}): ${message}` : message);
    this.name = 'FuseCodecError';
  }

  /** The same fault, attributed to one request. */
  forRequest(opcode: number, unique: number): FuseCodecError {
    return new FuseCodecError(this.code, this.message, opcode, unique);
  }
}

function need(len: number, size: number, what: string): void {
  if (len < size) throw new FuseCodecError('ERR_FUSE_SHORT', `${what} needs ${size} bytes, got ${len}`);
}

function exact(len: number, size: number, what: string): void {
  if (len !== size) throw new FuseCodecError('ERR_FUSE_LENGTH', `${what} is ${size} bytes, got ${len}`);
}

// ---- 64-bit fields. Ids (unique, nodeid, fh) must be exact: beyond 2^53 is refused.
// Sizes, inode numbers and times above 2^53 lose precision, as in Node's fs.Stats.

export function writeU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 0x100000000) >>> 0, true);
}

export function readU64(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) * 0x100000000 + dv.getUint32(off, true);
}

/** A u64 id that must be exact in a JavaScript number. */
export function readId(dv: DataView, off: number, what: string): number {
  const hi = dv.getUint32(off + 4, true);
  if (hi >= 0x200000) throw new FuseCodecError('ERR_FUSE_FIELD', `${what} 0x${hi.toString(16)}${dv.getUint32(off, true).toString(16).padStart(8, '0')} is beyond 2^53`);
  return hi * 0x100000000 + dv.getUint32(off, true);
}

/** Signed 64-bit seconds (times before 1970 are negative). */
function readI64(dv: DataView, off: number): number {
  return dv.getInt32(off + 4, true) * 0x100000000 + dv.getUint32(off, true);
}

function writeI64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setInt32(off + 4, Math.floor(v / 0x100000000), true);
}

// ---- Headers (fuse_in_header, fuse_out_header).

export interface FuseInHeader {
  len: number;
  opcode: number;
  unique: number;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
}

export function encodeInHeader(dv: DataView, off: number, h: FuseInHeader): number {
  dv.setUint32(off, h.len, true);
  dv.setUint32(off + 4, h.opcode, true);
  writeU64(dv, off + 8, h.unique);
  writeU64(dv, off + 16, h.nodeid);
  dv.setUint32(off + 24, h.uid, true);
  dv.setUint32(off + 28, h.gid, true);
  dv.setUint32(off + 32, h.pid, true);
  dv.setUint32(off + 36, 0, true); // total_extlen (7.36) and padding
  return FUSE_IN_HEADER_SIZE;
}

/** Allocation-free variant for the driver's hot path. */
export function writeInHeader(dv: DataView, off: number, len: number, opcode: number, unique: number, nodeid: number): void {
  dv.setUint32(off, len, true);
  dv.setUint32(off + 4, opcode, true);
  writeU64(dv, off + 8, unique);
  writeU64(dv, off + 16, nodeid);
  dv.setUint32(off + 24, 0, true);
  dv.setUint32(off + 28, 0, true);
  dv.setUint32(off + 32, 0, true);
  dv.setUint32(off + 36, 0, true);
}

/** Decodes a request header; `len` is the readable bytes of the request. */
export function decodeInHeader(dv: DataView, off: number, len: number, out: FuseInHeader = emptyInHeader()): FuseInHeader {
  need(len, FUSE_IN_HEADER_SIZE, 'fuse_in_header');
  out.len = dv.getUint32(off, true);
  out.opcode = dv.getUint32(off + 4, true);
  out.unique = readId(dv, off + 8, 'unique');
  out.nodeid = readId(dv, off + 16, 'nodeid');
  out.uid = dv.getUint32(off + 24, true);
  out.gid = dv.getUint32(off + 28, true);
  out.pid = dv.getUint32(off + 32, true);
  if (out.len < FUSE_IN_HEADER_SIZE || out.len > len) {
    throw new FuseCodecError('ERR_FUSE_LENGTH', `fuse_in_header.len ${out.len} does not fit the ${len} bytes of the request`, out.opcode, out.unique);
  }
  return out;
}

export function emptyInHeader(): FuseInHeader {
  return { len: 0, opcode: 0, unique: 0, nodeid: 0, uid: 0, gid: 0, pid: 0 };
}

export interface FuseOutHeader {
  len: number;
  /** 0 or a negated errno. */
  error: number;
  unique: number;
}

export function encodeOutHeader(dv: DataView, off: number, len: number, error: number, unique: number): number {
  dv.setUint32(off, len, true);
  dv.setInt32(off + 4, error, true);
  writeU64(dv, off + 8, unique);
  return FUSE_OUT_HEADER_SIZE;
}

/**
 * Decodes and checks a reply header against what the device reported writing
 * (`written`, the used length) and the request it answers. Returns the errno (0 on
 * success); throws FuseCodecError naming the request's opcode and unique otherwise.
 */
export function decodeOutHeader(dv: DataView, off: number, written: number, opcode: number, unique: number, out: FuseOutHeader): number {
  if (written < FUSE_OUT_HEADER_SIZE) {
    throw new FuseCodecError('ERR_FUSE_SHORT', `reply of ${written} bytes is shorter than fuse_out_header (16)`, opcode, unique);
  }
  out.len = dv.getUint32(off, true);
  out.error = dv.getInt32(off + 4, true);
  const lo = dv.getUint32(off + 8, true);
  const hi = dv.getUint32(off + 12, true);
  out.unique = hi * 0x100000000 + lo;
  if (hi >= 0x200000 || out.unique !== unique) {
    throw new FuseCodecError('ERR_FUSE_UNIQUE', `reply carries unique ${hi >= 0x200000 ? 'beyond 2^53' : out.unique}, not the request's`, opcode, unique);
  }
  if (out.len !== written) {
    throw new FuseCodecError('ERR_FUSE_LENGTH', `fuse_out_header.len ${out.len} differs from the ${written} bytes the device wrote`, opcode, unique);
  }
  if (out.error > 0 || out.error < -FUSE_MAX_ERRNO) {
    throw new FuseCodecError('ERR_FUSE_ERRNO_RANGE', `reply error ${out.error} is not 0 or a negated errno above -512`, opcode, unique);
  }
  if (out.error !== 0 && out.len !== FUSE_OUT_HEADER_SIZE) {
    throw new FuseCodecError('ERR_FUSE_LENGTH', `error reply (${out.error}) carries ${out.len - FUSE_OUT_HEADER_SIZE} bytes of body`, opcode, unique);
  }
  return out.error === 0 ? 0 : -out.error;
}

// ---- INIT

export interface FuseInitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export function encodeInitIn(dv: DataView, off: number, v: FuseInitIn): number {
  dv.setUint32(off, v.major, true);
  dv.setUint32(off + 4, v.minor, true);
  dv.setUint32(off + 8, v.maxReadahead, true);
  dv.setUint32(off + 12, v.flags >>> 0, true);
  return FUSE_INIT_IN_SIZE;
}

/** Accepts the 7.6+ layout (16 bytes) and the 7.36 one (64 bytes; flags2 ignored). */
export function decodeInitIn(dv: DataView, off: number, len: number): FuseInitIn {
  need(len, FUSE_INIT_IN_SIZE, 'fuse_init_in');
  return {
    major: dv.getUint32(off, true),
    minor: dv.getUint32(off + 4, true),
    maxReadahead: dv.getUint32(off + 8, true),
    flags: dv.getUint32(off + 12, true),
  };
}

export interface FuseInitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
  mapAlignment: number;
}

export function encodeInitOut(dv: DataView, off: number, v: FuseInitOut): number {
  dv.setUint32(off, v.major, true);
  dv.setUint32(off + 4, v.minor, true);
  dv.setUint32(off + 8, v.maxReadahead, true);
  dv.setUint32(off + 12, v.flags >>> 0, true);
  dv.setUint16(off + 16, v.maxBackground, true);
  dv.setUint16(off + 18, v.congestionThreshold, true);
  dv.setUint32(off + 20, v.maxWrite, true);
  dv.setUint32(off + 24, v.timeGran, true);
  dv.setUint16(off + 28, v.maxPages, true);
  dv.setUint16(off + 30, v.mapAlignment, true);
  for (let i = 32; i < FUSE_INIT_OUT_SIZE; i += 4) dv.setUint32(off + i, 0, true); // flags2, unused[7]
  return FUSE_INIT_OUT_SIZE;
}

/**
 * Decodes fuse_init_out. A device may answer with its own, newer minor and a longer
 * structure; at least the 7.23 layout (24 bytes) must be there. Fields past `len` read
 * as 0.
 */
export function decodeInitOut(dv: DataView, off: number, len: number): FuseInitOut {
  need(len, FUSE_COMPAT_22_INIT_OUT_SIZE, 'fuse_init_out');
  const has = (end: number): boolean => len >= end;
  return {
    major: dv.getUint32(off, true),
    minor: dv.getUint32(off + 4, true),
    maxReadahead: dv.getUint32(off + 8, true),
    flags: dv.getUint32(off + 12, true),
    maxBackground: dv.getUint16(off + 16, true),
    congestionThreshold: dv.getUint16(off + 18, true),
    maxWrite: dv.getUint32(off + 20, true),
    timeGran: has(28) ? dv.getUint32(off + 24, true) : 0,
    maxPages: has(30) ? dv.getUint16(off + 28, true) : 0,
    mapAlignment: has(32) ? dv.getUint16(off + 30, true) : 0,
  };
}

// ---- Attributes and entries

export interface FuseAttr {
  ino: number;
  size: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
  atimensec: number;
  mtimensec: number;
  ctimensec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
  flags: number;
}

export function encodeAttr(dv: DataView, off: number, a: FuseAttr): number {
  writeU64(dv, off, a.ino);
  writeU64(dv, off + 8, a.size);
  writeU64(dv, off + 16, a.blocks);
  writeI64(dv, off + 24, a.atime);
  writeI64(dv, off + 32, a.mtime);
  writeI64(dv, off + 40, a.ctime);
  dv.setUint32(off + 48, a.atimensec, true);
  dv.setUint32(off + 52, a.mtimensec, true);
  dv.setUint32(off + 56, a.ctimensec, true);
  dv.setUint32(off + 60, a.mode, true);
  dv.setUint32(off + 64, a.nlink, true);
  dv.setUint32(off + 68, a.uid, true);
  dv.setUint32(off + 72, a.gid, true);
  dv.setUint32(off + 76, a.rdev, true);
  dv.setUint32(off + 80, a.blksize, true);
  dv.setUint32(off + 84, a.flags, true);
  return FUSE_ATTR_SIZE;
}

export function decodeAttr(dv: DataView, off: number, len: number): FuseAttr {
  need(len, FUSE_ATTR_SIZE, 'fuse_attr');
  const a: FuseAttr = {
    ino: readU64(dv, off),
    size: readU64(dv, off + 8),
    blocks: readU64(dv, off + 16),
    atime: readI64(dv, off + 24),
    mtime: readI64(dv, off + 32),
    ctime: readI64(dv, off + 40),
    atimensec: dv.getUint32(off + 48, true),
    mtimensec: dv.getUint32(off + 52, true),
    ctimensec: dv.getUint32(off + 56, true),
    mode: dv.getUint32(off + 60, true),
    nlink: dv.getUint32(off + 64, true),
    uid: dv.getUint32(off + 68, true),
    gid: dv.getUint32(off + 72, true),
    rdev: dv.getUint32(off + 76, true),
    blksize: dv.getUint32(off + 80, true),
    flags: dv.getUint32(off + 84, true),
  };
  if (a.atimensec > 999_999_999 || a.mtimensec > 999_999_999 || a.ctimensec > 999_999_999) {
    throw new FuseCodecError('ERR_FUSE_FIELD', `fuse_attr nanoseconds out of range (${a.atimensec}, ${a.mtimensec}, ${a.ctimensec})`);
  }
  return a;
}

export interface FuseEntryOut {
  /** 0 means a negative entry: the name does not exist (cacheable ENOENT). */
  nodeid: number;
  generation: number;
  entryValid: number;
  attrValid: number;
  entryValidNsec: number;
  attrValidNsec: number;
  attr: FuseAttr;
}

export function encodeEntryOut(dv: DataView, off: number, e: FuseEntryOut): number {
  writeU64(dv, off, e.nodeid);
  writeU64(dv, off + 8, e.generation);
  writeU64(dv, off + 16, e.entryValid);
  writeU64(dv, off + 24, e.attrValid);
  dv.setUint32(off + 32, e.entryValidNsec, true);
  dv.setUint32(off + 36, e.attrValidNsec, true);
  encodeAttr(dv, off + 40, e.attr);
  return FUSE_ENTRY_OUT_SIZE;
}

export function decodeEntryOut(dv: DataView, off: number, len: number): FuseEntryOut {
  exact(len, FUSE_ENTRY_OUT_SIZE, 'fuse_entry_out');
  return decodeEntryAt(dv, off);
}

function decodeEntryAt(dv: DataView, off: number): FuseEntryOut {
  return {
    nodeid: readId(dv, off, 'nodeid'),
    generation: readU64(dv, off + 8),
    entryValid: readU64(dv, off + 16),
    attrValid: readU64(dv, off + 24),
    entryValidNsec: dv.getUint32(off + 32, true),
    attrValidNsec: dv.getUint32(off + 36, true),
    attr: decodeAttr(dv, off + 40, FUSE_ATTR_SIZE),
  };
}

export interface FuseAttrOut {
  attrValid: number;
  attrValidNsec: number;
  attr: FuseAttr;
}

export function encodeAttrOut(dv: DataView, off: number, a: FuseAttrOut): number {
  writeU64(dv, off, a.attrValid);
  dv.setUint32(off + 8, a.attrValidNsec, true);
  dv.setUint32(off + 12, 0, true);
  encodeAttr(dv, off + 16, a.attr);
  return 16 + FUSE_ATTR_SIZE;
}

export function decodeAttrOut(dv: DataView, off: number, len: number): FuseAttrOut {
  exact(len, 16 + FUSE_ATTR_SIZE, 'fuse_attr_out');
  return {
    attrValid: readU64(dv, off),
    attrValidNsec: dv.getUint32(off + 8, true),
    attr: decodeAttr(dv, off + 16, FUSE_ATTR_SIZE),
  };
}

// ---- LOOKUP: the name, NUL-terminated.

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8');

/**
 * Writes a name component and its NUL at u8[off...]; returns the bytes written.
 * Refuses names the protocol cannot carry ('', '.', '..', '/' or NUL inside, longer than
 * NAME_MAX bytes, or longer than `room`).
 */
export function encodeName(u8: Uint8Array, off: number, room: number, name: string): number {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new FuseCodecError('ERR_FUSE_FIELD', `name ${JSON.stringify(name)} is not a single path component`);
  }
  const max = Math.min(room - 1, FUSE_NAME_MAX);
  if (max <= 0) throw new FuseCodecError('ERR_FUSE_SHORT', `no room for name ${JSON.stringify(name)}`);
  // encodeInto stops short when out of room: then the name is too long.
  const target = u8.subarray(off, off + max + 1);
  const r = utf8.encodeInto(name, target);
  if (r.read !== name.length || r.written > max) {
    throw new FuseCodecError('ERR_FUSE_FIELD', `name ${JSON.stringify(name.slice(0, 40))}... is longer than ${FUSE_NAME_MAX} bytes`);
  }
  u8[off + r.written] = 0;
  return r.written + 1;
}

/** The device's view: a name component, NUL-terminated, within `len` bytes. */
export function decodeName(u8: Uint8Array, off: number, len: number): string {
  const n = u8.subarray(off, off + Math.max(0, len)).indexOf(0);
  if (n < 0) throw new FuseCodecError('ERR_FUSE_FIELD', 'name is not NUL-terminated');
  const end = off + n;
  if (n === 0 || n > FUSE_NAME_MAX) throw new FuseCodecError('ERR_FUSE_FIELD', `name of ${n} bytes (must be 1..${FUSE_NAME_MAX})`);
  const name = utf8Decoder.decode(u8.subarray(off, end));
  if (name === '.' || name === '..' || name.includes('/')) {
    throw new FuseCodecError('ERR_FUSE_FIELD', `name ${JSON.stringify(name)} is not a single path component`);
  }
  return name;
}

// ---- FORGET / BATCH_FORGET (no reply)

export function encodeForgetIn(dv: DataView, off: number, nlookup: number): number {
  writeU64(dv, off, nlookup);
  return FUSE_FORGET_IN_SIZE;
}

export function decodeForgetIn(dv: DataView, off: number, len: number): number {
  need(len, FUSE_FORGET_IN_SIZE, 'fuse_forget_in');
  return readU64(dv, off);
}

export interface FuseForgetOne {
  nodeid: number;
  nlookup: number;
}

export function encodeBatchForgetIn(dv: DataView, off: number, items: readonly FuseForgetOne[]): number {
  dv.setUint32(off, items.length, true);
  dv.setUint32(off + 4, 0, true);
  let o = off + FUSE_BATCH_FORGET_IN_SIZE;
  for (const it of items) {
    writeU64(dv, o, it.nodeid);
    writeU64(dv, o + 8, it.nlookup);
    o += FUSE_FORGET_ONE_SIZE;
  }
  return o - off;
}

export function decodeBatchForgetIn(dv: DataView, off: number, len: number): FuseForgetOne[] {
  need(len, FUSE_BATCH_FORGET_IN_SIZE, 'fuse_batch_forget_in');
  const count = dv.getUint32(off, true);
  if (count > Math.floor((len - FUSE_BATCH_FORGET_IN_SIZE) / FUSE_FORGET_ONE_SIZE)) {
    throw new FuseCodecError('ERR_FUSE_LENGTH', `fuse_batch_forget_in.count ${count} needs more than the ${len} bytes present`);
  }
  const out: FuseForgetOne[] = [];
  for (let i = 0, o = off + FUSE_BATCH_FORGET_IN_SIZE; i < count; i++, o += FUSE_FORGET_ONE_SIZE) {
    out.push({ nodeid: readId(dv, o, 'nodeid'), nlookup: readU64(dv, o + 8) });
  }
  return out;
}

// ---- GETATTR

export interface FuseGetattrIn {
  getattrFlags: number;
  fh: number;
}

export function encodeGetattrIn(dv: DataView, off: number, flags: number, fh: number): number {
  dv.setUint32(off, flags, true);
  dv.setUint32(off + 4, 0, true);
  writeU64(dv, off + 8, fh);
  return FUSE_GETATTR_IN_SIZE;
}

export function decodeGetattrIn(dv: DataView, off: number, len: number): FuseGetattrIn {
  need(len, FUSE_GETATTR_IN_SIZE, 'fuse_getattr_in');
  return { getattrFlags: dv.getUint32(off, true), fh: readId(dv, off + 8, 'fh') };
}

// ---- OPEN / OPENDIR

export interface FuseOpenIn {
  flags: number;
  openFlags: number;
}

export function encodeOpenIn(dv: DataView, off: number, flags: number): number {
  dv.setUint32(off, flags, true);
  dv.setUint32(off + 4, 0, true);
  return FUSE_OPEN_IN_SIZE;
}

export function decodeOpenIn(dv: DataView, off: number, len: number): FuseOpenIn {
  need(len, FUSE_OPEN_IN_SIZE, 'fuse_open_in');
  return { flags: dv.getUint32(off, true), openFlags: dv.getUint32(off + 4, true) };
}

export interface FuseOpenOut {
  fh: number;
  openFlags: number;
}

export function encodeOpenOut(dv: DataView, off: number, fh: number, openFlags: number): number {
  writeU64(dv, off, fh);
  dv.setUint32(off + 8, openFlags, true);
  dv.setUint32(off + 12, 0, true);
  return FUSE_OPEN_OUT_SIZE;
}

export function decodeOpenOut(dv: DataView, off: number, len: number): FuseOpenOut {
  exact(len, FUSE_OPEN_OUT_SIZE, 'fuse_open_out');
  return { fh: readId(dv, off, 'fh'), openFlags: dv.getUint32(off + 8, true) };
}

// ---- READ / READDIR / READDIRPLUS (fuse_read_in)

export interface FuseReadIn {
  fh: number;
  offset: number;
  size: number;
  readFlags: number;
  lockOwner: number;
  flags: number;
}

export function encodeReadIn(dv: DataView, off: number, fh: number, offset: number, size: number): number {
  writeU64(dv, off, fh);
  writeU64(dv, off + 8, offset);
  dv.setUint32(off + 16, size, true);
  dv.setUint32(off + 20, 0, true); // read_flags
  writeU64(dv, off + 24, 0); // lock_owner
  dv.setUint32(off + 32, 0, true); // flags
  dv.setUint32(off + 36, 0, true);
  return FUSE_READ_IN_SIZE;
}

export function decodeReadIn(dv: DataView, off: number, len: number): FuseReadIn {
  need(len, FUSE_READ_IN_SIZE, 'fuse_read_in');
  return {
    fh: readId(dv, off, 'fh'),
    offset: readId(dv, off + 8, 'offset'),
    size: dv.getUint32(off + 16, true),
    readFlags: dv.getUint32(off + 20, true),
    lockOwner: readU64(dv, off + 24),
    flags: dv.getUint32(off + 32, true),
  };
}

// ---- RELEASE / RELEASEDIR

export interface FuseReleaseIn {
  fh: number;
  flags: number;
  releaseFlags: number;
}

export function encodeReleaseIn(dv: DataView, off: number, fh: number, flags: number): number {
  writeU64(dv, off, fh);
  dv.setUint32(off + 8, flags, true);
  dv.setUint32(off + 12, 0, true);
  writeU64(dv, off + 16, 0);
  return FUSE_RELEASE_IN_SIZE;
}

export function decodeReleaseIn(dv: DataView, off: number, len: number): FuseReleaseIn {
  need(len, FUSE_RELEASE_IN_SIZE, 'fuse_release_in');
  return { fh: readId(dv, off, 'fh'), flags: dv.getUint32(off + 8, true), releaseFlags: dv.getUint32(off + 12, true) };
}

// ---- STATFS

export interface FuseKstatfs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

export function encodeStatfsOut(dv: DataView, off: number, s: FuseKstatfs): number {
  writeU64(dv, off, s.blocks);
  writeU64(dv, off + 8, s.bfree);
  writeU64(dv, off + 16, s.bavail);
  writeU64(dv, off + 24, s.files);
  writeU64(dv, off + 32, s.ffree);
  dv.setUint32(off + 40, s.bsize, true);
  dv.setUint32(off + 44, s.namelen, true);
  dv.setUint32(off + 48, s.frsize, true);
  for (let i = 52; i < FUSE_STATFS_OUT_SIZE; i += 4) dv.setUint32(off + i, 0, true); // padding, spare[6]
  return FUSE_STATFS_OUT_SIZE;
}

export function decodeStatfsOut(dv: DataView, off: number, len: number): FuseKstatfs {
  exact(len, FUSE_STATFS_OUT_SIZE, 'fuse_statfs_out');
  return {
    blocks: readU64(dv, off),
    bfree: readU64(dv, off + 8),
    bavail: readU64(dv, off + 16),
    files: readU64(dv, off + 24),
    ffree: readU64(dv, off + 32),
    bsize: dv.getUint32(off + 40, true),
    namelen: dv.getUint32(off + 44, true),
    frsize: dv.getUint32(off + 48, true),
  };
}

// ---- Directory entries (READDIR: fuse_dirent; READDIRPLUS: fuse_direntplus), each
// padded to 8 bytes (FUSE_DIRENT_ALIGN).

export interface FuseDirent {
  ino: number;
  /** The offset to pass to the next READDIR to continue after this entry. */
  off: number;
  type: number;
  name: string;
}

export interface FuseDirentPlus extends FuseDirent {
  entry: FuseEntryOut;
}

const alignDirent = (n: number): number => (n + FUSE_DIRENT_ALIGN - 1) & ~(FUSE_DIRENT_ALIGN - 1);

/** Bytes one fuse_dirent with a name of `nameLen` bytes takes, padding included. */
export const direntSize = (nameLen: number): number => alignDirent(FUSE_DIRENT_HEADER_SIZE + nameLen);
export const direntPlusSize = (nameLen: number): number => alignDirent(FUSE_DIRENTPLUS_HEADER_SIZE + nameLen);

/** Appends one fuse_dirent if it fits in `room`; returns its size or 0 when it does not. */
export function encodeDirent(u8: Uint8Array, dv: DataView, off: number, room: number, ino: number, nextOff: number, type: number, name: Uint8Array): number {
  const size = direntSize(name.length);
  if (size > room) return 0;
  writeU64(dv, off, ino);
  writeU64(dv, off + 8, nextOff);
  dv.setUint32(off + 16, name.length, true);
  dv.setUint32(off + 20, type, true);
  u8.set(name, off + FUSE_DIRENT_HEADER_SIZE);
  u8.fill(0, off + FUSE_DIRENT_HEADER_SIZE + name.length, off + size);
  return size;
}

/** Appends one fuse_direntplus if it fits in `room`; returns its size or 0. */
export function encodeDirentPlus(u8: Uint8Array, dv: DataView, off: number, room: number, entry: FuseEntryOut, nextOff: number, type: number, name: Uint8Array): number {
  const size = direntPlusSize(name.length);
  if (size > room) return 0;
  encodeEntryOut(dv, off, entry);
  return FUSE_ENTRY_OUT_SIZE + encodeDirent(u8, dv, off + FUSE_ENTRY_OUT_SIZE, room - FUSE_ENTRY_OUT_SIZE, entry.attr.ino, nextOff, type, name);
}

function decodeDirentAt(u8: Uint8Array, dv: DataView, o: number, end: number, what: string): { d: FuseDirent; next: number } {
  if (end - o < FUSE_DIRENT_HEADER_SIZE) throw new FuseCodecError('ERR_FUSE_SHORT', `${what}: ${end - o} trailing bytes, shorter than a dirent header`);
  const namelen = dv.getUint32(o + 16, true);
  if (namelen === 0 || namelen > FUSE_NAME_MAX) throw new FuseCodecError('ERR_FUSE_FIELD', `${what}: name length ${namelen} (must be 1..${FUSE_NAME_MAX})`);
  const size = direntSize(namelen);
  if (size > end - o) throw new FuseCodecError('ERR_FUSE_LENGTH', `${what}: entry of ${size} bytes runs past the ${end - o} left`);
  const type = dv.getUint32(o + 20, true);
  if (type > 15) throw new FuseCodecError('ERR_FUSE_FIELD', `${what}: type ${type} is not a DT_* value`);
  const nameBytes = u8.subarray(o + FUSE_DIRENT_HEADER_SIZE, o + FUSE_DIRENT_HEADER_SIZE + namelen);
  if (nameBytes.includes(0) || nameBytes.includes(0x2f)) throw new FuseCodecError('ERR_FUSE_FIELD', `${what}: name contains NUL or '/'`);
  return {
    d: { ino: readU64(dv, o), off: readU64(dv, o + 8), type, name: utf8Decoder.decode(nameBytes) },
    next: o + size,
  };
}

/** Decodes a READDIR reply body of `len` bytes. */
export function decodeDirents(u8: Uint8Array, dv: DataView, off: number, len: number): FuseDirent[] {
  const out: FuseDirent[] = [];
  const end = off + len;
  let o = off;
  while (o < end) {
    const { d, next } = decodeDirentAt(u8, dv, o, end, 'fuse_dirent');
    out.push(d);
    o = next;
  }
  return out;
}

/** Decodes a READDIRPLUS reply body of `len` bytes. */
export function decodeDirentsPlus(u8: Uint8Array, dv: DataView, off: number, len: number): FuseDirentPlus[] {
  const out: FuseDirentPlus[] = [];
  const end = off + len;
  let o = off;
  while (o < end) {
    need(end - o, FUSE_DIRENTPLUS_HEADER_SIZE, 'fuse_direntplus');
    const entry = decodeEntryAt(dv, o);
    const { d, next } = decodeDirentAt(u8, dv, o + FUSE_ENTRY_OUT_SIZE, end, 'fuse_direntplus');
    out.push({ ...d, entry });
    o = next;
  }
  return out;
}

/** Checks an INIT reply's version against ours; returns the minor both will speak. */
export function negotiateMinor(init: FuseInitOut, ourMajor: number, ourMinor: number, minMinor: number): number {
  if (init.major !== ourMajor) {
    throw new FuseCodecError('ERR_FUSE_VERSION', `device speaks FUSE ${init.major}.${init.minor}; this driver speaks only major ${ourMajor}`);
  }
  const minor = Math.min(init.minor, ourMinor);
  if (minor < minMinor) {
    throw new FuseCodecError('ERR_FUSE_VERSION', `device speaks FUSE ${init.major}.${init.minor}; this driver needs at least ${ourMajor}.${minMinor}`);
  }
  return minor;
}
