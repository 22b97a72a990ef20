// Small host-side applications on vsock sockets, for tests and benchmarks: 'echo'
// returns every byte and ends its write side when the guest ends; 'sink' reads and
// discards (optionally pausing between reads: a slow reader); 'source' writes N
// pseudorandom bytes, then ends. Each reports byte counts and SHA-256 digests of both
// directions when its connection closes.
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { VsockHostSocket } from '../device/host-socket.js';

export type HostAppKind = 'echo' | 'sink' | 'source';

export interface HostAppSpec {
  kind: HostAppKind;
  port: number;
  /** 'source': bytes to write (default 1 MiB). */
  bytes?: number;
  /** 'sink': pause this long after each chunk read (a slow reader). */
  readDelayMs?: number;
}

export interface HostAppReport {
  app: HostAppKind;
  port: number;
  received: number;
  sent: number;
  sha256Received: string;
  sha256Sent: string;
}

const SOURCE_CHUNK_BYTES = 64 * 1024;
const SOURCE_DEFAULT_BYTES = 1024 * 1024;

/**
 * Deterministic pseudorandom bytes (xorshift32, seeded), generated a chunk at a time:
 * the receiving side can recompute the digest from the seed and length.
 */
export class PseudoRandomBytes {
  private state: number;

  constructor(seed = 0x9e3779b9) {
    this.state = seed >>> 0 || 1;
  }

  /** Fills `out` (its length a multiple of 4 except possibly the last bytes). */
  fill(out: Buffer): Buffer {
    let x = this.state;
    const words = out.length >>> 2;
    for (let i = 0; i < words; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out.writeUInt32LE(x >>> 0, i * 4);
    }
    for (let i = words * 4; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    this.state = x >>> 0;
    return out;
  }
}

/** Runs app `spec.kind` on socket `s`; calls report once when the socket closes. */
export function runHostApp(spec: HostAppSpec, s: Duplex, report: (r: HostAppReport) => void): void {
  const hashIn = createHash('sha256');
  const hashOut = createHash('sha256');
  let received = 0;
  let sent = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  s.on('error', () => {}); // the report tells what arrived; 'close' follows
  s.once('close', () => {
    if (timer !== null) clearTimeout(timer);
    report({ app: spec.kind, port: spec.port, received, sent, sha256Received: hashIn.digest('hex'), sha256Sent: hashOut.digest('hex') });
  });
  const count = (c: Buffer): void => {
    received += c.length;
    hashIn.update(c);
  };
  switch (spec.kind) {
    case 'echo':
      s.on('data', (c: Buffer) => {
        count(c);
        sent += c.length;
        hashOut.update(c);
        if (!s.write(c)) {
          s.pause();
          s.once('drain', () => s.resume());
        }
      });
      s.on('end', () => s.end());
      break;
    case 'sink':
      if (s instanceof VsockHostSocket) {
        // Zero copy: the sink reads views of guest memory. A slow sink finishes one view
        // per delay and holds the rest, so its guest waits for credit.
        const delay = spec.readDelayMs ?? 0;
        let owed = 0;
        let finish: (() => void) | null = null;
        const finishOne = (): void => {
          timer = null;
          if (owed === 0) return;
          owed--;
          finish!();
          if (owed > 0) timer = setTimeout(finishOne, delay);
        };
        s.readViews((v, done) => {
          count(v);
          if (delay === 0) return done();
          finish = done;
          owed++;
          if (timer === null) timer = setTimeout(finishOne, delay);
        });
        s.on('end', () => s.end());
        // Views still held go back when the socket is gone (the reader's promise).
        s.once('close', () => {
          for (; owed > 0; owed--) finish!();
        });
        break;
      }
      s.on('data', (c: Buffer) => {
        count(c);
        const delay = spec.readDelayMs ?? 0;
        if (delay > 0) {
          s.pause();
          timer = setTimeout(() => {
            timer = null;
            s.resume();
          }, delay);
        }
      });
      s.on('end', () => s.end());
      break;
    case 'source': {
      s.on('data', count);
      const total = spec.bytes ?? SOURCE_DEFAULT_BYTES;
      const gen = new PseudoRandomBytes(spec.port);
      const pump = (): void => {
        while (sent < total) {
          const n = Math.min(SOURCE_CHUNK_BYTES, total - sent);
          const chunk = gen.fill(Buffer.allocUnsafe(n));
          hashOut.update(chunk);
          sent += n;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
      break;
    }
  }
}
