// Recycled blocks for host bytes on their way to the guest. A host socket read into a
// fresh Buffer each time (Node's default) gives V8 a new external backing store per read:
// at hundreds of MB/s that external memory starts a full garbage collection every few
// dozen ms. In the scale bench (64 VMs, one flooding) the daemon ran 60 mark-compacts in
// 8 s, with pauses up to 44 ms, and the quiet VM's ping p99 went from 0.15 to 3-5 ms.
// Host sockets now read into one scratch buffer (host/user-buffer-read.ts) and the
// connection copies each read of 4 KiB or more into these blocks, which go back to the
// pool when their bytes are in the guest's rx buffers: in a steady flood nothing is
// allocated. That is one memcpy more than before (scratch to block), far cheaper than
// the collections it saves; copying straight into the guest's rx buffers when it can
// take the bytes at once would save it again.
//
// Blocks are carved from slabs (a slab is one ArrayBuffer); a queued chunk is a block or
// the start of one. One pool serves every device of a thread (threadHostBlocks). Free
// blocks are kept while any block is in use: a flood's queues fill and drain all the
// time, and a pool per VM that trimmed whenever its queues were empty allocated 5,400
// slabs in 6 s of the scale bench. When the last block comes back (nothing queued for any
// guest) the free list is trimmed to `keepIdleBytes`, so an idle daemon keeps little.
export const HOST_BLOCK_BYTES = 16 * 1024;
const SLAB_BLOCKS = 16;

export class HostBlockPool {
  private readonly slabs = new WeakSet<ArrayBufferLike>();
  private readonly free: Buffer[] = [];
  private readonly keepIdle: number;
  /** Slabs allocated so far. */
  slabsAllocated = 0;
  /** Blocks taken and not given back. */
  blocksInUse = 0;

  constructor(keepIdleBytes = 1024 * 1024) {
    this.keepIdle = Math.floor(keepIdleBytes / HOST_BLOCK_BYTES);
  }

  /** A block of HOST_BLOCK_BYTES (contents unspecified). */
  take(): Buffer {
    this.blocksInUse++;
    const b = this.free.pop();
    if (b !== undefined) return b;
    const slab = Buffer.allocUnsafeSlow(HOST_BLOCK_BYTES * SLAB_BLOCKS);
    this.slabs.add(slab.buffer);
    this.slabsAllocated++;
    for (let i = 1; i < SLAB_BLOCKS; i++) this.free.push(slab.subarray(i * HOST_BLOCK_BYTES, (i + 1) * HOST_BLOCK_BYTES));
    return slab.subarray(0, HOST_BLOCK_BYTES);
  }

  /** True when `chunk` is (the start of) a block of this pool. */
  owns(chunk: Uint8Array): boolean {
    return this.slabs.has(chunk.buffer);
  }

  /** Gives back the block `chunk` starts; the caller holds no view of it any more. */
  give(chunk: Uint8Array): void {
    this.free.push(chunk.byteLength === HOST_BLOCK_BYTES ? (chunk as Buffer) : Buffer.from(chunk.buffer, chunk.byteOffset, HOST_BLOCK_BYTES));
    if (--this.blocksInUse === 0 && this.free.length > this.keepIdle) this.free.length = this.keepIdle;
  }

  /** Free blocks kept for reuse. */
  get freeBlocks(): number {
    return this.free.length;
  }
}

let threadPool: HostBlockPool | null = null;

/** The pool of this thread (module state is per worker thread), made on first use. */
export function threadHostBlocks(): HostBlockPool {
  return (threadPool ??= new HostBlockPool());
}
