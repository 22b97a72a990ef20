// Host-bound chunks of guest payload carved out of shared slabs. Each guest packet's
// bytes leave guest memory once, into a chunk the host reader owns (it may keep it).
// A Buffer.allocUnsafe per packet cost more than the copy itself: a level-1 CPU profile
// of the device worker had 49% of its time in that copy and 7% in the allocation, and
// carving 64 KiB chunks out of slabs took zero copy from about 270 to 1,400-2,000 MB/s
// in the same run (`npm run bench -- level1`). Slabs of 128 KiB, 256 KiB and 1 MiB did
// alike in interleaved runs; 256 KiB it is, for what a slab can pin (below).
//
// A chunk is a view of its slab, so a slab lives as long as any chunk of it: a reader
// that keeps one 64 KiB chunk keeps 256 KiB (4x at most for full-size packets; one slab
// per VM while nothing is held). Node's own Buffer pool makes the same trade for chunks
// under 4 KiB. Chunks never share bytes, and a slab is never reused, only dropped by the
// garbage collector.
export const SLAB_BYTES = 256 * 1024;

export class ChunkSlab {
  private slab: Buffer | null = null;
  private used = 0;
  /** Slabs allocated so far (each SLAB_BYTES, or one chunk's size when larger). */
  slabs = 0;

  constructor(private readonly slabBytes = SLAB_BYTES) {}

  /** A chunk of `len` bytes (contents unspecified: the caller fills all of it). */
  take(len: number): Buffer {
    let slab = this.slab;
    if (slab === null || slab.length - this.used < len) {
      slab = Buffer.allocUnsafeSlow(Math.max(this.slabBytes, len));
      this.slab = slab;
      this.used = 0;
      this.slabs++;
    }
    const chunk = slab.subarray(this.used, this.used + len);
    this.used += (len + 7) & ~7; // 8-byte aligned starts
    return chunk;
  }
}
