// A position inside the chunks of one pending write (Node's _write gives one chunk,
// _writev several). The transmit path consumes it packet by packet; the arrays are
// reused from write to write, so a write allocates nothing here.
import type { DmaArena } from '../../../kernel/memory/dma.js';

export class WriteCursor {
  /** The chunks of the write; only [0, count) are meaningful. */
  readonly chunks: Uint8Array[] = [];
  /** Device-visible address of each chunk, -1 when it is not in DMA memory. */
  private addrs = new Float64Array(16);
  count = 0;
  index = 0;
  offset = 0;
  /** Bytes not yet consumed. */
  remaining = 0;
  /** The arena the DMA chunks belong to (addresses are per page, not per chunk). */
  private arena: DmaArena | null = null;

  /** Starts a write of `chunks` (the array is copied, not kept). */
  reset(chunks: readonly Uint8Array[], dma: DmaArena): void {
    const n = chunks.length;
    this.arena = dma;
    if (this.addrs.length < n) this.addrs = new Float64Array(Math.max(n, this.addrs.length * 2));
    this.chunks.length = n;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const c = chunks[i]!;
      this.chunks[i] = c;
      this.addrs[i] = dma.addressOf(c);
      total += c.byteLength;
    }
    this.count = n;
    this.index = 0;
    this.offset = 0;
    this.remaining = total;
    this.skipEmpty();
  }

  /** Same as reset([chunk]) without an array. */
  resetOne(chunk: Uint8Array, dma: DmaArena): void {
    this.arena = dma;
    this.chunks.length = 1;
    this.chunks[0] = chunk;
    this.addrs[0] = dma.addressOf(chunk);
    this.count = 1;
    this.index = 0;
    this.offset = 0;
    this.remaining = chunk.byteLength;
    this.skipEmpty();
  }

  /** Drops references to user buffers once the write is done. */
  clear(): void {
    for (let i = 0; i < this.count; i++) this.chunks[i] = EMPTY;
    this.count = this.index = this.offset = this.remaining = 0;
  }

  /** True when the current chunk lies in DMA memory. */
  currentIsDma(): boolean {
    return this.addrs[this.index]! >= 0;
  }

  /**
   * Bytes from here up to the next DMA chunk of at least `zeroCopyMin` bytes (or the
   * end), counting at most `limit`: what is copied before a chunk goes by descriptor.
   */
  plainRun(limit: number, zeroCopyMin = 0): number {
    let n = this.chunks[this.index]!.byteLength - this.offset;
    for (let i = this.index + 1; n < limit && i < this.count; i++) {
      const len = this.chunks[i]!.byteLength;
      if (this.addrs[i]! >= 0 && len >= zeroCopyMin) break;
      n += len;
    }
    return n < limit ? n : limit;
  }

  /** Device address of the current position (current chunk must be DMA). */
  currentAddr(): number {
    // Translate through the arena: a chunk may span pages that are not contiguous in
    // device address space (hugepages), so chunk address + offset is wrong past a page.
    return this.arena!.addrOfOffset(this.chunks[this.index]!.byteOffset + this.offset);
  }

  /** Bytes left in the current chunk. */
  currentLeft(): number {
    return this.chunks[this.index]!.byteLength - this.offset;
  }

  current(): Uint8Array {
    return this.chunks[this.index]!;
  }

  /** Moves `n` bytes forward (n <= currentLeft()). */
  advance(n: number): void {
    this.offset += n;
    this.remaining -= n;
    if (this.offset === this.chunks[this.index]!.byteLength) {
      this.index++;
      this.offset = 0;
      this.skipEmpty();
    }
  }

  private skipEmpty(): void {
    while (this.index < this.count && this.chunks[this.index]!.byteLength === 0) this.index++;
  }
}

const EMPTY = new Uint8Array(0);
