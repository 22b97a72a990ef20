// The TCP forward host end on a same-thread device and the raw guest driver: each TCP
// connection becomes a vsock connection to the guest port; data, early bytes and
// half-close both ways; a refused guest connect resets the TCP connection.
import test from 'ava';
import { connect, type Socket } from 'node:net';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { TcpForward } from '../drivers/virtio-vsock/host/tcp-forward.js';
import { RawStream, VsockRawDriver } from './support/vsock-raw-driver.js';

async function fixture(guestPort: number) {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  const fwd = new TcpForward({ host: dev.host, listenHost: '127.0.0.1', listenPort: 0, guestPort, connectTimeoutMs: 5000 });
  const addr = await fwd.listen();
  return {
    dev,
    drv,
    port: addr.port,
    close: async () => {
      await fwd.close();
      await drv.close();
    },
  };
}

function client(port: number) {
  const sock: Socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  let data = '';
  let error: NodeJS.ErrnoException | null = null;
  sock.setEncoding('latin1');
  sock.on('data', (c: string) => (data += c));
  sock.on('error', (e) => (error = e));
  const ended = new Promise<void>((resolve) => sock.once('end', resolve));
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  return { sock, received: () => data, error: () => error, ended, closed };
}

test('TCP forward: bytes both ways, early bytes kept, half-close both ways', async (t) => {
  const f = await fixture(80);
  try {
    const g = new RawStream(f.drv, 80, -1);
    const accepted = g.accept();
    const c = client(f.port);
    c.sock.write('GET / HTTP/1.0\r\n\r\n'); // before the guest answered
    await accepted;
    c.sock.end();
    await f.drv.until(() => (g.peerShutdown & 2) !== 0);
    t.is(Buffer.concat(g.received).toString(), 'GET / HTTP/1.0\r\n\r\n');
    await g.write(Buffer.from('HTTP/1.0 200 OK\r\n\r\nhello'));
    g.end();
    await c.ended;
    t.is(c.received(), 'HTTP/1.0 200 OK\r\n\r\nhello');
    await c.closed;
  } finally {
    await f.close();
  }
});

test('TCP forward: two clients get two guest connections', async (t) => {
  const f = await fixture(81);
  try {
    const g1 = new RawStream(f.drv, 81, -1);
    const a1 = g1.accept();
    const c1 = client(f.port);
    await a1;
    const g2 = new RawStream(f.drv, 81, -1);
    const a2 = g2.accept();
    const c2 = client(f.port);
    await a2;
    t.not(g1.hostPort, g2.hostPort);
    await g2.write(Buffer.from('two'));
    await g1.write(Buffer.from('one'));
    g1.end();
    g2.end();
    await c1.ended;
    await c2.ended;
    t.is(c1.received(), 'one');
    t.is(c2.received(), 'two');
    c1.sock.end();
    c2.sock.end();
    await c1.closed;
    await c2.closed;
  } finally {
    await f.close();
  }
});

test('TCP forward: a guest RST resets the TCP connection', async (t) => {
  const f = await fixture(82);
  try {
    const c = client(f.port);
    const req = await f.drv.next((p) => p.header.op === 1 && p.header.dstPort === 82);
    f.drv.send({ srcPort: 82, dstPort: req.header.srcPort, op: 3 });
    await c.closed;
    t.is(c.received(), '');
    t.is(c.error()?.code, 'ECONNRESET');
  } finally {
    await f.close();
  }
});
