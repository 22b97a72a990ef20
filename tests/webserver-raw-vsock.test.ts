// The webserver on our vsock driver's raw path (vsockListenRaw: ByteConnections, no
// node:stream in the guest), with the device emulator in the same process; the client
// is the device's host API. The request cases of the Duplex-path tests: keep-alive,
// pipelining, HEAD, 404, 400, the big file in every tx mode, the loaned path, a client
// that half-closes, one that leaves early, one that does not read; and the close.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { RawVsockConnection, type TxMode, VsockDriver, type VsockDriverOptions } from '../drivers/virtio-vsock/index.js';
import type { ByteConnection } from '../appliance/webserver/http/byte-connection.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { HttpResponseReader } from '../appliance/webserver/client/http-response-reader.js';
import { type RunningWebserver, type RunWebserverOptions, runWebserver } from '../appliance/webserver/run-guest.js';
import { NodeSiteFiles } from '../appliance/webserver/files/node-site-files.js';
import { LendingSiteFiles } from './support/lending-site-files.js';
import { vsockBufferAllocator, vsockListenRaw } from '../appliance/webserver/listen/vsock-adapters.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));
const BIG = readFileSync(join(SITE, 'big.html'));
const INDEX = readFileSync(join(SITE, 'index.html'));
const CSS = readFileSync(join(SITE, 'style.css'));
const PORT = 8080;

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: guest\r\n${extra}\r\n`;

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

async function setup(
  t: import('ava').ExecutionContext,
  opts: { driver?: VsockDriverOptions; web?: Partial<RunWebserverOptions> } = {},
): Promise<{
  device: VsockDevice;
  driver: VsockDriver;
  web: RunningWebserver;
  accepted: ByteConnection[];
  connect: () => Promise<{ socket: Duplex; reader: HttpResponseReader }>;
}> {
  const device = new VsockDevice({ guestCid: 3 });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr, opts.driver);
  const accepted: ByteConnection[] = [];
  const listenRaw = vsockListenRaw(driver);
  const web = await runWebserver({
    listenRaw: (port, onConnection) =>
      listenRaw(port, (c) => {
        accepted.push(c);
        onConnection(c);
      }),
    files: new NodeSiteFiles(SITE),
    port: PORT,
    bufferAllocator: vsockBufferAllocator(driver),
    ...opts.web,
  });
  t.teardown(async () => {
    await web.close();
    driver.close();
    await tr.close();
  });
  const connect = async () => {
    const socket = await device.host.connect(PORT);
    t.teardown(() => socket.destroy());
    return { socket, reader: new HttpResponseReader(socket) };
  };
  return { device, driver, web, accepted, connect };
}

test('listenRaw serves: 100 keep-alive requests on one connection, no node:stream socket in the guest', async (t) => {
  const { web, connect, driver, accepted } = await setup(t);
  const { socket, reader } = await connect();
  const paths = ['/', '/big.html', '/style.css'];
  const bodies = [INDEX, BIG, CSS];
  for (let i = 0; i < 100; i++) {
    socket.write(get(paths[i % 3]!));
    const r = await reader.next();
    t.is(r.status, 200);
    if (!r.body.equals(bodies[i % 3]!)) t.fail(`request ${i}: body differs`);
  }
  t.is(web.server.stats.connectionsAccepted, 1);
  t.is(web.server.stats.requests, 100);
  t.is(web.port, PORT);
  t.is(driver.connectionCount, 1);
  t.true(accepted.length === 1 && accepted[0] instanceof RawVsockConnection);
});

test('pipelined requests in one write are answered in order: HEAD, 404, 301, 405 with a body to skip', async (t) => {
  const { connect } = await setup(t);
  const { socket, reader } = await connect();
  let batch = '';
  for (const p of ['/big.html', '/', '/missing', '/style.css', '/docs']) batch += get(p);
  batch += `HEAD /big.html HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc` + get('/');
  socket.write(batch);
  const expect: Array<[number, Buffer | null]> = [
    [200, BIG],
    [200, INDEX],
    [404, null],
    [200, CSS],
    [301, null],
  ];
  for (const [status, body] of expect) {
    const r = await reader.next();
    t.is(r.status, status);
    if (body) t.true(r.body.equals(body));
  }
  const head = await reader.next({ head: true });
  t.is(head.status, 200);
  t.is(head.headers['content-length'], String(BIG.length));
  t.is((await reader.next()).status, 405);
  t.true((await reader.next()).body.equals(INDEX));
});

test('a request split at every byte still parses', async (t) => {
  const { connect } = await setup(t);
  const { socket, reader } = await connect();
  const batch = Buffer.from(get('/style.css') + get('/'));
  for (let i = 0; i < batch.length; i++) {
    socket.write(batch.subarray(i, i + 1));
    if (i % 8 === 0) await new Promise((r) => setImmediate(r));
  }
  t.true((await reader.next()).body.equals(CSS));
  t.true((await reader.next()).body.equals(INDEX));
});

test('400 for a malformed request, then the server closes; the next connection is served', async (t) => {
  const { connect, web } = await setup(t);
  const a = await connect();
  a.socket.write('hello\r\n\r\n' + get('/'));
  const r = await a.reader.next();
  t.is(r.status, 400);
  t.is(r.headers['connection'], 'close');
  t.is((await a.reader.closed()).length, 0, 'the pipelined request is not answered');
  const b = await connect();
  b.socket.write(get('/'));
  t.true((await b.reader.next()).body.equals(INDEX));
  t.is(web.server.stats.responses[400], 1);
});

test('HTTP/1.0 and Connection: close: the response, then the close (one connection per request, as ab)', async (t) => {
  const { connect, web, driver } = await setup(t);
  for (let i = 0; i < 20; i++) {
    const { socket, reader } = await connect();
    socket.write(i % 2 ? 'GET / HTTP/1.0\r\n\r\n' : get('/', 'Connection: close\r\n'));
    const r = await reader.next();
    t.is(r.status, 200);
    t.true(r.body.equals(INDEX));
    t.is((await reader.closed()).length, 0);
    socket.end();
  }
  await until(() => web.server.connectionCount === 0 && driver.connectionCount === 0);
  t.is(web.server.stats.connectionsAccepted, 20);
  t.is(web.server.stats.connectionsOpen, 0);
});

for (const txMode of ['two-copy', 'single-copy', 'zero-copy', 'auto'] as const satisfies readonly TxMode[]) {
  test(`big file, cached and pooled, tx mode ${txMode}: byte-identical`, async (t) => {
    const { connect, driver } = await setup(t, { driver: { txMode } });
    const { socket, reader } = await connect();
    const before = { ...driver.stats };
    for (let i = 0; i < 10; i++) {
      socket.write(get('/big.html') + get('/'));
      if (!(await reader.next()).body.equals(BIG)) t.fail(`response ${i} differs`);
      if (!(await reader.next()).body.equals(INDEX)) t.fail(`cached response ${i} differs`);
    }
    const zc = driver.stats.txZeroCopyBytes - before.txZeroCopyBytes;
    if (txMode === 'two-copy' || txMode === 'single-copy') t.is(zc, 0);
    else t.true(zc >= 10 * BIG.length, `zero-copy bytes ${zc}`);
  });
}


test('loaned file bytes: head and first loan as one gathered write, all by zero copy, every loan released', async (t) => {
  const device = new VsockDevice({ guestCid: 3 });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr);
  const files = new LendingSiteFiles(new NodeSiteFiles(SITE), (n) => driver.allocBuffer(n));
  const web = await runWebserver({ listenRaw: vsockListenRaw(driver), files, port: PORT, cache: false, bufferAllocator: vsockBufferAllocator(driver) });
  t.teardown(async () => {
    await web.close();
    driver.close();
    await tr.close();
  });
  const socket = await device.host.connect(PORT);
  t.teardown(() => socket.destroy());
  const reader = new HttpResponseReader(socket);
  const before = { ...driver.stats };
  for (let i = 0; i < 5; i++) {
    socket.write(get('/big.html'));
    if (!(await reader.next()).body.equals(BIG)) t.fail(`response ${i}`);
  }
  t.true(web.server.stats.loanedChunks >= 15);
  t.is(driver.stats.txCopiedBytes - before.txCopiedBytes, 0, 'heads ride in DMA head buffers');
  t.is(driver.stats.txZeroCopyMisses - before.txZeroCopyMisses, 0);
  await until(() => files.outstanding === 0);
  t.is(files.outstanding, 0);
});

test('a client that half-closes after pipelined requests gets every answer, then the close', async (t) => {
  const { connect } = await setup(t);
  const { socket, reader } = await connect();
  socket.end(get('/big.html') + get('/') + get('/big.html'));
  t.true((await reader.next()).body.equals(BIG));
  t.true((await reader.next()).body.equals(INDEX));
  t.true((await reader.next()).body.equals(BIG));
  t.is((await reader.closed()).length, 0);
});

test('a client that leaves early (reset mid-response) costs the server nothing: buffers back, connection gone', async (t) => {
  const { connect, web, driver } = await setup(t, { web: { cache: false } });
  const { socket } = await connect();
  let got = 0;
  socket.on('data', (d: Buffer) => (got += d.length));
  socket.on('error', () => {});
  socket.write(get('/big.html') + get('/big.html') + get('/big.html'));
  await until(() => got > 0);
  socket.destroy(); // RST before the responses are read
  await until(() => web.server.connectionCount === 0);
  await until(() => web.server.buffersIdle === web.server.buffersAllocated);
  t.is(web.server.stats.connectionsOpen, 0);
  await until(() => driver.connectionCount === 0);
  // Still serving.
  const b = await connect();
  b.socket.write(get('/'));
  t.true((await b.reader.next()).body.equals(INDEX));
});

test('a client that does not read holds the server back (credit and drain), and reading resumes it', async (t) => {
  const { connect, web } = await setup(t);
  const { socket, reader } = await connect();
  socket.pause();
  let batch = '';
  for (let i = 0; i < 100; i++) batch += get('/big.html');
  socket.write(batch);
  let last = -1;
  while (web.server.stats.requests !== last) {
    last = web.server.stats.requests;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.true(web.server.stats.requests < 100, `answered ${web.server.stats.requests} of 100 without the client reading`);
  socket.resume();
  for (let i = 0; i < 100; i++) {
    if (!(await reader.next()).body.equals(BIG)) t.fail(`response ${i}`);
  }
  t.is(web.server.stats.requests, 100);
});

test('close() ends the open connections and stops listening', async (t) => {
  const { connect, web, device } = await setup(t, { web: { server: { idleTimeoutMs: 0 } } });
  const { socket, reader } = await connect();
  socket.write(get('/'));
  await reader.next();
  await web.close();
  await reader.closed();
  t.is(web.server.connectionCount, 0);
  await t.throwsAsync(device.host.connect(PORT, { timeoutMs: 5000 }), { code: 'ECONNREFUSED' });
});

test('idle connections are closed by the sweep', async (t) => {
  const { connect, web } = await setup(t, { web: { server: { idleTimeoutMs: 200 } } });
  // The sweep's timer is unref'd (it must not keep a server's process alive), and an idle
  // in-process connection holds nothing else: without a timer of the test's own, the
  // process could run out of work before the sweep and end the test unresolved.
  const keepAlive = setInterval(() => {}, 50);
  try {
    const { reader } = await connect();
    t.is((await reader.closed()).length, 0);
    await until(() => web.server.connectionCount === 0);
    t.is(web.server.stats.requests, 0);
  } finally {
    clearInterval(keepAlive);
  }
});

test('a connection that stops while its input is paused still closes when the client ends (no wait for the idle sweep)', async (t) => {
  const { connect, web } = await setup(t, { web: { server: { idleTimeoutMs: 0 } } });
  const { socket, reader } = await connect();
  // A request the server answers and then closes on, followed by more than the input
  // pause threshold (64 KiB) of pipelined bytes it will never read.
  socket.write(get('/big.html', 'Connection: close\r\n') + get('/').repeat(3000));
  const r = await reader.next();
  t.true(r.body.equals(BIG));
  await reader.closed();
  socket.end();
  await until(() => web.server.connectionCount === 0);
  t.is(web.server.stats.requests, 1);
});
