// The bytes of one direction of a checked connection: the sender takes them from a
// random pattern (views, no copy) starting at an offset of its own, the receiver counts
// what arrives; both hash what they saw with SHA-256, and the two digests and counts
// must agree once the stream has ended (nothing lost, reordered or corrupted).
import { randomBytes } from 'node:crypto';
import { type Hash, createHash } from 'node:crypto';

/** Largest chunk a sender hands out at once. */
export const MAX_CHUNK_BYTES = 64 * 1024;
const PATTERN_PERIOD_BYTES = 1 << 20;

/**
 * PATTERN_PERIOD_BYTES random bytes followed by their first MAX_CHUNK_BYTES again, so
 * any chunk starting inside the period is one contiguous view.
 */
export function makePattern(): Buffer {
  const p = Buffer.allocUnsafe(PATTERN_PERIOD_BYTES + MAX_CHUNK_BYTES);
  randomBytes(PATTERN_PERIOD_BYTES).copy(p, 0);
  p.copy(p, PATTERN_PERIOD_BYTES, 0, MAX_CHUNK_BYTES);
  return p;
}

export class StreamSender {
  /** Bytes handed out so far. */
  sent = 0;
  private pos: number;
  private readonly hash: Hash = createHash('sha256');

  constructor(
    private readonly pattern: Buffer,
    startOffset: number,
  ) {
    this.pos = startOffset % PATTERN_PERIOD_BYTES;
  }

  /** The next `n` bytes (n <= MAX_CHUNK_BYTES), counted and hashed. */
  next(n: number): Buffer {
    const chunk = this.pattern.subarray(this.pos, this.pos + n);
    this.hash.update(chunk);
    this.sent += n;
    this.pos = (this.pos + n) % PATTERN_PERIOD_BYTES;
    return chunk;
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

export class StreamReceiver {
  /** Bytes received so far. */
  received = 0;
  /** The sender's end of stream arrived. */
  ended = false;
  private readonly hash: Hash = createHash('sha256');

  take(chunk: Uint8Array): void {
    this.received += chunk.byteLength;
    this.hash.update(chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}
