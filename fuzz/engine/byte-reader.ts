// Reads structured values from fuzz input bytes, libFuzzer's FuzzedDataProvider style:
// every read succeeds, past the end it yields zeros, so any byte string is a valid input.

export class ByteReader {
  private pos = 0;

  constructor(readonly bytes: Uint8Array) {}

  get remaining(): number {
    return Math.max(0, this.bytes.length - this.pos);
  }

  get exhausted(): boolean {
    return this.pos >= this.bytes.length;
  }

  u8(): number {
    return this.pos < this.bytes.length ? this.bytes[this.pos++]! : (this.pos++, 0);
  }

  u16(): number {
    return this.u8() | (this.u8() << 8);
  }

  u32(): number {
    return (this.u16() | (this.u16() << 16)) >>> 0;
  }

  bool(): boolean {
    return (this.u8() & 1) === 1;
  }

  /** An integer in [0, n) (n <= 65536). */
  below(n: number): number {
    return n <= 256 ? this.u8() % n : this.u16() % n;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  /** The next `n` bytes (fewer at the end). */
  bytesOf(n: number): Uint8Array {
    const start = Math.min(this.pos, this.bytes.length);
    const end = Math.min(start + n, this.bytes.length);
    this.pos = Math.max(this.pos, start) + n;
    return this.bytes.subarray(start, end);
  }

  /** A length-prefixed byte string (u8 or u16 length). */
  chunk(wide = false): Uint8Array {
    return this.bytesOf(wide ? this.u16() : this.u8());
  }

  rest(): Uint8Array {
    const out = this.bytes.subarray(Math.min(this.pos, this.bytes.length));
    this.pos = this.bytes.length;
    return out;
  }
}
