// Parses the head of an HTTP/1.x request (RFC 9112 sections 2-5) from bytes: the
// request line and header fields, up to the empty line. Strict where leniency is a
// risk: CRLF line ends only, no whitespace before a colon, no obsolete line folding,
// no control characters. Runs once per request; nothing here copies the body.
import { HttpError } from './http-error.js';
import type { HttpLimits } from './http-limits.js';

export interface HttpRequestHead {
  method: string;
  /** The request target as sent (origin-form, or absolute-form reduced to its path). */
  target: string;
  /** The target's path, not yet decoded, and its query without the '?' ('' if none). */
  rawPath: string;
  query: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minorVersion: 0 | 1;
  /** Header fields in order, names lower-cased, values trimmed. */
  headers: Array<[string, string]>;
}

export type ParseResult =
  | { kind: 'incomplete' }
  | { kind: 'head'; head: HttpRequestHead; /** Offset just after the empty line. */ end: number };

const INCOMPLETE: ParseResult = Object.freeze({ kind: 'incomplete' });
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible ASCII, obs-text, space and tab (RFC 9110 5.5).
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// Request target: visible ASCII only (no spaces, no controls, no raw non-ASCII).
const TARGET = /^[\x21-\x7e]+$/;
const VERSION = /^HTTP\/(\d)\.(\d)$/;
/**
 * Longest method accepted. The same limit applies however the bytes arrive: the early
 * check of a request line still arriving refuses a longer method, so a complete line
 * must refuse it too (found by fuzz/targets/http-request.ts: a 45-byte method was
 * refused when cut before its space and accepted when sent whole).
 */
const MAX_METHOD_BYTES = 32;
const CRLF_CRLF = Buffer.from('\r\n\r\n');
const LF = 0x0a;
const CR = 0x0d;

/**
 * Parses one request head from buf[start...]. Returns 'incomplete' when more bytes
 * are needed and throws HttpError (400, 414, 431, 505) when the head is wrong; errors
 * are found as early as the bytes allow (a bad request line before the headers end).
 */
export function parseRequestHead(buf: Buffer, start: number, limits: HttpLimits): ParseResult {
  const lineEnd = buf.indexOf(LF, start);
  if (lineEnd < 0) {
    checkIncompleteRequestLine(buf, start, limits);
    return INCOMPLETE;
  }
  if (lineEnd === start || buf[lineEnd - 1] !== CR) throw bad('request line does not end with CRLF');
  const line = buf.toString('latin1', start, lineEnd - 1);
  const head = parseRequestLine(line, limits);
  const headersStart = lineEnd + 1;
  // The empty line right after the request line: no header fields at all.
  let end: number;
  if (buf[headersStart] === CR && buf[headersStart + 1] === LF) {
    end = headersStart + 2;
  } else {
    const blank = buf.indexOf(CRLF_CRLF, headersStart);
    if (blank < 0) {
      if (buf.length - headersStart > limits.maxHeaderBytes) throw tooLarge(`header fields exceed ${limits.maxHeaderBytes} bytes`);
      checkNoBareLf(buf, headersStart, buf.length);
      return INCOMPLETE;
    }
    if (blank + 2 - headersStart > limits.maxHeaderBytes) throw tooLarge(`header fields exceed ${limits.maxHeaderBytes} bytes`);
    parseHeaderFields(buf.toString('latin1', headersStart, blank), head.headers, limits);
    end = blank + 4;
  }
  return { kind: 'head', head, end };
}

function parseRequestLine(line: string, limits: HttpLimits): HttpRequestHead {
  const sp1 = line.indexOf(' ');
  const sp2 = sp1 < 0 ? -1 : line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || line.indexOf(' ', sp2 + 1) >= 0) throw bad('request line is not "METHOD target HTTP/x.y"');
  const method = line.slice(0, sp1);
  if (!TOKEN.test(method)) throw bad('method is not a token');
  if (method.length > MAX_METHOD_BYTES) throw bad(`method is longer than ${MAX_METHOD_BYTES} bytes`);
  const target = line.slice(sp1 + 1, sp2);
  if (target.length > limits.maxUriBytes) throw new HttpError(414, `request target exceeds ${limits.maxUriBytes} bytes`, true);
  if (target.length === 0 || !TARGET.test(target)) throw bad('request target is empty or has characters that are not visible ASCII');
  const m = VERSION.exec(line.slice(sp2 + 1));
  if (!m) throw bad('protocol is not HTTP/x.y');
  if (m[1] !== '1') throw new HttpError(505, `HTTP/${m[1]}.${m[2]} is not supported; use HTTP/1.1 or HTTP/1.0`, true);
  const minorVersion = m[2] === '0' ? 0 : 1; // HTTP/1.x with x > 1 is treated as 1.1 (RFC 9110 6.2)
  let pathAndQuery = target;
  if (!target.startsWith('/')) {
    // absolute-form (RFC 9112 3.2.2): keep the path; '*' and authority-form are refused.
    const abs = /^https?:\/\/[^/?#]+/i.exec(target);
    if (!abs) throw bad('request target is neither a path nor an absolute http URI');
    pathAndQuery = target.slice(abs[0].length) || '/';
    if (!pathAndQuery.startsWith('/')) pathAndQuery = '/' + pathAndQuery;
  }
  if (pathAndQuery.includes('#')) throw bad('request target contains a fragment');
  const q = pathAndQuery.indexOf('?');
  const rawPath = q < 0 ? pathAndQuery : pathAndQuery.slice(0, q);
  const query = q < 0 ? '' : pathAndQuery.slice(q + 1);
  return { method, target, rawPath, query, minorVersion, headers: [] };
}

function parseHeaderFields(block: string, out: Array<[string, string]>, limits: HttpLimits): void {
  let pos = 0;
  while (pos <= block.length) {
    let eol = block.indexOf('\r\n', pos);
    if (eol < 0) eol = block.length;
    const line = block.slice(pos, eol);
    pos = eol + 2;
    if (line.length === 0) throw bad('empty header line');
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) throw bad('obsolete line folding in header fields');
    if (line.includes('\n') || line.includes('\r')) throw bad('bare CR or LF in header fields');
    const colon = line.indexOf(':');
    if (colon <= 0) throw bad(`header line without a field name and colon: ${JSON.stringify(clip(line))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw bad(`header field name is not a token: ${JSON.stringify(clip(name))}`);
    const value = trimOws(line.slice(colon + 1));
    if (!FIELD_VALUE.test(value)) throw bad(`header field ${name} has control characters`);
    if (out.length >= limits.maxHeaderCount) throw tooLarge(`more than ${limits.maxHeaderCount} header fields`);
    out.push([name.toLowerCase(), value]);
  }
}

/** While the request line is still arriving: refuse early what cannot become valid. */
function checkIncompleteRequestLine(buf: Buffer, start: number, limits: HttpLimits): void {
  const have = buf.length - start;
  if (have === 0) return;
  const sp1 = buf.indexOf(0x20, start);
  if (sp1 < 0) {
    if (have > MAX_METHOD_BYTES || !TOKEN.test(buf.toString('latin1', start, buf.length))) throw bad('request line does not start with a method');
    return;
  }
  if (!TOKEN.test(buf.toString('latin1', start, sp1))) throw bad('method is not a token');
  if (sp1 - start > MAX_METHOD_BYTES) throw bad(`method is longer than ${MAX_METHOD_BYTES} bytes`);
  // method SP target SP HTTP/1.1 CRLF: anything longer than that is an overlong target.
  if (buf.length - (sp1 + 1) > limits.maxUriBytes + 11) throw new HttpError(414, `request target exceeds ${limits.maxUriBytes} bytes`, true);
}

function checkNoBareLf(buf: Buffer, from: number, to: number): void {
  let i = buf.indexOf(LF, from);
  while (i >= 0 && i < to) {
    if (buf[i - 1] !== CR) throw bad('bare LF in header fields');
    i = buf.indexOf(LF, i + 1);
  }
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

function clip(s: string): string {
  return s.length > 40 ? s.slice(0, 40) + '...' : s;
}

function bad(message: string): HttpError {
  return new HttpError(400, message, true);
}

function tooLarge(message: string): HttpError {
  return new HttpError(431, message, true);
}
