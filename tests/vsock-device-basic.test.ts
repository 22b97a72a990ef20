// Device-level tests of the vsock device emulator through the raw test driver (same
// thread): connection set-up both ways, data in every descriptor shape, half-close,
// RST handling, transport reset.
import test from 'ava';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import {
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
} from '../drivers/virtio-vsock/header.js';
import { SHAPES, VsockRawDriver, type RawDriverOptions } from './support/vsock-raw-driver.js';

const GUEST_CID = 42;

function setup(opts: RawDriverOptions = {}): { dev: VsockDevice; drv: VsockRawDriver; logs: string[] } {
  const logs: string[] = [];
  const dev = new VsockDevice({ guestCid: GUEST_CID, log: (m) => logs.push(m) });
  const drv = VsockRawDriver.sameThread(dev, opts);
  return { dev, drv, logs };
}

/** Guest connects from guestPort to the host's hostPort; resolves with the RESPONSE. */
async function guestConnect(drv: VsockRawDriver, guestPort: number, hostPort: number, bufAlloc = 256 * 1024) {
  drv.send({ srcPort: guestPort, dstPort: hostPort, op: VSOCK_OP_REQUEST, bufAlloc });
  return drv.nextOn(guestPort, hostPort);
}

function readAll(s: VsockHostSocket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

function nextSocket(dev: VsockDevice, port: number): { accepted: Promise<VsockHostSocket>; close(): void } {
  let close = (): void => {};
  const accepted = new Promise<VsockHostSocket>((resolve) => {
    close = dev.host.listen(port, (s) => {
      s.on('error', () => {}); // resets at the end of a test are expected
      resolve(s);
    }).close;
  });
  return { accepted, close: () => close() };
}

test('config space holds the guest CID; device id, queues and features', async (t) => {
  const { dev, drv } = setup();
  try {
    t.is(drv.guestCid, GUEST_CID);
    t.is(dev.deviceId, 19);
    t.is(dev.numQueues, 3);
    t.is(dev.features & 0x1n, 0x1n); // VIRTIO_VSOCK_F_STREAM
    t.is(dev.features & (1n << 32n), 1n << 32n); // VERSION_1
    t.throws(() => new VsockDevice({ guestCid: 2 }));
    t.throws(() => new VsockDevice({ guestCid: 0xffffffff }));
  } finally {
    await drv.close();
  }
});

test('guest connects to a listening host port; RESPONSE carries our credit', async (t) => {
  const { dev, drv } = setup();
  const l = nextSocket(dev, 1234);
  try {
    const resp = await guestConnect(drv, 5000, 1234);
    t.is(resp.header.op, VSOCK_OP_RESPONSE);
    t.is(resp.header.srcCid, 2);
    t.is(resp.header.dstCid, GUEST_CID);
    t.true(resp.header.bufAlloc > 0);
    t.is(resp.header.fwdCnt, 0);
    const s = await l.accepted;
    t.is(s.localPort, 1234);
    t.is(s.remotePort, 5000);
    t.is(dev.connections, 1);
  } finally {
    l.close();
    await drv.close();
  }
});

test('REQUEST to a port nobody listens on gets RST', async (t) => {
  const { dev, drv } = setup();
  try {
    const p = await guestConnect(drv, 5000, 999);
    t.is(p.header.op, VSOCK_OP_RST);
    t.is(dev.stats.dropped.refused, 1);
    t.is(dev.connections, 0);
  } finally {
    await drv.close();
  }
});

for (const [name, shape] of Object.entries(SHAPES)) {
  test(`guest data arrives intact: ${name}`, async (t) => {
    const { dev, drv } = setup();
    const l = nextSocket(dev, 80);
    try {
      await guestConnect(drv, 6000, 80);
      const s = await l.accepted;
      const got = readAll(s);
      const a = Buffer.from('hello, vsock device! '.repeat(10));
      const b = Buffer.alloc(3000, 7);
      drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RW }, a, shape);
      drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RW }, b, shape);
      drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND }, undefined, shape);
      t.deepEqual(await got, Buffer.concat([a, b]));
      t.is(dev.stats.txBytes, a.length + b.length);
    } finally {
      l.close();
      await drv.close();
    }
  });
}

test('a payload shorter than the chain: only len bytes are taken', async (t) => {
  const { dev, drv } = setup();
  const l = nextSocket(dev, 80);
  try {
    await guestConnect(drv, 6000, 80);
    const s = await l.accepted;
    const got = readAll(s);
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RW, len: 5 }, Buffer.from('12345trailing garbage'));
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND });
    t.is((await got).toString(), '12345');
  } finally {
    l.close();
    await drv.close();
  }
});

for (const rxSplit of [false, true]) {
  test(`host data reaches the guest (rx buffers ${rxSplit ? 'split header/data' : 'single descriptor'})`, async (t) => {
    const { dev, drv } = setup({ rxSplit, rxBufferBytes: VSOCK_HEADER_SIZE + 1000 });
    const l = nextSocket(dev, 80);
    try {
      await guestConnect(drv, 6000, 80);
      const s = await l.accepted;
      const data = Buffer.alloc(10_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      s.end(data);
      const parts: Buffer[] = [];
      for (;;) {
        const p = await drv.nextOn(6000, 80);
        if (p.header.op === VSOCK_OP_RW) {
          t.true(p.payload.length <= 1000);
          t.is(p.header.len, p.payload.length);
          t.is(p.usedLength, VSOCK_HEADER_SIZE + p.payload.length);
          parts.push(p.payload);
        } else {
          t.is(p.header.op, VSOCK_OP_SHUTDOWN);
          t.is(p.header.flags, VSOCK_SHUTDOWN_SEND);
          break;
        }
      }
      t.deepEqual(Buffer.concat(parts), data);
      t.is(dev.stats.rxBytes, data.length);
    } finally {
      l.close();
      await drv.close();
    }
  });
}

test('nothing is sent on a connection before its RESPONSE', async (t) => {
  const { dev, drv } = setup();
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    s.write('early');
    s.end();
  });
  try {
    await drv.sync(); // settle
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_REQUEST });
    const first = await drv.nextOn(6000, 80);
    t.is(first.header.op, VSOCK_OP_RESPONSE);
    const second = await drv.nextOn(6000, 80);
    t.is(second.header.op, VSOCK_OP_RW);
    t.is(second.payload.toString(), 'early');
  } finally {
    l.close();
    await drv.close();
  }
});

test('host connect: resolves on RESPONSE, data both ways', async (t) => {
  const { dev, drv } = setup();
  try {
    const pending = dev.host.connect(7000);
    const req = await drv.next((p) => p.header.op === VSOCK_OP_REQUEST);
    t.is(req.header.dstPort, 7000);
    t.is(req.header.dstCid, GUEST_CID);
    const hostPort = req.header.srcPort;
    drv.send({ srcPort: 7000, dstPort: hostPort, op: VSOCK_OP_RESPONSE });
    const s = await pending;
    s.on('error', () => {});
    t.is(s.remotePort, 7000);
    t.is(s.localPort, hostPort);
    const got = readAll(s);
    s.write('ping');
    const p = await drv.nextOn(7000, hostPort);
    t.is(p.payload.toString(), 'ping');
    drv.send({ srcPort: 7000, dstPort: hostPort, op: VSOCK_OP_RW }, Buffer.from('pong'));
    drv.send({ srcPort: 7000, dstPort: hostPort, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND });
    t.is((await got).toString(), 'pong');
  } finally {
    await drv.close();
  }
});

test('host connect: RST rejects with ECONNREFUSED, silence with ETIMEDOUT', async (t) => {
  const { dev, drv } = setup();
  try {
    const refused = dev.host.connect(7001);
    const req = await drv.next((p) => p.header.op === VSOCK_OP_REQUEST);
    drv.send({ srcPort: 7001, dstPort: req.header.srcPort, op: VSOCK_OP_RST });
    await t.throwsAsync(refused, { code: 'ECONNREFUSED' });
    const timedOut = dev.host.connect(7002, { timeoutMs: 20 });
    await t.throwsAsync(timedOut, { code: 'ETIMEDOUT' });
    // The abandoned REQUEST is followed by a RST so the guest forgets it too.
    const req2 = await drv.next((p) => p.header.op === VSOCK_OP_REQUEST && p.header.dstPort === 7002);
    const rst = await drv.nextOn(7002, req2.header.srcPort);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(dev.connections, 0);
  } finally {
    await drv.close();
  }
});

test('half-close: guest SHUTDOWN(SEND) ends the host reader, host keeps writing; host end() reaches the guest', async (t) => {
  const { dev, drv } = setup();
  const l = nextSocket(dev, 80);
  try {
    await guestConnect(drv, 6000, 80);
    const s = await l.accepted;
    const got = readAll(s);
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RW }, Buffer.from('request'));
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND });
    t.is((await got).toString(), 'request');
    s.write('response after the guest half-closed');
    const p = await drv.nextOn(6000, 80);
    t.is(p.header.op, VSOCK_OP_RW);
    t.is(p.payload.toString(), 'response after the guest half-closed');
    s.end();
    // Both sides ended: the socket closes gracefully and the device says so with
    // SHUTDOWN(RCV|SEND) (possibly after a separate SHUTDOWN(SEND) for the end()),
    // then forgets the connection.
    let fin = await drv.nextOn(6000, 80);
    t.is(fin.header.op, VSOCK_OP_SHUTDOWN);
    if (fin.header.flags === VSOCK_SHUTDOWN_SEND) fin = await drv.nextOn(6000, 80);
    t.is(fin.header.op, VSOCK_OP_SHUTDOWN);
    t.is(fin.header.flags, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
    t.is(dev.connections, 0);
    // The guest's answering RST finds no connection and is not answered.
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RST });
    await drv.sync();
    t.is(drv.packets.filter((x) => x.header.dstPort === 6000).length, 0);
    t.is(dev.stats.dropped.rstUnknownIgnored, 1);
  } finally {
    l.close();
    await drv.close();
  }
});

test('a late CREDIT_UPDATE or SHUTDOWN after a graceful close gets RST, counted as routine, not as an unknown connection', async (t) => {
  const { dev, drv } = setup();
  const l = nextSocket(dev, 81);
  try {
    await guestConnect(drv, 6001, 81);
    const s = await l.accepted;
    const got = readAll(s);
    drv.send({ srcPort: 6001, dstPort: 81, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND });
    await got;
    s.end();
    let fin = await drv.nextOn(6001, 81);
    if (fin.header.flags === VSOCK_SHUTDOWN_SEND) fin = await drv.nextOn(6001, 81);
    t.is(fin.header.flags, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
    t.is(dev.connections, 0);
    drv.send({ srcPort: 6001, dstPort: 81, op: VSOCK_OP_CREDIT_UPDATE });
    const rst = await drv.nextOn(6001, 81);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(dev.stats.dropped.lateAfterClose, 1);
    t.is(dev.stats.dropped.unknownConnection, 0);
    // A packet for a connection that never existed is still an unknown connection.
    drv.send({ srcPort: 6099, dstPort: 81, op: VSOCK_OP_CREDIT_UPDATE });
    t.is((await drv.nextOn(6099, 81)).header.op, VSOCK_OP_RST);
    t.is(dev.stats.dropped.unknownConnection, 1);
  } finally {
    l.close();
    await drv.close();
  }
});

test('guest closes both ways: host sees end, device answers with RST', async (t) => {
  const { dev, drv } = setup();
  const l = nextSocket(dev, 80);
  try {
    await guestConnect(drv, 6000, 80);
    const s = await l.accepted;
    const got = readAll(s);
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RW }, Buffer.from('bye'));
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV });
    t.is((await got).toString(), 'bye');
    const rst = await drv.nextOn(6000, 80);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(dev.connections, 0);
    s.end('ignored'); // the guest receives nothing more
    await drv.sync();
    t.is(drv.packets.filter((x) => x.header.dstPort === 6000).length, 0);
  } finally {
    l.close();
    await drv.close();
  }
});

test('guest RST: host socket errors with ECONNRESET; host destroy(): guest gets RST', async (t) => {
  const { dev, drv } = setup();
  const sockets: VsockHostSocket[] = [];
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    sockets.push(s);
  });
  try {
    await guestConnect(drv, 6000, 80);
    await guestConnect(drv, 6001, 80);
    t.is(sockets.length, 2);
    const err = new Promise<NodeJS.ErrnoException>((resolve) => sockets[0]!.on('error', resolve));
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RST });
    t.is((await err).code, 'ECONNRESET');
    sockets[1]!.destroy();
    const rst = await drv.nextOn(6001, 80);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(dev.connections, 0);
  } finally {
    l.close();
    await drv.close();
  }
});

test('CREDIT_REQUEST is answered with CREDIT_UPDATE', async (t) => {
  const { dev, drv } = setup();
  const l = nextSocket(dev, 80);
  try {
    await guestConnect(drv, 6000, 80);
    await l.accepted;
    drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_CREDIT_REQUEST });
    const p = await drv.nextOn(6000, 80);
    t.is(p.header.op, VSOCK_OP_CREDIT_UPDATE);
    t.true(p.header.bufAlloc > 0);
  } finally {
    l.close();
    await drv.close();
  }
});

test('used-ring pushes are batched: many requests in one kick, fewer interrupts than packets', async (t) => {
  const { dev, drv } = setup();
  const l = dev.host.listen(80, (s) => s.on('error', () => {}));
  try {
    for (let i = 0; i < 32; i++) drv.sendBytes(drv.packetBytes({ srcPort: 9000 + i, dstPort: 80, op: VSOCK_OP_REQUEST }), {}, false);
    drv.flushTx();
    await drv.until(() => drv.packets.filter((p) => p.header.op === VSOCK_OP_RESPONSE).length === 32);
    t.is(dev.connections, 32);
    t.true(drv.interrupts < 32, `${drv.interrupts} interrupts for 32 responses`);
  } finally {
    l.close();
    await drv.close();
  }
});

for (const eventQueue of [true, false]) {
  test(`transport reset ${eventQueue ? 'sends TRANSPORT_RESET on the event queue' : 'works without an event queue'}, host sockets get ECONNRESET`, async (t) => {
    const { dev, drv } = setup({ eventQueue });
    const l = nextSocket(dev, 80);
    try {
      await guestConnect(drv, 6000, 80);
      const s = await l.accepted;
      const err = new Promise<NodeJS.ErrnoException>((resolve) => s.on('error', resolve));
      const delivered = dev.transportReset();
      t.is((await err).code, 'ECONNRESET');
      t.is(dev.connections, 0);
      if (eventQueue) {
        t.true(delivered);
        await drv.until(() => drv.events.length === 1);
        t.deepEqual(drv.events, [0]);
      } else {
        t.false(delivered);
        t.is(dev.stats.eventsDropped, 1);
      }
      // The old connection is gone: its packets get RST; new connections work.
      drv.send({ srcPort: 6000, dstPort: 80, op: VSOCK_OP_RW }, Buffer.from('x'));
      t.is((await drv.nextOn(6000, 80)).header.op, VSOCK_OP_RST);
      const l2 = dev.host.listen(81, (s2) => s2.on('error', () => {}));
      t.is((await guestConnect(drv, 6001, 81)).header.op, VSOCK_OP_RESPONSE);
      l2.close();
    } finally {
      l.close();
      await drv.close();
    }
  });
}
