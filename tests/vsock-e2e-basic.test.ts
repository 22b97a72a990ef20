// The driver against the real device emulator in the same thread: connections both
// ways, refusal, half-close and close order, TRANSPORT_RESET, and Node's http.Server
// serving over a vsock socket.
import test from 'ava';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver, type VsockDriverOptions, type VsockSocket } from '../drivers/virtio-vsock/index.js';
import { collect } from './support/collect-stream.js';

const GUEST_CID = 7;

async function setup(opts: VsockDriverOptions = {}): Promise<{ device: VsockDevice; driver: VsockDriver; stop: () => Promise<void> }> {
  const device = new VsockDevice({ guestCid: GUEST_CID });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr, { connectTimeoutMs: 300_000, ...opts });
  return {
    device,
    driver,
    stop: async () => {
      driver.close();
      await tr.close();
    },
  };
}

/** Host-side echo; host socket errors (resets are expected in some tests) are ignored. */
function echo(s: Duplex): void {
  s.on('error', () => {});
  s.pipe(s);
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

test('guest connects to a host port; bytes echo back intact', async (t) => {
  const { device, driver, stop } = await setup();
  const handle = device.host.listen(5000, (s) => echo(s));
  try {
    const sock = driver.connect({ cid: 2, port: 5000 });
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const data = pattern(3 << 20, 1);
    const back = collect(sock);
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.end(data);
    const got = await back;
    t.is(got.length, data.length);
    t.true(got.equals(data));
    await closed;
  } finally {
    handle.close();
    await stop();
  }
});

test('host connects to a guest server; both directions, SHA-256 equal', async (t) => {
  const { device, driver, stop } = await setup();
  try {
    const toHost = pattern(2 << 20, 2);
    const toGuest = pattern(1 << 20, 3);
    let guestGot: Promise<Buffer> | null = null;
    const server = driver.createServer((s) => {
      guestGot = collect(s);
      s.end(toHost);
    });
    await new Promise<void>((resolve) => server.listen(6000, resolve));
    const host = await device.host.connect(6000, { timeoutMs: 300_000 });
    const hostGot = collect(host);
    host.end(toGuest);
    t.is(createHash('sha256').update(await hostGot).digest('hex'), createHash('sha256').update(toHost).digest('hex'));
    t.true((await guestGot!).equals(toGuest));
    const closed = new Promise<void>((resolve) => server.once('close', resolve));
    server.close();
    await closed;
  } finally {
    await stop();
  }
});

test('connect to a port nobody listens on fails with ECONNREFUSED', async (t) => {
  const { driver, stop } = await setup();
  try {
    const sock = driver.connect({ cid: 2, port: 4321 });
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => sock.once('error', resolve));
    t.is(err.code, 'ECONNREFUSED');
    t.is(driver.connectionCount, 0);
  } finally {
    await stop();
  }
});

test('host connect to a guest port without a server is refused', async (t) => {
  const { device, stop } = await setup();
  try {
    await t.throwsAsync(device.host.connect(6001, { timeoutMs: 60_000 }), { code: 'ECONNREFUSED' });
  } finally {
    await stop();
  }
});

test('half-close: the guest ends, the host still answers; events in net.Socket order', async (t) => {
  const { device, driver, stop } = await setup();
  const handle = device.host.listen(5001, (s) => {
    s.on('error', () => {});
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => {
      // The guest sent no more; answer after its EOF, then end our side.
      s.end(Buffer.from(`got ${Buffer.concat(parts).length} bytes`));
    });
  });
  try {
    const sock = driver.connect({ cid: 2, port: 5001 });
    const events: string[] = [];
    for (const e of ['connect', 'finish', 'end', 'close']) sock.on(e, () => events.push(e));
    sock.on('error', (e) => events.push(`error ${(e as NodeJS.ErrnoException).code}`));
    const answer = collect(sock);
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.end(Buffer.alloc(100_000, 1));
    t.is((await answer).toString(), 'got 100000 bytes');
    await closed;
    t.deepEqual(events, ['connect', 'finish', 'end', 'close']);
    // The connection is gone on both sides once the close handshake ran.
    for (let i = 0; i < 10000 && (driver.connectionCount > 0 || device.connections > 0); i++) await new Promise((r) => setImmediate(r));
    t.is(driver.connectionCount, 0);
    t.is(device.connections, 0);
  } finally {
    handle.close();
    await stop();
  }
});

test('the host closes first: the guest sees end then close, no error', async (t) => {
  const { device, driver, stop } = await setup();
  const handle = device.host.listen(5002, (s) => {
    s.on('error', () => {});
    s.resume();
    s.end('bye');
  });
  try {
    const sock = driver.connect({ cid: 2, port: 5002 });
    const events: string[] = [];
    for (const e of ['connect', 'end', 'finish', 'close']) sock.on(e, () => events.push(e));
    sock.on('error', (e) => events.push(`error ${(e as NodeJS.ErrnoException).code}`));
    const closed = new Promise((resolve) => sock.once('close', resolve));
    t.is((await collect(sock)).toString(), 'bye');
    await closed;
    t.deepEqual(events, ['connect', 'end', 'finish', 'close']);
  } finally {
    handle.close();
    await stop();
  }
});

test('host destroy resets the guest socket with ECONNRESET', async (t) => {
  const { device, driver, stop } = await setup();
  let hostSock: Duplex | null = null;
  const handle = device.host.listen(5003, (s) => {
    s.on('error', () => {});
    hostSock = s;
  });
  try {
    const sock = driver.connect({ cid: 2, port: 5003 });
    await new Promise((resolve) => sock.once('connect', resolve));
    sock.write('x');
    for (let i = 0; i < 10000 && hostSock === null; i++) await new Promise((r) => setImmediate(r));
    const err = new Promise<NodeJS.ErrnoException>((resolve) => sock.once('error', resolve));
    hostSock!.destroy();
    t.is((await err).code, 'ECONNRESET');
  } finally {
    handle.close();
    await stop();
  }
});

test('TRANSPORT_RESET: every guest socket fails with ECONNRESET; new connections work', async (t) => {
  const { device, driver, stop } = await setup();
  const handle = device.host.listen(5004, (s) => echo(s));
  try {
    const socks: VsockSocket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = driver.connect({ cid: 2, port: 5004 });
      await new Promise((resolve) => s.once('connect', resolve));
      socks.push(s);
    }
    const errs = socks.map((s) => new Promise<NodeJS.ErrnoException>((resolve) => s.once('error', resolve)));
    t.true(device.transportReset());
    t.deepEqual((await Promise.all(errs)).map((e) => e.code), ['ECONNRESET', 'ECONNRESET', 'ECONNRESET']);
    t.is(driver.connectionCount, 0);
    const s = driver.connect({ cid: 2, port: 5004 });
    const back = collect(s);
    s.end('after reset');
    t.is((await back).toString(), 'after reset');
  } finally {
    handle.close();
    await stop();
  }
});

test("Node's http.Server answers a request over a vsock socket", async (t) => {
  const { device, driver, stop } = await setup();
  const httpServer = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      res.setHeader('content-type', 'text/plain');
      res.end(`${req.method} ${req.url} from ${req.socket.remoteAddress}: ${body.length} bytes`);
    });
  });
  try {
    const server = driver.createServer((s) => httpServer.emit('connection', s));
    await new Promise<void>((resolve) => server.listen(80, resolve));
    const host = await device.host.connect(80, { timeoutMs: 300_000 });
    const response = collect(host);
    const body = 'a'.repeat(5000);
    host.write(`POST /upload HTTP/1.1\r\nHost: guest\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    const text = (await response).toString();
    t.regex(text, /^HTTP\/1\.1 200 OK\r\n/);
    t.regex(text, /content-type: text\/plain/i);
    t.true(text.endsWith('POST /upload from vsock:2: 5000 bytes'));
    host.end();
    server.close();
  } finally {
    httpServer.close();
    await stop();
  }
});

test('keep-alive: two requests on one vsock connection', async (t) => {
  const { device, driver, stop } = await setup();
  let n = 0;
  const httpServer = http.createServer((req, res) => res.end(`reply ${++n} to ${req.url}`));
  try {
    const server = driver.createServer((s) => httpServer.emit('connection', s));
    await new Promise<void>((resolve) => server.listen(81, resolve));
    const host = await device.host.connect(81, { timeoutMs: 300_000 });
    let text = '';
    host.on('data', (d: Buffer) => (text += d.toString()));
    host.write('GET /a HTTP/1.1\r\nHost: g\r\n\r\n');
    for (let i = 0; i < 100000 && !text.includes('reply 1 to /a'); i++) await new Promise((r) => setImmediate(r));
    host.write('GET /b HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n');
    await new Promise((resolve) => host.once('end', resolve));
    t.true(text.includes('reply 1 to /a'));
    t.true(text.includes('reply 2 to /b'));
    server.close();
  } finally {
    httpServer.close();
    await stop();
  }
});

test('without EVENT_IDX (notification flags only) streams and zero-copy completions still flow', async (t) => {
  const { device, driver, stop } = await setup({ eventIdx: false, txMode: 'auto' });
  const handle = device.host.listen(5005, (s) => echo(s));
  try {
    t.false(driver.eventIdx);
    const sock = driver.connect({ cid: 2, port: 5005 });
    const back = collect(sock);
    const dma = driver.allocBuffer(1 << 20);
    dma.set(pattern(1 << 20, 9));
    const plain = pattern(1 << 20, 10);
    await new Promise<void>((resolve) => sock.write(dma, () => resolve())); // zero copy: completes on the used ring
    sock.end(plain);
    const got = await back;
    t.true(got.equals(Buffer.concat([dma, plain])));
    t.is(driver.stats.txZeroCopyBytes, 1 << 20);
    driver.freeBuffer(dma);
  } finally {
    handle.close();
    await stop();
  }
});
