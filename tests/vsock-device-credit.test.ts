// Credit flow control of the vsock device (virtio 1.2, 5.10.6.3), both directions:
// the device never sends past the guest's window, asks for credit when stalled,
// returns credit as the host reads, and a slow host reader holds bounded memory and
// never stalls another connection.
import test from 'ava';
import { createHash } from 'node:crypto';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import { CONN_BUF_ALLOC_BYTES, HOST_SOCKET_HIGH_WATER_MARK_BYTES, HOST_TO_GUEST_QUEUE_LIMIT_BYTES } from '../drivers/virtio-vsock/device/constants.js';
import {
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
} from '../drivers/virtio-vsock/header.js';
import { RawStream, VsockRawDriver } from './support/vsock-raw-driver.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

test('the device never sends past the guest window; stalled, it asks for credit once', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  let sock: VsockHostSocket | null = null;
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    sock = s;
  });
  try {
    const WINDOW = 1000;
    drv.send({ srcPort: 50, dstPort: 80, op: VSOCK_OP_REQUEST, bufAlloc: WINDOW, fwdCnt: 0 });
    t.is((await drv.nextOn(50, 80)).header.op, VSOCK_OP_RESPONSE);
    const data = pattern(5500, 7);
    sock!.end(data);
    const got: Buffer[] = [];
    let fwdCnt = 0;
    let creditRequests = 0;
    while (Buffer.concat(got).length < data.length) {
      await drv.sync();
      for (const p of drv.packets.splice(0).filter((p) => p.header.dstPort === 50)) {
        if (p.header.op === VSOCK_OP_RW) got.push(p.payload);
        if (p.header.op === VSOCK_OP_CREDIT_REQUEST) creditRequests++;
      }
      const total = Buffer.concat(got).length;
      t.true(total <= fwdCnt + WINDOW, `${total} bytes sent with fwd_cnt ${fwdCnt} and window ${WINDOW}`);
      if (total < data.length) t.is(total, fwdCnt + WINDOW); // it used all the credit it had
      // The guest consumes everything and says so.
      fwdCnt = total;
      drv.send({ srcPort: 50, dstPort: 80, op: VSOCK_OP_CREDIT_UPDATE, bufAlloc: WINDOW, fwdCnt });
    }
    t.deepEqual(Buffer.concat(got), data);
    t.is(creditRequests, 5); // one per stall, not one per attempt
    t.is(dev.stats.creditRequestsSent, 5);
  } finally {
    l.close();
    await drv.close();
  }
});

test('host reads return credit: CREDIT_UPDATE after a threshold, window never overrun by a credit-respecting guest', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  let sock: VsockHostSocket | null = null;
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    sock = s;
  });
  try {
    const g = new RawStream(drv, 52, 80);
    await g.connect();
    t.is(g.peerBufAlloc, CONN_BUF_ALLOC_BYTES);
    const data = pattern(3 * CONN_BUF_ALLOC_BYTES + 12345, 9);
    const writing = g.write(data).then(() => g.end());
    // Nobody reads yet: the guest can fill exactly the window, then must wait.
    await drv.until(() => g.txCnt === CONN_BUF_ALLOC_BYTES);
    await drv.sync();
    t.is(g.txCnt, CONN_BUF_ALLOC_BYTES);
    t.true(dev.hostBufferedBytes <= CONN_BUF_ALLOC_BYTES);
    const parts: Buffer[] = [];
    const ended = new Promise<void>((resolve) => sock!.on('end', resolve));
    sock!.on('data', (c: Buffer) => parts.push(c));
    await writing;
    await ended;
    t.is(sha(Buffer.concat(parts)), sha(data));
    t.true(dev.stats.creditUpdatesSent >= 1);
    t.is(dev.stats.dropped.creditViolation, 0);
    t.true(g.log.some((x) => x.startsWith('CREDIT_UPDATE')));
  } finally {
    l.close();
    await drv.close();
  }
});

test('a slow host reader holds bounded memory and does not stall another connection', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  const sockets = new Map<number, VsockHostSocket>();
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    sockets.set(s.remotePort, s);
  });
  try {
    const slow = new RawStream(drv, 60, 80);
    const fast = new RawStream(drv, 61, 80);
    await slow.connect();
    await fast.connect();
    const slowData = pattern(2 * 1024 * 1024, 1);
    const fastData = pattern(2 * 1024 * 1024, 2);
    const slowWriting = slow.write(slowData).then(() => slow.end());
    // The slow reader never reads until the fast connection is done.
    const fastSock = sockets.get(61)!;
    const fastParts: Buffer[] = [];
    const fastEnded = new Promise<void>((resolve) => fastSock.on('end', resolve));
    fastSock.on('data', (c: Buffer) => fastParts.push(c));
    let maxBuffered = 0;
    fastSock.on('data', () => {
      maxBuffered = Math.max(maxBuffered, dev.hostBufferedBytes);
    });
    await fast.write(fastData);
    fast.end();
    await fastEnded;
    t.is(sha(Buffer.concat(fastParts)), sha(fastData));
    // The slow connection got exactly its window and stopped there.
    t.is(slow.txCnt, CONN_BUF_ALLOC_BYTES);
    const bound = CONN_BUF_ALLOC_BYTES * 2 + HOST_SOCKET_HIGH_WATER_MARK_BYTES * 4;
    t.true(maxBuffered <= bound, `host side buffered ${maxBuffered} bytes (bound ${bound})`);
    // Now it reads, and everything arrives.
    const slowSock = sockets.get(60)!;
    const slowParts: Buffer[] = [];
    const slowEnded = new Promise<void>((resolve) => slowSock.on('end', resolve));
    slowSock.on('data', (c: Buffer) => slowParts.push(c));
    await slowWriting;
    await slowEnded;
    t.is(sha(Buffer.concat(slowParts)), sha(slowData));
  } finally {
    l.close();
    await drv.close();
  }
});

test('tiny packets for a slow reader coalesce; mixed with large ones, every byte arrives in order', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev, { queueSize: 256 });
  let sock: VsockHostSocket | null = null;
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    sock = s;
  });
  try {
    drv.send({ srcPort: 54, dstPort: 80, op: VSOCK_OP_REQUEST });
    await drv.nextOn(54, 80);
    const expected: Buffer[] = [];
    let k = 0;
    const sendOne = (payload: Buffer): void => {
      expected.push(payload);
      drv.sendBytes(drv.packetBytes({ srcPort: 54, dstPort: 80, op: VSOCK_OP_RW }, payload), {}, false);
    };
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 100; i++) sendOne(Buffer.from([k++ & 0xff]));
      sendOne(pattern(round % 2 === 0 ? 5000 : 700, round));
      drv.flushTx();
      await drv.until(() => drv.txInFlight === 0);
    }
    await drv.sync();
    const total = expected.reduce((a, b) => a + b.length, 0);
    t.is(dev.hostBufferedBytes, total); // nobody read yet: all held, within the window
    t.true(total <= CONN_BUF_ALLOC_BYTES);
    const parts: Buffer[] = [];
    const ended = new Promise<void>((resolve) => sock!.on('end', resolve));
    sock!.on('data', (c: Buffer) => parts.push(c));
    drv.send({ srcPort: 54, dstPort: 80, op: VSOCK_OP_SHUTDOWN, flags: 2 });
    await ended;
    t.deepEqual(Buffer.concat(parts), Buffer.concat(expected));
    t.true(parts.length < 100, `${parts.length} chunks for ${expected.length} packets`);
  } finally {
    l.close();
    await drv.close();
  }
});

test('a host writer facing a guest that grants no credit is held back (bounded queue)', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  let sock: VsockHostSocket | null = null;
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    sock = s;
  });
  try {
    drv.send({ srcPort: 53, dstPort: 80, op: VSOCK_OP_REQUEST, bufAlloc: 0 });
    await drv.nextOn(53, 80);
    const chunk = Buffer.alloc(16 * 1024);
    let writes = 0;
    while (sock!.write(chunk)) writes++;
    await drv.sync();
    t.true(writes * chunk.length <= HOST_TO_GUEST_QUEUE_LIMIT_BYTES + HOST_SOCKET_HIGH_WATER_MARK_BYTES);
    t.true(dev.hostBufferedBytes <= HOST_TO_GUEST_QUEUE_LIMIT_BYTES + 2 * HOST_SOCKET_HIGH_WATER_MARK_BYTES);
    t.is(drv.packets.filter((p) => p.header.op === VSOCK_OP_RW).length, 0);
    // Credit arrives: the writer drains.
    const drained = new Promise<void>((resolve) => sock!.once('drain', resolve));
    const g = new RawStream(drv, 53, 80, 1 << 20);
    g.responded = true;
    drv.send({ srcPort: 53, dstPort: 80, op: VSOCK_OP_CREDIT_UPDATE, bufAlloc: 1 << 20, fwdCnt: 0 });
    await drained;
    t.is(g.windowViolations, 0);
  } finally {
    l.close();
    await drv.close();
  }
});

test('the bufAlloc option: every header advertises it, a guest sending beyond it gets RST, and a value out of range is refused', async (t) => {
  t.throws(() => new VsockDevice({ guestCid: 3, bufAlloc: 1000 }), { instanceOf: RangeError, message: /bufAlloc 1000/ });
  t.throws(() => new VsockDevice({ guestCid: 3, bufAlloc: 4096.5 }), { instanceOf: RangeError });
  t.throws(() => new VsockDevice({ guestCid: 3, bufAlloc: 128 << 20 }), { instanceOf: RangeError });
  const WINDOW = 2 << 20;
  const dev = new VsockDevice({ guestCid: 3, bufAlloc: WINDOW });
  const drv = VsockRawDriver.sameThread(dev, { memoryBytes: 32 << 20 });
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    s.pause(); // reads nothing: the guest may fill the whole window
  });
  try {
    const st = new RawStream(drv, 50, 80);
    await st.connect();
    t.is(st.peerBufAlloc, WINDOW);
    const data = pattern(WINDOW, 21);
    await st.write(data, 64 * 1024);
    await drv.sync();
    t.is(dev.stats.guestToHostCreditStalls, 1);
    t.is(dev.hostBufferedBytes, WINDOW);
    // One byte past the window: RST, counted.
    drv.send({ srcPort: 50, dstPort: 80, op: VSOCK_OP_RW, len: 1, bufAlloc: 65536, fwdCnt: 0 }, Buffer.alloc(1));
    await drv.until(() => st.reset);
    t.is(dev.stats.dropped.creditViolation, 1);
  } finally {
    l.close();
    await drv.close();
  }
});
