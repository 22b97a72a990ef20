// Connection handling: keep-alive, pipelining in order, HTTP/1.0, Connection: close,
// a client that half-closes after its requests, many clients at once, a client that
// does not read, an idle connection.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHostWebServer } from './support/host-webserver.js';
import { HttpResponseReader } from '../appliance/webserver/client/http-response-reader.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));
const BIG = readFileSync(join(SITE, 'big.html'));
const INDEX = readFileSync(join(SITE, 'index.html'));
const CSS = readFileSync(join(SITE, 'style.css'));

async function connect(port: number): Promise<{ socket: Socket; reader: HttpResponseReader }> {
  const socket = createConnection({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return { socket, reader: new HttpResponseReader(socket) };
}

/** Waits (without a deadline: ava's timeout is the limit) until cond() holds. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
}

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

for (const cache of [true, false]) {
  test(`200 keep-alive requests on one connection (cache ${cache ? 'on' : 'off'})`, async (t) => {
    const srv = await startHostWebServer(SITE, { cache: cache ? undefined : false });
    t.teardown(() => srv.close());
    const { socket, reader } = await connect(srv.port);
    t.teardown(() => socket.destroy());
    const paths = ['/', '/big.html', '/style.css'];
    const bodies = [INDEX, BIG, CSS];
    for (let i = 0; i < 200; i++) {
      socket.write(get(paths[i % 3]!));
      const r = await reader.next();
      t.is(r.status, 200);
      if (!r.body.equals(bodies[i % 3]!)) t.fail(`request ${i}: body differs`);
    }
    t.is(srv.server.stats.connectionsAccepted, 1);
    t.is(srv.server.stats.requests, 200);
    t.true(srv.server.buffersAllocated <= 4, `pool made ${srv.server.buffersAllocated} buffers`);
  });
}

test('pipelined requests in one write are answered in order, HEAD and errors included', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  const seq = ['/big.html', '/', '/missing', '/style.css', '/big.html', '/docs', '/img/logo.svg'];
  let batch = '';
  for (const p of seq) batch += get(p);
  batch += `HEAD /big.html HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc` + get('/');
  socket.write(batch);
  const expect: Array<[number, Buffer | null]> = [[200, BIG], [200, INDEX], [404, null], [200, CSS], [200, BIG], [301, null], [200, readFileSync(join(SITE, 'img/logo.svg'))]];
  for (const [status, body] of expect) {
    const r = await reader.next();
    t.is(r.status, status);
    if (body) t.true(r.body.equals(body));
  }
  const head = await reader.next({ head: true });
  t.is(head.headers['content-length'], String(BIG.length));
  t.is((await reader.next()).status, 405);
  t.true((await reader.next()).body.equals(INDEX));
});

test('pipelined requests split at every byte boundary still parse', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  const batch = Buffer.from(get('/style.css', 'X-Long: ' + 'v'.repeat(100) + '\r\n') + `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n` + get('/'));
  socket.setNoDelay(true);
  for (let i = 0; i < batch.length; i++) {
    socket.write(batch.subarray(i, i + 1));
    if (i % 16 === 0) await new Promise((r) => setImmediate(r));
  }
  t.true((await reader.next()).body.equals(CSS));
  t.is((await reader.next()).status, 405);
  t.true((await reader.next()).body.equals(INDEX));
});

test('Connection: close and HTTP/1.0 without keep-alive close after the response', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  for (const req of [get('/', 'Connection: close\r\n'), 'GET / HTTP/1.0\r\n\r\n', 'GET /big.html HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n']) {
    const { socket, reader } = await connect(srv.port);
    t.teardown(() => socket.destroy());
    socket.write(req + get('/style.css'));
    const r = await reader.next();
    t.is(r.status, 200);
    t.is(r.headers['connection'], 'close');
    t.is((await reader.closed()).length, 0, 'nothing after the response: the pipelined request is not answered');
  }
});

test('HTTP/1.0 with Connection: keep-alive stays open and says so', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  for (let i = 0; i < 3; i++) {
    socket.write('GET /big.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const r = await reader.next();
    t.is(r.headers['connection'], 'keep-alive');
    t.true(r.body.equals(BIG));
  }
  t.is(srv.server.stats.connectionsAccepted, 1);
});

test('a client that half-closes after pipelined requests gets every answer, then the close', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.end(get('/big.html') + get('/') + get('/big.html'));
  t.true((await reader.next()).body.equals(BIG));
  t.true((await reader.next()).body.equals(INDEX));
  t.true((await reader.next()).body.equals(BIG));
  t.is((await reader.closed()).length, 0);
});

test('20 clients at once, each fetching every page several times', async (t) => {
  const srv = await startHostWebServer(SITE, { cache: false });
  t.teardown(() => srv.close());
  const sockets: Socket[] = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  const client = async (n: number) => {
    const { socket, reader } = await connect(srv.port);
    sockets.push(socket);
    for (let i = 0; i < 10; i++) {
      const [path, body] = (i + n) % 2 === 0 ? ['/big.html', BIG] : ['/', INDEX];
      socket.write(get(path));
      const r = await reader.next();
      if (r.status !== 200 || !r.body.equals(body)) throw new Error(`client ${n} request ${i}: ${r.status}`);
    }
    socket.end();
    return n;
  };
  const done = await Promise.all(Array.from({ length: 20 }, (_, n) => client(n)));
  t.is(done.length, 20);
  await until(() => srv.server.connectionCount === 0); // every connection finished on the server side too
  t.is(srv.server.stats.connectionsAccepted, 20);
  t.is(srv.server.stats.responses[200], 200);
  t.true(srv.server.buffersAllocated <= 20 * 4);
});

test('a client that does not read is not answered ahead without limit, and reading resumes it', async (t) => {
  const srv = await startHostWebServer(SITE);
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.pause();
  let batch = '';
  for (let i = 0; i < 300; i++) batch += get('/big.html');
  socket.write(batch);
  // Wait until the server stops making progress: it must be held by backpressure.
  let last = -1;
  while (srv.server.stats.requests !== last) {
    last = srv.server.stats.requests;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.true(srv.server.stats.requests < 300, `answered ${srv.server.stats.requests} of 300 without the client reading`);
  socket.resume();
  for (let i = 0; i < 300; i++) {
    const r = await reader.next();
    if (!r.body.equals(BIG)) t.fail(`response ${i}`);
  }
  t.is(srv.server.stats.requests, 300);
});

test('idle connections are closed after idleTimeoutMs', async (t) => {
  const srv = await startHostWebServer(SITE, { idleTimeoutMs: 200 });
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  // Nothing is sent: the sweep closes the connection (no time is asserted, only that it happens).
  t.is((await reader.closed()).length, 0);
  await until(() => srv.server.connectionCount === 0);
  t.is(srv.server.stats.requests, 0);
});

test('close() ends the open connections', async (t) => {
  const srv = await startHostWebServer(SITE, { idleTimeoutMs: 0 });
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.write(get('/'));
  await reader.next();
  srv.server.close();
  await reader.closed();
  t.is(srv.server.connectionCount, 0);
});
