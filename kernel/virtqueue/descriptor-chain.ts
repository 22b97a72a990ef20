// What both device halves (split and packed) share: the walked chain handed to device
// models, the checks of one buffer descriptor and of an indirect table, and the mapping
// of a ring part in guest memory. Everything in guest memory is hostile: each check
// returns the fault as a VirtqueueError naming the queue and the descriptor.
import type { GuestMemory, MemoryRegion } from '../memory/guest-memory.js';
import { GuestMemoryError } from '../memory/guest-memory.js';
import { copyBytes } from '../memory/copy.js';
import { VirtqueueError } from './errors.js';
import type { RingPart } from './queue.js';

/** Size of one descriptor, in both layouts (2.7.5, 2.8.13) and in indirect tables. */
export const DESC_SIZE = 16;

/** The most a used length (le32) can say: a chain's lengths must add up to no more. */
export const MAX_CHAIN_BYTES = 0xffffffff;

/**
 * One available chain, walked and checked. Segments are stored readable first, then
 * writable, each as (region, offset inside the region, length). The object belongs to
 * its id (split: head index; packed: buffer id) and is reused: it stays valid until the
 * chain is pushed back.
 */
export class DescriptorChain {
  /** The chain's id: the head descriptor index (split) or the buffer id (packed). */
  head = 0;
  /** Packed rings: how many ring descriptors the chain took (the used descriptor skips them, 2.8.6). */
  ringDescriptors = 0;
  /** Readable segments come first: [0, readableCount), then writable ones. */
  readableCount = 0;
  writableCount = 0;
  readableLength = 0;
  writableLength = 0;
  regions: MemoryRegion[] = [];
  offsets: Float64Array;
  lengths: Uint32Array;
  /** Guest addresses of the segments (for diagnostics and zero-copy hand-offs). */
  addrs: Float64Array;

  constructor(capacity: number) {
    this.offsets = new Float64Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.addrs = new Float64Array(capacity);
  }

  get segmentCount(): number {
    return this.readableCount + this.writableCount;
  }

  /** Empties the chain before a walk. */
  clear(head: number): void {
    this.head = head;
    this.readableCount = this.writableCount = 0;
    this.readableLength = this.writableLength = 0;
  }

  /** Bytes of segment i (allocates a view; the copy helpers below do not). */
  segment(i: number): Uint8Array {
    const off = this.offsets[i]!;
    return this.regions[i]!.bytes.subarray(off, off + this.lengths[i]!);
  }

  /**
   * Copies up to `length` bytes of the device-readable part, starting `from` bytes into
   * it, to dst[dstOffset...]. Returns the bytes copied.
   */
  read(from: number, dst: Uint8Array, dstOffset: number, length: number): number {
    let skip = from;
    let done = 0;
    for (let i = 0; i < this.readableCount && done < length; i++) {
      const len = this.lengths[i]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, length - done);
      const off = this.offsets[i]! + skip;
      copyBytes(this.regions[i]!.bytes, off, dst, dstOffset + done, n);
      done += n;
      skip = 0;
    }
    return done;
  }

  /**
   * Copies `length` bytes of src[srcOffset...] into the device-writable part, starting
   * `to` bytes into it. Returns the bytes copied (less when the chain is shorter).
   */
  write(to: number, src: Uint8Array, srcOffset: number, length: number): number {
    let skip = to;
    let done = 0;
    const end = this.readableCount + this.writableCount;
    for (let i = this.readableCount; i < end && done < length; i++) {
      const len = this.lengths[i]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, length - done);
      copyBytes(src, srcOffset + done, this.regions[i]!.bytes, this.offsets[i]! + skip, n);
      done += n;
      skip = 0;
    }
    return done;
  }

  ensureCapacity(n: number): void {
    if (n <= this.offsets.length) return;
    const cap = Math.max(n, this.offsets.length * 2);
    const grow = <A extends Float64Array | Uint32Array>(a: A, make: (n: number) => A): A => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.offsets = grow(this.offsets, (c) => new Float64Array(c));
    this.lengths = grow(this.lengths, (c) => new Uint32Array(c));
    this.addrs = grow(this.addrs, (c) => new Float64Array(c));
  }
}

/**
 * Checks one buffer descriptor (address halves, length, direction) and appends it to
 * `chain`; returns the fault or null. `indirectEntry` >= 0 names the entry of the
 * indirect table that descriptor `descIdx` points to.
 */
export function addSegment(
  chain: DescriptorChain,
  memory: GuestMemory,
  queue: string,
  descIdx: number,
  hi: number,
  lo: number,
  len: number,
  writable: boolean,
  indirectEntry: number,
): VirtqueueError | null {
  if (!writable && chain.writableCount > 0) {
    return new VirtqueueError('ERR_VIRTQ_READABLE_AFTER_WRITABLE', queue, `${where(descIdx, indirectEntry)} is device-readable but follows a writable one`, descIdx);
  }
  if (len === 0) return null; // nothing to read or write; no address to check
  if (chain.readableLength + chain.writableLength + len > MAX_CHAIN_BYTES) {
    return new VirtqueueError('ERR_VIRTQ_CHAIN_LENGTH', queue, `${where(descIdx, indirectEntry)}: the chain's lengths add up to more than ${MAX_CHAIN_BYTES} bytes, beyond what a used length can say`, descIdx);
  }
  if (hi >= 0x200000) return new VirtqueueError('ERR_VIRTQ_DESC_ADDRESS', queue, `${where(descIdx, indirectEntry)}: address beyond 2^53`, descIdx);
  const addr = hi * 0x100000000 + lo;
  let region: MemoryRegion;
  try {
    region = memory.locate(addr, len);
  } catch (e) {
    return new VirtqueueError('ERR_VIRTQ_DESC_ADDRESS', queue, `${where(descIdx, indirectEntry)}: ${(e as GuestMemoryError).message}`, descIdx);
  }
  const n = chain.readableCount + chain.writableCount;
  chain.ensureCapacity(n + 1);
  chain.regions[n] = region;
  chain.offsets[n] = addr - region.guestAddr;
  chain.lengths[n] = len;
  chain.addrs[n] = addr;
  if (writable) {
    chain.writableCount++;
    chain.writableLength += len;
  } else {
    chain.readableCount++;
    chain.readableLength += len;
  }
  return null;
}

/** "descriptor 3" or "descriptor 3 (indirect entry 1)", for error messages only. */
function where(descIdx: number, indirectEntry: number): string {
  return indirectEntry < 0 ? `descriptor ${descIdx}` : `descriptor ${descIdx} (indirect entry ${indirectEntry})`;
}

/** An indirect table located in guest memory: a DataView over it and its entry count. */
export interface IndirectTable {
  view: DataView;
  /** Byte offset of the table inside `view`. */
  base: number;
  entries: number;
}

/**
 * Checks the indirect table descriptor `descIdx` points to (2.7.5.3.1, 2.8.7): a
 * non-zero multiple of 16 bytes, at most `maxEntries` entries, inside guest memory.
 */
export function locateIndirectTable(memory: GuestMemory, queue: string, descIdx: number, hi: number, lo: number, tableLen: number, maxEntries: number): IndirectTable | VirtqueueError {
  if (tableLen === 0 || tableLen % DESC_SIZE !== 0) {
    return new VirtqueueError('ERR_VIRTQ_INDIRECT_LENGTH', queue, `descriptor ${descIdx} points to an indirect table of ${tableLen} bytes (must be a non-zero multiple of 16)`, descIdx);
  }
  const entries = tableLen / DESC_SIZE;
  if (entries > maxEntries) {
    return new VirtqueueError('ERR_VIRTQ_CHAIN_TOO_LONG', queue, `indirect table of descriptor ${descIdx} has ${entries} entries, more than the ${maxEntries} the queue allows`, descIdx);
  }
  if (hi >= 0x200000) return new VirtqueueError('ERR_VIRTQ_DESC_ADDRESS', queue, `indirect table address of descriptor ${descIdx} is beyond 2^53`, descIdx);
  const tableAddr = hi * 0x100000000 + lo;
  let region: MemoryRegion;
  try {
    region = memory.locate(tableAddr, tableLen);
  } catch (e) {
    return new VirtqueueError('ERR_VIRTQ_DESC_ADDRESS', queue, `indirect table of descriptor ${descIdx}: ${(e as GuestMemoryError).message}`, descIdx);
  }
  return { view: region.view, base: tableAddr - region.guestAddr, entries };
}

/** Where a ring part lies in the device's mapping of guest memory. */
export interface MappedRingPart {
  buffer: ArrayBufferLike;
  byteOffset: number;
}

/** Locates a ring part for the device half; throws ERR_VIRTQ_SETUP when it is misaligned or outside guest memory. */
export function mapRingPart(memory: GuestMemory, queue: string, addr: number, bytes: number, align: number, what: string): MappedRingPart {
  if (addr % align !== 0) throw new VirtqueueError('ERR_VIRTQ_SETUP', queue, `${what} at 0x${addr.toString(16)} is not ${align}-byte aligned`);
  let r: MemoryRegion;
  try {
    r = memory.locate(addr, bytes);
  } catch (e) {
    throw new VirtqueueError('ERR_VIRTQ_SETUP', queue, `${what}: ${(e as Error).message}`);
  }
  const byteOffset = r.bytes.byteOffset + addr - r.guestAddr;
  if (byteOffset % align !== 0) throw new VirtqueueError('ERR_VIRTQ_SETUP', queue, `${what}: backing memory is not ${align}-byte aligned`);
  return { buffer: r.bytes.buffer, byteOffset };
}

/** Checks a driver-side ring part's size and alignment; throws ERR_VIRTQ_SETUP. */
export function checkRingPart(queue: string, part: RingPart, bytes: number, align: number, what: string): void {
  if (part.bytes.byteLength < bytes) throw new VirtqueueError('ERR_VIRTQ_SETUP', queue, `${what} needs ${bytes} bytes, got ${part.bytes.byteLength}`);
  if (part.addr % align !== 0 || part.bytes.byteOffset % align !== 0) {
    throw new VirtqueueError('ERR_VIRTQ_SETUP', queue, `${what} at 0x${part.addr.toString(16)} is not ${align}-byte aligned`);
  }
}
