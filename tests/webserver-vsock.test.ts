// The webserver and the ping-pong service on our vsock driver, with the device
// emulator in the same process: requests come in through the device's host API. The
// driver's counters prove the file-to-socket path: file bytes leave by descriptors
// pointing at the webserver's DMA body buffers (pooled path), or at buffers lent by
// the files (loaned path), without a copy.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver, type VsockDriverOptions } from '../drivers/virtio-vsock/index.js';
import { TcpForward } from '../drivers/virtio-vsock/host/tcp-forward.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import http from 'node:http';
import { runPingPong } from '../appliance/pingpong/echo-server.js';
import { measurePingPong } from '../appliance/pingpong/ping-pong-client.js';
import { HttpResponseReader } from '../appliance/webserver/client/http-response-reader.js';
import { runWebserver } from '../appliance/webserver/run-guest.js';
import { NodeSiteFiles } from '../appliance/webserver/files/node-site-files.js';
import { LendingSiteFiles } from './support/lending-site-files.js';
import { vsockBufferAllocator, vsockListen } from '../appliance/webserver/listen/vsock-adapters.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));
const BIG = readFileSync(join(SITE, 'big.html'));
const INDEX = readFileSync(join(SITE, 'index.html'));
const PORT = 8080;

async function setup(t: import('ava').ExecutionContext, opts: VsockDriverOptions = {}) {
  const device = new VsockDevice({ guestCid: 3 });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr, opts);
  t.teardown(async () => {
    driver.close();
    await tr.close();
  });
  return { device, driver };
}

async function hostConnect(device: VsockDevice, port: number): Promise<{ socket: Duplex; reader: HttpResponseReader }> {
  const socket = await device.host.connect(port);
  return { socket, reader: new HttpResponseReader(socket) };
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: guest\r\n\r\n`;

test('webserver on a vsock server: pages byte-identical, big.html body sent by zero copy from DMA body buffers', async (t) => {
  const { device, driver } = await setup(t);
  const web = await runWebserver({
    listen: vsockListen(driver),
    files: new NodeSiteFiles(SITE),
    port: PORT,
    cache: false, // every body through the body buffers
    bufferAllocator: vsockBufferAllocator(driver),
  });
  t.teardown(() => web.close());
  const { socket, reader } = await hostConnect(device, PORT);
  t.teardown(() => socket.destroy());
  const before = { ...driver.stats };
  const N = 20;
  for (let i = 0; i < N; i++) {
    socket.write(get('/big.html'));
    const r = await reader.next();
    t.is(r.status, 200);
    if (!r.body.equals(BIG)) t.fail(`response ${i} differs`);
  }
  const zc = driver.stats.txZeroCopyBytes - before.txZeroCopyBytes;
  const copied = driver.stats.txCopiedBytes - before.txCopiedBytes;
  // Heads travel in front of the file bytes in the same DMA buffer: all of it by zero copy.
  t.true(zc >= N * BIG.length, `zero-copy bytes ${zc}`);
  t.is(copied, 0, 'no byte of the responses was copied by the driver');
  t.is(driver.stats.txZeroCopyMisses, 0);
  t.true(web.server.stats.pooledChunks >= N * 3);
  t.true(web.server.buffersAllocated <= 4, `body buffers made: ${web.server.buffersAllocated}`);
  // Small pages and errors work too.
  socket.write(get('/') + get('/nope') + get('/docs'));
  t.true((await reader.next()).body.equals(INDEX));
  t.is((await reader.next()).status, 404);
  t.is((await reader.next()).status, 301);
});

test('webserver on vsock: pipelining, HEAD, and many host connections at once', async (t) => {
  const { device, driver } = await setup(t);
  const web = await runWebserver({ listen: vsockListen(driver), files: new NodeSiteFiles(SITE), port: PORT, bufferAllocator: vsockBufferAllocator(driver) });
  t.teardown(() => web.close());
  const clients = await Promise.all(Array.from({ length: 10 }, () => hostConnect(device, PORT)));
  t.teardown(() => clients.forEach((c) => c.socket.destroy()));
  await Promise.all(
    clients.map(async ({ socket, reader }, n) => {
      socket.write(get('/big.html') + `HEAD /big.html HTTP/1.1\r\nHost: g\r\n\r\n` + get('/') + get('/big.html'));
      const a = await reader.next();
      const h = await reader.next({ head: true });
      const b = await reader.next();
      const c = await reader.next();
      if (!a.body.equals(BIG) || h.headers['content-length'] !== String(BIG.length) || !b.body.equals(INDEX) || !c.body.equals(BIG)) {
        throw new Error(`client ${n}: wrong responses`);
      }
    }),
  );
  // The server counts a response after its last write was queued: let the counts settle.
  while ((web.server.stats.responses[200] ?? 0) < 40) await new Promise((r) => setImmediate(r));
  t.is(web.server.stats.responses[200], 40);
});


test('loaned file bytes (the virtio-fs DMA shape) go to the device as they are and are released after', async (t) => {
  const { device, driver } = await setup(t);
  const files = new LendingSiteFiles(new NodeSiteFiles(SITE), (n) => driver.allocBuffer(n));
  const web = await runWebserver({ listen: vsockListen(driver), files, port: PORT, cache: false, bufferAllocator: vsockBufferAllocator(driver) });
  t.teardown(() => web.close());
  const { socket, reader } = await hostConnect(device, PORT);
  t.teardown(() => socket.destroy());
  const before = { ...driver.stats };
  const N = 10;
  for (let i = 0; i < N; i++) {
    socket.write(get('/big.html'));
    const r = await reader.next();
    if (!r.body.equals(BIG)) t.fail(`response ${i} differs`);
  }
  t.true(files.lent >= N * 3);
  t.true(web.server.stats.loanedChunks >= N * 3);
  t.is(web.server.stats.pooledChunks, 0);
  t.true(driver.stats.txZeroCopyBytes - before.txZeroCopyBytes >= N * BIG.length);
  t.is(driver.stats.txCopiedBytes - before.txCopiedBytes, 0, 'heads ride in DMA head buffers too');
  // Every loan comes back once its write completed; the last one may still be settling.
  while (files.outstanding > 0) await new Promise((r) => setImmediate(r));
  t.is(files.outstanding, 0);
  // Small files do not take the loaned path (below loanMinBytes).
  socket.write(get('/'));
  t.true((await reader.next()).body.equals(INDEX));
});

test('ping-pong service on a vsock server, measured from the host side', async (t) => {
  const { device, driver } = await setup(t);
  const pp = await runPingPong({ listen: vsockListen(driver) });
  t.teardown(() => pp.close());
  const socket = await device.host.connect(pp.port);
  t.teardown(() => socket.destroy());
  const results = await measurePingPong(socket, { sizes: [8192, 16384], iterations: 50, warmup: 5 });
  t.deepEqual(
    results.map((r) => [r.sizeBytes, r.count]),
    [
      [8192, 50],
      [16384, 50],
    ],
  );
  for (const r of results) t.true(r.p50Us > 0 && r.p50Us <= r.p99Us && r.p99Us <= r.maxUs);
  t.is(pp.service.stats.bytesEchoed, 55 * (8192 + 16384));
});

test('the whole host path without QEMU: Node http client -> TCP forward -> device -> driver -> webserver', async (t) => {
  const { device, driver } = await setup(t);
  const web = await runWebserver({ listen: vsockListen(driver), files: new NodeSiteFiles(SITE), port: PORT, bufferAllocator: vsockBufferAllocator(driver) });
  t.teardown(() => web.close());
  const fwd = new TcpForward({ host: device.host, listenHost: '127.0.0.1', listenPort: 0, guestPort: PORT });
  const addr = await fwd.listen();
  t.teardown(() => fwd.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const fetchOne = (path: string) =>
    new Promise<{ status: number; type: string | undefined; body: Buffer }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: addr.port, path, agent }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: Buffer.concat(parts) }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => fetchOne(i % 2 ? '/big.html' : '/')));
  results.forEach((r, i) => {
    t.is(r.status, 200);
    t.true(r.body.equals(i % 2 ? BIG : INDEX));
    t.is(r.type, 'text/html; charset=utf-8');
  });
  t.is((await fetchOne('/missing')).status, 404);
  t.true(web.server.stats.connectionsAccepted <= 4, 'the agent kept its connections alive');
});
