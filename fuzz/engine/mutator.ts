// Byte-level mutations in the manner of libFuzzer's MutationDispatcher: bit flips,
// interesting values, arithmetic, inserts, erases, copies, dictionary tokens and
// crossover with another corpus input, stacked 1 to 16 at a time.

/** xorshift32: fast, seedable, good enough to pick mutations. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.next() % n;
  }
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 2, 3, 4, 8, 16, 44];
const INTERESTING_16 = [0, 0x7fff, 0x8000, 0xffff, 0x100, 0x200, 0x1000, 0x400, 0x8080, 0x0080, 44, 64, 128, 256, 512];
const INTERESTING_32 = [0, 0xffffffff, 0x7fffffff, 0x80000000, 0x10000, 0x1000, 0x100000, 0x40000000, 44, 4096, 65536, 0x80008000];

type Bytes = Buffer<ArrayBufferLike>;

export interface MutatorOptions {
  maxBytes: number;
  dictionary: readonly Uint8Array[];
}

export class Mutator {
  constructor(
    readonly rng: Rng,
    readonly opts: MutatorOptions,
  ) {}

  /** A mutated copy of `input`; `other` (another corpus input) feeds crossover. */
  mutate(input: Uint8Array, other: Uint8Array | null): Uint8Array {
    let data: Bytes = Buffer.from(input);
    const stack = 1 << this.rng.below(5);
    for (let i = 0; i < stack; i++) data = this.once(data, other);
    if (data.length > this.opts.maxBytes) data = data.subarray(0, this.opts.maxBytes);
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  }

  private once(d: Bytes, other: Uint8Array | null): Bytes {
    const r = this.rng;
    const op = r.below(14);
    if (d.length === 0 && op < 11) return this.insertRandom(d, 1 + r.below(8));
    switch (op) {
      case 0: {
        const i = r.below(d.length);
        d[i] = d[i]! ^ (1 << r.below(8));
        return d;
      }
      case 1:
        d[r.below(d.length)] = r.below(256);
        return d;
      case 2:
        d[r.below(d.length)] = INTERESTING_8[r.below(INTERESTING_8.length)]!;
        return d;
      case 3:
        return this.setInteresting(d, 2, INTERESTING_16);
      case 4:
        return this.setInteresting(d, 4, INTERESTING_32);
      case 5: {
        // Add or subtract a small number to a byte, a le16 or a le32.
        const delta = 1 + r.below(35);
        const sign = r.below(2) === 0 ? 1 : -1;
        const width = [1, 2, 4][r.below(3)]!;
        if (d.length < width) return d;
        const i = r.below(d.length - width + 1);
        if (width === 1) d[i] = (d[i]! + sign * delta) & 0xff;
        else if (width === 2) d.writeUInt16LE((d.readUInt16LE(i) + sign * delta) & 0xffff, i);
        else d.writeUInt32LE((d.readUInt32LE(i) + sign * delta) >>> 0, i);
        return d;
      }
      case 6:
        return this.insertRandom(d, 1 + r.below(r.below(2) === 0 ? 4 : 64));
      case 7: {
        const i = r.below(d.length);
        const n = 1 + r.below(Math.min(d.length - i, r.below(2) === 0 ? 4 : 128));
        return Buffer.concat([d.subarray(0, i), d.subarray(i + n)]);
      }
      case 8: {
        // Copy a piece of the input over another place, or insert it there.
        const from = r.below(d.length);
        const n = 1 + r.below(Math.min(d.length - from, 64));
        const piece = Buffer.from(d.subarray(from, from + n));
        const to = r.below(d.length);
        if (r.below(2) === 0) return Buffer.concat([d.subarray(0, to), piece, d.subarray(to)]);
        piece.copy(d, to, 0, Math.min(n, d.length - to));
        return d;
      }
      case 9:
      case 10: {
        const dict = this.opts.dictionary;
        if (dict.length === 0) return d;
        const tok = dict[r.below(dict.length)]!;
        const at = r.below(d.length + 1);
        if (op === 9) return Buffer.concat([d.subarray(0, at), tok, d.subarray(at)]);
        const out = Buffer.from(d);
        Buffer.from(tok).copy(out, at, 0, Math.min(tok.length, out.length - at));
        return out;
      }
      case 11: {
        if (other === null || other.length === 0) return d;
        // Crossover: a prefix of one and a suffix of the other, or a piece of the other inserted.
        const a = r.below(d.length + 1);
        const b = r.below(other.length);
        if (r.below(2) === 0) return Buffer.concat([d.subarray(0, a), other.subarray(b)]);
        const n = 1 + r.below(Math.min(other.length - b, 128));
        return Buffer.concat([d.subarray(0, a), other.subarray(b, b + n), d.subarray(a)]);
      }
      case 12:
        return d.subarray(0, r.below(d.length + 1));
      default: {
        // Shuffle a few bytes.
        if (d.length < 2) return d;
        const i = r.below(d.length - 1);
        const n = 2 + r.below(Math.min(8, d.length - i) - 1);
        for (let k = n - 1; k > 0; k--) {
          const j = r.below(k + 1);
          const t = d[i + k]!;
          d[i + k] = d[i + j]!;
          d[i + j] = t;
        }
        return d;
      }
    }
  }

  /** Writes one of `values` as a `width`-byte integer, little- or big-endian, somewhere in `d`. */
  private setInteresting(d: Bytes, width: 2 | 4, values: readonly number[]): Bytes {
    if (d.length < width) return d;
    const i = this.rng.below(d.length - width + 1);
    const v = values[this.rng.below(values.length)]!;
    if (this.rng.below(2) === 0) d.writeUIntLE(v, i, width);
    else d.writeUIntBE(v, i, width);
    return d;
  }

  private insertRandom(d: Bytes, n: number): Bytes {
    const bytes = Buffer.alloc(n);
    const same = this.rng.below(2) === 0 ? this.rng.below(256) : -1;
    for (let i = 0; i < n; i++) bytes[i] = same >= 0 ? same : this.rng.below(256);
    const at = this.rng.below(d.length + 1);
    return Buffer.concat([d.subarray(0, at), bytes, d.subarray(at)]);
  }
}
