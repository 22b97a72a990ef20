// What the webserver refuses, and how: 400 for malformed requests, 405 with Allow,
// 403/400 for paths that try to leave the site root, 413/414/431 for what is too
// large, 505 for other HTTP versions. Fatal errors close the connection after the
// answer; the server keeps serving others.
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type HostWebServer, startHostWebServer } from './support/host-webserver.js';
import { HttpResponseReader, type RawHttpResponse } from '../appliance/webserver/client/http-response-reader.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));

async function connect(port: number) {
  const socket = createConnection({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return { socket, reader: new HttpResponseReader(socket) };
}

/** Sends raw bytes on a new connection; the first response, and whether the server then closed. */
async function exchange(srv: HostWebServer, raw: string | Buffer): Promise<{ r: RawHttpResponse; closed: boolean }> {
  const { socket, reader } = await connect(srv.port);
  try {
    socket.write(raw);
    const r = await reader.next();
    let closed = false;
    if (r.headers['connection'] === 'close') {
      await reader.closed();
      closed = true;
    }
    return { r, closed };
  } finally {
    socket.destroy();
  }
}

async function server(t: import('ava').ExecutionContext, root = SITE, opts = {}): Promise<HostWebServer> {
  const srv = await startHostWebServer(root, opts);
  t.teardown(() => srv.close());
  return srv;
}

const BAD_REQUESTS: Array<[string, string]> = [
  ['garbage line', 'hello\r\n\r\n'],
  ['bare LF lines', 'GET / HTTP/1.1\nHost: x\n\n'],
  ['binary', '\x00\x01\x02\x03\r\n\r\n'],
  ['two spaces', 'GET  / HTTP/1.1\r\nHost: x\r\n\r\n'],
  ['no version', 'GET /\r\nHost: x\r\n\r\n'],
  ['lower-case protocol', 'GET / http/1.1\r\nHost: x\r\n\r\n'],
  ['header without colon', 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'],
  ['space before colon', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n'],
  ['obsolete folding', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n'],
  ['control character in value', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n'],
  ['HTTP/1.1 without Host', 'GET / HTTP/1.1\r\n\r\n'],
  ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['unsupported Transfer-Encoding', 'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n'],
  ['gzip, chunked', 'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'],
  ['Transfer-Encoding and Content-Length', 'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding in HTTP/1.0', 'GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Content-Length not a number', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n'],
  ['negative Content-Length', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n'],
  ['conflicting Content-Lengths', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
  ['conflicting Content-Length list', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!'],
  ['bad chunk size', 'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'],
  ['chunk without CRLF', 'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n'],
  ['fragment in target', 'GET /index.html#top HTTP/1.1\r\nHost: x\r\n\r\n'],
  ['asterisk target', 'GET * HTTP/1.1\r\nHost: x\r\n\r\n'],
  ['raw non-ASCII in target', Buffer.concat([Buffer.from('GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1')]).toString('latin1')],
];

for (const [name, raw] of BAD_REQUESTS) {
  test(`400 and close: ${name}`, async (t) => {
    const srv = await server(t);
    const { r, closed } = await exchange(srv, Buffer.from(raw, 'latin1'));
    t.is(r.status, 400, r.body.toString());
    t.is(r.headers['connection'], 'close');
    t.true(closed);
    t.regex(r.body.toString(), /^400 Bad Request: ./);
  });
}

test('garbage is answered at once, before any blank line arrives', async (t) => {
  const srv = await server(t);
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.write('\x16\x03\x01\x02\x00'); // the start of a TLS ClientHello
  t.is((await reader.next()).status, 400);
  await reader.closed();
  const { socket: s2, reader: r2 } = await connect(srv.port);
  t.teardown(() => s2.destroy());
  s2.write('GET / HTTP/1.1\r\nHost: x\r\nX: y\n'); // bare LF inside the header block
  t.is((await r2.next()).status, 400);
});

test('505 for HTTP/2.0 and HTTP/0.9-style versions', async (t) => {
  const srv = await server(t);
  t.is((await exchange(srv, 'GET / HTTP/2.0\r\nHost: x\r\n\r\n')).r.status, 505);
  t.is((await exchange(srv, 'GET / HTTP/0.9\r\nHost: x\r\n\r\n')).r.status, 505);
});

test('405 with Allow for other methods; a POST body is skipped and the connection goes on', async (t) => {
  const srv = await server(t);
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  for (const m of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'BREW']) {
    socket.write(`${m} /index.html HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await reader.next();
    t.is(r.status, 405, m);
    t.is(r.headers['allow'], 'GET, HEAD');
    t.false('connection' in r.headers);
  }
  socket.write('POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello=worldGET /about.html HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is((await reader.next()).status, 405);
  t.is((await reader.next()).status, 200);
  socket.write('POST /form HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is((await reader.next()).status, 405);
  t.is((await reader.next()).status, 200, 'the request after a chunked body');
});

// A site folder with a secret next to it, and a symlink inside pointing out.
function siteWithSecret(): { root: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'webserver-escape-'));
  const root = join(dir, 'site');
  mkdirSync(join(root, 'sub'), { recursive: true });
  writeFileSync(join(root, 'index.html'), '<p>site</p>');
  writeFileSync(join(root, 'sub', 'page.html'), '<p>sub</p>');
  writeFileSync(join(dir, 'secret.txt'), 'TOP-SECRET');
  symlinkSync(join(dir, 'secret.txt'), join(root, 'link.txt'));
  symlinkSync(dir, join(root, 'linkdir'));
  return { root, dir };
}

const ESCAPES = [
  '/../secret.txt',
  '/sub/../../secret.txt',
  '/%2e%2e/secret.txt',
  '/%2E%2E/secret.txt',
  '/.%2e/secret.txt',
  '/%2e./secret.txt',
  '/sub/%2e%2e/%2e%2e/secret.txt',
  '/..%2fsecret.txt',
  '/..%2Fsecret.txt',
  '/%2e%2e%2fsecret.txt',
  '/..\\secret.txt',
  '/..%5csecret.txt',
  '/%5c..%5csecret.txt',
  '//secret.txt',
  '/%2f..%2fsecret.txt',
  '/%2fetc/passwd',
  '//etc/passwd',
  '/./index.html',
  '/%00/../secret.txt',
  '/index.html%00.txt',
  '/%c0%ae%c0%ae/secret.txt',
  '/%25%32%65%25%32%65/secret.txt',
  '/%zz/secret.txt',
  '/%2',
  '/link.txt',
  '/linkdir/secret.txt',
];

test('paths that try to leave the site root are refused and never serve the secret', async (t) => {
  const { root, dir } = siteWithSecret();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const srv = await server(t, root);
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  for (const p of ESCAPES) {
    socket.write(`GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await reader.next();
    t.true(r.status >= 400 && r.status < 500, `${p} -> ${r.status}`);
    t.false(r.body.toString().includes('TOP-SECRET'), p);
    t.false('connection' in r.headers, `${p}: a refused path does not close the connection`);
  }
  socket.write('GET /sub/page.html HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is((await reader.next()).body.toString(), '<p>sub</p>');
});

test('refusals by kind: 403 for traversal, 400 for bad encoding, 404 for symlinks', async (t) => {
  const { root, dir } = siteWithSecret();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const srv = await server(t, root);
  const status = async (p: string) => (await exchange(srv, `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`)).r.status;
  t.is(await status('/../secret.txt'), 403);
  t.is(await status('/%2e%2e/secret.txt'), 403);
  t.is(await status('/..%2fsecret.txt'), 403);
  t.is(await status('/..\\secret.txt'), 403);
  t.is(await status('//secret.txt'), 403);
  t.is(await status('/%00'), 400);
  t.is(await status('/%zz'), 400);
  t.is(await status('/%c0%ae%c0%ae/secret.txt'), 400);
  t.is(await status('/link.txt'), 404);
  t.is(await status('/%25%32%65%25%32%65/secret.txt'), 404, 'decoded once: a file named %2e%2e, which is not there');
});

test('413 for a body over the limit, by Content-Length and chunked', async (t) => {
  const srv = await server(t, SITE, { limits: { maxBodyBytes: 1000 } });
  const a = await exchange(srv, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n');
  t.is(a.r.status, 413);
  t.true(a.closed);
  const chunk = 'x'.repeat(600);
  const b = await exchange(srv, `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n${chunk}\r\n258\r\n${chunk}\r\n0\r\n\r\n`);
  t.is(b.r.status, 413);
  t.true(b.closed);
  const ok = await exchange(srv, `GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n${'y'.repeat(1000)}`);
  t.is(ok.r.status, 200, 'a body at the limit is fine');
});

test('414 for an overlong target, complete or still arriving', async (t) => {
  const srv = await server(t, SITE, { limits: { maxUriBytes: 1024 } });
  const long = '/' + 'a'.repeat(1024);
  const a = await exchange(srv, `GET ${long} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.is(a.r.status, 414);
  t.true(a.closed);
  const b = await exchange(srv, `GET /${'b'.repeat(5000)}`); // no line end yet
  t.is(b.r.status, 414);
  const fits = await exchange(srv, `GET /${'c'.repeat(1023)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.is(fits.r.status, 404, 'a target at the limit is parsed');
});

test('431 for too many header bytes or fields', async (t) => {
  const srv = await server(t, SITE, { limits: { maxHeaderBytes: 4096, maxHeaderCount: 20 } });
  const big = await exchange(srv, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'z'.repeat(5000)}\r\n\r\n`);
  t.is(big.r.status, 431);
  t.true(big.closed);
  const arriving = await exchange(srv, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'z'.repeat(5000)}`);
  t.is(arriving.r.status, 431, 'refused before the header block ends');
  let many = 'GET / HTTP/1.1\r\nHost: x\r\n';
  for (let i = 0; i < 20; i++) many += `X-${i}: ${i}\r\n`;
  t.is((await exchange(srv, many + '\r\n')).r.status, 431);
  let enough = 'GET / HTTP/1.1\r\nHost: x\r\n';
  for (let i = 0; i < 19; i++) enough += `X-${i}: ${i}\r\n`;
  t.is((await exchange(srv, enough + '\r\n')).r.status, 200);
});

test('after every kind of refusal the server still serves new connections', async (t) => {
  const srv = await server(t);
  for (const [, raw] of BAD_REQUESTS.slice(0, 5)) await exchange(srv, raw);
  const { r } = await exchange(srv, 'GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is(r.status, 200);
  t.is(srv.server.stats.responses[400], 5);
});

test('random bytes on many connections: each gets at most a 4xx/5xx and a close, the server keeps serving', async (t) => {
  const srv = await server(t);
  const inputs = fc.sample(
    fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((u) => Buffer.from(u)),
      fc.array(fc.constantFrom('GET ', '/', ' HTTP/1.1', '\r\n', '\n', 'Host: x', ':', '%2e', '..', 'Content-Length: 3', 'Transfer-Encoding: chunked', '\r\n\r\n'), { minLength: 1, maxLength: 12 }).map((a) => Buffer.from(a.join(''))),
    ),
    { numRuns: 60, seed: 7 },
  );
  for (const input of inputs) {
    const socket = createConnection({ host: '127.0.0.1', port: srv.port });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const got: Buffer[] = [];
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => {});
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.end(input); // the client finishes: the server answers what it can, then closes
    await closed;
    const text = Buffer.concat(got).toString('latin1');
    for (const m of text.matchAll(/HTTP\/1\.1 (\d{3})/g)) t.true(Number(m[1]) >= 200, text.slice(0, 80));
  }
  const ok = await exchange(srv, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.is(ok.r.status, 200);
  t.is(srv.server.stats.aborted, 0, 'no internal error');
});
