// Guest memory: device-visible address -> bytes, with bounds checks.
//
// One class serves every backing. A backing only decides which regions exist:
//  - a SharedArrayBuffer (the in-process harness: one region),
//  - QEMU's memory table mapped from vhost-user fds (several regions, holes between),
//  - hugetlbfs pages in the guest (one region per physically contiguous page).
// Addresses are JavaScript numbers: guest-physical addresses stay far below 2^53.

/** One contiguous range of guest memory and the bytes that back it. */
export interface MemoryRegion {
  /** First device-visible (guest-physical) address of the region. */
  readonly guestAddr: number;
  /** Size in bytes. */
  readonly size: number;
  /** The bytes, as a Node Buffer over exactly this region (index 0 = guestAddr). */
  readonly bytes: Buffer;
  /** Little-endian accessors over the same bytes. */
  readonly view: DataView;
  /** A name for error messages ("sab", "qemu region 1", "hugepage 3"). */
  readonly name: string;
}

export class GuestMemoryError extends Error {
  readonly code = 'ERR_GUEST_MEMORY_RANGE';
  constructor(
    message: string,
    readonly addr: number,
    readonly length: number,
  ) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

const hex = (n: number): string => '0x' + n.toString(16);

/** Creates a region over (part of) an ArrayBuffer or SharedArrayBuffer. */
export function makeRegion(
  name: string,
  guestAddr: number,
  buffer: ArrayBufferLike,
  byteOffset = 0,
  size = buffer.byteLength - byteOffset,
): MemoryRegion {
  if (!Number.isSafeInteger(guestAddr) || guestAddr < 0) throw new RangeError(`region ${name}: bad guest address ${guestAddr}`);
  if (byteOffset < 0 || size < 0 || byteOffset + size > buffer.byteLength) {
    throw new RangeError(`region ${name}: offset ${byteOffset} + size ${size} exceeds buffer of ${buffer.byteLength} bytes`);
  }
  return {
    name,
    guestAddr,
    size,
    bytes: Buffer.from(buffer as ArrayBuffer, byteOffset, size),
    view: new DataView(buffer as ArrayBuffer, byteOffset, size),
  };
}

export class GuestMemory {
  /** Regions sorted by guestAddr; never overlapping. */
  readonly regions: readonly MemoryRegion[];
  private last: MemoryRegion;

  constructor(regions: MemoryRegion[]) {
    if (regions.length === 0) throw new RangeError('guest memory needs at least one region');
    const sorted = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1]!;
      const cur = sorted[i]!;
      if (prev.guestAddr + prev.size > cur.guestAddr) {
        throw new RangeError(`regions ${prev.name} and ${cur.name} overlap at ${hex(cur.guestAddr)}`);
      }
    }
    this.regions = sorted;
    this.last = sorted[0]!;
  }

  /** Guest memory backed by one SharedArrayBuffer starting at guest address `base`. */
  static fromSharedArrayBuffer(sab: SharedArrayBuffer, base = 0, name = 'sab'): GuestMemory {
    return new GuestMemory([makeRegion(name, base, sab)]);
  }

  /**
   * The region holding all of [addr, addr + length). Throws GuestMemoryError when the
   * range is not entirely inside one region (a range crossing a hole or a region
   * boundary is refused: regions are not known to be contiguous in the backing).
   * Allocation-free on success; the offset inside the region is addr - region.guestAddr.
   */
  locate(addr: number, length: number): MemoryRegion {
    const r = this.last;
    if (addr >= r.guestAddr && length >= 0 && addr - r.guestAddr + length <= r.size && Number.isInteger(addr) && Number.isInteger(length)) return r;
    return this.locateSlow(addr, length);
  }

  private locateSlow(addr: number, length: number): MemoryRegion {
    if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new GuestMemoryError(`invalid guest range: address ${String(addr)}, length ${String(length)}`, addr, length);
    }
    const regions = this.regions;
    let lo = 0;
    let hi = regions.length - 1;
    let found: MemoryRegion | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = regions[mid]!;
      if (addr < r.guestAddr) hi = mid - 1;
      else if (addr >= r.guestAddr + r.size) lo = mid + 1;
      else {
        found = r;
        break;
      }
    }
    if (found === undefined) {
      throw new GuestMemoryError(
        `guest address ${hex(addr)} (length ${length}) is outside guest memory (${this.describe()})`,
        addr,
        length,
      );
    }
    if (addr - found.guestAddr + length > found.size) {
      throw new GuestMemoryError(
        `guest range ${hex(addr)}..${hex(addr + length)} (length ${length}) runs past the end of region ` +
          `${found.name} [${hex(found.guestAddr)}..${hex(found.guestAddr + found.size)})`,
        addr,
        length,
      );
    }
    this.last = found;
    return found;
  }

  /** True when [addr, addr + length) lies inside one region. */
  contains(addr: number, length: number): boolean {
    try {
      this.locate(addr, length);
      return true;
    } catch {
      return false;
    }
  }

  /** A Uint8Array over [addr, addr + length) (allocates a view: not for per-packet paths). */
  view(addr: number, length: number): Uint8Array {
    const r = this.locate(addr, length);
    const off = addr - r.guestAddr;
    return r.bytes.subarray(off, off + length);
  }

  private describe(): string {
    return this.regions.map((r) => `${r.name} [${hex(r.guestAddr)}..${hex(r.guestAddr + r.size)})`).join(', ');
  }
}
