// DMA memory, seen from the driver: an arena of bytes the device can address, and
// fixed-size buffer pools carved out of it.
//
// The arena is one ArrayBuffer (SharedArrayBuffer in the in-process harness, mmap'd
// hugepages in the guest). Its device-visible addresses are piecewise contiguous:
// `pageSize` bytes at a time, page i starting at pageAddrs[i] (one page covering the
// whole arena when the backing is contiguous). Allocations of at most one page never
// cross a page boundary, so one descriptor always covers one allocation.

export class DmaError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'DmaError';
    this.code = code;
  }
}

export interface DmaArenaOptions {
  /** Bytes per physically contiguous page (default: the whole arena). */
  pageSize?: number;
  /** Device-visible address of each page (default: one page at `base`). */
  pageAddrs?: readonly number[];
  /** Device-visible address of byte 0 when the arena is contiguous. */
  base?: number;
  name?: string;
}

export class DmaArena {
  readonly buffer: ArrayBufferLike;
  readonly bytes: Uint8Array;
  readonly size: number;
  readonly pageSize: number;
  readonly name: string;
  private readonly pageAddrs: Float64Array;
  /** Free ranges [offset, size], sorted by offset, coalesced. */
  private readonly freeRanges: Array<[number, number]>;
  private readonly allocated = new Map<number, number>(); // offset -> size

  constructor(buffer: ArrayBufferLike, options: DmaArenaOptions = {}) {
    this.buffer = buffer;
    this.bytes = new Uint8Array(buffer as ArrayBuffer);
    this.size = buffer.byteLength;
    this.name = options.name ?? 'dma';
    const pageSize = options.pageSize ?? this.size;
    const addrs = options.pageAddrs ?? [options.base ?? 0];
    if (pageSize <= 0 || Math.ceil(this.size / pageSize) !== addrs.length) {
      throw new RangeError(`dma arena ${this.name}: ${addrs.length} page addresses for ${this.size} bytes in pages of ${pageSize}`);
    }
    this.pageSize = pageSize;
    this.pageAddrs = Float64Array.from(addrs);
    this.freeRanges = [[0, this.size]];
  }

  /** Device-visible address of the arena byte at `offset`. */
  addrOfOffset(offset: number): number {
    if (this.pageAddrs.length === 1) return this.pageAddrs[0]! + offset;
    const page = Math.floor(offset / this.pageSize);
    return this.pageAddrs[page]! + (offset - page * this.pageSize);
  }

  /** The arena offset of device address `addr`, or -1 when no page of the arena holds it. */
  offsetOfAddr(addr: number): number {
    const ps = this.pageSize;
    for (let i = 0; i < this.pageAddrs.length; i++) {
      const base = this.pageAddrs[i]!;
      const pageBytes = Math.min(ps, this.size - i * ps);
      if (addr >= base && addr < base + pageBytes) return i * ps + (addr - base);
    }
    return -1;
  }

  /**
   * The device-visible address of u8[0] when u8 lies entirely inside this arena,
   * -1 otherwise. This is the zero-copy test: such a buffer can go straight into a
   * descriptor.
   */
  addressOf(u8: Uint8Array): number {
    if (u8.buffer !== this.buffer) return -1;
    return this.addrOfOffset(u8.byteOffset);
  }

  /** How many bytes of u8, from u8[0], are contiguous in device address space. */
  contiguousLength(u8: Uint8Array): number {
    const off = u8.byteOffset;
    const toPageEnd = this.pageSize - (off % this.pageSize);
    return Math.min(u8.byteLength, toPageEnd);
  }

  /**
   * Allocates `size` bytes aligned to `align` (a power of two). An allocation of at
   * most one page never crosses a page boundary. Not for per-packet use: rings,
   * pools and long-lived user buffers.
   */
  allocate(size: number, align = 64): Uint8Array {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`dma allocate: bad size ${size}`);
    if (align <= 0 || (align & (align - 1)) !== 0) throw new RangeError(`dma allocate: alignment ${align} is not a power of two`);
    const mustFitPage = size <= this.pageSize;
    for (let i = 0; i < this.freeRanges.length; i++) {
      const [start, len] = this.freeRanges[i]!;
      let off = alignUp(start, align);
      if (mustFitPage) {
        const pageEnd = (Math.floor(off / this.pageSize) + 1) * this.pageSize;
        if (off + size > pageEnd) off = alignUp(pageEnd, align);
      }
      if (off + size > start + len) continue;
      // Split the free range into [start, off) and [off+size, start+len).
      const tail: Array<[number, number]> = [];
      if (off > start) tail.push([start, off - start]);
      if (off + size < start + len) tail.push([off + size, start + len - off - size]);
      this.freeRanges.splice(i, 1, ...tail);
      this.allocated.set(off, size);
      return new Uint8Array(this.buffer as ArrayBuffer, off, size);
    }
    throw new DmaError('ERR_DMA_EXHAUSTED', `dma arena ${this.name}: no room for ${size} bytes (aligned ${align}); arena is ${this.size} bytes`);
  }

  /** Returns an allocation made by allocate(). */
  free(u8: Uint8Array): void {
    const off = u8.byteOffset;
    const size = this.allocated.get(off);
    if (u8.buffer !== this.buffer || size === undefined) {
      throw new DmaError('ERR_DMA_NOT_ALLOCATED', `dma arena ${this.name}: free of a buffer at offset ${off} that was not allocated here`);
    }
    this.allocated.delete(off);
    let i = 0;
    while (i < this.freeRanges.length && this.freeRanges[i]![0] < off) i++;
    this.freeRanges.splice(i, 0, [off, size]);
    // Coalesce with neighbours.
    if (i + 1 < this.freeRanges.length) {
      const cur = this.freeRanges[i]!;
      const next = this.freeRanges[i + 1]!;
      if (cur[0] + cur[1] === next[0]) {
        cur[1] += next[1];
        this.freeRanges.splice(i + 1, 1);
      }
    }
    if (i > 0) {
      const prev = this.freeRanges[i - 1]!;
      const cur = this.freeRanges[i]!;
      if (prev[0] + prev[1] === cur[0]) {
        prev[1] += cur[1];
        this.freeRanges.splice(i, 1);
      }
    }
  }

  /** Bytes currently free (for tests and diagnostics). */
  get freeBytes(): number {
    let n = 0;
    for (const [, len] of this.freeRanges) n += len;
    return n;
  }
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * A pool of equal-sized DMA buffers. alloc/free are O(1) and allocation-free: the free
 * list is an Int32Array stack, views and addresses are made once.
 */
export class BufferPool {
  readonly slotSize: number;
  readonly count: number;
  /** views[i] covers slot i (slotSize bytes). */
  readonly views: readonly Uint8Array[];
  /** addrs[i] is the device-visible address of slot i. */
  readonly addrs: Float64Array;
  private readonly freeStack: Int32Array;
  private freeTop: number;
  private readonly inUse: Uint8Array;
  private readonly chunks: Uint8Array[] = [];

  constructor(
    readonly arena: DmaArena,
    slotSize: number,
    count: number,
  ) {
    if (slotSize <= 0 || count <= 0) throw new RangeError(`buffer pool: bad slot size ${slotSize} or count ${count}`);
    // One descriptor points at one slot: a slot must be contiguous in device memory.
    if (slotSize > arena.pageSize) throw new RangeError(`buffer pool: slot size ${slotSize} exceeds the arena's contiguous page size ${arena.pageSize}`);
    this.slotSize = slotSize;
    this.count = count;
    const views: Uint8Array[] = [];
    this.addrs = new Float64Array(count);
    // Carve slots from chunks of at most one page so no slot crosses a page boundary.
    const perChunk = Math.max(1, Math.floor(Math.min(arena.pageSize, slotSize * count) / slotSize));
    let made = 0;
    while (made < count) {
      const n = Math.min(perChunk, count - made);
      const chunk = arena.allocate(n * slotSize, 64);
      this.chunks.push(chunk);
      for (let i = 0; i < n; i++) {
        const v = chunk.subarray(i * slotSize, (i + 1) * slotSize);
        views.push(v);
        this.addrs[made + i] = arena.addressOf(v);
      }
      made += n;
    }
    this.views = views;
    this.freeStack = new Int32Array(count);
    for (let i = 0; i < count; i++) this.freeStack[i] = count - 1 - i;
    this.freeTop = count;
    this.inUse = new Uint8Array(count);
  }

  /** A free slot index, or -1 when the pool is empty. */
  alloc(): number {
    if (this.freeTop === 0) return -1;
    const i = this.freeStack[--this.freeTop]!;
    this.inUse[i] = 1;
    return i;
  }

  free(slot: number): void {
    if (slot < 0 || slot >= this.count || this.inUse[slot] !== 1) {
      throw new DmaError('ERR_DMA_DOUBLE_FREE', `buffer pool: slot ${slot} is not allocated`);
    }
    this.inUse[slot] = 0;
    this.freeStack[this.freeTop++] = slot;
  }

  get available(): number {
    return this.freeTop;
  }

  /** Returns the pool's memory to the arena (every slot must be free). */
  destroy(): void {
    for (const c of this.chunks) this.arena.free(c);
    this.chunks.length = 0;
  }
}
