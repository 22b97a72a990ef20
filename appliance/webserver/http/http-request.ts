// What a parsed request head means: how its body is framed (RFC 9112 6), whether the
// connection stays open after it (RFC 9112 9.3), and its Host. Refuses the ambiguous
// framings that enable request smuggling: Transfer-Encoding together with
// Content-Length, differing Content-Lengths, transfer codings other than chunked.
import { HttpError } from './http-error.js';
import type { HttpLimits } from './http-limits.js';
import type { HttpRequestHead } from './http-request-parser.js';

export type BodyFraming = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' };

export interface HttpRequest extends HttpRequestHead {
  body: BodyFraming;
  /** True when the client keeps the connection open after this response. */
  keepAlive: boolean;
}

const NO_BODY: BodyFraming = Object.freeze({ kind: 'none' });

export function interpretRequest(head: HttpRequestHead, limits: HttpLimits): HttpRequest {
  let contentLength = -1;
  let transferEncoding: string | null = null;
  let hosts = 0;
  let close = false;
  let keepAliveToken = false;
  for (const [name, value] of head.headers) {
    switch (name) {
      case 'content-length': {
        for (const part of value.split(',')) {
          const v = part.trim();
          if (!/^\d{1,15}$/.test(v)) throw new HttpError(400, `Content-Length is not a number: ${JSON.stringify(value)}`, true);
          const n = Number(v);
          if (contentLength >= 0 && n !== contentLength) throw new HttpError(400, 'conflicting Content-Length values', true);
          contentLength = n;
        }
        break;
      }
      case 'transfer-encoding':
        transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
        break;
      case 'host':
        hosts++;
        break;
      case 'connection':
        for (const token of value.toLowerCase().split(',')) {
          const t = token.trim();
          if (t === 'close') close = true;
          else if (t === 'keep-alive') keepAliveToken = true;
        }
        break;
    }
  }
  if (head.minorVersion === 1 && hosts !== 1) throw new HttpError(400, hosts === 0 ? 'HTTP/1.1 request without Host' : 'more than one Host header', true);
  if (head.minorVersion === 0 && hosts > 1) throw new HttpError(400, 'more than one Host header', true);

  let body = NO_BODY;
  if (transferEncoding !== null) {
    if (contentLength >= 0) throw new HttpError(400, 'both Transfer-Encoding and Content-Length', true);
    if (head.minorVersion === 0) throw new HttpError(400, 'Transfer-Encoding in an HTTP/1.0 request', true);
    const codings = transferEncoding.toLowerCase().split(',').map((s) => s.trim());
    if (codings.length !== 1 || codings[0] !== 'chunked') {
      throw new HttpError(400, `unsupported Transfer-Encoding ${JSON.stringify(transferEncoding)} (only chunked is accepted)`, true);
    }
    body = { kind: 'chunked' };
  } else if (contentLength > 0) {
    if (contentLength > limits.maxBodyBytes) throw new HttpError(413, `body of ${contentLength} bytes exceeds ${limits.maxBodyBytes}`, true);
    body = { kind: 'length', length: contentLength };
  }
  const keepAlive = head.minorVersion === 1 ? !close : keepAliveToken && !close;
  return Object.assign(head as HttpRequest, { body, keepAlive });
}
