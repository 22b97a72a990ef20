// A BufferPool of DMA chunks with a FIFO of waiters: a request that needs a chunk
// when none is free waits for one instead of failing. Waiters are served in order
// and a waiter asking for n chunks gets them all at once (no deadlock between two
// callers each holding part of what they need).
import { BufferPool, type DmaArena } from '../../../kernel/memory/dma.js';

interface Waiter {
  n: number;
  resolve: (slots: number[]) => void;
}

export class ChunkPool {
  readonly pool: BufferPool;
  private readonly waiters: Waiter[] = [];
  private waitHead = 0;

  constructor(arena: DmaArena, chunkSize: number, count: number) {
    this.pool = new BufferPool(arena, chunkSize, count);
  }

  get chunkSize(): number {
    return this.pool.slotSize;
  }

  get count(): number {
    return this.pool.count;
  }

  view(slot: number): Uint8Array {
    return this.pool.views[slot]!;
  }

  /** One chunk now, or -1 (also when others are already waiting: no overtaking). */
  tryAcquire(): number {
    if (this.waitHead < this.waiters.length) return -1;
    return this.pool.alloc();
  }

  /** `n` chunks (n <= count), as soon as they are all free. */
  acquire(n: number): Promise<number[]> {
    if (n > this.pool.count) throw new RangeError(`chunk pool: ${n} chunks asked, the pool has ${this.pool.count}`);
    if (this.waitHead === this.waiters.length && this.pool.available >= n) {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push(this.pool.alloc());
      return Promise.resolve(out);
    }
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  release(slot: number): void {
    this.pool.free(slot);
    while (this.waitHead < this.waiters.length) {
      const w = this.waiters[this.waitHead]!;
      if (this.pool.available < w.n) break;
      this.waiters[this.waitHead++] = undefined as unknown as Waiter;
      const out: number[] = [];
      for (let i = 0; i < w.n; i++) out.push(this.pool.alloc());
      w.resolve(out);
    }
    if (this.waitHead === this.waiters.length) {
      this.waiters.length = 0;
      this.waitHead = 0;
    }
  }

  destroy(): void {
    this.pool.destroy();
  }
}
