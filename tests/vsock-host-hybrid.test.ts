// The hybrid vsock Unix back end (Firecracker convention) on a same-thread device and
// the raw guest driver: CONNECT handshake, bad first lines, early bytes, half-close,
// guest connects to <uds-path>_<port>, RST when nothing listens there.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { HybridVsockBackend, parseConnectLine } from '../drivers/virtio-vsock/host/hybrid-unix.js';
import { RawStream, VsockRawDriver } from './support/vsock-raw-driver.js';

interface Fixture {
  dev: VsockDevice;
  drv: VsockRawDriver;
  backend: HybridVsockBackend;
  udsPath: string;
  cleanup: Array<() => unknown>;
  close(): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-hybrid-'));
  const udsPath = join(dir, 'vm.vsock');
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  const backend = new HybridVsockBackend({ host: dev.host, udsPath, connectTimeoutMs: 5000 });
  await backend.listen();
  const cleanup: Array<() => unknown> = [];
  return {
    dev,
    drv,
    backend,
    udsPath,
    cleanup,
    close: async () => {
      for (const f of cleanup) await f();
      await backend.close();
      await drv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Connects to the Unix socket; collects everything received until close. */
function client(path: string): { sock: Socket; received: () => string; ended: Promise<void>; closed: Promise<void> } {
  const sock = connect({ path, allowHalfOpen: true });
  let data = '';
  sock.setEncoding('latin1');
  sock.on('data', (c: string) => (data += c));
  sock.on('error', () => {});
  const ended = new Promise<void>((resolve) => sock.once('end', resolve));
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  return { sock, received: () => data, ended, closed };
}

async function waitFor(pred: () => boolean, sock: Socket): Promise<void> {
  while (!pred()) await new Promise<void>((resolve) => sock.once('data', () => resolve()));
}

test('parseConnectLine', (t) => {
  t.deepEqual(parseConnectLine('CONNECT 52'), { port: 52 });
  t.deepEqual(parseConnectLine('connect   4294967295 '), { port: 4294967295 });
  t.true('error' in parseConnectLine('CONNECT'));
  t.true('error' in parseConnectLine('CONNECT 4294967296'));
  t.true('error' in parseConnectLine('CONNECT -1'));
  t.true('error' in parseConnectLine('CONNECT 1 2'));
  t.true('error' in parseConnectLine('LISTEN 5'));
  t.true('error' in parseConnectLine(''));
});

test('CONNECT <port>: OK <host_port>, early bytes kept, data and half-close both ways', async (t) => {
  const f = await fixture();
  try {
    const g = new RawStream(f.drv, 5000, -1);
    const accepted = g.accept();
    const c = client(f.udsPath);
    c.sock.write('CONNECT 5000\nearly bytes in the same write|');
    await accepted;
    await waitFor(() => c.received().includes('\n'), c.sock);
    t.is(c.received(), `OK ${g.hostPort}\n`);
    c.sock.write('more');
    c.sock.end(); // half-close: the guest sees SHUTDOWN(SEND)
    await f.drv.until(() => (g.peerShutdown & 2) !== 0);
    t.is(Buffer.concat(g.received).toString(), 'early bytes in the same write|more');
    // The other direction still flows.
    await g.write(Buffer.from('reply after half-close'));
    g.end();
    await c.ended;
    t.is(c.received(), `OK ${g.hostPort}\nreply after half-close`);
    await c.closed;
  } finally {
    await f.close();
  }
});

for (const [name, line, reason] of [
  ['not CONNECT', 'HELLO 5\n', 'expected CONNECT'],
  ['a bad port', 'CONNECT abc\n', 'bad port'],
  ['a port out of range', 'CONNECT 99999999999\n', 'bad port'],
  ['too long', 'CONNECT ' + '1'.repeat(80) + '\n', 'longer than'],
  ['no newline within the limit', 'X'.repeat(100), 'no newline'],
  ['end before the newline', 'CONNECT 5', 'end of stream'],
] as const) {
  test(`bad first line (${name}): error line and close`, async (t) => {
    const f = await fixture();
    try {
      const c = client(f.udsPath);
      if (name === 'end before the newline') c.sock.end(line);
      else c.sock.write(line);
      await c.ended; // the back end ends its side after the error line
      c.sock.destroy();
      t.regex(c.received(), new RegExp(`^ERR .*${reason}.*\\n$`));
      t.is(f.dev.connections, 0);
    } finally {
      await f.close();
    }
  });
}

test('CONNECT to a guest port that refuses: ERR ECONNREFUSED', async (t) => {
  const f = await fixture();
  try {
    const c = client(f.udsPath);
    c.sock.write('CONNECT 5001\n');
    const req = await f.drv.next((p) => p.header.op === 1 && p.header.dstPort === 5001);
    f.drv.send({ srcPort: 5001, dstPort: req.header.srcPort, op: 3 });
    await c.ended;
    c.sock.destroy();
    t.is(c.received(), 'ERR ECONNREFUSED\n');
  } finally {
    await f.close();
  }
});

test('guest connects to host port P: reaches <uds-path>_P, data and half-close both ways', async (t) => {
  const f = await fixture();
  const peers: Socket[] = [];
  let peerData = '';
  const peerEnded = new Promise<void>((resolve) => {
    const server: Server = createServer({ allowHalfOpen: true }, (s) => {
      peers.push(s);
      s.setEncoding('latin1');
      s.on('data', (c: string) => (peerData += c));
      s.on('end', () => {
        s.end('bye from the host');
        resolve();
      });
    });
    server.listen(`${f.udsPath}_6000`);
    f.cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
  });
  try {
    await new Promise<void>((r) => setImmediate(r));
    const g = new RawStream(f.drv, 7000, 6000);
    await g.connect();
    await g.write(Buffer.from('hello host'));
    g.end();
    await peerEnded;
    t.is(peerData, 'hello host');
    t.is((await g.readAll()).toString(), 'bye from the host');
  } finally {
    for (const p of peers) p.destroy();
    await f.close();
  }
});

test('guest connects to host port P with nothing at <uds-path>_P: RST', async (t) => {
  const f = await fixture();
  try {
    const g = new RawStream(f.drv, 7001, 6001);
    await t.throwsAsync(g.connect(), { code: 'ECONNREFUSED' });
    t.is(f.dev.connections, 0);
  } finally {
    await f.close();
  }
});
