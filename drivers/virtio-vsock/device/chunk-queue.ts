// A FIFO of byte chunks with a running byte count, consumed from the front in pieces.
// Chunks are kept as given (no coalescing copy); the array is compacted lazily so
// shift() costs O(1) amortized. `onDrop`, when given, sees each chunk once it is
// consumed or cleared (a pool takes its blocks back; shift() hands a chunk out instead).

export class ChunkQueue {
  constructor(private readonly onDrop: ((chunk: Uint8Array) => void) | null = null) {}

  private chunks: Uint8Array[] = [];
  private head = 0;
  /** Offset already consumed inside chunks[head]. */
  private headOffset = 0;
  /** Bytes queued and not yet consumed. */
  length = 0;

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.byteLength;
  }

  get isEmpty(): boolean {
    return this.length === 0;
  }

  /** The front chunk and the offset of its first unconsumed byte (queue not empty). */
  front(): Uint8Array {
    return this.chunks[this.head]!;
  }

  get frontOffset(): number {
    return this.headOffset;
  }

  /** Consumes n bytes from the front (n <= length). */
  consume(n: number): void {
    this.length -= n;
    while (n > 0) {
      const c = this.chunks[this.head]!;
      const left = c.byteLength - this.headOffset;
      if (n < left) {
        this.headOffset += n;
        return;
      }
      n -= left;
      this.onDrop?.(c);
      this.dropFront();
    }
  }

  /** Removes and returns the whole front chunk, or its unconsumed tail (allocates a view then). */
  shift(): Uint8Array {
    const c = this.chunks[this.head]!;
    const out = this.headOffset === 0 ? c : c.subarray(this.headOffset);
    this.length -= out.byteLength;
    this.dropFront();
    return out;
  }

  clear(): void {
    const drop = this.onDrop;
    if (drop !== null) for (let i = this.head; i < this.chunks.length; i++) drop(this.chunks[i]!);
    this.chunks = [];
    this.head = 0;
    this.headOffset = 0;
    this.length = 0;
  }

  private dropFront(): void {
    this.chunks[this.head] = undefined as unknown as Uint8Array;
    this.head++;
    this.headOffset = 0;
    if (this.head === this.chunks.length) {
      this.chunks.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}
