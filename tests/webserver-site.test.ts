// The sample site over node:net and node:fs: every file byte-identical, content types,
// HEAD, 404, directory index and redirect, Date and Server headers; with and without
// the small-file cache.
import test from 'ava';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHostWebServer } from './support/host-webserver.js';
import { HttpResponseReader } from '../appliance/webserver/client/http-response-reader.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));

function siteFiles(dir = SITE, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) siteFiles(p, out);
    else out.push('/' + relative(SITE, p).split('\\').join('/'));
  }
  return out;
}

async function connect(port: number) {
  const socket = createConnection({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return { socket, reader: new HttpResponseReader(socket) };
}

function get(path: string, method = 'GET', extra = ''): string {
  return `${method} ${path} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`;
}

test('the sample site has its pages, a stylesheet, images and a 133 KiB big.html', (t) => {
  const files = siteFiles();
  for (const f of ['/index.html', '/about.html', '/style.css', '/img/logo.svg', '/img/favicon.png', '/docs/index.html', '/big.html']) t.true(files.includes(f), f);
  t.is(statSync(join(SITE, 'big.html')).size, 133 * 1024);
  const png = readFileSync(join(SITE, 'img/favicon.png'));
  t.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
});

for (const cache of [true, false]) {
  test(`every file of the site comes back byte-identical with type and length (cache ${cache ? 'on' : 'off'})`, async (t) => {
    const srv = await startHostWebServer(SITE, { cache: cache ? undefined : false });
    t.teardown(() => srv.close());
    const { socket, reader } = await connect(srv.port);
    t.teardown(() => socket.destroy());
    const types: Record<string, string> = { html: 'text/html; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml', png: 'image/png' };
    // Twice, so the second round is served from the cache when it is on.
    for (let round = 0; round < 2; round++) {
      for (const f of siteFiles()) {
        socket.write(get(f));
        const r = await reader.next();
        t.is(r.status, 200, f);
        t.true(r.body.equals(readFileSync(join(SITE, f))), `${f} bytes`);
        t.is(r.headers['content-length'], String(r.body.length));
        const ext = f.slice(f.lastIndexOf('.') + 1);
        t.is(r.headers['content-type'], types[ext] ?? 'application/octet-stream', f);
        t.is(r.headers['server'], 'tsvirtio-webserver');
        t.regex(r.headers['date'] ?? '', /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
        t.false('connection' in r.headers);
      }
    }
    if (cache) t.true(srv.server.stats.cacheHits > 0);
    else t.is(srv.server.stats.cacheHits, 0);
  });
}

test('HEAD gives the GET headers and no body', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.write(get('/big.html', 'HEAD') + get('/big.html'));
  const head = await reader.next({ head: true });
  const full = await reader.next();
  t.is(head.status, 200);
  t.is(head.headers['content-length'], String(133 * 1024));
  t.is(head.headers['content-type'], full.headers['content-type']);
  t.is(full.body.length, 133 * 1024);
  // The GET response follows the HEAD's head directly: no body bytes were sent for HEAD.
  t.true(full.body.equals(readFileSync(join(SITE, 'big.html'))));
});

test('directories: / and /docs/ serve index.html, /docs redirects to /docs/ keeping the query', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.write(get('/') + get('/docs/') + get('/docs') + get('/docs?x=1') + get('/img'));
  const root = await reader.next();
  t.true(root.body.equals(readFileSync(join(SITE, 'index.html'))));
  const docs = await reader.next();
  t.true(docs.body.equals(readFileSync(join(SITE, 'docs/index.html'))));
  const redirect = await reader.next();
  t.is(redirect.status, 301);
  t.is(redirect.headers['location'], '/docs/');
  const withQuery = await reader.next();
  t.is(withQuery.headers['location'], '/docs/?x=1');
  const img = await reader.next();
  t.is(img.status, 301);
  socket.write(get('/img/'));
  t.is((await reader.next()).status, 404, 'a directory without index.html is 404, not a listing');
});

test('404 for missing paths, for a file with a trailing slash, and the connection stays open', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  for (const p of ['/nope.html', '/docs/nope', '/index.html/', '/index.html/x', '/%E2%9C%93.html']) {
    socket.write(get(p));
    const r = await reader.next();
    t.is(r.status, 404, p);
    t.is(r.headers['content-type'], 'text/plain; charset=utf-8');
  }
  socket.write(get('/index.html'));
  t.is((await reader.next()).status, 200);
  t.is(srv.server.stats.responses[404], 5);
});

test('percent-encoded names are decoded once and query strings ignored', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.write(get('/%69ndex%2Ehtml') + get('/index.html?v=3&x=%2e%2e') + get('http://test/about.html'));
  const index = readFileSync(join(SITE, 'index.html'));
  t.true((await reader.next()).body.equals(index));
  t.true((await reader.next()).body.equals(index));
  t.true((await reader.next()).body.equals(readFileSync(join(SITE, 'about.html'))), 'absolute-form target');
});
