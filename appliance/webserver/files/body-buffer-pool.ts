// Equal-sized buffers for file bytes on their way to a socket, reused from response
// to response. With the vsock driver's allocBuffer as the allocator, the buffers are
// DMA memory: a file read lands in them and the socket sends them without a copy. A
// buffer comes back (give) only in the socket's write callback, when nothing reads
// it any more.

/** Where body buffers come from: for instance { alloc: (n) => driver.allocBuffer(n), free: (b) => driver.freeBuffer(b) }. */
export interface BufferAllocator {
  alloc(size: number): Uint8Array;
  /** Returns a buffer the pool no longer keeps (optional: plain memory is collected). */
  free?(buf: Uint8Array): void;
}

export const heapAllocator: BufferAllocator = { alloc: (size) => Buffer.allocUnsafeSlow(size) };

export class BodyBufferPool {
  private readonly idle: Buffer[] = [];
  /** Buffers in existence (idle or in use). */
  allocated = 0;
  /** Times the allocator failed and a heap buffer stood in. */
  heapFallbacks = 0;
  private readonly fallbackBuffers = new WeakSet<Buffer>();

  constructor(
    private readonly allocator: BufferAllocator,
    readonly bufferSize: number,
    /** Most idle buffers kept; more are dropped to the garbage collector. */
    private readonly maxIdle: number,
  ) {}

  take(): Buffer {
    const b = this.idle.pop();
    if (b !== undefined) return b;
    this.allocated++;
    let u8: Uint8Array;
    try {
      u8 = this.allocator.alloc(this.bufferSize);
    } catch {
      // DMA memory ran out (many connections at once): plain memory still works, the
      // socket copies it once. Such buffers are dropped, not kept, when they come back.
      this.heapFallbacks++;
      const h = Buffer.allocUnsafeSlow(this.bufferSize);
      this.fallbackBuffers.add(h);
      return h;
    }
    if (u8.byteLength < this.bufferSize) throw new RangeError(`buffer allocator gave ${u8.byteLength} bytes, wanted ${this.bufferSize}`);
    // A Buffer view of the same memory (no copy), for latin1Write and subarray.
    return Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, this.bufferSize);
  }

  give(b: Buffer): void {
    if (this.fallbackBuffers.has(b)) {
      this.fallbackBuffers.delete(b);
      this.allocated--;
      return;
    }
    if (this.idle.length < this.maxIdle) this.idle.push(b);
    else {
      this.allocated--;
      this.allocator.free?.(b);
    }
  }

  /** Frees every idle buffer (server shutdown). */
  drain(): void {
    for (const b of this.idle.splice(0)) {
      this.allocated--;
      this.allocator.free?.(b);
    }
  }

  get idleCount(): number {
    return this.idle.length;
  }
}
