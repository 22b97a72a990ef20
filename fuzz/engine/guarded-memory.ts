// Guest memory for fuzz targets: the project's one memory interface (GuestMemory, over
// regions) carved out of a single SharedArrayBuffer with guard bytes before, between
// and after the regions. Guards hold a known pattern; a byte changed there is a write
// outside guest memory, which the code under test must never do (every ring part and
// descriptor is bounds-checked against the regions, virtio 1.2, 2.7.5.1 / 2.8.19).
import { GuestMemory, makeRegion } from '../../kernel/memory/guest-memory.js';
import { InvariantError } from './target.js';

export interface RegionSpec {
  name: string;
  guestAddr: number;
  size: number;
}

const GUARD_BYTES = 4096;
const GUARD_PATTERN = 0xa5;

export class GuardedMemory {
  readonly sab: SharedArrayBuffer;
  readonly memory: GuestMemory;
  /** Byte ranges of the backing that are guards: [offset, length]. */
  private readonly guards: Array<[number, number]> = [];
  private readonly all: Uint8Array;
  private readonly backingOffsets: number[] = [];

  constructor(readonly specs: readonly RegionSpec[]) {
    let total = GUARD_BYTES;
    for (const s of specs) total += s.size + GUARD_BYTES;
    this.sab = new SharedArrayBuffer(total);
    this.all = new Uint8Array(this.sab);
    let off = 0;
    const regions = [];
    for (const s of specs) {
      this.guards.push([off, GUARD_BYTES]);
      off += GUARD_BYTES;
      this.backingOffsets.push(off);
      regions.push(makeRegion(s.name, s.guestAddr, this.sab, off, s.size));
      off += s.size;
    }
    this.guards.push([off, GUARD_BYTES]);
    this.memory = new GuestMemory(regions);
    this.reset();
  }

  /** Zeroes the regions and rewrites the guards. */
  reset(): void {
    this.all.fill(0);
    for (const [o, n] of this.guards) this.all.fill(GUARD_PATTERN, o, o + n);
  }

  /** The bytes of region i. */
  region(i: number): Uint8Array {
    return this.all.subarray(this.backingOffsets[i]!, this.backingOffsets[i]! + this.specs[i]!.size);
  }

  /** Bytes at a guest address (must lie in one region). */
  at(addr: number, length: number): Uint8Array {
    return this.memory.view(addr, length);
  }

  /** Throws InvariantError naming the first guard byte that changed. */
  checkGuards(): void {
    for (const [o, n] of this.guards) {
      for (let i = o; i < o + n; i++) {
        if (this.all[i] !== GUARD_PATTERN) {
          throw new InvariantError(`a byte outside guest memory was written: backing offset ${i} (guard at ${o}, ${n} bytes) holds 0x${this.all[i]!.toString(16)}`);
        }
      }
    }
  }
}
