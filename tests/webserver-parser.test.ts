// Unit and property tests of the request parsing pieces: the head parser, framing,
// the body skipper, path decoding, content types.
import test from 'ava';
import fc from 'fast-check';
import { HttpError } from '../appliance/webserver/http/http-error.js';
import { DEFAULT_HTTP_LIMITS } from '../appliance/webserver/http/http-limits.js';
import { type HttpRequestHead, parseRequestHead } from '../appliance/webserver/http/http-request-parser.js';
import { interpretRequest } from '../appliance/webserver/http/http-request.js';
import { RequestBodySkipper } from '../appliance/webserver/http/request-body-skipper.js';
import { decodeRequestPath } from '../appliance/webserver/files/request-path.js';
import { contentTypeOf } from '../appliance/webserver/files/content-types.js';

const L = DEFAULT_HTTP_LIMITS;

function parse(s: string) {
  return parseRequestHead(Buffer.from(s, 'latin1'), 0, L);
}

function status(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof HttpError) return e.status;
    throw e;
  }
  return 0;
}

test('a request head: method, target, path, query, version, headers in order with trimmed values', (t) => {
  const r = parse('GET /a/b.html?x=1&y HTTP/1.1\r\nHost: example\r\nX-Multi:  a b \t\r\nX-Empty:\r\n\r\nrest');
  if (r.kind !== 'head') return t.fail();
  t.is(r.head.method, 'GET');
  t.is(r.head.target, '/a/b.html?x=1&y');
  t.is(r.head.rawPath, '/a/b.html');
  t.is(r.head.query, 'x=1&y');
  t.is(r.head.minorVersion, 1);
  t.deepEqual(r.head.headers, [
    ['host', 'example'],
    ['x-multi', 'a b'],
    ['x-empty', ''],
  ]);
  t.is(r.end, Buffer.byteLength('GET /a/b.html?x=1&y HTTP/1.1\r\nHost: example\r\nX-Multi:  a b \t\r\nX-Empty:\r\n\r\n'));
});

test('no headers at all, HTTP/1.0, and a parse starting mid-buffer', (t) => {
  const buf = Buffer.from('xxGET / HTTP/1.0\r\n\r\nGET', 'latin1');
  const r = parseRequestHead(buf, 2, L);
  if (r.kind !== 'head') return t.fail();
  t.is(r.head.minorVersion, 0);
  t.is(r.end, buf.length - 3);
  t.is(parseRequestHead(buf, r.end, L).kind, 'incomplete');
});

test('incomplete heads wait; each prefix of a valid head is incomplete, never an error', (t) => {
  const full = 'GET /index.html HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n';
  for (let i = 0; i < full.length; i++) t.is(parse(full.slice(0, i)).kind, 'incomplete', JSON.stringify(full.slice(0, i)));
  t.is(parse(full).kind, 'head');
});

test('limits: 414 on the target, 431 on header bytes and count; exactly at the limit passes', (t) => {
  const lim = { ...L, maxUriBytes: 10, maxHeaderBytes: 40, maxHeaderCount: 2 };
  const p = (s: string) => parseRequestHead(Buffer.from(s), 0, lim);
  t.is(p('GET /123456789 HTTP/1.1\r\n\r\n').kind, 'head');
  t.is(status(() => p('GET /1234567890 HTTP/1.1\r\n\r\n')), 414);
  t.is(status(() => p('GET /1234567890123456789012')), 414);
  t.is(status(() => p('GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n')), 431);
  t.is(status(() => p(`GET / HTTP/1.1\r\nA: ${'x'.repeat(40)}\r\n\r\n`)), 431);
  t.is(status(() => p(`GET / HTTP/1.1\r\nA: ${'x'.repeat(40)}`)), 431);
  // 38 bytes of header lines + the final CRLF = 40.
  t.is(p(`GET / HTTP/1.1\r\nA: ${'x'.repeat(33)}\r\n\r\n`).kind, 'head');
});

test('framing: Content-Length, chunked, keep-alive rules', (t) => {
  const req = (s: string) => {
    const r = parse(s);
    if (r.kind !== 'head') throw new Error('incomplete');
    return interpretRequest(r.head as HttpRequestHead, L);
  };
  t.deepEqual(req('GET / HTTP/1.1\r\nHost: x\r\n\r\n').body, { kind: 'none' });
  t.deepEqual(req('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n').body, { kind: 'none' });
  t.deepEqual(req('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 7, 7\r\n\r\n').body, { kind: 'length', length: 7 });
  t.deepEqual(req('GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n').body, { kind: 'chunked' });
  t.true(req('GET / HTTP/1.1\r\nHost: x\r\n\r\n').keepAlive);
  t.false(req('GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n').keepAlive);
  t.false(req('GET / HTTP/1.0\r\n\r\n').keepAlive);
  t.true(req('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive);
  t.false(req('GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n').keepAlive);
  t.is(status(() => req('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n')), 413);
  t.is(status(() => req('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n')), 400);
  t.is(status(() => req('GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n')), 400);
});

test('chunked bodies are skipped exactly, in any split, with extensions and trailers', (t) => {
  const body = Buffer.from('4;a=b\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT');
  for (let split = 0; split <= body.length; split++) {
    const sk = new RequestBodySkipper({ kind: 'chunked' }, 1000);
    const a = body.subarray(0, split);
    let pos = sk.feed(a, 0);
    let rest = Buffer.concat([a.subarray(pos), body.subarray(split)]);
    pos = sk.feed(rest, 0);
    rest = rest.subarray(pos);
    t.true(sk.done, `split ${split}`);
    t.is(rest.toString(), 'NEXT', `split ${split}`);
  }
  const big = new RequestBodySkipper({ kind: 'chunked' }, 10);
  t.is(status(() => big.feed(Buffer.from('b\r\n'), 0)), 413);
  const len = new RequestBodySkipper({ kind: 'length', length: 5 }, 10);
  t.is(len.feed(Buffer.from('abc'), 0), 3);
  t.false(len.done);
  t.is(len.feed(Buffer.from('deNEXT'), 0), 2);
  t.true(len.done);
});

test('path decoding: accepted paths', (t) => {
  t.is(decodeRequestPath('/'), '/');
  t.is(decodeRequestPath('/docs/'), '/docs/');
  t.is(decodeRequestPath('/a%20b.html'), '/a b.html');
  t.is(decodeRequestPath('/%E2%9C%93'), '/\u2713');
  t.is(decodeRequestPath('/%25'), '/%', 'decoded once');
  t.is(decodeRequestPath('/%252e%252e/x'), '/%2e%2e/x', 'decoded once: no double decoding');
  t.is(decodeRequestPath('/...'), '/...', 'three dots is a name');
  t.is(decodeRequestPath('/.well-known/x'), '/.well-known/x');
  t.is(decodeRequestPath('/a..b'), '/a..b');
});

test('path decoding: refusals', (t) => {
  const cases: Array<[string, number]> = [
    ['/..', 403],
    ['/../x', 403],
    ['/a/../x', 403],
    ['/a/..', 403],
    ['/.', 403],
    ['/./x', 403],
    ['/%2e%2e/x', 403],
    ['/%2E%2e', 403],
    ['/.%2E/', 403],
    ['/a%2fb', 403],
    ['/a%2Fb', 403],
    ['/a%5cb', 403],
    ['/a\\b', 403],
    ['//x', 403],
    ['/a//b', 403],
    ['/%00', 400],
    ['/a%0a', 400],
    ['/a%7f', 400],
    ['/%', 400],
    ['/%4', 400],
    ['/%g0', 400],
    ['/%ff', 400],
    ['/%c0%ae', 400],
    ['/%ed%a0%80', 400],
    ['x', 400],
  ];
  for (const [p, s] of cases) t.is(status(() => decodeRequestPath(p)), s, p);
});

test('property: a decoded path never has a dot segment, empty segment, backslash or NUL', (t) => {
  const piece = fc.constantFrom('a', 'b', '.', '..', '%2e', '%2E', '%2f', '%5c', '\\', '/', '%00', '%25', '%', 'é', '%c3%a9', '~', '-');
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
      const raw = '/' + pieces.join('');
      let path: string;
      try {
        path = decodeRequestPath(raw);
      } catch (e) {
        return e instanceof HttpError && (e.status === 400 || e.status === 403);
      }
      const segs = path.split('/').slice(1);
      return (
        path.startsWith('/') &&
        !path.includes('\\') &&
        !path.includes('\0') &&
        segs.every((s, i) => s !== '.' && s !== '..' && (s !== '' || i === segs.length - 1))
      );
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('property: any split of a pipelined stream parses to the same requests', (t) => {
  const reqArb = fc.record({
    method: fc.constantFrom('GET', 'HEAD', 'POST'),
    path: fc.constantFrom('/', '/a', '/b/c.html', '/x?y=1'),
    headers: fc.array(fc.tuple(fc.constantFrom('X-A', 'Accept', 'User-Agent'), fc.stringMatching(/^[a-z0-9 ]{0,12}$/)), { maxLength: 4 }),
    body: fc.constantFrom('', 'abc', 'hello world'),
    chunked: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(reqArb, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 6 }), (reqs, cuts) => {
      let wire = '';
      for (const r of reqs) {
        wire += `${r.method} ${r.path} HTTP/1.1\r\nHost: h\r\n`;
        for (const [n, v] of r.headers) wire += `${n}: ${v}\r\n`;
        if (r.body && r.chunked) wire += `Transfer-Encoding: chunked\r\n\r\n${r.body.length.toString(16)}\r\n${r.body}\r\n0\r\n\r\n`;
        else if (r.body) wire += `Content-Length: ${r.body.length}\r\n\r\n${r.body}`;
        else wire += '\r\n';
      }
      const bytes = Buffer.from(wire);
      const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      // Feed the pieces one by one, as a connection receives them.
      const got: string[] = [];
      let input = Buffer.alloc(0);
      let skipper: RequestBodySkipper | null = null;
      let prev = 0;
      for (const p of [...points, bytes.length]) {
        input = Buffer.concat([input, bytes.subarray(prev, p)]);
        prev = p;
        for (;;) {
          if (skipper) {
            input = input.subarray(skipper.feed(input, 0));
            if (!skipper.done) break;
            skipper = null;
            continue;
          }
          const r = parseRequestHead(input, 0, L);
          if (r.kind === 'incomplete') break;
          const req = interpretRequest(r.head, L);
          got.push(`${req.method} ${req.target} ${req.headers.length}`);
          input = input.subarray(r.end);
          if (req.body.kind !== 'none') skipper = new RequestBodySkipper(req.body, L.maxBodyBytes);
        }
      }
      const want = reqs.map((r) => `${r.method} ${r.path} ${1 + r.headers.length + (r.body ? 1 : 0)}`);
      return input.length === 0 && skipper === null && JSON.stringify(got) === JSON.stringify(want);
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test('content types by extension, case-insensitive, octet-stream otherwise', (t) => {
  t.is(contentTypeOf('/index.html'), 'text/html; charset=utf-8');
  t.is(contentTypeOf('/A.PNG'), 'image/png');
  t.is(contentTypeOf('/img/logo.svg'), 'image/svg+xml');
  t.is(contentTypeOf('/style.css'), 'text/css; charset=utf-8');
  t.is(contentTypeOf('/noext'), 'application/octet-stream');
  t.is(contentTypeOf('/.htaccess'), 'application/octet-stream');
  t.is(contentTypeOf('/dir.d/file'), 'application/octet-stream');
});

test('property: arbitrary bytes give a head, "incomplete" or an HttpError, never another exception', (t) => {
  const fragment = fc.oneof(
    fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u).toString('latin1')),
    fc.constantFrom('GET ', 'HEAD ', '/', ' HTTP/1.1', ' HTTP/1.0', '\r\n', '\n', '\r', ':', 'Host: x', 'Content-Length: ', 'Transfer-Encoding: chunked', '%', ' ', '\t', '\0'),
  );
  fc.assert(
    fc.property(fc.array(fragment, { maxLength: 30 }), (parts) => {
      const buf = Buffer.from(parts.join(''), 'latin1');
      try {
        const r = parseRequestHead(buf, 0, L);
        if (r.kind === 'head') {
          const req = interpretRequest(r.head, L);
          decodeRequestPath(req.rawPath);
          if (req.body.kind !== 'none') new RequestBodySkipper(req.body, L.maxBodyBytes).feed(buf, r.end);
        }
        return true;
      } catch (e) {
        return e instanceof HttpError && e.status >= 400 && e.status < 600;
      }
    }),
    { numRuns: 5000 },
  );
  t.pass();
});
