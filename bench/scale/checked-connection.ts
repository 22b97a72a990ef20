// One connection of the scale bench with both of its ends in this process: each end
// sends a checked stream (checked-stream.ts) and receives the other's, at a paced rate,
// as fast as it can (flood), or not at all. finish() ends both directions and, once
// both ends have closed, compares what was sent with what arrived.
import type { ByteEnd } from './byte-end.js';
import { MAX_CHUNK_BYTES, StreamReceiver, StreamSender } from './checked-stream.js';

export type SendMode = 'idle' | 'paced' | 'flood';

/** How a connection was opened: host -> guest through the hybrid socket or the TCP forward, or guest -> host (hybrid <uds>_<port>). */
export type ConnectionKind = 'hybrid' | 'tcp' | 'guest';

/** Flood writes per turn before yielding (a write that completes at once would otherwise loop). */
const FLOOD_WRITES_PER_TURN = 8;

export class CheckedEnd {
  readonly sender: StreamSender;
  readonly receiver = new StreamReceiver();
  mode: SendMode = 'idle';
  /** Bytes a paced sender may still write. */
  tokens = 0;
  closed = false;
  closeError: Error | null = null;
  private blocked = false;
  private ending = false;
  private pumpQueued = false;
  private readonly pumpLater = (): void => {
    this.pumpQueued = false;
    this.pump();
  };

  constructor(
    private readonly io: ByteEnd,
    pattern: Buffer,
    offset: number,
    private readonly onClosed: () => void,
  ) {
    this.sender = new StreamSender(pattern, offset);
  }

  /** Starts reading; `initial` holds bytes already read past the connection id. */
  start(initial: Buffer | null): void {
    this.io.setHandlers({
      data: (c) => this.receiver.take(c),
      end: () => (this.receiver.ended = true),
      drain: () => {
        this.blocked = false;
        this.pump();
      },
      close: (err) => {
        if (this.closed) return;
        this.closed = true;
        this.closeError = err;
        this.onClosed();
      },
    });
    if (initial !== null && initial.length > 0) this.receiver.take(initial);
  }

  setMode(mode: SendMode): void {
    if (this.ending) return;
    this.mode = mode;
    if (mode !== 'paced') this.tokens = 0;
    this.pump();
  }

  /** Paced: `bytes` more may go (capped at `cap` so a blocked sender does not bank a burst). */
  addTokens(bytes: number, cap: number, minWrite: number): void {
    if (this.mode !== 'paced') return;
    this.tokens = Math.min(cap, this.tokens + bytes);
    if (this.tokens >= minWrite) this.pump();
  }

  pump(): void {
    if (this.blocked || this.ending || this.closed) return;
    if (this.mode === 'flood') {
      for (let i = 0; i < FLOOD_WRITES_PER_TURN; i++) {
        if (!this.io.write(this.sender.next(MAX_CHUNK_BYTES))) {
          this.blocked = true;
          return;
        }
      }
      if (!this.pumpQueued) {
        this.pumpQueued = true;
        setImmediate(this.pumpLater);
      }
    } else if (this.mode === 'paced') {
      while (this.tokens >= 1) {
        const n = Math.min(Math.floor(this.tokens), MAX_CHUNK_BYTES);
        this.tokens -= n;
        if (!this.io.write(this.sender.next(n))) {
          this.blocked = true;
          return;
        }
      }
    }
  }

  /** Sends no more: end of stream after what was written. */
  finishSending(): void {
    if (this.ending || this.closed) return;
    this.ending = true;
    this.mode = 'idle';
    this.io.end();
  }

  destroy(): void {
    this.io.destroy();
  }
}

export interface ConnectionOutcome {
  id: number;
  cid: number;
  kind: ConnectionKind;
  /** False when the connection never opened (refused, timed out): no stream to check. */
  opened: boolean;
  /** Bytes each way, as sent and as received. */
  hostToGuest: { sent: number; received: number };
  guestToHost: { sent: number; received: number };
  /** Empty when every byte arrived intact and both ends closed in order. */
  problems: string[];
}

export class CheckedConnection {
  host: CheckedEnd | null = null;
  guest: CheckedEnd | null = null;
  /** Both ends closed (or the connection failed to open). */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  openError: Error | null = null;

  constructor(
    readonly id: number,
    readonly cid: number,
    readonly kind: ConnectionKind,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  /** Called by each end on close. */
  endClosed(): void {
    if (this.isClosed) this.resolveClosed();
  }

  failOpen(err: Error): void {
    this.openError = err;
    this.host?.destroy();
    this.guest?.destroy();
    this.resolveClosed();
  }

  get isOpen(): boolean {
    return this.host !== null && this.guest !== null && !this.host.closed && !this.guest.closed;
  }

  get isClosed(): boolean {
    return this.openError !== null || ((this.host?.closed ?? true) && (this.guest?.closed ?? true));
  }

  get hostToGuestBytes(): number {
    return this.guest?.receiver.received ?? 0;
  }

  get guestToHostBytes(): number {
    return this.host?.receiver.received ?? 0;
  }

  setMode(mode: SendMode): void {
    this.host?.setMode(mode);
    this.guest?.setMode(mode);
  }

  finishSending(): void {
    this.host?.finishSending();
    this.guest?.finishSending();
  }

  destroy(): void {
    this.host?.destroy();
    this.guest?.destroy();
  }

  /** What went wrong, comparing both directions (call once, after closed). */
  outcome(): ConnectionOutcome {
    const problems: string[] = [];
    const h = this.host;
    const g = this.guest;
    const out: ConnectionOutcome = {
      id: this.id,
      cid: this.cid,
      kind: this.kind,
      opened: this.openError === null && h !== null && g !== null,
      hostToGuest: { sent: h?.sender.sent ?? 0, received: g?.receiver.received ?? 0 },
      guestToHost: { sent: g?.sender.sent ?? 0, received: h?.receiver.received ?? 0 },
      problems,
    };
    if (this.openError !== null) {
      problems.push(`open failed: ${this.openError.message}`);
      return out;
    }
    if (h === null || g === null) {
      problems.push('never opened');
      return out;
    }
    for (const [name, from, to] of [
      ['host -> guest', h, g],
      ['guest -> host', g, h],
    ] as const) {
      if (!to.receiver.ended) problems.push(`${name}: no end of stream`);
      if (from.sender.sent !== to.receiver.received) problems.push(`${name}: ${from.sender.sent} bytes sent, ${to.receiver.received} received`);
      else if (from.sender.digest() !== to.receiver.digest()) problems.push(`${name}: SHA-256 differs (${from.sender.sent} bytes)`);
    }
    if (h.closeError !== null) problems.push(`host end: ${h.closeError.message}`);
    if (g.closeError !== null) problems.push(`guest end: ${g.closeError.message}`);
    return out;
  }
}
