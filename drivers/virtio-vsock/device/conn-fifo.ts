// A FIFO of connections waiting to send to the guest (array with a head index,
// compacted lazily: no allocation per push/shift in the steady state).
import type { VsockConnection } from './connection.js';

export class ConnectionFifo {
  private items: (VsockConnection | undefined)[] = [];
  private head = 0;

  get isEmpty(): boolean {
    return this.head === this.items.length;
  }

  push(c: VsockConnection): void {
    this.items.push(c);
  }

  peek(): VsockConnection | undefined {
    return this.items[this.head];
  }

  shift(): VsockConnection | undefined {
    if (this.head === this.items.length) return undefined;
    const c = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return c;
  }

  some(pred: (c: VsockConnection) => boolean): boolean {
    for (let i = this.head; i < this.items.length; i++) if (pred(this.items[i]!)) return true;
    return false;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
