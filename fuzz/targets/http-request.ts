// The webserver appliance's HTTP request parser (appliance/webserver/http/
// http-request-parser.ts, RFC 9112 2-5), fed as the connection feeds it: the bytes
// arrive in pieces, and each time the whole buffer so far is parsed again from the
// start of the current request; after a head, the next request starts at its end.
//
// Invariants: the parser answers 'incomplete', a head, or an HttpError with a status
// the server sends (400, 414, 431, 505) and a message; nothing else is thrown. A head
// keeps the grammar (token method, visible-ASCII target within the limit, a path
// starting with '/', lower-case token field names, values without CR, LF or controls,
// at most maxHeaderCount fields, end right after CRLF CRLF). Refusing early is only
// allowed for what cannot become valid: a buffer whose whole parses to a head is
// 'incomplete' at every cut before the head's end, and a refused prefix stays refused.
import { HttpError } from '../../appliance/webserver/http/http-error.js';
import type { HttpLimits } from '../../appliance/webserver/http/http-limits.js';
import { parseRequestHead, type ParseResult } from '../../appliance/webserver/http/http-request-parser.js';
import { ByteReader } from '../engine/byte-reader.js';
import { InvariantError, check, utf8, type FuzzTarget } from '../engine/target.js';

const STATUSES = new Set([400, 414, 431, 505]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const LOWER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const TARGET = /^[\x21-\x7e]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

type Outcome = ParseResult | { kind: 'error'; status: number; message: string };

function parse(buf: Buffer, start: number, limits: HttpLimits): Outcome {
  try {
    return parseRequestHead(buf, start, limits);
  } catch (e) {
    check(e instanceof HttpError, () => `parseRequestHead threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
    check(STATUSES.has(e.status) && e.message.length > 0 && e.fatal, () => `HttpError ${e.status} (fatal ${e.fatal}) "${e.message}"`);
    return { kind: 'error', status: e.status, message: e.message };
  }
}

function checkHead(buf: Buffer, start: number, r: Outcome & { kind: 'head' }, limits: HttpLimits): void {
  const h = r.head;
  const where = `head at ${start}`;
  check(TOKEN.test(h.method), () => `${where}: method ${JSON.stringify(h.method)} is not a token`);
  check(TARGET.test(h.target) && h.target.length <= limits.maxUriBytes, () => `${where}: target ${JSON.stringify(h.target.slice(0, 80))} accepted`);
  check(h.rawPath.startsWith('/') && !h.rawPath.includes('?') && !h.target.includes('#'), () => `${where}: path ${JSON.stringify(h.rawPath)} from target ${JSON.stringify(h.target)}`);
  check(h.minorVersion === 0 || h.minorVersion === 1, () => `${where}: minor version ${h.minorVersion}`);
  check(h.headers.length <= limits.maxHeaderCount, () => `${where}: ${h.headers.length} fields, limit ${limits.maxHeaderCount}`);
  for (const [name, value] of h.headers) {
    check(LOWER_TOKEN.test(name), () => `${where}: field name ${JSON.stringify(name)}`);
    check(FIELD_VALUE.test(value) && !/^[ \t]|[ \t]$/.test(value), () => `${where}: field ${name} value ${JSON.stringify(value.slice(0, 80))}`);
  }
  check(r.end > start && r.end <= buf.length, () => `${where}: end ${r.end} outside (${start}, ${buf.length}]`);
  check(buf.toString('latin1', r.end - 4, r.end) === '\r\n\r\n' || (buf.toString('latin1', r.end - 2, r.end) === '\r\n' && h.headers.length === 0), () => `${where}: end ${r.end} is not after CRLF CRLF`);
}

function run(input: Uint8Array): void {
  const rd = new ByteReader(input);
  const limits: HttpLimits = {
    maxUriBytes: rd.bool() ? 4096 : 1 + rd.u8(),
    maxHeaderBytes: rd.bool() ? 16 * 1024 : 1 + rd.u16() % 2048,
    maxHeaderCount: rd.bool() ? 100 : rd.u8() % 8,
    maxBodyBytes: 64 * 1024,
  };
  const cuts = Array.from({ length: rd.u8() % 8 }, () => rd.u16());
  const all = Buffer.from(rd.rest());
  const points = [...new Set([...cuts.map((c) => c % (all.length + 1)), all.length])].sort((a, b) => a - b);
  let start = 0;
  for (let requests = 0; requests < 16 && start < all.length; requests++) {
    const whole = parse(all, start, limits);
    if (whole.kind === 'head') checkHead(all, start, whole, limits);
    // The pieces as the connection sees them: every cut before the end of this request.
    const stop = whole.kind === 'head' ? whole.end : all.length;
    for (const p of [...points.filter((x) => x > start && x < stop), stop - 1, stop - 2].filter((x) => x > start && x < stop)) {
      const prefix = parse(all.subarray(0, p), start, limits);
      if (whole.kind === 'head') {
        check(prefix.kind === 'incomplete', () => `request at ${start}: parses as a head ending at ${whole.end} when whole, but the first ${p} bytes give ${prefix.kind === 'error' ? `${prefix.status} ${prefix.message}` : prefix.kind}`);
      } else if (prefix.kind === 'head') {
        throw new InvariantError(`request at ${start}: a head after ${p} bytes, but the whole buffer gives ${whole.kind}`);
      } else if (prefix.kind === 'error') {
        check(whole.kind === 'error', () => `request at ${start}: refused after ${p} bytes (${prefix.status} ${prefix.message}), 'incomplete' with more bytes`);
      }
    }
    if (whole.kind !== 'head') break;
    start = whole.end;
  }
}

const seed = (limitsAndCuts: number[], text: string): Uint8Array => new Uint8Array([...limitsAndCuts, ...Buffer.from(text, 'latin1')]);

export const httpRequestTarget: FuzzTarget = {
  name: 'http-request',
  description: 'the webserver appliance\'s HTTP/1.x request head parser, bytes in pieces, pipelined (RFC 9112)',
  focus: ['appliance/webserver/http/http-request-parser.ts'],
  maxInputBytes: 2048,
  dictionary: ['GET ', 'HEAD ', ' HTTP/1.1\r\n', ' HTTP/1.0\r\n', ' HTTP/2.0\r\n', '\r\n', '\r\n\r\n', 'Host: ', 'Content-Length: ', 'Transfer-Encoding: chunked', 'http://', 'https://a', '?', '#', ': ', '\t', '\n', '\r', ' ', '/', '%00'].map(utf8),
  seeds() {
    return [
      seed([1, 1, 1, 0], 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
      seed([1, 1, 1, 3, 5, 0, 17, 0, 30, 0], 'GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nHEAD /big.html HTTP/1.0\r\n\r\n'),
      seed([1, 1, 1, 0], 'GET http://example/x HTTP/1.1\r\n\r\n'),
      seed([0, 8, 0, 40, 0, 0, 2, 1, 4, 0], 'GET /0123456789 HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n'),
      seed([1, 1, 1, 0], 'GET / HTTP/1.1\r\n folded\r\n\r\n'),
    ];
  },
  run,
};
