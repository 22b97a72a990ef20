// One client connection: reads requests from the socket (pipelined requests are
// parsed from the same buffer and answered strictly in order, one at a time), skips
// their bodies, answers them, and closes when HTTP says so (Connection: close, HTTP/1.0
// without keep-alive, a request that cannot be parsed) or when the client finishes.
//
// A Duplex source should allow half-open connections (net's allowHalfOpen: true), so
// that answers to requests sent before the client's FIN still go out.
import type { ByteConnection, ByteConnectionHandlers } from './byte-connection.js';
import { HttpError } from './http-error.js';
import { parseRequestHead } from './http-request-parser.js';
import { type HttpRequest, interpretRequest } from './http-request.js';
import { RequestBodySkipper } from './request-body-skipper.js';
import { handleRequest, sendSimple } from '../server/request-handler.js';
import type { ServerContext } from '../server/server-context.js';
import { ConnectionClosedError, SocketOutput } from './socket-output.js';

/** Unparsed input above this pauses the socket until the requests before it are answered. */
const PAUSE_INPUT_BYTES = 64 * 1024;

export class HttpConnection implements ByteConnectionHandlers {
  readonly out: SocketOutput;
  /** Received bytes not yet parsed. */
  private input: Buffer | null = null;
  private pumping = false;
  /** No more requests are read: closing or closed. */
  private stopped = false;
  private readEnded = false;
  /** A request whose body is still being skipped. */
  private pending: HttpRequest | null = null;
  private skipper: RequestBodySkipper | null = null;

  constructor(
    readonly conn: ByteConnection,
    private readonly ctx: ServerContext,
    private readonly closed: (conn: HttpConnection) => void,
  ) {
    this.out = new SocketOutput(conn);
    conn.setHandlers(this);
  }

  /** True while a request is being answered or parsed. */
  get busy(): boolean {
    return this.pumping;
  }

  get lastActivityMs(): number {
    return this.out.lastActivityMs;
  }

  // ---- ByteConnectionHandlers

  /** @internal */
  onData(data: Buffer): void {
    if (this.stopped) return;
    this.out.lastActivityMs = Date.now();
    this.input = this.input === null ? data : Buffer.concat([this.input, data]);
    if (!this.pumping) this.startPump();
    else if (this.input.length > PAUSE_INPUT_BYTES) this.conn.pause();
  }

  /** @internal */
  onEnd(): void {
    this.readEnded = true;
    if (!this.pumping) this.stop();
  }

  /** @internal */
  onDrain(): void {
    this.out.wake();
  }

  /** @internal A reset by the peer (err) is no concern of the server's. */
  onClose(_err: Error | null): void {
    this.out.onClose();
    this.stopped = true;
    this.input = null;
    this.closed(this);
  }

  /** Runs pump(); a bug in it closes this connection, never the process (no unhandled rejection). */
  private startPump(): void {
    this.pump().catch((err: unknown) => {
      this.ctx.stats.aborted++;
      this.ctx.log?.(`internal error, connection closed: ${(err as Error)?.stack ?? String(err)}`);
      this.destroy();
    });
  }

  /** Parses and answers what the input holds, in order, until it needs more bytes. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const limits = this.ctx.limits;
    try {
      while (!this.stopped && !this.out.closed) {
        if (this.pending === null) {
          if (this.input === null) break;
          let req: HttpRequest;
          try {
            const r = parseRequestHead(this.input, 0, limits);
            if (r.kind === 'incomplete') break;
            this.consume(r.end);
            req = interpretRequest(r.head, limits);
          } catch (err) {
            this.refuse(err);
            return;
          }
          this.pending = req;
          this.skipper = req.body.kind === 'none' ? null : new RequestBodySkipper(req.body, limits.maxBodyBytes);
        }
        if (this.skipper !== null && !this.skipper.done) {
          if (this.input === null) break;
          try {
            this.consume(this.skipper.feed(this.input, 0));
          } catch (err) {
            this.refuse(err);
            return;
          }
          if (!this.skipper.done) break;
        }
        const req = this.pending!;
        this.pending = null;
        this.skipper = null;
        await this.serve(req);
        if (!req.keepAlive) {
          this.stop();
          return;
        }
      }
      if (this.readEnded) this.stop();
    } finally {
      this.pumping = false;
      if (!this.stopped && this.conn.isPaused()) this.conn.resume();
    }
  }

  private consume(end: number): void {
    const input = this.input!;
    this.input = end >= input.length ? null : input.subarray(end);
  }

  private async serve(req: HttpRequest): Promise<void> {
    const ctx = this.ctx;
    const out = this.out;
    ctx.stats.requests++;
    const t0 = ctx.log !== null ? performance.now() : 0;
    out.responseStarted = false;
    let status: number;
    try {
      status = await handleRequest(ctx, out, req);
    } catch (err) {
      if (err instanceof ConnectionClosedError || out.closed) return;
      ctx.stats.aborted++;
      ctx.log?.(`error: ${req.method} ${req.target}: ${(err as Error).message}`);
      if (out.responseStarted) {
        // Part of the response is out: the client can only learn of it by the close.
        this.stopped = true;
        this.conn.destroy();
        return;
      }
      status = sendSimple(out, req, 500, 'the file could not be read');
    }
    count(ctx, status);
    if (ctx.log !== null) ctx.log(`${req.method} ${req.target} HTTP/1.${req.minorVersion} ${status} ${(performance.now() - t0).toFixed(2)}ms`);
    // Pipelined requests wait while the client is not reading the answers.
    if (this.conn.needDrain) {
      try {
        await out.waitDrain();
      } catch {
        // closed: the loop sees it
      }
    }
  }

  /** Answers a request that cannot be parsed or framed, then closes. */
  private refuse(err: unknown): void {
    const ctx = this.ctx;
    const e = err instanceof HttpError ? err : new HttpError(400, String(err), true);
    ctx.stats.requests++;
    if (!this.out.closed && !this.conn.writeEnded) {
      try {
        sendSimple(this.out, null, e.status, e.message);
      } catch {
        // closed meanwhile
      }
    }
    count(ctx, e.status);
    ctx.log?.(`refused: ${e.status} ${e.message}`);
    this.stop();
  }

  /** Reads no more requests; ends our side once queued responses are out. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.input = null;
    if (!this.conn.writeEnded) this.conn.end();
    // Input paused for backpressure would hold back the peer's end, and with it the
    // close: read on (onData drops it) until then.
    if (this.conn.isPaused()) this.conn.resume();
  }

  /** Closes now, losing what is queued. */
  destroy(): void {
    this.stopped = true;
    this.conn.destroy();
  }
}

function count(ctx: ServerContext, status: number): void {
  const r = ctx.stats.responses;
  r[status] = (r[status] ?? 0) + 1;
}
