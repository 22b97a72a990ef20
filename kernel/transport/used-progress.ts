// How a transport tells a busy device from an idle one without touching the device: the
// sum of the used->idx (virtio 1.2, 2.7.8: the second le16 of the used ring) of every
// enabled queue, read from DMA memory. It changes whenever the device returns buffers,
// notified or not; a polling InterruptSource reads it (kernel/pci/interrupt-source.ts).
// A packed ring (2.8) has no such index: its queue's own progress function stands in.
import type { DmaArena } from '../memory/dma.js';

export class UsedProgress {
  /** The DMA arena as 16-bit words. */
  private readonly words: Uint16Array;
  /** Per queue: the word index of its used->idx, -1 when not watched. */
  private readonly usedIdxWords: Int32Array;
  /** One past the highest queue index watched: sum() looks no further. */
  private end = 0;
  /** Queues watched through a function (packed rings), by index. */
  private readonly fns: Array<(() => number) | undefined>;

  constructor(
    private readonly dma: DmaArena,
    numQueues: number,
  ) {
    const b = dma.bytes;
    this.words = b.byteOffset % 2 === 0 ? new Uint16Array(b.buffer, b.byteOffset, b.byteLength >>> 1) : new Uint16Array(0);
    this.usedIdxWords = new Int32Array(numQueues).fill(-1);
    this.fns = new Array<(() => number) | undefined>(numQueues).fill(undefined);
  }

  /** Watches queue `index`, whose used ring starts at device address `usedAddr`; rings outside the arena (none of ours) are not watched. */
  watch(index: number, usedAddr: number): void {
    if (index < 0 || index >= this.usedIdxWords.length) return;
    this.fns[index] = undefined;
    const off = this.dma.offsetOfAddr(usedAddr + 2);
    this.usedIdxWords[index] = off >= 0 && off % 2 === 0 && off >>> 1 < this.words.length ? off >>> 1 : -1;
    if (index >= this.end) this.end = index + 1;
  }

  /** Watches queue `index` through `progress` instead of a used->idx in memory. */
  watchFn(index: number, progress: () => number): void {
    if (index < 0 || index >= this.usedIdxWords.length) return;
    this.usedIdxWords[index] = -1;
    this.fns[index] = progress;
    if (index >= this.end) this.end = index + 1;
  }

  /** Stops watching every queue. */
  clear(): void {
    this.usedIdxWords.fill(-1);
    this.fns.fill(undefined);
    this.end = 0;
  }

  sum(): number {
    let s = 0;
    const w = this.usedIdxWords;
    for (let i = 0; i < this.end; i++) {
      if (w[i]! >= 0) s += Atomics.load(this.words, w[i]!);
      else s += this.fns[i]?.() ?? 0;
    }
    return s;
  }
}
