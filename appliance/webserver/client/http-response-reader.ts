// A small HTTP/1.1 response reader for tests and benchmark clients: reads responses
// one after the other from a socket (Content-Length framing only, which is all this
// server sends), so pipelining and keep-alive can be checked byte by byte.
import type { Duplex } from 'node:stream';

export interface RawHttpResponse {
  status: number;
  reason: string;
  /** Header fields, names lower-cased (a repeated name keeps the last value). */
  headers: Record<string, string>;
  /** The head exactly as received. */
  headText: string;
  body: Buffer;
}

export class HttpResponseReader {
  private buf: Buffer = Buffer.alloc(0);
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the response being read needs in buf before it is complete (0: unknown yet). */
  private need = 0;
  private ended = false;
  private error: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(readonly socket: Duplex) {
    socket.on('data', (chunk: Buffer) => {
      // Chunks are joined only when a response is complete (or its head is split).
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (err) => {
      this.error = err;
      this.notify();
    });
  }

  /** The next response; `head: true` when it answers a HEAD request (no body). */
  async next(opts: { head?: boolean } = {}): Promise<RawHttpResponse> {
    for (;;) {
      const r = this.tryParse(opts.head === true);
      if (r !== null) return r;
      if (this.error) throw this.error;
      if (this.ended) throw new Error(`connection ended with ${this.buf.length + this.pendingBytes} bytes of an incomplete response`);
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Resolves when the peer has closed (after the responses read so far), with the bytes left over. */
  async closed(): Promise<Buffer> {
    while (!this.ended) await new Promise<void>((resolve) => (this.wake = resolve));
    this.gather();
    return this.buf;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Moves pending chunks into buf (one concat). */
  private gather(): void {
    if (this.pending.length === 0) return;
    const parts = this.buf.length > 0 ? [this.buf, ...this.pending] : this.pending;
    this.buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.buf.length + this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
  }

  private tryParse(isHead: boolean): RawHttpResponse | null {
    if (this.need > 0 && this.buf.length + this.pendingBytes < this.need) return null;
    this.gather();
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const headText = this.buf.toString('latin1', 0, end + 4);
    const lines = headText.slice(0, -4).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]!);
    if (!m) throw new Error(`bad status line ${JSON.stringify(lines[0])}`);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const c = line.indexOf(':');
      if (c <= 0) throw new Error(`bad header line ${JSON.stringify(line)}`);
      headers[line.slice(0, c).toLowerCase()] = line.slice(c + 1).trim();
    }
    const length = isHead ? 0 : Number(headers['content-length'] ?? '0');
    if (!Number.isSafeInteger(length) || length < 0) throw new Error(`bad Content-Length ${headers['content-length']}`);
    if (this.buf.length < end + 4 + length) {
      this.need = end + 4 + length;
      return null;
    }
    this.need = 0;
    const body = this.buf.subarray(end + 4, end + 4 + length);
    this.buf = this.buf.subarray(end + 4 + length);
    return { status: Number(m[1]), reason: m[2]!, headers, headText, body };
  }
}
