// Reads past a request body so the next pipelined request starts at the right byte.
// The webserver serves static files: a body is counted and discarded, never kept.
// Handles Content-Length bodies and the chunked coding (RFC 9112 7.1), with limits
// on the body size and on chunk-size and trailer lines.
import { HttpError } from './http-error.js';
import type { BodyFraming } from './http-request.js';

const enum ChunkState {
  Size,
  Data,
  DataCrlf,
  Trailer,
  Done,
}

const MAX_CHUNK_LINE_BYTES = 1024;
const MAX_TRAILER_BYTES = 8 * 1024;

export class RequestBodySkipper {
  private remaining: number;
  private readonly chunked: boolean;
  private state: ChunkState;
  private total = 0;
  private trailerBytes = 0;

  constructor(
    framing: BodyFraming,
    private readonly maxBodyBytes: number,
  ) {
    this.chunked = framing.kind === 'chunked';
    this.remaining = framing.kind === 'length' ? framing.length : 0;
    this.state = this.chunked ? ChunkState.Size : ChunkState.Done;
    if (framing.kind === 'length') this.state = this.remaining > 0 ? ChunkState.Data : ChunkState.Done;
  }

  get done(): boolean {
    return this.state === ChunkState.Done;
  }

  /**
   * Consumes body bytes from buf[start...]; returns the offset where the unconsumed
   * bytes begin (buf.length when all were body). Throws HttpError on a bad chunked
   * body or one larger than the limit.
   */
  feed(buf: Buffer, start: number): number {
    let pos = start;
    while (pos < buf.length && this.state !== ChunkState.Done) {
      switch (this.state) {
        case ChunkState.Data: {
          const n = Math.min(this.remaining, buf.length - pos);
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = this.chunked ? ChunkState.DataCrlf : ChunkState.Done;
          break;
        }
        case ChunkState.Size: {
          const eol = this.findLine(buf, pos, MAX_CHUNK_LINE_BYTES, 'chunk-size line');
          if (eol < 0) return pos;
          const line = buf.toString('latin1', pos, eol - 1);
          pos = eol + 1;
          const m = /^([0-9a-fA-F]{1,8})[\t ]*(;.*)?$/.exec(line);
          if (!m) throw new HttpError(400, `bad chunk-size line ${JSON.stringify(line.slice(0, 40))}`, true);
          const size = parseInt(m[1]!, 16);
          this.total += size;
          if (this.total > this.maxBodyBytes) throw new HttpError(413, `chunked body exceeds ${this.maxBodyBytes} bytes`, true);
          if (size === 0) this.state = ChunkState.Trailer;
          else {
            this.remaining = size;
            this.state = ChunkState.Data;
          }
          break;
        }
        case ChunkState.DataCrlf: {
          if (buf.length - pos < 2) return pos;
          if (buf[pos] !== 0x0d || buf[pos + 1] !== 0x0a) throw new HttpError(400, 'chunk data not followed by CRLF', true);
          pos += 2;
          this.state = ChunkState.Size;
          break;
        }
        case ChunkState.Trailer: {
          const eol = this.findLine(buf, pos, MAX_TRAILER_BYTES - this.trailerBytes, 'trailer section');
          if (eol < 0) return pos;
          const len = eol - 1 - pos;
          this.trailerBytes += len + 2;
          pos = eol + 1;
          if (len === 0) this.state = ChunkState.Done;
          break;
        }
      }
    }
    return pos;
  }

  /** Offset of the LF ending a CRLF line that starts at pos, -1 if not here yet. */
  private findLine(buf: Buffer, pos: number, max: number, what: string): number {
    const eol = buf.indexOf(0x0a, pos);
    if (eol < 0) {
      if (buf.length - pos > max) throw new HttpError(400, `${what} too long`, true);
      return -1;
    }
    if (eol - pos > max) throw new HttpError(400, `${what} too long`, true);
    if (eol === pos || buf[eol - 1] !== 0x0d) throw new HttpError(400, `${what} does not end with CRLF`, true);
    return eol;
  }
}
